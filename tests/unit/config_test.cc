#include "store/config.h"

#include <gtest/gtest.h>

namespace stashfs {
namespace {

TEST(ParseSizeTest, UnitsAreBinaryAndOptionallySuffixed) {
  EXPECT_EQ(*ParseSize("0"), 0u);
  EXPECT_EQ(*ParseSize("123"), 123u);
  EXPECT_EQ(*ParseSize("4K"), 4096u);
  EXPECT_EQ(*ParseSize("500M"), 500ull << 20);
  EXPECT_EQ(*ParseSize("500MiB"), 500ull << 20);
  EXPECT_EQ(*ParseSize("10g"), 10ull << 30);
  EXPECT_EQ(*ParseSize("2TiB"), 2ull << 40);
  EXPECT_EQ(*ParseSize("1.5G"), 3ull << 29);
  EXPECT_EQ(*ParseSize("7B"), 7u);
}

TEST(ParseSizeTest, AnythingElseIsRefusedWithAnExample) {
  for (const char* bad : {"", "G", "-1", " 1", "1 G", "1e3", "0x10", "inf", "nan", "1.5.2M", "7d",
                          "10X", "99999999999T"}) {
    auto r = ParseSize(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("like 500M"), std::string::npos) << r.status().message();
  }
}

TEST(ParseAgeTest, Units) {
  EXPECT_EQ(*ParseAge("0"), 0);
  EXPECT_EQ(*ParseAge("90s"), 90);
  EXPECT_EQ(*ParseAge("30m"), 1800);
  EXPECT_EQ(*ParseAge("30min"), 1800);
  EXPECT_EQ(*ParseAge("12h"), 12 * 3600);
  EXPECT_EQ(*ParseAge("7d"), 7 * 86400);
  EXPECT_EQ(*ParseAge("2w"), 14 * 86400);
  EXPECT_EQ(*ParseAge("1.5h"), 5400);
}

TEST(ParseAgeTest, AnythingElseIsRefusedWithAnExample) {
  for (const char* bad :
       {"", "d", "7", "-7d", "7 d", "1e2s", "7D", "7y", "inf", "9999999999999w"}) {
    auto r = ParseAge(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("like 90s"), std::string::npos) << r.status().message();
  }
}

}  // namespace
}  // namespace stashfs
