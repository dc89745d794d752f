// The store under a full disk, failing syncs and crashes, through FaultEnv.
#include <fcntl.h>
#include <gtest/gtest.h>

#include "fault_env.h"
#include "store/pack.h"
#include "store/store.h"
#include "store_fixture.h"
#include "test_util.h"

namespace stashfs {
namespace {

using test::RandomBytes;
using test::Str;

constexpr ObjectKind kChunk = ObjectKind::kChunk;

struct Obj {
  Hash hash;
  std::vector<uint8_t> data;
};

// `small` objects of 2000 bytes (sharing blocks) and `large` of 100 KB (a block each).
std::vector<Obj> Batch(int small, int large, uint64_t seed) {
  std::vector<Obj> out;
  for (int i = 0; i < small + large; ++i) {
    auto d = RandomBytes(i < small ? 2000 : 100000, seed * 1000 + static_cast<uint64_t>(i));
    out.push_back({Hash::Of(d), std::move(d)});
  }
  return out;
}

class StoreFaultTest : public test::StoreTest {
 protected:
  void SetUp() override { OpenStore(&env_); }

  // Puts every object; returns the statuses.
  std::vector<Status> PutAll(const std::vector<Obj>& objs) {
    std::vector<Status> out;
    for (const auto& o : objs)
      out.push_back(objects().Put(kChunk, o.data).status());
    return out;
  }
  void ExpectReadable(const std::vector<Obj>& objs, const char* what) {
    for (size_t i = 0; i < objs.size(); ++i)
      EXPECT_TRUE(Holds(kChunk, objs[i].hash, objs[i].data)) << what << " #" << i;
  }
  void ExpectAbsent(const std::vector<Obj>& objs, const char* what) {
    for (size_t i = 0; i < objs.size(); ++i) {
      auto has = objects().Has(kChunk, objs[i].hash);
      ASSERT_TRUE(has.ok()) << has.status().message();
      EXPECT_FALSE(*has) << what << " #" << i;
      EXPECT_CODE(objects().Get(kChunk, objs[i].hash), Code::kNotFound);
    }
  }

  // Every pack file is at least as long as the catalog says, every block lies inside its pack,
  // and every catalogued object reads back with the right hash.
  void ExpectConsistent() {
    for (const auto& row : db().Rows("SELECT id, size FROM packs")) {
      std::string path = PackPath(packs_dir(), row[0]);
      auto size = Env::Default()->FileSize(path);
      ASSERT_TRUE(size.ok()) << "pack " << row[0] << " in the catalog but not on disk";
      EXPECT_GE(static_cast<int64_t>(*size), row[1]) << path;
      std::vector<uint8_t> header;
      if (*size >= kPackHeaderSize) {
        auto f = Env::Default()->Open(path, O_RDONLY);
        ASSERT_TRUE(f.ok());
        header.resize(kPackHeaderSize);
        size_t got = 0;
        ASSERT_OK((*f)->pread(0, header.data(), header.size(), &got));
      }
      EXPECT_OK(CheckPackHeader(header));
    }
    for (const auto& row :
         db().Rows("SELECT pack_id, offset + header_len + stored_len FROM blocks")) {
      auto size = Env::Default()->FileSize(PackPath(packs_dir(), row[0]));
      ASSERT_TRUE(size.ok()) << "block in missing pack " << row[0];
      EXPECT_GE(static_cast<int64_t>(*size), row[1]) << "block past the end of pack " << row[0];
    }
    for (const auto& row : db().TextRows("SELECT hex(hash), kind FROM objects")) {
      auto h = Hash::FromHex(row[0]);
      ASSERT_TRUE(h.ok());
      auto kind = static_cast<ObjectKind>(std::stoi(row[1]));
      auto d = objects().Get(kind, *h);
      EXPECT_TRUE(d.ok()) << KindName(kind) << " " << row[0] << ": " << d.status().message();
    }
  }

  test::FaultEnv& env_ = fault_env();
};

TEST_F(StoreFaultTest, DiskFullFailsPutsWithEnospcAndKeepsTheStoreConsistent) {
  auto before = Batch(40, 3, 1);
  PutAll(before);
  Flush();
  env_.FailWritesAfter(30000);
  auto during = Batch(200, 3, 2);
  auto puts = PutAll(during);
  Status flush = objects().Flush();

  int failed = 0;
  for (const Status& st : puts) {
    if (st.ok()) continue;
    ++failed;
    EXPECT_EQ(st.errno_value(), ENOSPC) << st.message();
  }
  EXPECT_GE(failed, 1);
  EXPECT_FALSE(flush.ok());
  EXPECT_EQ(flush.errno_value(), ENOSPC) << flush.message();
  EXPECT_GT(env_.failed_writes(), 0);
  ExpectReadable(before, "flushed before the disk filled");

  // Closing on a full disk fails to flush, and must not damage anything.
  store_.reset();
  OpenStore(Env::Default());
  ExpectConsistent();
  ExpectReadable(before, "flushed before the disk filled, after reopening");
  EXPECT_EQ(db().Count("objects"), static_cast<int64_t>(before.size()));
}

TEST_F(StoreFaultTest, AfterSpaceIsFreedEveryAcceptedPutIsStored) {
  auto before = Batch(40, 3, 1);
  PutAll(before);
  Flush();
  env_.FailWritesAfter(30000);
  auto during = Batch(200, 3, 2);
  auto puts = PutAll(during);
  EXPECT_FALSE(objects().Flush().ok());
  // While the disk is full, accepted objects can be read back (they are staged).
  for (size_t i = 0; i < during.size(); ++i) {
    if (puts[i].ok()) {
      EXPECT_TRUE(Holds(kChunk, during[i].hash, during[i].data)) << i;
    }
  }

  env_.ClearFaults();
  ASSERT_OK(objects().Flush());
  ReopenStore(Env::Default());
  ExpectConsistent();
  ExpectReadable(before, "flushed before the disk filled");
  int accepted = 0;
  for (size_t i = 0; i < during.size(); ++i) {
    if (!puts[i].ok()) continue;
    ++accepted;
    EXPECT_TRUE(Holds(kChunk, during[i].hash, during[i].data)) << "accepted put #" << i;
  }
  EXPECT_GT(accepted, 100);
}

TEST_F(StoreFaultTest, DiskFullOnAFreshStoreLeavesNoBrokenPack) {
  env_.FailWritesAfter(0);  // not even a pack header fits
  auto objs = Batch(0, 2, 3);
  auto puts = PutAll(objs);
  for (const Status& st : puts)
    EXPECT_EQ(st.errno_value(), ENOSPC) << st.message();
  EXPECT_EQ(objects().Flush().errno_value(), ENOSPC);
  store_.reset();
  OpenStore(Env::Default());
  ExpectConsistent();
  EXPECT_EQ(db().Count("objects"), 0);
  // And the store works once there is space.
  auto later = Batch(5, 2, 4);
  PutAll(later);
  Flush();
  ReopenStore(Env::Default());
  ExpectConsistent();
  ExpectReadable(later, "written after the disk had space");
}

TEST_F(StoreFaultTest, FailedSyncFailsFlushAndCataloguesNothingUntilRetried) {
  auto first = Batch(3, 1, 5);
  PutAll(first);
  Flush();  // creates the pack
  const int64_t catalogued = db().Count("objects");
  auto objs = Batch(20, 3, 6);
  for (const Status& st : PutAll(objs))
    EXPECT_OK(st);
  env_.FailSyncs(EIO);
  Status st = objects().Flush();
  EXPECT_EQ(st.errno_value(), EIO) << st.message();
  EXPECT_GT(env_.failed_syncs(), 0);
  // Data that may not be durable is not catalogued.
  EXPECT_EQ(db().Count("objects"), catalogued);
  env_.ClearFaults();
  ASSERT_OK(objects().Flush());
  EXPECT_EQ(db().Count("objects"), catalogued + static_cast<int64_t>(objs.size()));
  ReopenStore(Env::Default());
  ExpectConsistent();
  ExpectReadable(objs, "flushed after a failed sync");
}

// In a child process: opens the store through a FaultEnv, puts and flushes `flushed`, puts
// `unflushed` (optionally trying to flush it while syncs fail), then "loses power": drops
// every unsynced byte and exits without closing anything.
int CrashingWriter(const std::string& dir, const std::vector<Obj>& flushed,
                   const std::vector<Obj>& unflushed, bool failing_flush, uint64_t pack_target) {
  // Leaked on purpose: returning must not run the Store's destructor (which would flush and
  // unregister); a crash runs no code at all.
  auto& env = *new test::FaultEnv();
  StoreOptions opts;
  opts.dir = dir;
  opts.env = &env;
  if (pack_target) opts.objects.pack_target = pack_target;
  auto s = Store::Open(opts);
  if (!s.ok()) return 10;
  Store* store = std::move(s).value().release();
  if (!store->RegisterWriter("/crashing").ok()) return 11;
  ObjectStore& objs = store->objects();
  for (const auto& o : flushed)
    if (!objs.Put(kChunk, o.data).ok()) return 12;
  if (!objs.Flush().ok()) return 13;
  for (const auto& o : unflushed)
    if (!objs.Put(kChunk, o.data).ok()) return 14;
  if (failing_flush) {
    env.FailSyncs(EIO);
    if (objs.Flush().ok()) return 15;
  }
  if (env.UnsyncedBytes() == 0) return 16;  // the test would prove nothing
  auto dropped = env.DropUnsyncedData();
  if (!dropped.ok() || *dropped == 0) return 17;
  return 0;  // _exit(): no destructors, no Close(), no unregistering
}

class StoreCrashTest : public StoreFaultTest {
 protected:
  // `pack_target`: small packs, so several are sealed (and must be synced) before a Flush.
  void RunCrash(bool failing_flush, uint64_t pack_target = 0) {
    // No SQLite connection may be open across fork().
    store_.reset();
    db_.reset();
    auto flushed = Batch(30, 3, 7);
    auto unflushed = Batch(30, 3, 8);
    int code = test::RunInChild(
        [&] { return CrashingWriter(dir(), flushed, unflushed, failing_flush, pack_target); });
    ASSERT_EQ(code, 0) << "the crashing writer failed at step " << code;

    OpenStore(Env::Default());
    // The dead writer was reaped when we registered: only our registration and pins remain.
    EXPECT_EQ(db().Count("mounts"), 1);
    EXPECT_EQ(db().Int("SELECT count(*) FROM pins WHERE mount_id != ?", {writer_id_}), 0);
    ExpectConsistent();
    ExpectReadable(flushed, "flushed before the crash");
    ExpectAbsent(unflushed, "not flushed before the crash");
    EXPECT_EQ(db().Count("objects"), static_cast<int64_t>(flushed.size()));
    // The store goes on working: the lost objects can be stored again.
    PutAll(unflushed);
    Flush();
    ReopenStore(Env::Default());
    ExpectConsistent();
    ExpectReadable(unflushed, "stored again after the crash");
  }
};

TEST_F(StoreCrashTest, CrashKeepsFlushedObjectsAndForgetsTheRest) {
  RunCrash(false);
}

TEST_F(StoreCrashTest, CrashAfterAFailedFlushKeepsOnlyWhatWasFlushed) {
  RunCrash(true);
}

TEST_F(StoreCrashTest, PacksSealedBetweenFlushesAreSyncedByTheFlush) {
  // Packs of ~150 KB: the flushed batch fills several, each sealed without a sync of its own.
  RunCrash(false, 150000);
  EXPECT_GE(db().Count("packs"), 3);
}

}  // namespace
}  // namespace stashfs
