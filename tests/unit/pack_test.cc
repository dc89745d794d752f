#include "store/pack.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "test_util.h"

namespace stashfs {
namespace {

using test::TempDir;

BlockHeader SampleHeader() {
  BlockHeader h;
  h.codec = Codec::kZstd;
  h.raw_len = 5000;
  h.stored_len = 1234;
  h.entries = {{ObjectKind::kChunk, 0, 3000, Hash::Of(std::string_view("a"))},
               {ObjectKind::kTree, 3000, 1999, Hash::Of(std::string_view("b"))},
               {ObjectKind::kLinks, 4999, 1, Hash::Of(std::string_view("c"))}};
  return h;
}

void ExpectSameHeader(const BlockHeader& a, const BlockHeader& b) {
  EXPECT_EQ(a.codec, b.codec);
  EXPECT_EQ(a.raw_len, b.raw_len);
  EXPECT_EQ(a.stored_len, b.stored_len);
  ASSERT_EQ(a.entries.size(), b.entries.size());
  for (size_t i = 0; i < a.entries.size(); ++i) {
    EXPECT_EQ(a.entries[i].kind, b.entries[i].kind) << i;
    EXPECT_EQ(a.entries[i].offset, b.entries[i].offset) << i;
    EXPECT_EQ(a.entries[i].size, b.entries[i].size) << i;
    EXPECT_EQ(a.entries[i].hash, b.entries[i].hash) << i;
  }
}

TEST(PackTest, BlockHeaderRoundTrip) {
  BlockHeader h = SampleHeader();
  auto enc = EncodeBlockHeader(h);
  EXPECT_EQ(enc.size(), BlockHeaderLength(3));
  EXPECT_EQ(BlockHeaderLength(3), kBlockFixedHeader + 3 * kBlockEntrySize + kBlockCheckSize);
  EXPECT_EQ(BlockHeaderLength(1), 72u);
  size_t len = 0;
  ASSERT_OK_AND_ASSIGN(BlockHeader back, DecodeBlockHeader(enc, &len));
  EXPECT_EQ(len, enc.size());
  ExpectSameHeader(back, h);

  // Followed by its payload, as in a pack: the header length says where the payload starts.
  auto with_payload = enc;
  with_payload.resize(enc.size() + 1234, 0xee);
  len = 0;
  ASSERT_OK_AND_ASSIGN(BlockHeader again, DecodeBlockHeader(with_payload, &len));
  EXPECT_EQ(len, enc.size());
  ExpectSameHeader(again, h);

  // Little-endian magic "SBLK" first.
  EXPECT_EQ(std::memcmp(enc.data(), "SBLK", 4), 0);
}

TEST(PackTest, EncodeBlockWritesHeaderThenPayload) {
  for (bool compressible : {true, false}) {
    auto raw = compressible ? test::CompressibleBytes(300000, 8) : test::RandomBytes(300000, 8);
    BlockHeader h;
    h.entries = {{ObjectKind::kChunk, 0, 100000, Hash::Of(std::string_view("x"))},
                 {ObjectKind::kChunk, 100000, 200000, Hash::Of(std::string_view("y"))}};
    // A reused buffer holding stale bytes, as the store's pool hands out.
    std::vector<uint8_t> out(700000, 0xee);
    size_t hlen = EncodeBlock(raw, 3, &h, &out);
    EXPECT_EQ(hlen, BlockHeaderLength(2));
    EXPECT_EQ(h.codec, compressible ? Codec::kZstd : Codec::kRaw);
    EXPECT_EQ(h.raw_len, raw.size());
    EXPECT_EQ(h.stored_len, out.size() - hlen);
    if (compressible) {
      EXPECT_LT(out.size(), raw.size() / 2);
    }

    size_t got_len = 0;
    ASSERT_OK_AND_ASSIGN(BlockHeader got, DecodeBlockHeader(out, &got_len));
    EXPECT_EQ(got_len, hlen);
    ExpectSameHeader(got, h);
    std::vector<uint8_t> back;
    ASSERT_OK(
        Decompress(got.codec, std::span<const uint8_t>(out).subspan(hlen), got.raw_len, &back));
    EXPECT_EQ(back, raw);
  }
}

TEST(PackTest, EveryFlippedHeaderByteIsDetected) {
  auto enc = EncodeBlockHeader(SampleHeader());
  for (size_t i = 0; i < enc.size(); ++i) {
    for (uint8_t bit : {0x01, 0x80}) {
      auto bad = enc;
      bad[i] ^= bit;
      size_t len = 0;
      auto r = DecodeBlockHeader(bad, &len);
      EXPECT_FALSE(r.ok()) << "flip of bit " << int{bit} << " in byte " << i << " went unnoticed";
      EXPECT_CODE(r, Code::kCorruption);
    }
  }
}

TEST(PackTest, TruncatedOrImplausibleHeadersAreCorruption) {
  auto enc = EncodeBlockHeader(SampleHeader());
  for (size_t n = 0; n < enc.size(); ++n) {
    size_t len = 0;
    EXPECT_CODE(DecodeBlockHeader(std::span<const uint8_t>(enc.data(), n), &len),
                Code::kCorruption);
  }
  size_t len = 0;
  BlockHeader empty;  // no objects
  EXPECT_CODE(DecodeBlockHeader(EncodeBlockHeader(empty), &len), Code::kCorruption);
  BlockHeader outside = SampleHeader();
  outside.entries[2].size = 2;  // ends past raw_len
  EXPECT_CODE(DecodeBlockHeader(EncodeBlockHeader(outside), &len), Code::kCorruption);
  BlockHeader kind = SampleHeader();
  kind.entries[1].kind = static_cast<ObjectKind>(9);
  EXPECT_CODE(DecodeBlockHeader(EncodeBlockHeader(kind), &len), Code::kCorruption);
  BlockHeader codec = SampleHeader();
  codec.codec = static_cast<Codec>(2);
  EXPECT_CODE(DecodeBlockHeader(EncodeBlockHeader(codec), &len), Code::kCorruption);
  BlockHeader huge = SampleHeader();
  huge.raw_len = kMaxBlockBytes + 1;
  EXPECT_CODE(DecodeBlockHeader(EncodeBlockHeader(huge), &len), Code::kCorruption);
  // A count claiming millions of entries in a short buffer: refused without reading past it.
  auto many = enc;
  many[8] = 0xff;
  many[9] = 0xff;
  many[10] = 0x0f;
  EXPECT_CODE(DecodeBlockHeader(many, &len), Code::kCorruption);
}

TEST(PackTest, PackHeader) {
  auto h = EncodePackHeader();
  ASSERT_EQ(h.size(), kPackHeaderSize);
  EXPECT_EQ(std::memcmp(h.data(), "STASHPK\0", 8), 0);
  EXPECT_OK(CheckPackHeader(h));
  auto bad = h;
  bad[0] = 'X';
  EXPECT_CODE(CheckPackHeader(bad), Code::kCorruption);
  auto newer = h;
  newer[8] = kPackVersion + 1;
  EXPECT_CODE(CheckPackHeader(newer), Code::kUnsupported);
  EXPECT_CODE(CheckPackHeader(std::span<const uint8_t>(h.data(), kPackHeaderSize - 1)),
              Code::kCorruption);
}

TEST(PackTest, PackPathLayout) {
  EXPECT_EQ(PackPath("/s/packs", 1), "/s/packs/01/0000000000000001.pack");
  EXPECT_EQ(PackPath("/s/packs", 255), "/s/packs/ff/00000000000000ff.pack");
  EXPECT_EQ(PackPath("/s/packs", 256), "/s/packs/00/0000000000000100.pack");
  EXPECT_EQ(PackPath("/s/packs", 0x123456789abcdefLL), "/s/packs/ef/0123456789abcdef.pack");
}

// Writes a pack file with one block holding `payload` and returns the block's location.
BlockLocation WritePack(const std::string& dir, int64_t id, const std::vector<uint8_t>& payload) {
  std::string path = PackPath(dir, id);
  Env* env = Env::Default();
  EXPECT_OK(env->MakeDirs(path.substr(0, path.find_last_of('/')), 0700));
  auto f = env->Open(path, O_RDWR | O_CREAT | O_TRUNC);
  EXPECT_TRUE(f.ok());
  auto header = EncodePackHeader();
  BlockHeader bh;
  bh.codec = Codec::kRaw;
  bh.raw_len = bh.stored_len = static_cast<uint32_t>(payload.size());
  bh.entries = {{ObjectKind::kChunk, 0, bh.raw_len, Hash::Of(payload)}};
  auto block = EncodeBlockHeader(bh);
  EXPECT_OK((*f)->pwrite(0, header.data(), header.size()));
  EXPECT_OK((*f)->pwrite(header.size(), block.data(), block.size()));
  EXPECT_OK((*f)->pwrite(header.size() + block.size(), payload.data(), payload.size()));
  return {id,         header.size(), static_cast<uint32_t>(block.size()), bh.stored_len,
          bh.raw_len, Codec::kRaw};
}

TEST(PackTest, PackFilesReadsPayloads) {
  TempDir tmp;
  PackFiles packs(Env::Default(), tmp.path(), /*capacity=*/2);
  std::vector<BlockLocation> locs;
  for (int64_t id = 1; id <= 4; ++id)
    locs.push_back(WritePack(tmp.path(), id, test::RandomBytes(100 * id, id)));
  // More packs than open-file slots, read twice in turn: eviction never breaks a read.
  for (int round = 0; round < 2; ++round) {
    for (int64_t id = 1; id <= 4; ++id) {
      std::vector<uint8_t> out;
      ASSERT_OK(packs.ReadPayload(locs[id - 1], &out));
      EXPECT_EQ(out, test::RandomBytes(100 * id, id));
    }
  }
  packs.Drop(1);
  packs.Drop(99);  // unknown: ignored
  std::vector<uint8_t> out;
  ASSERT_OK(packs.ReadPayload(locs[0], &out));

  // A catalogued block past the end of its pack is corruption, a missing pack an I/O error.
  BlockLocation past = locs[1];
  past.stored_len += 1;
  EXPECT_CODE(packs.ReadPayload(past, &out), Code::kCorruption);
  BlockLocation missing = locs[0];
  missing.pack_id = 77;
  Status st = packs.ReadPayload(missing, &out);
  EXPECT_CODE(st, Code::kIOError);
  EXPECT_EQ(st.errno_value(), ENOENT);
}

}  // namespace
}  // namespace stashfs
