#include "store/statistic.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <thread>
#include <vector>

namespace stashfs {
namespace {

TEST(StatisticTest, NamesAreUniqueSnakeCaseAndDescribed) {
  std::set<std::string_view> names;
  for (const auto& s : AllStatistics()) {
    SCOPED_TRACE(std::string(s.name));
    EXPECT_TRUE(names.insert(s.name).second) << "duplicate name";
    EXPECT_FALSE(s.name.empty());
    for (char c : s.name)
      EXPECT_TRUE((c >= 'a' && c <= 'z') || c == '_') << c;
    EXPECT_FALSE(s.description.empty());
    EXPECT_TRUE(s.per_mount || s.persisted) << "reported nowhere";
    EXPECT_EQ(StatisticNamed(s.name), s.id);
    EXPECT_EQ(&Describe(s.id), &s);
  }
  EXPECT_EQ(StatisticNamed("no_such_statistic"), std::nullopt);
}

TEST(StatisticTest, NamesStoresAlreadyHoldStayPersisted) {
  // Stores written by earlier versions have these rows in their counters table, and scripts
  // read them from `stats --json`: renaming one would split or lose a total.
  for (const char* name : {"mounts", "lookups", "negative_lookups", "files_created",
                           "bytes_written", "bytes_read_from_store", "files_read_from_store",
                           "key_hits_exact", "key_hits_restore_key", "key_misses"}) {
    auto s = StatisticNamed(name);
    ASSERT_TRUE(s.has_value()) << name;
    EXPECT_TRUE(Describe(*s).persisted) << name;
  }
}

TEST(StatisticTest, CountersAddUpAcrossThreads) {
  StatisticCounters c;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.Add(Statistic::kLookups);
        c.Add(Statistic::kBytesWritten, 3);
      }
    });
  }
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(c.Get(Statistic::kLookups), 40000u);
  EXPECT_EQ(c.Get(Statistic::kBytesWritten), 120000u);
  EXPECT_EQ(c.Get(Statistic::kGets), 0u);
}

}  // namespace
}  // namespace stashfs
