#include "store/log.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace stashfs {
namespace {

TEST(LogTest, AScopedSinkSeesMessagesAndPutsThePreviousOneBack) {
  std::vector<std::string> outer, inner;
  ScopedLogSink a([&](LogLevel, std::string_view m) { outer.emplace_back(m); });
  LogError("one");
  {
    ScopedLogSink b([&](LogLevel level, std::string_view m) {
      inner.push_back(std::string(level == LogLevel::kWarning ? "W " : "? ") + std::string(m));
    });
    LogWarning("two");
  }
  LogInfo("three");
  EXPECT_EQ(outer, (std::vector<std::string>{"one", "three"}));
  EXPECT_EQ(inner, (std::vector<std::string>{"W two"}));
}

TEST(LogTest, SinksCanBeReplacedWhileOtherThreadsLog) {
  // The daemon's threads log while it switches its sink to the store's log file.
  std::atomic<int> seen{0};
  std::atomic<bool> stop{false};
  ScopedLogSink base([&](LogLevel, std::string_view) { ++seen; });
  std::vector<std::thread> loggers;
  for (int i = 0; i < 4; ++i) {
    loggers.emplace_back([&] {
      while (!stop)
        LogInfo("busy");
    });
  }
  for (int i = 0; i < 200; ++i)
    ScopedLogSink swap([&](LogLevel, std::string_view) { ++seen; });
  stop = true;
  for (auto& t : loggers)
    t.join();
  EXPECT_GT(seen.load(), 0);
}

}  // namespace
}  // namespace stashfs
