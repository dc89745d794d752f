// A progress line for long operations (gc, fsck, export, import) on a terminal; silent when
// stderr is not a TTY, so CI logs stay clean.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "tools/format.h"
#include "tools/io.h"

namespace stashfs::cli {

class Progress {
 public:
  Progress(Io& io, std::string label) : io_(io), label_(std::move(label)) {}
  ~Progress() { Done(); }
  // `done` of `total` bytes (total 0: unknown).
  void Update(uint64_t done, uint64_t total) {
    if (!io_.err_is_tty) return;
    auto now = std::chrono::steady_clock::now();
    if (shown_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    shown_ = true;
    std::string line = "\r" + label_ + " " + FormatSize(done);
    if (total) {
      int pct = static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(total));
      if (pct > 100) pct = 100;
      std::string bar(static_cast<size_t>(pct / 4), '#');
      bar.resize(25, ' ');
      line += " / " + FormatSize(total) + " [" + bar + "] " + std::to_string(pct) + "%";
    }
    io_.err << line << "\033[K" << std::flush;
  }
  void Done() {
    if (shown_) io_.err << "\r\033[K" << std::flush;
    shown_ = false;
  }

 private:
  Io& io_;
  std::string label_;
  bool shown_ = false;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace stashfs::cli
