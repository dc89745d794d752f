// Store: volumes, snapshots, exact reference counts, pins, writers and their liveness.
#include "store/store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "store_fixture.h"
#include "test_util.h"

namespace stashfs {
namespace {

constexpr ObjectKind kChunk = ObjectKind::kChunk;
constexpr ObjectKind kList = ObjectKind::kList;
constexpr ObjectKind kTree = ObjectKind::kTree;
constexpr ObjectKind kRoot = ObjectKind::kRoot;
constexpr ObjectKind kLinks = ObjectKind::kLinks;

class StoreRefsTest : public test::StoreTest {
 protected:
  // root -> top {big: list(c2, c3), dir: sub {f: c1}}
  struct Graph {
    Hash c1, c2, c3, list, sub, top, root;
  };
  Graph BuildGraph() {
    Graph g;
    g.c1 = PutChunk("chunk one");
    g.c2 = PutChunk("chunk two");
    g.c3 = PutChunk("chunk three");
    g.list = PutList({{g.c2, 9}, {g.c3, 11}});
    g.sub = PutTree(Tree{{FileEntry("f", {{g.c1, 9}})}});
    g.top = PutTree(Tree{{ListFileEntry("big", 20, g.list), DirEntry("dir", g.sub)}});
    g.root = PutRoot(g.top, 29, 2);
    Flush();
    return g;
  }
  std::vector<std::pair<ObjectKind, Hash>> All(const Graph& g) {
    return {{kChunk, g.c1}, {kChunk, g.c2}, {kChunk, g.c3}, {kList, g.list},
            {kTree, g.sub}, {kTree, g.top}, {kRoot, g.root}};
  }
  void ExpectRefs(const std::vector<std::pair<ObjectKind, Hash>>& objs, int64_t want,
                  const char* when) {
    for (const auto& [kind, h] : objs)
      EXPECT_EQ(db().Refs(kind, h), want) << KindName(kind) << " " << h.short_hex() << " " << when;
  }

  // Two roots sharing the subtree `sub` (with chunk c1); each has one file of its own.
  struct TwoRoots {
    Hash c1, sub, c4, top_a, root_a, c5, top_b, root_b;
  };
  TwoRoots BuildTwoRoots() {
    TwoRoots t;
    t.c1 = PutChunk("shared chunk");
    t.sub = PutTree(Tree{{FileEntry("shared", {{t.c1, 12}})}});
    t.c4 = PutChunk("only in A");
    t.top_a = PutTree(Tree{{FileEntry("a_only", {{t.c4, 9}}), DirEntry("dir", t.sub)}});
    t.root_a = PutRoot(t.top_a, 100, 2);
    t.c5 = PutChunk("only in B");
    t.top_b = PutTree(Tree{{FileEntry("b_only", {{t.c5, 9}}), DirEntry("dir", t.sub)}});
    t.root_b = PutRoot(t.top_b, 200, 3);
    Flush();
    return t;
  }
};

TEST_F(StoreRefsTest, VolumesReferenceEveryReachableObjectOnce) {
  Graph g = BuildGraph();
  ExpectRefs(All(g), 0, "before any volume");
  ASSERT_OK_AND_ASSIGN(VolumeInfo v1, store().CreateVolume("v1", g.root, false, ""));
  EXPECT_EQ(v1.name, "v1");
  EXPECT_EQ(v1.root, g.root);
  ExpectRefs(All(g), 1, "with one volume");

  ASSERT_OK_AND_ASSIGN(VolumeInfo v2, store().CreateVolume("v2", g.root, true, "some-key"));
  EXPECT_TRUE(v2.ephemeral);
  EXPECT_EQ(v2.source, "some-key");
  EXPECT_EQ(db().Refs(kRoot, g.root), 2);
  ExpectRefs({{kChunk, g.c1},
              {kChunk, g.c2},
              {kChunk, g.c3},
              {kList, g.list},
              {kTree, g.sub},
              {kTree, g.top}},
             1, "with two volumes on one root");

  EXPECT_CODE(store().CreateVolume("v1", g.root, false, ""), Code::kAlreadyExists);
  EXPECT_EQ(db().Refs(kRoot, g.root), 2);

  ASSERT_OK(store().DeleteVolume(v1.id));
  EXPECT_EQ(db().Refs(kRoot, g.root), 1);
  EXPECT_EQ(db().Refs(kChunk, g.c1), 1);
  ASSERT_OK(store().DeleteVolume(v2.id));
  ExpectRefs(All(g), 0, "after deleting both volumes");
  EXPECT_CODE(store().DeleteVolume(v2.id), Code::kNotFound);
  ExpectRefs(All(g), 0, "after deleting a volume twice");
  ASSERT_OK_AND_ASSIGN(StoreStats st, store().Stats());
  EXPECT_EQ(st.unreferenced_objects, 7u);
  EXPECT_EQ(st.volumes, 0u);
}

TEST_F(StoreRefsTest, VolumesAreFoundAndListed) {
  Graph g = BuildGraph();
  ASSERT_OK_AND_ASSIGN(VolumeInfo b, store().CreateVolume("b", g.root, false, ""));
  ASSERT_OK_AND_ASSIGN(VolumeInfo a, store().CreateVolume("a", g.root, false, "key"));
  ASSERT_OK_AND_ASSIGN(auto found, store().FindVolume("a"));
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->id, a.id);
  EXPECT_EQ(found->source, "key");
  ASSERT_OK_AND_ASSIGN(auto none, store().FindVolume("c"));
  EXPECT_FALSE(none.has_value());
  ASSERT_OK_AND_ASSIGN(VolumeInfo by_id, store().FindVolumeById(b.id));
  EXPECT_EQ(by_id.name, "b");
  EXPECT_EQ(by_id.source, "");
  EXPECT_CODE(store().FindVolumeById(12345), Code::kNotFound);
  ASSERT_OK_AND_ASSIGN(auto all, store().ListVolumes());
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].name, "a");
  EXPECT_EQ(all[1].name, "b");
}

TEST_F(StoreRefsTest, VolumeOnMissingObjectsIsRefused) {
  Hash nowhere = Hash::Of(std::string_view("never stored"));
  EXPECT_CODE(store().CreateVolume("v", nowhere, false, ""), Code::kCorruption);
  // A root whose tree refers to a chunk that was never stored.
  Hash top = PutTree(Tree{{FileEntry("f", {{nowhere, 5}})}});
  Hash root = PutRoot(top);
  Flush();
  auto r = store().CreateVolume("v", root, false, "");
  EXPECT_CODE(r, Code::kCorruption);
  EXPECT_NE(r.status().message().find(nowhere.hex()), std::string::npos) << r.status().message();
  // Nothing of the failed transaction remains.
  ASSERT_OK_AND_ASSIGN(auto vols, store().ListVolumes());
  EXPECT_TRUE(vols.empty());
  EXPECT_EQ(db().Refs(kRoot, root), 0);
  EXPECT_EQ(db().Refs(kTree, top), 0);
}

TEST_F(StoreRefsTest, CommitKeepsSharedSubtreesAndDropsTheRest) {
  TwoRoots t = BuildTwoRoots();
  ASSERT_OK_AND_ASSIGN(VolumeInfo v, store().CreateVolume("v", t.root_a, false, ""));
  EXPECT_EQ(db().Refs(kTree, t.sub), 1);
  uint64_t upto = objects().CutGeneration();
  ASSERT_OK(store().CommitVolume(v.id, t.root_a, t.root_b, upto));
  ExpectRefs({{kTree, t.sub}, {kChunk, t.c1}, {kRoot, t.root_b}, {kTree, t.top_b}, {kChunk, t.c5}},
             1, "after commit to B");
  ExpectRefs({{kRoot, t.root_a}, {kTree, t.top_a}, {kChunk, t.c4}}, 0, "after commit to B");
  ASSERT_OK_AND_ASSIGN(VolumeInfo now, store().FindVolumeById(v.id));
  EXPECT_EQ(now.root, t.root_b);

  // A commit from a root the volume no longer has (another process moved it) is refused and
  // changes nothing.
  EXPECT_CODE(store().CommitVolume(v.id, t.root_a, t.root_b, upto), Code::kCorruption);
  EXPECT_EQ(db().Refs(kRoot, t.root_b), 1);
  Hash root_c = PutRoot(t.top_a, 5, 1);
  Flush();
  EXPECT_CODE(store().CommitVolume(v.id, t.root_a, root_c, upto), Code::kCorruption);
  EXPECT_EQ(db().Refs(kRoot, root_c), 0);
  EXPECT_EQ(db().Refs(kTree, t.top_a), 0);
  EXPECT_EQ(db().Refs(kRoot, t.root_b), 1);

  // And back to A: B's own objects go, the shared subtree stays.
  ASSERT_OK(store().CommitVolume(v.id, t.root_b, t.root_a, upto));
  ExpectRefs({{kRoot, t.root_a}, {kTree, t.top_a}, {kChunk, t.c4}, {kTree, t.sub}, {kChunk, t.c1}},
             1, "after commit back to A");
  ExpectRefs({{kRoot, t.root_b}, {kTree, t.top_b}, {kChunk, t.c5}}, 0, "after commit back to A");
  ASSERT_OK(store().DeleteVolume(v.id));
  EXPECT_EQ(db().Int("SELECT count(*) FROM objects WHERE refs != 0"), 0);
}

TEST_F(StoreRefsTest, RepeatedReferencesAreEachCounted) {
  Hash c = PutChunk("everywhere");
  Hash list = PutList({{c, 10}, {c, 10}, {Hash{}, 100}});
  Hash sub = PutTree(Tree{{FileEntry("x", {{c, 10}})}});
  Hash top = PutTree(Tree{{DirEntry("d1", sub), DirEntry("d2", sub),
                           FileEntry("f", {{c, 10}, {c, 10}}), ListFileEntry("l", 120, list)}});
  Hash root = PutRoot(top);
  Flush();
  ASSERT_OK_AND_ASSIGN(VolumeInfo v, store().CreateVolume("v", root, false, ""));
  EXPECT_EQ(db().Refs(kTree, sub), 2);  // two names for one directory
  EXPECT_EQ(db().Refs(kList, list), 1);
  // Twice from f, twice from the list, once from sub (which counts its children once).
  EXPECT_EQ(db().Refs(kChunk, c), 5);
  ASSERT_OK(store().DeleteVolume(v.id));
  EXPECT_EQ(db().Int("SELECT count(*) FROM objects WHERE refs != 0"), 0);
}

TEST_F(StoreRefsTest, HardLinkBucketsAreReferenced) {
  Hash c6 = PutChunk("hard-linked data");
  Hash c7 = PutChunk("more");
  Hash list = PutList({{c7, 4}, {c7, 4}});
  LinkRecord file;
  file.link_id = 3;
  file.nlink = 2;
  file.content.size = 16;
  file.content.chunks = {{c6, 16}};
  LinkRecord big = file;
  big.link_id = 259;
  big.content = {};
  big.content.size = 8;
  big.content.list = list;
  Hash bucket3 = PutLinks({file, big});
  TreeEntry a, b;
  a.name = "a";
  a.link_id = 3;
  b.name = "b";
  b.link_id = 3;
  Hash top = PutTree(Tree{{a, b}});
  Hash root = PutRoot(top, 16, 1, {{3, bucket3}});
  Flush();
  ASSERT_OK_AND_ASSIGN(VolumeInfo v, store().CreateVolume("v", root, false, ""));
  EXPECT_EQ(db().Refs(kLinks, bucket3), 1);
  EXPECT_EQ(db().Refs(kChunk, c6), 1);
  EXPECT_EQ(db().Refs(kList, list), 1);
  EXPECT_EQ(db().Refs(kChunk, c7), 2);
  EXPECT_EQ(db().Refs(kTree, top), 1);
  ASSERT_OK(store().DeleteVolume(v.id));
  EXPECT_EQ(db().Int("SELECT count(*) FROM objects WHERE refs != 0"), 0);
}

TEST_F(StoreRefsTest, SnapshotKeysAreImmutableUnlessReplaced) {
  TwoRoots t = BuildTwoRoots();
  ASSERT_OK_AND_ASSIGN(SnapshotInfo s, store().CreateSnapshot("pip-abc", t.root_a, false));
  EXPECT_EQ(s.key, "pip-abc");
  EXPECT_EQ(s.root, t.root_a);
  EXPECT_EQ(s.logical_bytes, 100u);
  EXPECT_EQ(s.files, 2u);
  EXPECT_FALSE(s.damaged);
  EXPECT_EQ(db().Refs(kRoot, t.root_a), 1);
  EXPECT_EQ(db().Refs(kTree, t.sub), 1);

  EXPECT_CODE(store().CreateSnapshot("pip-abc", t.root_b, false), Code::kAlreadyExists);
  ASSERT_OK_AND_ASSIGN(auto still, store().FindSnapshot("pip-abc"));
  ASSERT_TRUE(still.has_value());
  EXPECT_EQ(still->root, t.root_a);
  EXPECT_EQ(still->id, s.id);
  EXPECT_EQ(db().Refs(kRoot, t.root_a), 1);
  EXPECT_EQ(db().Refs(kRoot, t.root_b), 0);

  ASSERT_OK_AND_ASSIGN(SnapshotInfo moved, store().CreateSnapshot("pip-abc", t.root_b, true));
  EXPECT_EQ(moved.id, s.id);
  EXPECT_EQ(moved.root, t.root_b);
  EXPECT_EQ(moved.logical_bytes, 200u);
  EXPECT_EQ(moved.files, 3u);
  ExpectRefs({{kRoot, t.root_a}, {kTree, t.top_a}, {kChunk, t.c4}}, 0, "after replace");
  ExpectRefs({{kRoot, t.root_b}, {kTree, t.top_b}, {kChunk, t.c5}, {kTree, t.sub}, {kChunk, t.c1}},
             1, "after replace");
  // Replacing with the same root changes no count.
  ASSERT_OK(store().CreateSnapshot("pip-abc", t.root_b, true));
  EXPECT_EQ(db().Refs(kRoot, t.root_b), 1);
  EXPECT_EQ(db().Refs(kTree, t.sub), 1);

  ASSERT_OK_AND_ASSIGN(auto list, store().ListSnapshots());
  ASSERT_EQ(list.size(), 1u);
  ASSERT_OK(store().DeleteSnapshot(s.id));
  EXPECT_CODE(store().DeleteSnapshot(s.id), Code::kNotFound);
  EXPECT_EQ(db().Int("SELECT count(*) FROM objects WHERE refs != 0"), 0);
  ASSERT_OK_AND_ASSIGN(auto gone, store().FindSnapshot("pip-abc"));
  EXPECT_FALSE(gone.has_value());

  // A snapshot of a root the store does not have is refused.
  EXPECT_CODE(store().CreateSnapshot("x", Hash::Of(std::string_view("no root")), false),
              Code::kNotFound);
  EXPECT_EQ(db().Count("snapshots"), 0);
}

TEST_F(StoreRefsTest, StatsCountLogicalBytesFromRoots) {
  TwoRoots t = BuildTwoRoots();
  ASSERT_OK(store().CreateVolume("v", t.root_a, false, ""));
  ASSERT_OK(store().CreateSnapshot("k1", t.root_b, false));
  ASSERT_OK(store().CreateSnapshot("k2", t.root_a, false));
  ASSERT_OK_AND_ASSIGN(StoreStats st, store().Stats());
  EXPECT_EQ(st.volumes, 1u);
  EXPECT_EQ(st.snapshots, 2u);
  EXPECT_EQ(st.logical_bytes, 100u + 200u + 100u);
  EXPECT_EQ(st.logical_files, 2u + 3u + 2u);
  EXPECT_EQ(st.objects, 8u);
  EXPECT_EQ(st.chunks, 3u);
  EXPECT_EQ(st.unique_bytes,
            std::string("shared chunk").size() + 2 * std::string("only in A").size());
  EXPECT_EQ(st.unreferenced_objects, 0u);
  EXPECT_EQ(st.packs, 1u);
  EXPECT_GT(st.catalog_bytes, 0u);
  ASSERT_OK_AND_ASSIGN(uint64_t pack_size, Env::Default()->FileSize(PackPath(
                                               packs_dir(), db().Int("SELECT id FROM packs"))));
  EXPECT_EQ(st.stored_bytes, pack_size);
}

TEST_F(StoreRefsTest, EmptyRoot) {
  ASSERT_OK_AND_ASSIGN(Hash root, store().PutEmptyRoot(1000, 1001, 0100755));
  ASSERT_OK_AND_ASSIGN(RootRecord rec, store().ReadRoot(root));
  EXPECT_EQ(rec.attrs.uid, 1000u);
  EXPECT_EQ(rec.attrs.gid, 1001u);
  EXPECT_EQ(rec.attrs.mode, 0755u);
  EXPECT_EQ(rec.tree, Hash::Of(EncodeTree(Tree{})));
  EXPECT_EQ(rec.total_bytes, 0u);
  // Already flushed: usable as a volume's root at once.
  ASSERT_OK(store().CreateVolume("fresh", root, false, ""));
  EXPECT_EQ(db().Refs(kTree, rec.tree), 1);
}

TEST_F(StoreRefsTest, Counters) {
  ASSERT_OK(store().AddCounter("hits", 2));
  ASSERT_OK(store().AddCounter("misses", 1));
  ASSERT_OK(store().AddCounter("hits", 3));
  ASSERT_OK_AND_ASSIGN(auto counters, store().Counters());
  EXPECT_EQ(counters, (std::vector<std::pair<std::string, int64_t>>{{"hits", 5}, {"misses", 1}}));
}

// ---- pins -----------------------------------------------------------------------------------

using StorePinsTest = StoreRefsTest;

TEST_F(StorePinsTest, PutsStayPinnedUntilACommitReleasesTheirGeneration) {
  Graph g = BuildGraph();
  for (const auto& [kind, h] : All(g))
    EXPECT_EQ(db().PinGen(writer_id_, kind, h), 1);
  EXPECT_EQ(db().Count("pins"), 7);
  ASSERT_OK_AND_ASSIGN(VolumeInfo v, store().CreateVolume("v", g.root, false, ""));
  uint64_t upto = objects().CutGeneration();
  EXPECT_EQ(upto, 1u);
  Hash later = PutChunk("put after the cut");
  Flush();
  EXPECT_EQ(db().PinGen(writer_id_, kChunk, later), 2);
  // Releasing nothing keeps everything.
  ASSERT_OK(store().CommitVolume(v.id, g.root, g.root, 0));
  EXPECT_EQ(db().Count("pins"), 8);
  ASSERT_OK(store().CommitVolume(v.id, g.root, g.root, upto));
  EXPECT_EQ(db().Count("pins"), 1);
  EXPECT_EQ(db().PinGen(writer_id_, kChunk, later), 2);
  EXPECT_EQ(objects().CutGeneration(), 2u);
  ASSERT_OK(store().CommitVolume(v.id, g.root, g.root, 2));
  EXPECT_EQ(db().Count("pins"), 0);
}

TEST_F(StorePinsTest, PinsAreTakenWithoutAFlushForCataloguedObjects) {
  Hash x = PutChunk("x");
  Flush();
  ReopenStore();
  EXPECT_EQ(db().Count("pins"), 0);
  // A catalogued object is pinned by the put itself, before any flush.
  PutChunk("x");
  EXPECT_EQ(db().PinGen(writer_id_, kChunk, x), 1);
}

TEST_F(StorePinsTest, ANewWriterOfTheSameStorePinsAgain) {
  Hash x = PutChunk("x");
  Flush();
  ASSERT_OK(store().UnregisterWriter());
  EXPECT_EQ(db().Count("pins"), 0);
  ASSERT_OK_AND_ASSIGN(int64_t id, store().RegisterWriter("/again"));
  PutChunk("x");
  EXPECT_EQ(db().PinGen(id, kChunk, x), 1);
}

TEST_F(StorePinsTest, ReusingAnObjectAfterACutMovesItsPin) {
  Hash x = PutChunk("x");
  Flush();
  EXPECT_EQ(db().PinGen(writer_id_, kChunk, x), 1);
  EXPECT_EQ(objects().CutGeneration(), 1u);
  PutChunk("x");  // used again by the next commit: the pin must outlive this cut's release
  EXPECT_EQ(db().PinGen(writer_id_, kChunk, x), 2);

  Hash y = PutChunk("y");  // staged in generation 2
  EXPECT_EQ(objects().CutGeneration(), 2u);
  PutChunk("y");  // still staged, used again in generation 3
  Flush();
  EXPECT_EQ(db().PinGen(writer_id_, kChunk, y), 3);

  ASSERT_OK_AND_ASSIGN(Hash root, store().PutEmptyRoot(0, 0, 0755));
  ASSERT_OK_AND_ASSIGN(VolumeInfo v, store().CreateVolume("v", root, false, ""));
  ASSERT_OK(store().CommitVolume(v.id, root, root, 2));
  EXPECT_EQ(db().PinGen(writer_id_, kChunk, x), -1);
  EXPECT_EQ(db().PinGen(writer_id_, kChunk, y), 3);
}

TEST_F(StorePinsTest, ALeaseKeepsPinsAcrossCuts) {
  ASSERT_OK_AND_ASSIGN(Hash root, store().PutEmptyRoot(0, 0, 0755));
  ASSERT_OK_AND_ASSIGN(VolumeInfo v, store().CreateVolume("v", root, false, ""));
  ASSERT_OK(store().CommitVolume(v.id, root, root, objects().CutGeneration()));
  EXPECT_EQ(db().Count("pins"), 0);
  Hash x;
  {
    auto lease = objects().BeginLease();  // generation 2
    x = PutChunk("written under a lease");
    Flush();
    EXPECT_EQ(db().PinGen(writer_id_, kChunk, x), 2);
    uint64_t upto = objects().CutGeneration();
    EXPECT_EQ(upto, 1u);  // the lease holds generation 2 back
    ASSERT_OK(store().CommitVolume(v.id, root, root, upto));
    EXPECT_EQ(db().PinGen(writer_id_, kChunk, x), 2);
    EXPECT_EQ(objects().CutGeneration(), 1u);  // still held
  }
  uint64_t upto = objects().CutGeneration();
  EXPECT_EQ(upto, 4u);
  ASSERT_OK(store().CommitVolume(v.id, root, root, upto));
  EXPECT_EQ(db().PinGen(writer_id_, kChunk, x), -1);
}

TEST_F(StorePinsTest, PinForeverOutlivesCommitsUntilUnpinned) {
  Hash x = PutChunk("open but unlinked");  // staged: PinForever flushes it first
  ASSERT_OK(objects().PinForever({x, kChunk}));
  EXPECT_EQ(db().PinGen(writer_id_, kChunk, x), kPinForever);
  ASSERT_OK_AND_ASSIGN(Hash root, store().PutEmptyRoot(0, 0, 0755));
  ASSERT_OK_AND_ASSIGN(VolumeInfo v, store().CreateVolume("v", root, false, ""));
  ASSERT_OK(store().CommitVolume(v.id, root, root, objects().CutGeneration()));
  EXPECT_EQ(db().PinGen(writer_id_, kChunk, x), kPinForever);
  ASSERT_OK(objects().Unpin({x, kChunk}));
  EXPECT_EQ(db().PinGen(writer_id_, kChunk, x), -1);
  EXPECT_CODE(objects().PinForever({Hash::Of(std::string_view("nope")), kChunk}), Code::kNotFound);
}

TEST_F(StorePinsTest, UnregisterDropsPinsAndRegistration) {
  BuildGraph();
  EXPECT_EQ(db().Count("pins"), 7);
  EXPECT_EQ(db().Text("SELECT mountpoint FROM mounts"), "/test");
  EXPECT_EQ(db().Int("SELECT pid FROM mounts"), static_cast<int64_t>(getpid()));
  ASSERT_OK(store().UnregisterWriter());
  EXPECT_EQ(store().writer_id(), 0);
  EXPECT_EQ(db().Count("pins"), 0);
  EXPECT_EQ(db().Count("mounts"), 0);
  // No writer lock file is left behind.
  ASSERT_OK_AND_ASSIGN(auto run, Env::Default()->List(store().run_dir()));
  EXPECT_TRUE(run.empty()) << run.front();
  EXPECT_CODE(objects().Put(kChunk, test::Span("x")), Code::kUnsupported);
}

TEST_F(StorePinsTest, DeadWritersAreReaped) {
  Graph g = BuildGraph();
  // A live writer of another Store instance, which must be left alone.
  StoreOptions opts;
  opts.dir = dir();
  ASSERT_OK_AND_ASSIGN(auto other, Store::Open(opts));
  ASSERT_OK_AND_ASSIGN(int64_t other_id, other->RegisterWriter("/other"));
  // A writer that died: its row and pins remain, its lock file is held by nobody.
  db().Exec(
      "INSERT INTO mounts(id, pid, host, mountpoint, started, lock) "
      "VALUES(999, 1, 'h', '/dead', 0, 'writer-dead.lock')");
  db().Exec("INSERT INTO pins(mount_id, object_id, gen) SELECT 999, id, 5 FROM objects");
  db().Exec("INSERT INTO packs(state, size, writer, created) VALUES(0, 16, 999, 0)");
  ASSERT_OK(Env::Default()->MakeDirs(store().scratch_dir() + "/999/sub", 0700));
  { std::ofstream(store().run_dir() + "/writer-dead.lock") << ""; }
  EXPECT_EQ(db().Count("mounts"), 3);

  ASSERT_OK(store().ReapDeadWriters());
  EXPECT_EQ(db().Int("SELECT count(*) FROM pins WHERE mount_id=999"), 0);
  EXPECT_EQ(db().Int("SELECT count(*) FROM mounts WHERE id=999"), 0);
  EXPECT_EQ(db().Int("SELECT count(*) FROM packs WHERE writer=999 OR state=0 AND writer IS NULL"),
            0);
  EXPECT_FALSE(std::filesystem::exists(store().scratch_dir() + "/999"));
  EXPECT_FALSE(std::filesystem::exists(store().run_dir() + "/writer-dead.lock"));
  ASSERT_OK_AND_ASSIGN(auto live, store().LiveMounts());
  ASSERT_EQ(live.size(), 2u);
  EXPECT_EQ(live[0].mountpoint, "/test");
  EXPECT_EQ(live[1].mountpoint, "/other");
  EXPECT_EQ(live[1].id, other_id);
  // The survivors keep their pins.
  for (const auto& [kind, h] : All(g))
    EXPECT_EQ(db().PinGen(writer_id_, kind, h), 1);
}

TEST_F(StorePinsTest, ReapingTakesOnlyTheDeadWritersPins) {
  Graph g = BuildGraph();
  db().Exec(
      "INSERT INTO mounts(id, pid, host, mountpoint, started, lock) "
      "VALUES(999, 1, 'h', '/dead', 0, 'writer-dead.lock')");
  db().Exec("INSERT INTO pins(mount_id, object_id, gen) SELECT 999, id, 5 FROM objects");
  EXPECT_EQ(db().Count("pins"), 14);
  ASSERT_OK(store().ReapDeadWriters());
  EXPECT_EQ(db().Count("pins"), 7);
  for (const auto& [kind, h] : All(g))
    EXPECT_EQ(db().PinGen(writer_id_, kind, h), 1);
}

TEST_F(StorePinsTest, LockedVolumeIsBusyAndNamesItsMountpoint) {
  ASSERT_OK_AND_ASSIGN(Hash root, store().PutEmptyRoot(0, 0, 0755));
  ASSERT_OK_AND_ASSIGN(VolumeInfo v, store().CreateVolume("pip", root, false, ""));
  ASSERT_OK_AND_ASSIGN(auto lock, store().LockVolume(v));
  ASSERT_OK(store().SetMountVolume(v.id));

  StoreOptions opts;
  opts.dir = dir();
  ASSERT_OK_AND_ASSIGN(auto other, Store::Open(opts));
  auto r = other->LockVolume(v);
  EXPECT_CODE(r, Code::kBusy);
  EXPECT_EQ(r.status().errno_value(), EBUSY);
  EXPECT_NE(r.status().message().find("'pip' is already mounted at /test"), std::string::npos)
      << r.status().message();

  // Locked by a process that has not (yet) recorded its mount: still Busy, without a name.
  ASSERT_OK(store().SetMountVolume(0));
  r = other->LockVolume(v);
  EXPECT_CODE(r, Code::kBusy);
  EXPECT_NE(r.status().message().find("in use by another stashfs process"), std::string::npos)
      << r.status().message();

  lock.reset();
  ASSERT_OK_AND_ASSIGN(auto mine, other->LockVolume(v));
  EXPECT_CODE(store().LockVolume(v), Code::kBusy);
}

TEST(DefaultStoreDirTest, EnvironmentOverrides) {
  const char* old = std::getenv("STASHFS_STORE");
  std::string saved = old ? old : "";
  ::setenv("STASHFS_STORE", "/some/where", 1);
  EXPECT_EQ(DefaultStoreDir(), "/some/where");
  if (old) {
    ::setenv("STASHFS_STORE", saved.c_str(), 1);
  } else {
    ::unsetenv("STASHFS_STORE");
  }
}

}  // namespace
}  // namespace stashfs

namespace stashfs {
namespace {

// A durable commit (fsync, unmount, save) must reach the disk even when the tree did not change
// since a periodic commit that was only atomic: it writes a row, so SQLite has a commit to sync.
// Afterwards the connection is back to NORMAL for the periodic commits.
TEST_F(StoreRefsTest, DurableCommitWritesEvenWithoutChangeAndRestoresSyncMode) {
  TwoRoots t = BuildTwoRoots();
  ASSERT_OK_AND_ASSIGN(VolumeInfo v, store().CreateVolume("v", t.root_a, false, ""));
  db().Rows("UPDATE volumes SET last_used=0 WHERE id=?", {v.id});
  uint64_t upto = objects().CutGeneration();
  ASSERT_OK(store().CommitVolume(v.id, t.root_a, t.root_a, upto));
  EXPECT_EQ(db().Rows("SELECT last_used FROM volumes WHERE id=?", {v.id})[0][0], 0)
      << "a commit that changes nothing and need not be durable writes nothing";
  ASSERT_OK(store().CommitVolume(v.id, t.root_a, t.root_a, upto, /*durable=*/true));
  EXPECT_GT(db().Rows("SELECT last_used FROM volumes WHERE id=?", {v.id})[0][0], 0);
  auto w = store().catalog().write();
  ASSERT_OK_AND_ASSIGN(auto q, w->Prepare("PRAGMA synchronous"));
  ASSERT_OK_AND_ASSIGN(bool row, q.step());
  ASSERT_TRUE(row);
  EXPECT_EQ(q.i64(0), 1) << "synchronous should be NORMAL (1) again";
}

}  // namespace
}  // namespace stashfs
