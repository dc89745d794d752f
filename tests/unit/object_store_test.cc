// ObjectStore through a real Store: put, get, dedup, blocks, verification of stored bytes.
#include "store/object_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <thread>

#include "store/log.h"
#include "store_fixture.h"
#include "test_util.h"

namespace stashfs {
namespace {

using test::CompressibleBytes;
using test::RandomBytes;
using test::Str;

class ObjectStoreTest : public test::StoreTest {
 protected:
  // Flips one byte of a pack file on disk.
  void FlipByte(int64_t pack_id, uint64_t offset) {
    std::string path = PackPath(packs_dir(), pack_id);
    int fd = ::open(path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0) << path;
    uint8_t b = 0;
    ASSERT_EQ(::pread(fd, &b, 1, static_cast<off_t>(offset)), 1);
    b ^= 0x40;
    ASSERT_EQ(::pwrite(fd, &b, 1, static_cast<off_t>(offset)), 1);
    ::close(fd);
  }
};

TEST_F(ObjectStoreTest, SmallObjectRoundTrip) {
  const std::string data = "hello, stash";
  Hash h = PutChunk(data);
  EXPECT_EQ(h, Hash::Of(std::string_view(data)));
  EXPECT_EQ(Read(ObjectKind::kChunk, h), data);  // staged in the open block
  EXPECT_EQ(db().Count("objects"), 0);
  Flush();
  EXPECT_EQ(db().Count("objects"), 1);
  EXPECT_EQ(Read(ObjectKind::kChunk, h), data);  // from the pack, through the block cache
  ReopenStore();
  EXPECT_EQ(Read(ObjectKind::kChunk, h), data);  // from disk
  ASSERT_OK_AND_ASSIGN(bool has, objects().Has(ObjectKind::kChunk, h));
  EXPECT_TRUE(has);
}

TEST_F(ObjectStoreTest, LargeObjectRoundTrip) {
  auto raw = RandomBytes(300000, 1);          // stored raw
  auto text = CompressibleBytes(1 << 20, 2);  // stored compressed
  Hash hr = Put(ObjectKind::kChunk, raw);
  Hash ht = Put(ObjectKind::kChunk, text);
  // Large objects are written to the pack at once but catalogued only by Flush.
  EXPECT_TRUE(Holds(ObjectKind::kChunk, hr, raw));
  EXPECT_TRUE(Holds(ObjectKind::kChunk, ht, text));
  ASSERT_OK_AND_ASSIGN(bool has, objects().Has(ObjectKind::kChunk, hr));
  EXPECT_TRUE(has);
  EXPECT_EQ(db().Count("objects"), 0);
  Flush();
  EXPECT_EQ(db().Count("objects"), 2);
  EXPECT_TRUE(Holds(ObjectKind::kChunk, hr, raw));
  ReopenStore();
  EXPECT_TRUE(Holds(ObjectKind::kChunk, hr, raw));
  EXPECT_TRUE(Holds(ObjectKind::kChunk, ht, text));
  auto lr = Location(ObjectKind::kChunk, hr), lt = Location(ObjectKind::kChunk, ht);
  ASSERT_EQ(lr.size(), 6u);
  ASSERT_EQ(lt.size(), 6u);
  EXPECT_EQ(lr[5], static_cast<int64_t>(Codec::kRaw));
  EXPECT_EQ(lt[5], static_cast<int64_t>(Codec::kZstd));
  ASSERT_OK_AND_ASSIGN(StoreStats st, store().Stats());
  EXPECT_EQ(st.objects, 2u);
  EXPECT_EQ(st.blocks, 2u);
  EXPECT_EQ(st.chunks, 2u);
  EXPECT_EQ(st.unique_bytes, raw.size() + text.size());
  EXPECT_LT(st.stored_bytes, raw.size() + text.size() / 2);  // the text compressed
}

TEST_F(ObjectStoreTest, EmptyObject) {
  Hash h = Put(ObjectKind::kChunk, {});
  EXPECT_EQ(h, Hash::Of(std::string_view("")));
  Flush();
  ReopenStore();
  EXPECT_EQ(Read(ObjectKind::kChunk, h), "");
}

TEST_F(ObjectStoreTest, MissingObjectIsNotFound) {
  Hash h = PutChunk("x");
  Flush();
  auto r = objects().Get(ObjectKind::kChunk, Hash::Of(std::string_view("y")));
  EXPECT_CODE(r, Code::kNotFound);
  // The kind is part of an object's identity.
  EXPECT_CODE(objects().Get(ObjectKind::kTree, h), Code::kNotFound);
  ASSERT_OK_AND_ASSIGN(bool has, objects().Has(ObjectKind::kTree, h));
  EXPECT_FALSE(has);
}

TEST_F(ObjectStoreTest, IdenticalPutsAreStoredOnce) {
  auto big = RandomBytes(100000, 3);
  for (int i = 0; i < 3; ++i) {
    PutChunk("same small bytes");
    Put(ObjectKind::kChunk, big);
  }
  auto& c = objects().counters();
  EXPECT_EQ(c.Get(Statistic::kPuts), 6u);
  EXPECT_EQ(c.Get(Statistic::kNewObjects), 2u);
  EXPECT_EQ(c.Get(Statistic::kDedupHits), 4u);
  EXPECT_EQ(c.Get(Statistic::kNewRawBytes), big.size() + 16);
  Flush();
  // After the flush, the same puts find the catalogued (and already pinned) objects.
  PutChunk("same small bytes");
  Put(ObjectKind::kChunk, big);
  EXPECT_EQ(c.Get(Statistic::kNewObjects), 2u);
  EXPECT_EQ(c.Get(Statistic::kDedupHits), 6u);
  Flush();
  ASSERT_OK_AND_ASSIGN(StoreStats st, store().Stats());
  EXPECT_EQ(st.objects, 2u);
  EXPECT_EQ(st.blocks, 2u);
  EXPECT_EQ(st.object_bytes, big.size() + 16);

  // A later writer finds them in the catalog: nothing new is stored.
  ReopenStore();
  PutChunk("same small bytes");
  Put(ObjectKind::kChunk, big);
  EXPECT_EQ(objects().counters().Get(Statistic::kNewObjects), 0u);
  EXPECT_EQ(objects().counters().Get(Statistic::kDedupHits), 2u);
  Flush();
  EXPECT_EQ(db().Count("objects"), 2);
  EXPECT_EQ(db().Count("blocks"), 2);
  // The same bytes as another kind are another object.
  PutTree(Tree{});
  Put(ObjectKind::kChunk, EncodeTree(Tree{}));
  Flush();
  EXPECT_EQ(db().Count("objects"), 4);
}

TEST_F(ObjectStoreTest, SmallObjectsShareBlocks) {
  std::vector<Hash> hs;
  for (int i = 0; i < 300; ++i)
    hs.push_back(Put(ObjectKind::kChunk, RandomBytes(1000, 100 + i)));
  Flush();
  ASSERT_OK_AND_ASSIGN(StoreStats st, store().Stats());
  EXPECT_EQ(st.objects, 300u);
  // 263 objects fill the first 256 KiB block; the rest go in a second one at the flush.
  EXPECT_EQ(st.blocks, 2u);
  EXPECT_EQ(st.packs, 1u);
  EXPECT_EQ(db().Int("SELECT count(*) FROM objects WHERE block_id=(SELECT min(id) FROM blocks)"),
            263);
  ReopenStore();
  for (int i = 0; i < 300; i += 37)
    EXPECT_TRUE(Holds(ObjectKind::kChunk, hs[i], RandomBytes(1000, 100 + i))) << i;
}

TEST_F(ObjectStoreTest, PackSizesAgreeWithDisk) {
  for (int i = 0; i < 20; ++i)
    Put(ObjectKind::kChunk, RandomBytes(50000 + i, 200 + i));
  Flush();
  int64_t pack = db().Int("SELECT id FROM packs");
  EXPECT_EQ(db().Int("SELECT state FROM packs"), 0);  // open: this writer appends to it
  EXPECT_EQ(db().Int("SELECT writer FROM packs"), writer_id_);
  ASSERT_OK_AND_ASSIGN(uint64_t on_disk, Env::Default()->FileSize(PackPath(packs_dir(), pack)));
  EXPECT_EQ(db().Int("SELECT size FROM packs"), static_cast<int64_t>(on_disk));
  // Blocks are contiguous after the pack header.
  EXPECT_EQ(db().Int("SELECT min(offset) FROM blocks"), static_cast<int64_t>(kPackHeaderSize));
  EXPECT_EQ(db().Int("SELECT max(offset + header_len + stored_len) FROM blocks"),
            static_cast<int64_t>(on_disk));
  ASSERT_OK(store().UnregisterWriter());
  EXPECT_EQ(db().Int("SELECT state FROM packs"), 1);  // sealed
  EXPECT_EQ(db().Int("SELECT writer IS NULL FROM packs"), 1);
  EXPECT_EQ(db().Count("mounts"), 0);
}

// A pack is written once and read rarely: what was written back leaves the page cache a
// window behind the writer, so a big ingest reuses a few MiB of page cache instead of
// allocating a fresh page for every stored byte.
TEST_F(ObjectStoreTest, WrittenPackDataLeavesThePageCache) {
  struct statfs fs {};
  ASSERT_EQ(::statfs(dir().c_str(), &fs), 0);
  if (fs.f_type == TMPFS_MAGIC) GTEST_SKIP() << "tmpfs pages cannot be dropped";
  std::vector<Hash> hs;
  for (int i = 0; i < 16; ++i)
    hs.push_back(Put(ObjectKind::kChunk, RandomBytes(1 << 20, 400 + i)));
  Flush();
  std::string path = PackPath(packs_dir(), db().Int("SELECT id FROM packs"));
  int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0) << path;
  const size_t window = 4 << 20;  // the first writeback window, dropped once the next began
  void* map = ::mmap(nullptr, window, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  ASSERT_NE(map, MAP_FAILED);
  std::vector<unsigned char> resident(window / static_cast<size_t>(::sysconf(_SC_PAGESIZE)));
  ASSERT_EQ(::mincore(map, window, resident.data()), 0);
  ::munmap(map, window);
  EXPECT_EQ(std::count_if(resident.begin(), resident.end(), [](unsigned char r) { return r & 1; }),
            0);
  for (int i = 0; i < 16; i += 5)
    EXPECT_TRUE(Holds(ObjectKind::kChunk, hs[i], RandomBytes(1 << 20, 400 + i))) << i;
}

TEST_F(ObjectStoreTest, PacksRollOverAtTarget) {
  object_options_.pack_target = 200000;
  ReopenStore();
  std::vector<Hash> hs;
  for (int i = 0; i < 10; ++i)
    hs.push_back(Put(ObjectKind::kChunk, RandomBytes(90000, 300 + i)));
  Flush();
  // Two 90 KB blocks fill a pack past 180 KB, the third crosses 200 KB; then a new pack.
  EXPECT_EQ(db().Count("packs"), 4);
  EXPECT_EQ(db().Int("SELECT count(*) FROM packs WHERE state=1"), 3);
  ReopenStore();
  for (int i = 0; i < 10; ++i)
    EXPECT_TRUE(Holds(ObjectKind::kChunk, hs[i], RandomBytes(90000, 300 + i))) << i;
  EXPECT_EQ(db().Int("SELECT count(*) FROM packs WHERE state=1"), 4);
}

TEST_F(ObjectStoreTest, AStrayPackFileDoesNotBlockWrites) {
  // A pack file whose catalog row was lost (a power cut after the file was synced but before
  // the WAL was) holds the id the catalog hands out next; no block refers to it.
  Hash first = Put(ObjectKind::kChunk, RandomBytes(70000, 7));
  ReopenStore();
  EXPECT_EQ(db().Int("SELECT max(id) FROM packs"), 1);
  std::string stray = PackPath(packs_dir(), 2);
  ASSERT_OK(Env::Default()->MakeDirs(stray.substr(0, stray.find_last_of('/')), 0700));
  ASSERT_OK(WriteFileAtomic(Env::Default(), stray, "leftover bytes", 0600));
  auto big = RandomBytes(70000, 8);
  Hash h = Put(ObjectKind::kChunk, big);
  Flush();
  ReopenStore();
  EXPECT_TRUE(Holds(ObjectKind::kChunk, h, big));
  EXPECT_TRUE(Holds(ObjectKind::kChunk, first, RandomBytes(70000, 7)));
}

TEST_F(ObjectStoreTest, ReadOnlyStoreRefusesPuts) {
  ReopenStore(Env::Default(), /*writer=*/false);
  auto r = objects().Put(ObjectKind::kChunk, test::Span("x"));
  EXPECT_CODE(r, Code::kUnsupported);
  EXPECT_OK(objects().Flush());
}

TEST_F(ObjectStoreTest, DamagedObjectInSharedBlockIsCorruption) {
  // Random small objects share one raw (incompressible) block.
  std::vector<std::vector<uint8_t>> data;
  std::vector<Hash> hs;
  for (int i = 0; i < 10; ++i) {
    data.push_back(RandomBytes(1000, 400 + i));
    hs.push_back(Put(ObjectKind::kChunk, data.back()));
  }
  Flush();
  auto loc = Location(ObjectKind::kChunk, hs[5]);
  ASSERT_EQ(loc.size(), 6u);
  ASSERT_EQ(loc[5], static_cast<int64_t>(Codec::kRaw));
  ReopenStore();
  FlipByte(loc[0], static_cast<uint64_t>(loc[1] + loc[2] + loc[3] + 17));

  // A mount serving the read answers EIO; the log is where its user learns what to do.
  std::vector<std::string> logged;
  ScopedLogSink capture([&](LogLevel level, std::string_view m) {
    if (level == LogLevel::kError) logged.emplace_back(m);
  });
  auto r = objects().Get(ObjectKind::kChunk, hs[5]);
  EXPECT_CODE(r, Code::kCorruption);
  EXPECT_NE(r.status().message().find(hs[5].hex()), std::string::npos) << r.status().message();
  ASSERT_EQ(logged.size(), 1u);
  EXPECT_EQ(logged[0], r.status().message());
  EXPECT_NE(logged[0].find("stashfs fsck --repair"), std::string::npos) << logged[0];
  EXPECT_EQ(objects().counters().Get(Statistic::kCorruptObjects), 1u);
  // Still damaged when asked again (the block is cached, the check is not skipped).
  EXPECT_CODE(objects().Get(ObjectKind::kChunk, hs[5]), Code::kCorruption);
  EXPECT_EQ(objects().counters().Get(Statistic::kCorruptObjects), 2u);
  // Its neighbours in the block are fine.
  EXPECT_TRUE(Holds(ObjectKind::kChunk, hs[4], data[4]));
  EXPECT_TRUE(Holds(ObjectKind::kChunk, hs[6], data[6]));
}

TEST_F(ObjectStoreTest, DamagedCompressedBlockIsCorruption) {
  auto text = CompressibleBytes(500000, 5);
  Hash h = Put(ObjectKind::kChunk, text);
  Flush();
  auto loc = Location(ObjectKind::kChunk, h);
  ASSERT_EQ(loc.size(), 6u);
  ASSERT_EQ(loc[5], static_cast<int64_t>(Codec::kZstd));
  int64_t stored = db().Int("SELECT stored_len FROM blocks");
  ReopenStore();
  uint64_t payload = static_cast<uint64_t>(loc[1] + loc[2]);
  // Whatever byte is damaged, the object is never returned with wrong bytes.
  for (int64_t at : {int64_t{0}, int64_t{5}, stored / 3, stored / 2, stored - 5, stored - 1}) {
    FlipByte(loc[0], payload + static_cast<uint64_t>(at));
    objects().ForgetPack(loc[0]);
    auto r = objects().Get(ObjectKind::kChunk, h);
    EXPECT_CODE(r, Code::kCorruption) << "byte " << at << " of " << stored;
    FlipByte(loc[0], payload + static_cast<uint64_t>(at));  // repair
    objects().ForgetPack(loc[0]);
    EXPECT_TRUE(Holds(ObjectKind::kChunk, h, text)) << "after repairing byte " << at;
  }
}

TEST_F(ObjectStoreTest, MissingOrTruncatedPackIsAnError) {
  auto data = RandomBytes(100000, 6);
  Hash h = Put(ObjectKind::kChunk, data);
  Hash small = PutChunk("small");
  Flush();
  int64_t pack = db().Int("SELECT id FROM packs");
  ReopenStore();
  std::string path = PackPath(packs_dir(), pack);
  // Cut the pack inside the large block (written first, before the small one's block).
  ASSERT_EQ(::truncate(path.c_str(), 1000), 0);
  auto r = objects().Get(ObjectKind::kChunk, h);
  EXPECT_CODE(r, Code::kCorruption);
  ReopenStore();
  ASSERT_EQ(::unlink(path.c_str()), 0);
  r = objects().Get(ObjectKind::kChunk, h);
  EXPECT_FALSE(r.ok());
  EXPECT_CODE(r, Code::kIOError);
  EXPECT_EQ(r.status().errno_value(), ENOENT);
  EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status().message();
  EXPECT_CODE(objects().Get(ObjectKind::kChunk, small), Code::kIOError);
}

TEST_F(ObjectStoreTest, VerifyBlockReportsDamagedObjects) {
  std::vector<Hash> hs;
  for (int i = 0; i < 4; ++i)
    hs.push_back(Put(ObjectKind::kChunk, RandomBytes(500, 500 + i)));
  Flush();
  auto rows =
      db().Rows("SELECT pack_id, offset, header_len, stored_len, raw_len, codec FROM blocks");
  ASSERT_EQ(rows.size(), 1u);
  BlockLocation loc{rows[0][0],
                    static_cast<uint64_t>(rows[0][1]),
                    static_cast<uint32_t>(rows[0][2]),
                    static_cast<uint32_t>(rows[0][3]),
                    static_cast<uint32_t>(rows[0][4]),
                    static_cast<Codec>(rows[0][5])};
  std::vector<BlockEntry> entries;
  for (int i = 0; i < 4; ++i) {
    auto l = Location(ObjectKind::kChunk, hs[i]);
    entries.push_back(
        {ObjectKind::kChunk, static_cast<uint32_t>(l[3]), static_cast<uint32_t>(l[4]), hs[i]});
  }
  auto ok = objects().VerifyBlock(loc, entries);
  EXPECT_OK(ok.status);
  EXPECT_TRUE(ok.bad.empty());
  FlipByte(loc.pack_id, loc.offset + loc.header_len + entries[2].offset);
  auto bad = objects().VerifyBlock(loc, entries);
  EXPECT_OK(bad.status);
  ASSERT_EQ(bad.bad.size(), 1u);
  EXPECT_EQ(bad.bad[0].hash, hs[2]);
}

TEST_F(ObjectStoreTest, ConcurrentPutsFromManyThreads) {
  constexpr int kThreads = 4, kPerThread = 150;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        // Half of each thread's objects are shared with every other thread.
        uint64_t seed = i % 2 ? 1000 + i : 2000 + t * kPerThread + i;
        size_t size = i % 10 == 0 ? 70000 : 3000;
        if (!objects().Put(ObjectKind::kChunk, RandomBytes(size, seed)).ok()) ++failures;
        if (i % 50 == 49 && !objects().Flush().ok()) ++failures;
      }
    });
  }
  for (auto& th : threads)
    th.join();
  EXPECT_EQ(failures.load(), 0);
  Flush();
  const int64_t distinct = kPerThread / 2 + kThreads * kPerThread / 2;
  EXPECT_EQ(db().Count("objects"), distinct);
  // (Two threads may both stage a shared object while neither copy is catalogued yet.)
  EXPECT_GE(objects().counters().Get(Statistic::kNewObjects), static_cast<uint64_t>(distinct));
  ReopenStore();
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; i += 7) {
      uint64_t seed = i % 2 ? 1000 + i : 2000 + t * kPerThread + i;
      size_t size = i % 10 == 0 ? 70000 : 3000;
      auto want = RandomBytes(size, seed);
      EXPECT_TRUE(Holds(ObjectKind::kChunk, Hash::Of(want), want));
    }
  }
}

// A large object has a block of its own. A sequential reader that has copied it drops that
// block from the cache; a block of small objects, which other files share, stays.
TEST_F(ObjectStoreTest, DropIfAloneDropsOnlyABlockOfOneObject) {
  auto big = CompressibleBytes(600 * 1024, 1);
  auto small = RandomBytes(3000, 2);
  auto other = RandomBytes(3000, 3);
  Hash hb = Put(ObjectKind::kChunk, big);
  Hash hs = Put(ObjectKind::kChunk, small);
  Hash ho = Put(ObjectKind::kChunk, other);
  Flush();
  ReopenStore();
  auto& c = objects().counters();
  ASSERT_TRUE(Holds(ObjectKind::kChunk, hb, big));
  ASSERT_TRUE(Holds(ObjectKind::kChunk, hs, small));
  const uint64_t loaded = c.Get(Statistic::kBlocksRead);
  EXPECT_EQ(loaded, 2u);
  objects().DropIfAlone(ObjectKind::kChunk, hb);
  objects().DropIfAlone(ObjectKind::kChunk, hs);
  ASSERT_TRUE(Holds(ObjectKind::kChunk, hs, small));
  ASSERT_TRUE(Holds(ObjectKind::kChunk, ho, other));  // the same block: still cached
  EXPECT_EQ(c.Get(Statistic::kBlocksRead), loaded);
  ASSERT_TRUE(Holds(ObjectKind::kChunk, hb, big));  // read again from its pack
  EXPECT_EQ(c.Get(Statistic::kBlocksRead), loaded + 1);
}

// Blocks of one large object each get a bounded share of the block cache, so reading a big
// file does not fill it; blocks of small objects read before keep their place.
TEST_F(ObjectStoreTest, BlocksOfOneObjectTakeABoundedShareOfTheCache) {
  auto small = RandomBytes(3000, 7);
  Hash hs = Put(ObjectKind::kChunk, small);
  Put(ObjectKind::kChunk, RandomBytes(3000, 8));  // shares the block: a block of small objects
  std::vector<std::vector<uint8_t>> bigs;
  std::vector<Hash> hashes;
  for (int i = 0; i < 24; ++i) {  // 24 blocks of 1 MiB buffers: beyond the 16 MiB share
    bigs.push_back(RandomBytes(700 * 1024, 100 + i));
    hashes.push_back(Put(ObjectKind::kChunk, bigs.back()));
  }
  Flush();
  ReopenStore();
  auto& c = objects().counters();
  ASSERT_TRUE(Holds(ObjectKind::kChunk, hs, small));
  for (size_t i = 0; i < hashes.size(); ++i)
    ASSERT_TRUE(Holds(ObjectKind::kChunk, hashes[i], bigs[i])) << i;
  uint64_t loaded = c.Get(Statistic::kBlocksRead);
  ASSERT_TRUE(Holds(ObjectKind::kChunk, hashes.back(), bigs.back()));  // recent: cached
  ASSERT_TRUE(Holds(ObjectKind::kChunk, hs, small));                   // small: still cached
  EXPECT_EQ(c.Get(Statistic::kBlocksRead), loaded);
  ASSERT_TRUE(Holds(ObjectKind::kChunk, hashes.front(), bigs.front()));  // evicted early
  EXPECT_EQ(c.Get(Statistic::kBlocksRead), loaded + 1);
}

}  // namespace
}  // namespace stashfs
