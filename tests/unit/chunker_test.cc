#include "store/chunker.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <set>
#include <vector>

#include "store/hash.h"
#include "test_util.h"

namespace stashfs {
namespace {

using test::RandomBytes;

// Small sizes keep the tests fast while giving hundreds of chunks per MiB.
constexpr ChunkerParams kSmall{2048, 8192, 32768};

// Cuts all of `data`, passing each call every remaining byte (allowed by the contract).
std::vector<size_t> Chunk(std::span<const uint8_t> data, const ChunkerParams& p) {
  std::vector<size_t> lens;
  size_t pos = 0;
  while (pos < data.size()) {
    size_t n = NextChunkLength(data.subspan(pos), p);
    if (n == 0 || n > data.size() - pos) {
      ADD_FAILURE() << "chunk length " << n << " at " << pos << " of " << data.size();
      break;
    }
    lens.push_back(n);
    pos += n;
  }
  return lens;
}

std::vector<Hash> ChunkHashes(std::span<const uint8_t> data, const ChunkerParams& p) {
  std::vector<Hash> out;
  size_t pos = 0;
  for (size_t n : Chunk(data, p)) {
    out.push_back(Hash::Of(data.subspan(pos, n)));
    pos += n;
  }
  return out;
}

// How many chunks of `edited` are not chunks of `original`.
size_t NewChunks(std::span<const uint8_t> original, std::span<const uint8_t> edited,
                 const ChunkerParams& p, size_t* total) {
  auto before = ChunkHashes(original, p);
  std::set<Hash> known(before.begin(), before.end());
  auto after = ChunkHashes(edited, p);
  *total = after.size();
  size_t fresh = 0;
  for (const Hash& h : after)
    fresh += !known.count(h);
  return fresh;
}

TEST(ChunkerTest, DeterministicCutPoints) {
  // Pinned: a change to the gear table, the masks or normalisation changes these and with them
  // the identity of every stored large-file chunk. Update them only with a format change.
  auto data = RandomBytes(4 << 20, 42);
  auto lens = Chunk(data, ChunkerParams{});
  ASSERT_GE(lens.size(), 3u);
  EXPECT_EQ(lens[0], 627143u);
  EXPECT_EQ(lens[1], 680909u);
  EXPECT_EQ(lens[2], 542298u);

  auto small = Chunk(data, kSmall);
  ASSERT_GE(small.size(), 4u);
  EXPECT_EQ(small[0], 8933u);
  EXPECT_EQ(small[1], 9230u);
  EXPECT_EQ(small[2], 11289u);
  EXPECT_EQ(small[3], 9130u);

  // And the same again: no hidden state between calls.
  EXPECT_EQ(Chunk(data, ChunkerParams{}), lens);
  EXPECT_EQ(Chunk(data, kSmall), small);
}

// The chunker as first written, one byte at a time, with its gear table generated the same way:
// the production loop is unrolled for speed and must cut at exactly the same places (the cuts
// are the identity of every stored large-file chunk).
size_t ReferenceChunkLength(std::span<const uint8_t> data, const ChunkerParams& p) {
  static const std::vector<uint64_t> gear = [] {
    std::vector<uint64_t> g(256);
    uint64_t state = 0x5374617368465331ULL;
    for (auto& v : g) {
      state += 0x9E3779B97F4A7C15ULL;
      uint64_t z = state;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
      v = z ^ (z >> 31);
    }
    return g;
  }();
  const size_t n = data.size();
  if (n <= p.min_size) return n;
  const int bits = std::countr_zero(p.avg_size);
  const uint64_t hard = ~uint64_t{0} << (64 - (bits + 2));
  const uint64_t easy = ~uint64_t{0} << (64 - (bits - 2));
  const size_t end = std::min(n, p.max_size);
  uint64_t fp = 0;
  for (size_t i = p.min_size; i < end; ++i) {
    fp = (fp << 1) + gear[data[i]];
    if ((fp & (i < std::min(end, p.avg_size) ? hard : easy)) == 0) return i + 1;
  }
  return end;
}

TEST(ChunkerTest, SameCutsAsTheByteAtATimeReference) {
  auto random = RandomBytes(3 << 20, 7);
  // Text-like bytes too (64 symbols), and a run of one byte value.
  std::vector<uint8_t> text(random.size());
  for (size_t i = 0; i < text.size(); ++i)
    text[i] = static_cast<uint8_t>('A' + random[i] % 64);
  std::vector<uint8_t> runs(1 << 20, 'x');
  for (const auto* d : {&random, &text, &runs}) {
    for (ChunkerParams p : {ChunkerParams{}, kSmall, ChunkerParams{1, 64, 1000},
                            ChunkerParams{5, 16, 37}, ChunkerParams{3, 8, 9}}) {
      // Every length and alignment near the loop's edges, then whole inputs cut end to end.
      for (size_t off = 0; off < 64; ++off) {
        for (size_t len = 0; len < 96 && off + len <= d->size(); ++len) {
          auto s = std::span<const uint8_t>(*d).subspan(off, len);
          ASSERT_EQ(NextChunkLength(s, p), ReferenceChunkLength(s, p)) << off << "+" << len;
        }
      }
      size_t pos = 0;
      while (pos < d->size()) {
        auto s = std::span<const uint8_t>(*d).subspan(pos);
        size_t n = NextChunkLength(s, p);
        ASSERT_EQ(n, ReferenceChunkLength(s, p)) << "at " << pos << " max " << p.max_size;
        pos += n;
      }
    }
  }
}

TEST(ChunkerTest, SizesRespectMinAndMax) {
  for (const ChunkerParams& p : {kSmall, ChunkerParams{}}) {
    auto data = RandomBytes(p.max_size * 12, 7);
    auto lens = Chunk(data, p);
    ASSERT_GE(lens.size(), 2u);
    size_t sum = 0;
    for (size_t i = 0; i < lens.size(); ++i) {
      sum += lens[i];
      EXPECT_LE(lens[i], p.max_size) << "chunk " << i;
      if (i + 1 < lens.size()) {
        EXPECT_GE(lens[i], p.min_size) << "chunk " << i;
      }
    }
    EXPECT_EQ(sum, data.size());
    // Normalised chunking keeps the mean near the target (min_size skipped + ~avg).
    double mean = static_cast<double>(data.size()) / static_cast<double>(lens.size());
    EXPECT_GT(mean, 0.75 * static_cast<double>(p.avg_size)) << "avg_size " << p.avg_size;
    EXPECT_LT(mean, 2.0 * static_cast<double>(p.avg_size)) << "avg_size " << p.avg_size;
  }
}

TEST(ChunkerTest, NoCutInUniformDataMeansMaxSizeChunks) {
  std::vector<uint8_t> zeros(3 * kSmall.max_size + 5, 0);
  EXPECT_EQ(Chunk(zeros, kSmall),
            (std::vector<size_t>{kSmall.max_size, kSmall.max_size, kSmall.max_size, 5}));
  // Given more than max_size bytes, one call never returns more than max_size.
  EXPECT_EQ(NextChunkLength(zeros, kSmall), kSmall.max_size);
}

TEST(ChunkerTest, TinyInputs) {
  std::vector<uint8_t> none;
  EXPECT_EQ(NextChunkLength(none, kSmall), 0u);
  EXPECT_EQ(NextChunkLength(none, ChunkerParams{}), 0u);
  auto data = RandomBytes(kSmall.min_size + 1, 3);
  std::span<const uint8_t> all(data);
  EXPECT_EQ(NextChunkLength(all.first(1), kSmall), 1u);
  EXPECT_EQ(NextChunkLength(all.first(100), kSmall), 100u);
  // Up to min_size bytes are always one chunk.
  EXPECT_EQ(NextChunkLength(all.first(kSmall.min_size), kSmall), kSmall.min_size);
  // One byte past min_size: either a cut right after it or the whole input.
  EXPECT_EQ(NextChunkLength(all, kSmall), kSmall.min_size + 1);
  // A file under min_size of the default parameters is one chunk.
  auto file = RandomBytes(100000, 4);
  EXPECT_EQ(Chunk(file, ChunkerParams{}), std::vector<size_t>{100000});
}

TEST(ChunkerTest, InsertionEarlyOnlyChangesNearbyChunks) {
  auto original = RandomBytes(4 << 20, 11);
  auto edited = original;
  auto extra = RandomBytes(100, 12);
  edited.insert(edited.begin() + 5000, extra.begin(), extra.end());
  size_t total = 0;
  size_t fresh = NewChunks(original, edited, kSmall, &total);
  EXPECT_GT(total, 400u);
  EXPECT_GE(fresh, 1u);  // the chunk holding the insertion is new
  EXPECT_LE(fresh, 2u) << "of " << total;

  // The cut points after the edit are the old ones shifted by the insertion.
  auto before = Chunk(original, kSmall), after = Chunk(edited, kSmall);
  std::set<size_t> old_cuts;
  size_t pos = 0;
  for (size_t n : before)
    old_cuts.insert(pos += n);
  pos = 0;
  size_t moved = 0;
  for (size_t n : after) {
    pos += n;
    if (pos > 5000 + kSmall.max_size && !old_cuts.count(pos - 100)) ++moved;
  }
  EXPECT_EQ(moved, 0u);
}

TEST(ChunkerTest, DeletionEarlyOnlyChangesNearbyChunks) {
  auto original = RandomBytes(4 << 20, 13);
  auto edited = original;
  edited.erase(edited.begin() + 3000, edited.begin() + 3100);
  size_t total = 0;
  size_t fresh = NewChunks(original, edited, kSmall, &total);
  EXPECT_GT(total, 400u);
  EXPECT_GE(fresh, 1u);
  EXPECT_LE(fresh, 2u) << "of " << total;

  // With the default sizes, a 16 MiB file edited near its start keeps all but its first chunks.
  auto big = RandomBytes(16 << 20, 14);
  auto big_edited = big;
  big_edited.erase(big_edited.begin() + 1000, big_edited.begin() + 1001);
  fresh = NewChunks(big, big_edited, ChunkerParams{}, &total);
  EXPECT_GE(total, 20u);
  EXPECT_LE(fresh, 2u) << "of " << total;
}

TEST(ChunkerTest, EditInTheMiddleKeepsChunksOnBothSides) {
  auto original = RandomBytes(2 << 20, 15);
  auto edited = original;
  edited[1 << 20] ^= 0xff;
  size_t total = 0;
  size_t fresh = NewChunks(original, edited, kSmall, &total);
  EXPECT_GE(fresh, 1u);
  EXPECT_LE(fresh, 2u) << "of " << total;
}

}  // namespace
}  // namespace stashfs
