#include "store/hash.h"

#include <gtest/gtest.h>

#include <string>
#include <unordered_set>

#include "test_util.h"

namespace stashfs {
namespace {

using test::RandomBytes;

TEST(HashTest, KnownVectors) {
  EXPECT_EQ(Hash::Of(std::string_view("")).hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Hash::Of(std::string_view("abc")).hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(
      Hash::Of(std::string_view("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")).hex(),
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Hash::Of(std::string(1000000, 'a')).hex(),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(HashTest, SpanAndStringViewAgree) {
  auto data = RandomBytes(1000, 1);
  std::string s(data.begin(), data.end());
  EXPECT_EQ(Hash::Of(std::span<const uint8_t>(data)), Hash::Of(std::string_view(s)));
}

TEST(HashTest, HexRoundTrip) {
  Hash h = Hash::Of(std::string_view("abc"));
  std::string hex = h.hex();
  ASSERT_EQ(hex.size(), 64u);
  ASSERT_OK_AND_ASSIGN(Hash back, Hash::FromHex(hex));
  EXPECT_EQ(back, h);
  EXPECT_EQ(h.short_hex(), "ba7816bf8f01");

  // Upper case digits are accepted; hex() always prints lower case.
  std::string upper = hex;
  for (char& c : upper)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  ASSERT_OK_AND_ASSIGN(Hash from_upper, Hash::FromHex(upper));
  EXPECT_EQ(from_upper, h);
  EXPECT_EQ(from_upper.hex(), hex);

  // Every byte value survives the round trip.
  Hash all;
  for (size_t i = 0; i < 32; ++i)
    all.bytes[i] = static_cast<uint8_t>(i * 8 + 7);
  ASSERT_OK_AND_ASSIGN(Hash all_back, Hash::FromHex(all.hex()));
  EXPECT_EQ(all_back, all);
}

TEST(HashTest, FromHexRejectsBadInput) {
  const std::string good(64, 'a');
  for (const std::string& bad : {
           std::string(),
           std::string(63, 'a'),
           std::string(65, 'a'),
           std::string(128, 'a'),
           "0x" + std::string(62, 'a'),
           std::string(63, 'a') + "g",
           "g" + std::string(63, 'a'),
           std::string(32, 'a') + " " + std::string(31, 'a'),
           std::string(63, 'a') + std::string(1, '\0'),
           std::string(62, 'a') + "-1",
       }) {
    auto r = Hash::FromHex(bad);
    EXPECT_FALSE(r.ok()) << "accepted '" << bad << "'";
    EXPECT_CODE(r, Code::kInvalidArgument);
  }
  EXPECT_OK(Hash::FromHex(good));
}

TEST(HashTest, StreamingEqualsOneShot) {
  auto data = RandomBytes(100000, 2);
  Hash want = Hash::Of(std::span<const uint8_t>(data));
  for (size_t piece : {1, 7, 64, 1000, 65536, 100000}) {
    Sha256 sha;
    for (size_t off = 0; off < data.size(); off += piece)
      sha.update(data.data() + off, std::min(piece, data.size() - off));
    EXPECT_EQ(sha.finish(), want) << "pieces of " << piece;
  }
  Sha256 empty;
  EXPECT_EQ(empty.finish(), Hash::Of(std::string_view("")));
  Sha256 zero_len_updates;
  zero_len_updates.update("abc", 0);
  zero_len_updates.update("abc", 3);
  zero_len_updates.update("abc", 0);
  EXPECT_EQ(zero_len_updates.finish(), Hash::Of(std::string_view("abc")));
}

TEST(HashTest, ZeroOrderAndHasher) {
  Hash zero;
  EXPECT_TRUE(zero.is_zero());
  EXPECT_EQ(zero.hex(), std::string(64, '0'));
  Hash one = zero;
  one.bytes[31] = 1;
  EXPECT_FALSE(one.is_zero());
  EXPECT_LT(zero, one);
  Hash a = Hash::Of(std::string_view("a")), b = Hash::Of(std::string_view("b"));
  EXPECT_NE(a, b);
  EXPECT_EQ(Hash::FromBytes(a.bytes.data()), a);
  std::unordered_set<Hash, HashHasher> set{a, b, a};
  EXPECT_EQ(set.size(), 2u);
}

}  // namespace
}  // namespace stashfs
