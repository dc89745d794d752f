// gc, prune and fsck on a store without a mount: the rules users rely on, checked next to the
// code (the e2e suites check the same commands on real mounts). The store's clock is a FaultEnv
// here, so ages are set, not waited for.
#include "store/maintenance.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "store_fixture.h"
#include "test_util.h"

namespace stashfs {
namespace {

using test::RandomBytes;
constexpr int64_t kDay = 86400;
constexpr int64_t kT0 = 1'800'000'000;  // 2027-01-15

class MaintenanceTest : public test::StoreTest {
 protected:
  void SetUp() override {
    fault_env().SetNow(kT0);
    // A pack per block, so the data a snapshot alone holds is packs of its own: evicting it
    // frees them whole, with no compaction threshold in the way.
    object_options_.pack_target = 1;
    OpenStore(&fault_env());
  }
  // The writer that stored the snapshots goes, as a mount does at unmount: its pins with it.
  void EndWriter() { ReopenStore(&fault_env()); }
  // A snapshot holding one file of `bytes` random bytes, created (and last used) now.
  void Snapshot(const std::string& key, size_t bytes, uint64_t seed) {
    Hash chunk = Put(ObjectKind::kChunk, RandomBytes(bytes, seed));
    Hash tree = PutTree(Tree{{FileEntry("f", {{chunk, static_cast<uint32_t>(bytes)}})}});
    Hash root = PutRoot(tree, bytes, 1);
    Flush();
    ASSERT_OK(store().CreateSnapshot(key, root, false).status());
  }
  SnapshotInfo Find(const std::string& key) {
    auto s = store().FindSnapshot(key);
    EXPECT_TRUE(s.ok() && s->has_value()) << key;
    return s.ok() && s->has_value() ? **s : SnapshotInfo{};
  }
  std::vector<std::string> Keys() {
    std::vector<std::string> keys;
    auto snaps = store().ListSnapshots();
    EXPECT_OK(snaps.status());
    if (snaps.ok())
      for (const auto& s : *snaps)
        keys.push_back(s.key);
    std::sort(keys.begin(), keys.end());
    return keys;
  }
};

TEST_F(MaintenanceTest, PruneByAgeEvictsWhatWasUnusedLongerThanMaxAge) {
  Snapshot("old", 200000, 1);
  fault_env().SetNow(kT0 + 10 * kDay);
  Snapshot("new", 200000, 2);
  fault_env().SetNow(kT0 + 15 * kDay);
  EndWriter();

  PruneOptions dry;
  dry.max_age = 14 * kDay;
  dry.dry_run = true;
  ASSERT_OK_AND_ASSIGN(PruneReport would, Prune(store(), dry));
  ASSERT_EQ(would.evicted.size(), 1u);
  EXPECT_EQ(would.evicted[0].name, "old");
  EXPECT_EQ(would.evicted[0].reason, "age");
  EXPECT_EQ(Keys(), (std::vector<std::string>{"new", "old"})) << "a dry run evicted";

  PruneOptions o;
  o.max_age = 14 * kDay;
  ASSERT_OK_AND_ASSIGN(PruneReport done, Prune(store(), o));
  ASSERT_EQ(done.evicted.size(), 1u);
  EXPECT_EQ(Keys(), std::vector<std::string>{"new"});
  EXPECT_LT(done.disk_bytes_after + 150000, done.disk_bytes_before);  // its data went with it
}

TEST_F(MaintenanceTest, UsingASnapshotKeepsItFromAgeing) {
  Snapshot("used", 1000, 3);
  fault_env().SetNow(kT0 + 13 * kDay);
  ASSERT_OK(store().TouchSnapshot(Find("used").id));  // a mount restored it
  fault_env().SetNow(kT0 + 20 * kDay);
  EndWriter();
  PruneOptions o;
  o.max_age = 14 * kDay;
  ASSERT_OK_AND_ASSIGN(PruneReport r, Prune(store(), o));
  EXPECT_TRUE(r.evicted.empty());
  EXPECT_EQ(Keys(), std::vector<std::string>{"used"});
}

TEST_F(MaintenanceTest, PruneBySizeEvictsLeastRecentlyUsedFirstAndKeepsWhatItIsTold) {
  Snapshot("a", 300000, 4);
  fault_env().SetNow(kT0 + 1);
  Snapshot("b", 300000, 5);
  fault_env().SetNow(kT0 + 2);
  Snapshot("c", 300000, 6);
  EndWriter();
  ASSERT_OK_AND_ASSIGN(uint64_t size, DiskUsage(store()));
  PruneOptions o;
  o.max_size = size - 200000;  // one snapshot must go
  o.keep = {"a"};              // the oldest, but a save just made it
  ASSERT_OK_AND_ASSIGN(PruneReport r, Prune(store(), o));
  ASSERT_EQ(r.evicted.size(), 1u);
  EXPECT_EQ(r.evicted[0].name, "b");
  EXPECT_EQ(r.evicted[0].reason, "size");
  EXPECT_LE(r.disk_bytes_after, o.max_size);
}

TEST_F(MaintenanceTest, GcDryRunChangesNothingAndGcFreesWhatNothingReferences) {
  Snapshot("kept", 100000, 7);
  Snapshot("dropped", 400000, 8);
  ASSERT_OK(store().DeleteSnapshot(Find("dropped").id));
  EndWriter();
  ASSERT_OK_AND_ASSIGN(StoreStats before, store().Stats());

  GcOptions dry;
  dry.dry_run = true;
  ASSERT_OK_AND_ASSIGN(GcReport would, CollectGarbage(store(), dry));
  EXPECT_EQ(would.objects_deleted, 3u);  // root, tree, chunk
  ASSERT_OK_AND_ASSIGN(StoreStats same, store().Stats());
  EXPECT_EQ(same.objects, before.objects);
  EXPECT_EQ(same.stored_bytes, before.stored_bytes);

  ASSERT_OK_AND_ASSIGN(GcReport r, CollectGarbage(store(), GcOptions{}));
  EXPECT_EQ(r.objects_deleted, 3u);
  EXPECT_GE(r.object_bytes_deleted, 400000u);
  EXPECT_LT(r.disk_bytes_after + 350000, r.disk_bytes_before);  // its pack was deleted
  // As the dry run said, give or take the catalog's own pages.
  EXPECT_NEAR(static_cast<double>(r.disk_bytes_after), static_cast<double>(would.disk_bytes_after),
              64 * 1024);
  ASSERT_OK_AND_ASSIGN(StoreStats after, store().Stats());
  EXPECT_EQ(after.objects, before.objects - 3);
  // What is kept still reads back.
  FsckOptions f;
  ASSERT_OK_AND_ASSIGN(FsckReport check, Fsck(store(), f));
  EXPECT_TRUE(check.clean()) << check.problems.front();
}

TEST_F(MaintenanceTest, FsckFindsFlippedBytesAndRepairIsolatesThem) {
  Snapshot("pip", 300000, 9);
  store_.reset();  // close the writer's pack before damaging it
  std::string pack;
  for (auto& e : std::filesystem::recursive_directory_iterator(packs_dir()))
    if (e.is_regular_file() && e.file_size() > 300000) pack = e.path();
  ASSERT_FALSE(pack.empty());
  {
    ASSERT_OK_AND_ASSIGN(auto f, Env::Default()->Open(pack, O_RDWR));
    uint8_t b = 0;
    size_t got = 0;
    ASSERT_OK(f->pread(200000, &b, 1, &got));
    b ^= 0x10;
    ASSERT_OK(f->pwrite(200000, &b, 1));
  }
  OpenStore(&fault_env());
  ASSERT_OK_AND_ASSIGN(FsckReport found, Fsck(store(), FsckOptions{}));
  EXPECT_FALSE(found.clean());
  EXPECT_EQ(found.damaged_objects, 1u);
  EXPECT_FALSE(found.repaired);
  FsckOptions repair;
  repair.repair = true;
  ASSERT_OK_AND_ASSIGN(FsckReport fixed, Fsck(store(), repair));
  EXPECT_TRUE(fixed.repaired);
  EXPECT_EQ(fixed.damaged_snapshots, std::vector<std::string>{"snapshot 'pip'"});
  EXPECT_TRUE(Find("pip").damaged);
}

}  // namespace
}  // namespace stashfs
