// Messages nobody returns: a background flush that failed and will be retried, damage found
// while serving a read, a commit that could not be cleaned up after. Store and fs code report
// them here instead of printing; whoever runs the code decides where they go. The CLI sends them
// to the command's stderr (its Io), the mount daemon to its log (stderr, a file once detached),
// and tests capture them to check what a user would have been told.
//
// Every message is one line for a person: what failed, why, what to do. The sink adds the
// "stashfs: " prefix and the newline.
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace stashfs {

enum class LogLevel { kError, kWarning, kInfo };

using LogSink = std::function<void(LogLevel, std::string_view message)>;

// Replaces where messages go; an empty sink restores the default (stderr). Returns the sink it
// replaced, so a scope (a test, an in-process command) can put it back.
LogSink SetLogSink(LogSink sink);

void Log(LogLevel level, std::string_view message);
inline void LogError(std::string_view m) {
  Log(LogLevel::kError, m);
}
inline void LogWarning(std::string_view m) {
  Log(LogLevel::kWarning, m);
}
inline void LogInfo(std::string_view m) {
  Log(LogLevel::kInfo, m);
}

// Sends messages to `sink` while it lives, then restores the previous one.
class ScopedLogSink {
 public:
  explicit ScopedLogSink(LogSink sink) : previous_(SetLogSink(std::move(sink))) {}
  ~ScopedLogSink() { SetLogSink(std::move(previous_)); }
  ScopedLogSink(const ScopedLogSink&) = delete;
  ScopedLogSink& operator=(const ScopedLogSink&) = delete;

 private:
  LogSink previous_;
};

}  // namespace stashfs
