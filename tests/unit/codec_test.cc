#include "store/codec.h"

#include <gtest/gtest.h>

#include <vector>

#include "test_util.h"

namespace stashfs {
namespace {

using test::CompressibleBytes;
using test::RandomBytes;

TEST(CodecTest, CompressibleDataRoundTrips) {
  auto raw = CompressibleBytes(200000, 1);
  Compressed c = Compress(raw, 3);
  EXPECT_EQ(c.codec, Codec::kZstd);
  EXPECT_LT(c.data.size(), raw.size() / 4);
  std::vector<uint8_t> out;
  ASSERT_OK(Decompress(c.codec, c.data, raw.size(), &out));
  EXPECT_EQ(out, raw);
}

TEST(CodecTest, IncompressibleDataIsStoredRaw) {
  for (size_t n : {1, 63, 64, 1000, 65536, 300000}) {
    auto raw = RandomBytes(n, n);
    Compressed c = Compress(raw, 3);
    EXPECT_EQ(c.codec, Codec::kRaw) << n;
    EXPECT_EQ(c.data, raw) << n;
    std::vector<uint8_t> out;
    ASSERT_OK(Decompress(c.codec, c.data, raw.size(), &out));
    EXPECT_EQ(out, raw);
  }
}

TEST(CodecTest, LevelZeroMeansRaw) {
  auto raw = CompressibleBytes(10000, 2);
  Compressed c = Compress(raw, 0);
  EXPECT_EQ(c.codec, Codec::kRaw);
  EXPECT_EQ(c.data, raw);
}

TEST(CodecTest, EmptyInput) {
  Compressed c = Compress({}, 3);
  EXPECT_EQ(c.codec, Codec::kRaw);
  EXPECT_TRUE(c.data.empty());
  std::vector<uint8_t> out{1, 2, 3};
  ASSERT_OK(Decompress(Codec::kRaw, {}, 0, &out));
  EXPECT_TRUE(out.empty());
}

TEST(CodecTest, WrongLengthIsCorruption) {
  auto raw = CompressibleBytes(50000, 3);
  Compressed c = Compress(raw, 3);
  ASSERT_EQ(c.codec, Codec::kZstd);
  std::vector<uint8_t> out;
  for (size_t n : {raw.size() - 1, raw.size() + 1, size_t{0}, 2 * raw.size()}) {
    Status s = Decompress(Codec::kZstd, c.data, n, &out);
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
  Compressed c = Compress(raw, 3);
  ASSERT_EQ(c.codec, Codec::kZstd);
  // A truncated frame.
  std::vector<uint8_t> cut(c.data.begin(), c.data.begin() + c.data.size() / 2);
  EXPECT_CODE(Decompress(Codec::kZstd, cut, raw.size(), &out), Code::kCorruption);
  // An unknown codec byte, as a damaged catalog row could hold.
  EXPECT_CODE(Decompress(static_cast<Codec>(7), c.data, raw.size(), &out), Code::kCorruption);
  // A damaged frame never crashes: it fails, or yields bytes (which the object hash catches).
  for (size_t i = 0; i < c.data.size(); i += 7) {
    auto bad = c.data;
    bad[i] ^= 0x5a;
    Status s = Decompress(Codec::kZstd, bad, raw.size(), &out);
    if (!s.ok()) {
      EXPECT_CODE(s, Code::kCorruption);
    }
  }
}

}  // namespace
}  // namespace stashfs
