#include "store/codec.h"

#include <gtest/gtest.h>

#include <span>
#include <vector>

#include "test_util.h"

namespace stashfs {
namespace {

using test::CompressibleBytes;
using test::RandomBytes;

// zstd's bytes, or nothing when CompressInto says the block is to be stored raw.
std::vector<uint8_t> Zstd(std::span<const uint8_t> raw, int level) {
  std::vector<uint8_t> out(CompressBound(raw.size()));
  out.resize(CompressInto(raw, level, out.data()));
  return out;
}

TEST(CodecTest, CompressibleDataRoundTrips) {
  auto raw = CompressibleBytes(200000, 1);
  auto c = Zstd(raw, 3);
  ASSERT_FALSE(c.empty());
  EXPECT_LT(c.size(), raw.size() / 4);
  std::vector<uint8_t> out;
  ASSERT_OK(Decompress(Codec::kZstd, c, raw.size(), &out));
  EXPECT_EQ(out, raw);
}

TEST(CodecTest, IncompressibleDataIsStoredRaw) {
  for (size_t n : {1, 63, 64, 1000, 65536, 300000}) {
    auto raw = RandomBytes(n, n);
    EXPECT_TRUE(Zstd(raw, 3).empty()) << n;
    std::vector<uint8_t> out;
    ASSERT_OK(Decompress(Codec::kRaw, raw, raw.size(), &out));
    EXPECT_EQ(out, raw);
  }
}

TEST(CodecTest, LevelZeroMeansRaw) {
  auto raw = CompressibleBytes(10000, 2);
  EXPECT_TRUE(Zstd(raw, 0).empty());
  EXPECT_FALSE(Zstd(raw, 1).empty());
}

TEST(CodecTest, EmptyInput) {
  EXPECT_TRUE(Zstd({}, 3).empty());
  std::vector<uint8_t> out{1, 2, 3};
  ASSERT_OK(Decompress(Codec::kRaw, {}, 0, &out));
  EXPECT_TRUE(out.empty());
}

TEST(CodecTest, WrongLengthIsCorruption) {
  auto raw = CompressibleBytes(50000, 3);
  auto c = Zstd(raw, 3);
  ASSERT_FALSE(c.empty());
  std::vector<uint8_t> out;
  for (size_t n : {raw.size() - 1, raw.size() + 1, size_t{0}, 2 * raw.size()}) {
    Status s = Decompress(Codec::kZstd, c, n, &out);
    EXPECT_CODE(s, Code::kCorruption);
    EXPECT_EQ(s.errno_value(), EIO);
  }
  auto rnd = RandomBytes(100, 4);
  EXPECT_CODE(Decompress(Codec::kRaw, rnd, 99, &out), Code::kCorruption);
  EXPECT_CODE(Decompress(Codec::kRaw, rnd, 101, &out), Code::kCorruption);
}

TEST(CodecTest, GarbageIsCorruption) {
  std::vector<uint8_t> out;
  auto garbage = RandomBytes(1000, 5);
  EXPECT_CODE(Decompress(Codec::kZstd, garbage, 5000, &out), Code::kCorruption);
  EXPECT_CODE(Decompress(Codec::kZstd, {}, 10, &out), Code::kCorruption);

  auto raw = CompressibleBytes(50000, 6);
  auto c = Zstd(raw, 3);
  ASSERT_FALSE(c.empty());
  // A truncated frame.
  std::vector<uint8_t> cut(c.begin(), c.begin() + static_cast<long>(c.size() / 2));
  EXPECT_CODE(Decompress(Codec::kZstd, cut, raw.size(), &out), Code::kCorruption);
  // An unknown codec byte, as a damaged catalog row could hold.
  EXPECT_CODE(Decompress(static_cast<Codec>(7), c, raw.size(), &out), Code::kCorruption);
  // A damaged frame never crashes: it fails, or yields bytes (which the object hash catches).
  for (size_t i = 0; i < c.size(); i += 7) {
    auto bad = c;
    bad[i] ^= 0x5a;
    Status s = Decompress(Codec::kZstd, bad, raw.size(), &out);
    if (!s.ok()) {
      EXPECT_CODE(s, Code::kCorruption);
    }
  }
}

}  // namespace
}  // namespace stashfs
