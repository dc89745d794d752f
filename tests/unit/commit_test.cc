// TreeCommit: the store's commit protocol (store/commit.h).
#include "store/commit.h"

#include <gtest/gtest.h>

#include "store_fixture.h"
#include "test_util.h"

namespace stashfs {
namespace {

constexpr ObjectKind kChunk = ObjectKind::kChunk;
constexpr ObjectKind kTree = ObjectKind::kTree;
constexpr ObjectKind kRoot = ObjectKind::kRoot;

class TreeCommitTest : public test::StoreTest {
 protected:
  // The encoded objects of a tree holding one file made of `chunk`.
  struct NewTree {
    EncodedObject tree, root;
  };
  static NewTree Encode(const Hash& chunk, uint64_t size, const std::string& name = "f") {
    Tree t{{FileEntry(name, {{chunk, size}})}};
    std::vector<uint8_t> tree = EncodeTree(t);
    RootRecord r;
    r.attrs.mode = 0755;
    r.tree = Hash::Of(tree);
    r.total_bytes = size;
    r.total_files = 1;
    std::vector<uint8_t> root = EncodeRoot(r);
    return {{kTree, Hash::Of(tree), std::move(tree)}, {kRoot, Hash::Of(root), std::move(root)}};
  }
  static void AddAll(TreeCommit& c, const NewTree& t) {
    c.Add(t.tree);
    c.Add(t.root);
  }
  VolumeInfo EmptyVolume() {
    auto root = store().PutEmptyRoot(0, 0, 0755);
    EXPECT_TRUE(root.ok());
    Flush();
    auto v = store().CreateVolume("v", *root, false, "");
    EXPECT_TRUE(v.ok()) << v.status().message();
    return *v;
  }
  Hash RootOf(const VolumeInfo& v) {
    auto now = store().FindVolumeById(v.id);
    EXPECT_TRUE(now.ok());
    return now.ok() ? now->root : Hash{};
  }
};

TEST_F(TreeCommitTest, MovesTheRootAndReleasesPinsUpToTheCut) {
  VolumeInfo v = EmptyVolume();
  Hash x = PutChunk("written before the snapshot");
  Flush();
  EXPECT_EQ(db().PinGen(writer_id_, kChunk, x), 1);
  TreeCommit commit(&store(), v.id);
  EXPECT_EQ(commit.cut(), 1u);
  // A flusher stores another file while the tree is encoded: that is for the next commit.
  Hash y = PutChunk("written after the snapshot");
  NewTree t = Encode(x, 27);
  AddAll(commit, t);
  bool hook_ran = false;
  ASSERT_OK(commit.Commit(v.root, t.root.hash, false, [&] {
    hook_ran = true;
    // The objects are catalogued before the root moves.
    EXPECT_FALSE(Location(kRoot, t.root.hash).empty());
    EXPECT_EQ(RootOf(v), v.root);
    return Status::Ok();
  }));
  EXPECT_TRUE(hook_ran);
  EXPECT_EQ(RootOf(v), t.root.hash);
  EXPECT_EQ(db().Refs(kRoot, t.root.hash), 1);
  EXPECT_EQ(db().Refs(kTree, t.tree.hash), 1);
  EXPECT_EQ(db().Refs(kChunk, x), 1);
  EXPECT_EQ(db().Refs(kRoot, v.root), 0);
  EXPECT_EQ(db().PinGen(writer_id_, kChunk, x), -1);  // referenced now: released
  EXPECT_EQ(db().PinGen(writer_id_, kChunk, y), 2);   // after the cut: kept
}

TEST_F(TreeCommitTest, NothingNewOnlyReleasesPins) {
  VolumeInfo v = EmptyVolume();
  Hash x = PutChunk("x");
  Flush();
  TreeCommit commit(&store(), v.id);
  ASSERT_OK(commit.Commit(v.root, v.root, /*durable=*/true));
  EXPECT_EQ(RootOf(v), v.root);
  EXPECT_EQ(db().PinGen(writer_id_, kChunk, x), -1);
}

TEST_F(TreeCommitTest, ACommitRacingAnotherMoveFailsAndChangesNothing) {
  VolumeInfo v = EmptyVolume();
  Hash a = PutChunk("another process's file");
  NewTree theirs = Encode(a, 22, "theirs");
  Put(kTree, theirs.tree.bytes);
  Put(kRoot, theirs.root.bytes);
  Flush();
  // Another process moves the volume while this one encodes.
  TreeCommit commit(&store(), v.id);
  ASSERT_OK(store().CommitVolume(v.id, v.root, theirs.root.hash, 0));
  Hash x = PutChunk("ours");
  Flush();
  NewTree ours = Encode(x, 4);
  AddAll(commit, ours);
  EXPECT_CODE(commit.Commit(v.root, ours.root.hash, false), Code::kCorruption);
  EXPECT_EQ(RootOf(v), theirs.root.hash);
  EXPECT_EQ(db().Refs(kRoot, theirs.root.hash), 1);
  EXPECT_EQ(db().Refs(kRoot, ours.root.hash), 0);
  EXPECT_EQ(db().Refs(kChunk, x), 0);
  // Nothing was released: our objects stay pinned for gc.
  EXPECT_EQ(db().PinGen(writer_id_, kChunk, x), 2);
  EXPECT_GT(db().PinGen(writer_id_, kRoot, ours.root.hash), 0);
}

TEST_F(TreeCommitTest, AFailedFlushKeepsTheOldRootAndTheRetrySucceeds) {
  ReopenStore(&fault_env());
  VolumeInfo v = EmptyVolume();
  Hash x = PutChunk(std::string(100000, 'x'));
  NewTree t = Encode(x, 100000);
  {
    TreeCommit commit(&store(), v.id);
    AddAll(commit, t);
    fault_env().FailSyncs();
    bool hook_ran = false;
    Status st = commit.Commit(v.root, t.root.hash, false, [&] {
      hook_ran = true;
      return Status::Ok();
    });
    EXPECT_FALSE(st.ok());
    EXPECT_FALSE(hook_ran);  // nothing after a failed step runs
  }
  EXPECT_EQ(RootOf(v), v.root);
  EXPECT_EQ(db().Refs(kRoot, t.root.hash), -1);  // not even catalogued
  fault_env().ClearFaults();
  // The retry gets every object again, as a Volume re-encodes what it encoded.
  TreeCommit retry(&store(), v.id);
  AddAll(retry, t);
  ASSERT_OK(retry.Commit(v.root, t.root.hash, false));
  EXPECT_EQ(RootOf(v), t.root.hash);
  EXPECT_EQ(db().Refs(kChunk, x), 1);
  EXPECT_EQ(db().PinGen(writer_id_, kChunk, x), -1);
  EXPECT_TRUE(Holds(kChunk, x, test::Span(std::string(100000, 'x'))));
  // The store must not outlive the Env it writes through.
  ReopenStore();
}

}  // namespace
}  // namespace stashfs
