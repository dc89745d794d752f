// Volume driven directly, without a FUSE mount: lazy loading, commits, hard links through the
// link table, rename flags, readdir cookies, and failure handling.
#include "fs/volume.h"

#include <gtest/gtest.h>
#include <linux/fs.h>

#include <map>
#include <set>

#include "fault_env.h"
#include "store_fixture.h"

namespace stashfs::test {
namespace {

using fs::Caller;
using fs::DirEntryOut;
using fs::kRootIno;
using fs::Volume;
using fs::VolumeOptions;

class VolumeTest : public StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    auto root = store().PutEmptyRoot(0, 0, 0755);
    ASSERT_TRUE(root.ok()) << root.status().message();
    auto v = store().CreateVolume("v", *root, false, "");
    ASSERT_TRUE(v.ok()) << v.status().message();
    info_ = *v;
    Open();
  }
  void TearDown() override {
    if (vol_) {
      EXPECT_OK(vol_->Shutdown());
    }
    vol_.reset();
  }

  // Opens the volume at its last committed root (as a fresh mount would).
  void Open() {
    auto fresh = store().FindVolume("v");
    ASSERT_TRUE(fresh.ok() && *fresh);
    info_ = **fresh;
    VolumeOptions o;
    o.commit_interval_s = 3600;  // tests commit explicitly
    auto v = Volume::Open(&store(), info_, o);
    ASSERT_TRUE(v.ok()) << v.status().message();
    vol_ = std::move(*v);
  }
  // Syncs, drops the Volume and opens the committed tree again.
  void Remount() {
    EXPECT_OK(vol_->Sync());
    EXPECT_OK(vol_->Shutdown());
    vol_.reset();
    Open();
  }

  uint64_t Ino(uint64_t parent, const std::string& name) {
    auto r = vol_->Lookup(parent, name);
    EXPECT_TRUE(r.ok()) << name << ": " << r.status().message();
    return r.ok() ? r->st_ino : 0;
  }
  // Walks a path of names from the root.
  uint64_t Path(const std::string& path) {
    uint64_t ino = kRootIno;
    size_t start = 0;
    while (start < path.size()) {
      size_t slash = path.find('/', start);
      if (slash == std::string::npos) slash = path.size();
      ino = Ino(ino, path.substr(start, slash - start));
      if (!ino) return 0;
      start = slash + 1;
    }
    return ino;
  }
  uint64_t Mkdir(uint64_t parent, const std::string& name) {
    auto r = vol_->MakeDir(parent, name, 0755, who_);
    EXPECT_TRUE(r.ok()) << r.status().message();
    return r.ok() ? r->st_ino : 0;
  }
  uint64_t Create(uint64_t parent, const std::string& name, const std::string& data) {
    auto r = vol_->MakeNode(parent, name, S_IFREG | 0644, 0, who_);
    EXPECT_TRUE(r.ok()) << r.status().message();
    if (!r.ok()) return 0;
    if (!data.empty()) {
      EXPECT_TRUE(vol_->Write(r->st_ino, 0, data.data(), data.size()).ok());
    }
    vol_->Release(r->st_ino);
    return r->st_ino;
  }
  std::string ReadAll(uint64_t ino) {
    auto st = vol_->GetAttr(ino);
    EXPECT_TRUE(st.ok());
    std::string out(static_cast<size_t>(st->st_size), '\0');
    auto n = vol_->Read(ino, 0, out.size(), out.data());
    if (!n.ok()) return "<error: " + n.status().message() + ">";
    out.resize(*n);
    return out;
  }
  std::vector<std::string> List(uint64_t dir, uint64_t offset = 0, size_t max = SIZE_MAX,
                                uint64_t* last_cookie = nullptr) {
    std::vector<std::string> names;
    EXPECT_OK(vol_->ReadDir(dir, offset, false, [&](const DirEntryOut& e) {
      if (names.size() >= max) return false;
      names.emplace_back(e.name);
      if (last_cookie) *last_cookie = e.cookie;
      return true;
    }));
    return names;
  }
  uint64_t ObjectCount() {
    auto s = store().Stats();
    EXPECT_TRUE(s.ok());
    return s.ok() ? s->objects : 0;
  }

  Caller who_{0, 0};
  VolumeInfo info_;
  std::unique_ptr<Volume> vol_;
};

TEST_F(VolumeTest, TreeSurvivesRemountWithAttributes) {
  uint64_t d = Mkdir(kRootIno, "dir");
  uint64_t f = Create(d, "file.txt", "hello world");
  fs::SetAttrRequest req;
  req.mode = 0600;
  req.mtime = Timespec{1234567890, 123456789};
  ASSERT_TRUE(vol_->SetAttr(f, req).ok());
  ASSERT_TRUE(vol_->MakeSymlink(d, "link", "file.txt", who_).ok());
  ASSERT_OK(vol_->SetXattr(f, "user.k", std::string("v\0x", 3), 0));
  Remount();
  uint64_t f2 = Path("dir/file.txt");
  EXPECT_EQ(ReadAll(f2), "hello world");
  auto st = vol_->GetAttr(f2);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->st_mode, S_IFREG | 0600);
  EXPECT_EQ(st->st_mtim.tv_sec, 1234567890);
  EXPECT_EQ(st->st_mtim.tv_nsec, 123456789);
  EXPECT_EQ(*vol_->ReadLink(Path("dir/link")), "file.txt");
  EXPECT_EQ(*vol_->GetXattr(f2, "user.k"), std::string("v\0x", 3));
  auto dst = vol_->GetAttr(Path("dir"));
  EXPECT_EQ(dst->st_nlink, 2u);
  EXPECT_EQ(vol_->GetAttr(kRootIno)->st_nlink, 3u);
}

TEST_F(VolumeTest, DirectoriesLoadLazilyAndUnchangedSubtreesKeepTheirHash) {
  for (const char* name : {"a", "b", "c"}) {
    uint64_t d = Mkdir(kRootIno, name);
    Create(d, "x", std::string(1000, name[0]));
  }
  Remount();
  Hash root_before = vol_->committed_root();
  // Nothing below the root is loaded until looked at. (The counters are the store's, which
  // outlives the remount: count from here.)
  const uint64_t loaded = vol_->counters().Get(Statistic::kDirectoriesLoaded);
  uint64_t b = Path("b");
  EXPECT_EQ(vol_->counters().Get(Statistic::kDirectoriesLoaded), loaded + 1);  // the root only
  // A commit with nothing changed keeps the root.
  ASSERT_OK(vol_->Sync());
  EXPECT_EQ(vol_->committed_root(), root_before);
  auto before = store().ReadRoot(root_before);
  Create(b, "y", "new");
  ASSERT_OK(vol_->Sync());
  EXPECT_NE(vol_->committed_root(), root_before);
  auto after = store().ReadRoot(vol_->committed_root());
  ASSERT_TRUE(before.ok() && after.ok());
  // "a" and "c" were never loaded, so their TREE objects are reused as they were.
  auto tree_of = [&](const Hash& tree, const std::string& name) {
    auto data = objects().Get(ObjectKind::kTree, tree);
    auto t = DecodeTree(data->bytes);
    for (const auto& e : t->entries)
      if (e.name == name) return e.tree;
    return Hash{};
  };
  EXPECT_EQ(tree_of(before->tree, "a"), tree_of(after->tree, "a"));
  EXPECT_EQ(tree_of(before->tree, "c"), tree_of(after->tree, "c"));
  EXPECT_NE(tree_of(before->tree, "b"), tree_of(after->tree, "b"));
  EXPECT_EQ(after->total_files, 4u);
  EXPECT_EQ(after->total_bytes, 3003u);
}

TEST_F(VolumeTest, HardLinkSeenThroughUnloadedDirectory) {
  uint64_t a = Mkdir(kRootIno, "a");
  uint64_t b = Mkdir(kRootIno, "b");
  uint64_t x = Create(a, "x", "version 1");
  auto l = vol_->Link(x, b, "y");
  ASSERT_TRUE(l.ok()) << l.status().message();
  EXPECT_EQ(l->st_nlink, 2u);
  Remount();
  // Change the file through b/y while a/ has not been loaded at all.
  uint64_t y = Path("b/y");
  std::string v2 = "version 2, longer";
  ASSERT_TRUE(vol_->Write(y, 0, v2.data(), v2.size()).ok());
  Remount();
  uint64_t x2 = Path("a/x");
  EXPECT_EQ(ReadAll(x2), v2);
  EXPECT_EQ(vol_->GetAttr(x2)->st_nlink, 2u);
  EXPECT_EQ(x2, Path("b/y"));  // one inode, two names
  // Unlink one name: the other keeps the data and the count drops, also after a remount.
  ASSERT_OK(vol_->Unlink(Path("a"), "x"));
  Remount();
  uint64_t y3 = Path("b/y");
  EXPECT_EQ(ReadAll(y3), v2);
  EXPECT_EQ(vol_->GetAttr(y3)->st_nlink, 1u);
  EXPECT_FALSE(vol_->Lookup(Path("a"), "x").ok());
}

TEST_F(VolumeTest, RenameFlags) {
  uint64_t d = Mkdir(kRootIno, "d");
  uint64_t e = Mkdir(kRootIno, "e");
  Create(d, "f", "F");
  Create(e, "g", "G");
  EXPECT_EQ(vol_->Rename(d, "f", e, "g", RENAME_NOREPLACE).errno_value(), EEXIST);
  ASSERT_OK(vol_->Rename(d, "f", e, "g", RENAME_EXCHANGE));
  EXPECT_EQ(ReadAll(Path("d/f")), "G");
  EXPECT_EQ(ReadAll(Path("e/g")), "F");
  EXPECT_EQ(vol_->Rename(d, "nope", e, "g", RENAME_EXCHANGE).errno_value(), ENOENT);
  // Moving a directory updates both parents' link counts.
  uint64_t sub = Mkdir(d, "sub");
  (void)sub;
  EXPECT_EQ(vol_->GetAttr(d)->st_nlink, 3u);
  ASSERT_OK(vol_->Rename(d, "sub", e, "sub", 0));
  EXPECT_EQ(vol_->GetAttr(d)->st_nlink, 2u);
  EXPECT_EQ(vol_->GetAttr(e)->st_nlink, 3u);
  // A directory over a non-empty directory is refused.
  Create(Path("e/sub"), "inner", "x");
  Mkdir(d, "sub2");
  EXPECT_EQ(vol_->Rename(d, "sub2", e, "sub", 0).errno_value(), ENOTEMPTY);
  Remount();
  EXPECT_EQ(ReadAll(Path("e/sub/inner")), "x");
  EXPECT_EQ(ReadAll(Path("d/f")), "G");
}

TEST_F(VolumeTest, ListingDoesNotReturnEntriesCreatedDuringIt) {
  uint64_t d = Mkdir(kRootIno, "d");
  for (int i = 0; i < 50; ++i)
    Create(d, "old" + std::to_string(i), "");
  Remount();
  d = Path("d");
  uint64_t cookie = 0;
  auto first = List(d, 0, 20, &cookie);
  ASSERT_EQ(first.size(), 20u);
  for (int i = 0; i < 10; ++i)
    Create(d, "new" + std::to_string(i), "");
  ASSERT_OK(vol_->Unlink(d, first.back() == "old49" ? "old48" : "old49"));
  auto rest = List(d, cookie);
  std::set<std::string> seen(first.begin(), first.end());
  for (const auto& n : rest) {
    EXPECT_TRUE(seen.insert(n).second) << n << " returned twice";
    EXPECT_EQ(n.rfind("new", 0), std::string::npos) << n << " was created during the listing";
  }
  EXPECT_EQ(seen.size(), 2u + 49u);  // ".", ".." and the 49 old names left
  // A new listing sees everything.
  EXPECT_EQ(List(d).size(), 2u + 49u + 10u);
}

TEST_F(VolumeTest, UnlinkedOpenFileStaysReadableUntilForgotten) {
  uint64_t f = Create(kRootIno, "f", "still here");
  auto looked = vol_->Lookup(kRootIno, "f");  // the kernel holds one more reference
  ASSERT_TRUE(looked.ok());
  ASSERT_OK(vol_->Unlink(kRootIno, "f"));
  EXPECT_EQ(ReadAll(f), "still here");
  EXPECT_EQ(vol_->GetAttr(f)->st_nlink, 0u);
  vol_->Forget(f, 2);
  EXPECT_EQ(vol_->GetAttr(f).status().errno_value(), ENOENT);
}

TEST_F(VolumeTest, CopyFileRangeSharesChunks) {
  std::string big(3 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i)
    big[i] = static_cast<char>((i * 2654435761u) >> 13);
  uint64_t src = Create(kRootIno, "src", big);
  ASSERT_OK(vol_->Sync());
  uint64_t objects_before = ObjectCount();
  uint64_t dst = Create(kRootIno, "dst", "");
  auto n = vol_->CopyFileRange(src, 0, dst, 0, big.size());
  ASSERT_TRUE(n.ok()) << n.status().message();
  EXPECT_EQ(*n, big.size());
  ASSERT_OK(vol_->Sync());
  // Only the directory's new TREE and ROOT (and the old ones until gc) are new objects.
  EXPECT_LE(ObjectCount(), objects_before + 4);
  Remount();
  EXPECT_EQ(ReadAll(Path("dst")), big);
  // A partial copy is left to the kernel's generic copy.
  EXPECT_EQ(vol_->CopyFileRange(Path("src"), 10, Path("dst"), 0, 100).status().errno_value(),
            EOPNOTSUPP);
}

TEST_F(VolumeTest, SparseFileStoresNoHoles) {
  uint64_t f = Create(kRootIno, "sparse", "");
  std::string tail = "end";
  uint64_t off = (5ull << 30) + 7;  // past 4 GiB
  ASSERT_TRUE(vol_->Write(f, off, tail.data(), tail.size()).ok());
  uint64_t before = ObjectCount();
  Remount();
  f = Path("sparse");
  EXPECT_EQ(static_cast<uint64_t>(vol_->GetAttr(f)->st_size), off + tail.size());
  char buf[16];
  auto n = vol_->Read(f, off - 5, sizeof buf, buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(buf, *n), std::string(5, '\0') + "end");
  EXPECT_LE(ObjectCount(), before + 6);  // a few chunks and metadata, not 5 GiB of zeros
}

TEST_F(VolumeTest, FailedCommitIsRetriedWithEverything) {
  // Reopen the store on an Env whose disk is full, then let space come back.
  vol_->Shutdown();
  vol_.reset();
  FaultEnv env;
  ReopenStore(&env);
  Open();
  uint64_t d = Mkdir(kRootIno, "d");
  Create(d, "f", std::string(200000, 'q'));
  env.FailWritesAfter(0);
  Status st = vol_->Sync();
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.errno_value(), ENOSPC) << st.message();
  env.ClearFaults();
  ASSERT_OK(vol_->Sync());
  Remount();
  EXPECT_EQ(ReadAll(Path("d/f")), std::string(200000, 'q'));
  // The store must not outlive the Env it writes through.
  EXPECT_OK(vol_->Shutdown());
  vol_.reset();
  ReopenStore();
}

TEST_F(VolumeTest, NamesAreValidated) {
  EXPECT_EQ(vol_->MakeDir(kRootIno, std::string(256, 'n'), 0755, who_).status().errno_value(),
            ENAMETOOLONG);
  EXPECT_EQ(vol_->Lookup(kRootIno, std::string(256, 'n')).status().errno_value(), ENAMETOOLONG);
  EXPECT_TRUE(vol_->MakeDir(kRootIno, std::string(255, 'n'), 0755, who_).ok());
  EXPECT_EQ(vol_->MakeDir(kRootIno, std::string(255, 'n'), 0755, who_).status().errno_value(),
            EEXIST);
}

}  // namespace
}  // namespace stashfs::test
