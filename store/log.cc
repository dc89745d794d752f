#include "store/log.h"

#include <cstdio>
#include <memory>
#include <mutex>

namespace stashfs {

namespace {

// One write(2) per line, so lines from the FUSE workers, flushers and the signal thread do not
// interleave mid-line in the daemon's log.
void ToStderr(LogLevel, std::string_view message) {
  std::string line = "stashfs: ";
  line.append(message);
  line.push_back('\n');
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

std::mutex& SinkMutex() {
  static std::mutex mu;
  return mu;
}
// Read on every message from any thread; replaced rarely (start-up, tests): a shared_ptr copied
// under the mutex, so a sink being replaced finishes its current message safely.
std::shared_ptr<LogSink>& Sink() {
  static std::shared_ptr<LogSink> sink = std::make_shared<LogSink>(ToStderr);
  return sink;
}

}  // namespace

LogSink SetLogSink(LogSink sink) {
  if (!sink) sink = ToStderr;
  std::lock_guard lock(SinkMutex());
  LogSink previous = *Sink();
  Sink() = std::make_shared<LogSink>(std::move(sink));
  return previous;
}

void Log(LogLevel level, std::string_view message) {
  std::shared_ptr<LogSink> sink;
  {
    std::lock_guard lock(SinkMutex());
    sink = Sink();
  }
  (*sink)(level, message);
}

}  // namespace stashfs
