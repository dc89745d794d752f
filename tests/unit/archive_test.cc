// export/import without a mount: a snapshot file round-trips between stores, a full disk during
// export leaves nothing behind, and a damaged or unwanted file changes nothing on import.
#include "store/archive.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "store_fixture.h"
#include "test_util.h"

namespace stashfs {
namespace {

using test::RandomBytes;

class ArchiveTest : public test::StoreTest {
 protected:
  // A snapshot "pip-1": two files, one of them 300 KB of random bytes (its own block).
  SnapshotInfo MakeSnapshot() {
    big_ = RandomBytes(300000, 11);
    big_hash_ = Put(ObjectKind::kChunk, big_);
    Hash small = PutChunk("small file");
    Hash tree = PutTree(
        Tree{{FileEntry("big.whl", {{big_hash_, 300000}}), FileEntry("small", {{small, 10}})}});
    Hash root = PutRoot(tree, 300010, 2);
    Flush();
    auto s = store().CreateSnapshot("pip-1", root, false);
    EXPECT_OK(s.status());
    return s.ok() ? *s : SnapshotInfo{};
  }

  // A second, empty store with a writer, as on another machine.
  std::unique_ptr<Store> OtherStore() {
    StoreOptions opts;
    opts.dir = tmp_.Sub("other");
    auto s = Store::Open(opts);
    EXPECT_OK(s.status());
    EXPECT_OK((*s)->RegisterWriter("/other").status());
    return std::move(s).value();
  }

  std::string file() const { return tmp_.Sub("pip-1.stash"); }
  std::vector<uint8_t> big_;
  Hash big_hash_;
};

TEST_F(ArchiveTest, ExportThenImportElsewhereGivesTheSameSnapshot) {
  SnapshotInfo snap = MakeSnapshot();
  ASSERT_OK_AND_ASSIGN(ArchiveInfo out, ExportSnapshot(store(), snap, file(), nullptr));
  EXPECT_EQ(out.objects, 4u);  // root, tree, two chunks
  EXPECT_EQ(out.file_bytes, std::filesystem::file_size(file()));
  EXPECT_FALSE(std::filesystem::exists(ExportTempPath(file())));

  auto other = OtherStore();
  uint64_t last_done = 0;
  ASSERT_OK_AND_ASSIGN(
      ArchiveInfo in, ImportSnapshot(*other, file(), "", [&](uint64_t d, auto) { last_done = d; }));
  EXPECT_EQ(in.key, "pip-1");
  EXPECT_EQ(in.root, snap.root);
  EXPECT_EQ(in.new_objects, out.objects);
  EXPECT_GT(last_done, 0u);
  ASSERT_OK_AND_ASSIGN(auto found, other->FindSnapshot("pip-1"));
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->root, snap.root);
  EXPECT_EQ(found->logical_bytes, 300010u);
  ASSERT_OK_AND_ASSIGN(ObjectData d, other->objects().Get(ObjectKind::kChunk, big_hash_));
  EXPECT_TRUE(std::equal(d.bytes.begin(), d.bytes.end(), big_.begin(), big_.end()));

  // Under another key, the objects are all there already: nothing new is stored.
  ASSERT_OK_AND_ASSIGN(ArchiveInfo again, ImportSnapshot(*other, file(), "pip-2", nullptr));
  EXPECT_EQ(again.new_objects, 0u);
}

TEST_F(ArchiveTest, AFullDiskDuringExportLeavesNoFileBehind) {
  ReopenStore(&fault_env());
  SnapshotInfo snap = MakeSnapshot();
  fault_env().FailWritesAfter(1000);
  auto r = ExportSnapshot(store(), snap, file(), nullptr);
  EXPECT_CODE(r.status(), Code::kIOError);
  EXPECT_EQ(r.status().errno_value(), ENOSPC);
  fault_env().ClearFaults();
  EXPECT_FALSE(std::filesystem::exists(file()));
  EXPECT_FALSE(std::filesystem::exists(ExportTempPath(file())));
  // The store is unharmed and the next export works.
  ASSERT_OK(ExportSnapshot(store(), snap, file(), nullptr).status());
}

TEST_F(ArchiveTest, AFailedSyncFailsTheExport) {
  ReopenStore(&fault_env());
  SnapshotInfo snap = MakeSnapshot();
  fault_env().FailSyncs(EIO);
  EXPECT_CODE(ExportSnapshot(store(), snap, file(), nullptr).status(), Code::kIOError);
  fault_env().ClearFaults();
  EXPECT_FALSE(std::filesystem::exists(file()));
}

TEST_F(ArchiveTest, DamagedFilesAreRefusedAndChangeNothing) {
  SnapshotInfo snap = MakeSnapshot();
  ASSERT_OK(ExportSnapshot(store(), snap, file(), nullptr).status());
  uint64_t size = std::filesystem::file_size(file());
  auto other = OtherStore();
  ASSERT_OK_AND_ASSIGN(StoreStats before, other->Stats());

  std::string cut = tmp_.Sub("cut.stash");
  std::filesystem::copy_file(file(), cut);
  ASSERT_EQ(::truncate(cut.c_str(), static_cast<off_t>(size / 2)), 0);
  EXPECT_CODE(ImportSnapshot(*other, cut, "", nullptr).status(), Code::kCorruption);

  std::string flipped = tmp_.Sub("flipped.stash");
  std::filesystem::copy_file(file(), flipped);
  {
    test::FaultEnv env;
    ASSERT_OK_AND_ASSIGN(auto f, env.Open(flipped, O_RDWR, 0600));
    uint8_t b = 0;
    size_t got = 0;
    ASSERT_OK(f->pread(size / 2, &b, 1, &got));
    b ^= 0x40;
    ASSERT_OK(f->pwrite(size / 2, &b, 1));
  }
  EXPECT_CODE(ImportSnapshot(*other, flipped, "", nullptr).status(), Code::kCorruption);

  EXPECT_CODE(ImportSnapshot(*other, tmp_.Sub("missing.stash"), "", nullptr).status(),
              Code::kIOError);

  ASSERT_OK_AND_ASSIGN(auto snaps, other->ListSnapshots());
  EXPECT_TRUE(snaps.empty());
  ASSERT_OK_AND_ASSIGN(StoreStats after, other->Stats());
  EXPECT_EQ(after.objects, before.objects);
}

TEST_F(ArchiveTest, ATakenKeyIsRefusedAndStoresNothing) {
  SnapshotInfo snap = MakeSnapshot();
  ASSERT_OK(ExportSnapshot(store(), snap, file(), nullptr).status());
  auto other = OtherStore();
  Hash other_root = [&] {
    auto tree = other->objects().Put(ObjectKind::kTree, EncodeTree(Tree{}));
    RootRecord r;
    r.attrs.mode = 0755;
    r.tree = *tree;
    auto root = other->objects().Put(ObjectKind::kRoot, EncodeRoot(r));
    EXPECT_OK(other->objects().Flush());
    return *root;
  }();
  ASSERT_OK(other->CreateSnapshot("pip-1", other_root, false).status());
  ASSERT_OK_AND_ASSIGN(StoreStats before, other->Stats());
  EXPECT_CODE(ImportSnapshot(*other, file(), "", nullptr).status(), Code::kAlreadyExists);
  ASSERT_OK_AND_ASSIGN(auto kept, other->FindSnapshot("pip-1"));
  EXPECT_EQ(kept->root, other_root);
  ASSERT_OK_AND_ASSIGN(StoreStats after, other->Stats());
  EXPECT_EQ(after.objects, before.objects);
}

}  // namespace
}  // namespace stashfs
