// The catalog's schema and format version, and how Store::Open treats directories.
#include "store/catalog.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "store/catalog_maintenance.h"
#include "store/catalog_objects.h"
#include "store/catalog_roots.h"
#include "store/store.h"
#include "test_util.h"

namespace stashfs {
namespace {

using test::SqliteDb;
using test::TempDir;

TEST(CatalogTest, CreatesAndReopens) {
  TempDir tmp;
  std::string path = tmp.Sub("catalog.db");
  {
    ASSERT_OK_AND_ASSIGN(auto c, Catalog::Open(path, /*create=*/true));
    EXPECT_EQ(c->path(), path);
    auto w = c->write();
    ASSERT_OK(w->Exec("INSERT INTO counters(name, value) VALUES('x', 42)"));
  }
  {
    SqliteDb db(path);
    EXPECT_EQ(db.Text("SELECT value FROM meta WHERE key='format_version'"),
              std::to_string(kFormatVersion));
    EXPECT_EQ(db.Text("PRAGMA journal_mode"), "wal");
    for (const char* table : {"meta", "packs", "blocks", "objects", "pins", "mounts", "volumes",
                              "snapshots", "counters"}) {
      EXPECT_EQ(db.Int("SELECT count(*) FROM sqlite_master WHERE type='table' AND name=?",
                       {std::string(table)}),
                1)
          << table;
    }
  }
  ASSERT_OK_AND_ASSIGN(auto again, Catalog::Open(path, /*create=*/false));
  ASSERT_OK_AND_ASSIGN(auto r, again->read());
  ASSERT_OK_AND_ASSIGN(auto q, r->Prepare("SELECT value FROM counters WHERE name='x'"));
  ASSERT_OK_AND_ASSIGN(bool row, q.step());
  ASSERT_TRUE(row);
  EXPECT_EQ(q.i64(0), 42);
}

TEST(CatalogTest, MissingCatalogWithoutCreateIsNotFound) {
  TempDir tmp;
  EXPECT_CODE(Catalog::Open(tmp.Sub("catalog.db"), false), Code::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(tmp.Sub("catalog.db")));
}

TEST(CatalogTest, NewerFormatIsRefusedWithAdvice) {
  TempDir tmp;
  std::string path = tmp.Sub("catalog.db");
  { ASSERT_OK(Catalog::Open(path, true)); }
  {
    SqliteDb db(path);
    db.Exec("UPDATE meta SET value='99' WHERE key='format_version'");
  }
  for (bool create : {false, true}) {
    auto c = Catalog::Open(path, create);
    EXPECT_CODE(c, Code::kUnsupported);
    EXPECT_NE(c.status().message().find("99"), std::string::npos) << c.status().message();
    EXPECT_NE(c.status().message().find("upgrade stashfs"), std::string::npos)
        << c.status().message();
  }
  // And nothing was changed by looking.
  SqliteDb db(path);
  EXPECT_EQ(db.Text("SELECT value FROM meta WHERE key='format_version'"), "99");
}

TEST(CatalogTest, BadFormatVersionsAreCorruption) {
  TempDir tmp;
  std::string path = tmp.Sub("catalog.db");
  { ASSERT_OK(Catalog::Open(path, true)); }
  {
    SqliteDb db(path);
    db.Exec("UPDATE meta SET value='banana' WHERE key='format_version'");
  }
  EXPECT_CODE(Catalog::Open(path, false), Code::kCorruption);
  {
    SqliteDb db(path);
    db.Exec("DELETE FROM meta");
  }
  EXPECT_CODE(Catalog::Open(path, false), Code::kCorruption);
  // An SQLite database that is not a catalog.
  std::string other = tmp.Sub("other.db");
  {
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open(other.c_str(), &raw), SQLITE_OK);
    sqlite3_exec(raw, "CREATE TABLE t(x)", nullptr, nullptr, nullptr);
    sqlite3_close(raw);
  }
  EXPECT_CODE(Catalog::Open(other, false), Code::kCorruption);
  // A file that is not a database at all.
  std::string junk = tmp.Sub("junk.db");
  { std::ofstream(junk) << std::string(5000, 'j'); }
  auto r = Catalog::Open(junk, false);
  EXPECT_FALSE(r.ok());
}

TEST(CatalogTest, ReadConnectionsArePooled) {
  TempDir tmp;
  ASSERT_OK_AND_ASSIGN(auto c, Catalog::Open(tmp.Sub("catalog.db"), true));
  Db* first = nullptr;
  {
    ASSERT_OK_AND_ASSIGN(auto r1, c->read());
    ASSERT_OK_AND_ASSIGN(auto r2, c->read());
    EXPECT_NE(r1.db(), r2.db());
    first = r1.db();
  }
  ASSERT_OK_AND_ASSIGN(auto r3, c->read());
  ASSERT_OK_AND_ASSIGN(auto r4, c->read());
  EXPECT_TRUE(r3.db() == first || r4.db() == first);
  ASSERT_OK(c->Checkpoint());
}

TEST(CatalogTest, StatementsCanBeReusedInALoop) {
  // A prepared statement run to completion must accept new bindings (every batch insert in the
  // store does this); a stale statement would silently repeat the first row.
  TempDir tmp;
  ASSERT_OK_AND_ASSIGN(auto c, Catalog::Open(tmp.Sub("catalog.db"), true));
  auto w = c->write();
  ASSERT_OK_AND_ASSIGN(auto ins, w->Prepare("INSERT INTO counters(name, value) VALUES(?, ?)"));
  for (int i = 0; i < 5; ++i)
    ASSERT_OK(ins.bind(1, "c" + std::to_string(i)).bind(2, i).run());
  ASSERT_OK_AND_ASSIGN(auto sum, w->Prepare("SELECT count(*), sum(value) FROM counters"));
  ASSERT_OK_AND_ASSIGN(bool row, sum.step());
  ASSERT_TRUE(row);
  EXPECT_EQ(sum.i64(0), 5);
  EXPECT_EQ(sum.i64(1), 10);
  // A statement that stepped to a row and then ran to completion, as with RETURNING.
  ASSERT_OK_AND_ASSIGN(
      auto upd, w->Prepare("UPDATE counters SET value = value + 1 WHERE name=? RETURNING value"));
  for (int i = 0; i < 5; ++i) {
    upd.bind(1, "c" + std::to_string(i));
    ASSERT_OK_AND_ASSIGN(bool got, upd.step());
    ASSERT_TRUE(got);
    EXPECT_EQ(upd.i64(0), i + 1);
    ASSERT_OK(upd.run());
  }
  // A failing statement reports the error and can be used again.
  ASSERT_OK_AND_ASSIGN(auto dup, w->Prepare("INSERT INTO counters(name, value) VALUES(?, 0)"));
  EXPECT_FALSE(dup.bind(1, "c0").run().ok());
  EXPECT_OK(dup.bind(1, "fresh").run());
}

TEST(CatalogTest, TransactionsRollBackUnlessCommitted) {
  TempDir tmp;
  ASSERT_OK_AND_ASSIGN(auto c, Catalog::Open(tmp.Sub("catalog.db"), true));
  {
    auto w = c->write();
    Txn txn(w.db());
    ASSERT_OK(txn.Begin());
    ASSERT_OK(w->Exec("INSERT INTO counters(name, value) VALUES('gone', 1)"));
  }
  {
    auto w = c->write();
    Txn txn(w.db());
    ASSERT_OK(txn.Begin());
    ASSERT_OK(w->Exec("INSERT INTO counters(name, value) VALUES('kept', 1)"));
    ASSERT_OK(txn.Commit());
  }
  SqliteDb db(tmp.Sub("catalog.db"));
  EXPECT_EQ(db.Int("SELECT count(*) FROM counters WHERE name='gone'"), 0);
  EXPECT_EQ(db.Int("SELECT count(*) FROM counters WHERE name='kept'"), 1);
}

// ---- Store::Open and the store directory --------------------------------------------------

TEST(StoreOpenTest, CreatesAPrivateStore) {
  TempDir tmp;
  StoreOptions opts;
  opts.dir = tmp.Sub("a/b/store/");  // missing parents, trailing slash
  ASSERT_OK_AND_ASSIGN(auto s, Store::Open(opts));
  EXPECT_EQ(s->dir(), tmp.Sub("a/b/store"));
  for (const char* sub : {"", "/packs", "/scratch", "/run"}) {
    struct stat st;
    ASSERT_EQ(::stat((s->dir() + sub).c_str(), &st), 0) << sub;
    EXPECT_TRUE(S_ISDIR(st.st_mode)) << sub;
  }
  struct stat st;
  ASSERT_EQ(::stat(s->dir().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_TRUE(std::filesystem::exists(s->dir() + "/catalog.db"));
  // An empty existing directory is fine too.
  ASSERT_EQ(::mkdir(tmp.Sub("empty").c_str(), 0755), 0);
  opts.dir = tmp.Sub("empty");
  ASSERT_OK(Store::Open(opts));
}

TEST(StoreOpenTest, ReopensAnExistingStore) {
  TempDir tmp;
  StoreOptions opts;
  opts.dir = tmp.Sub("store");
  {
    ASSERT_OK_AND_ASSIGN(auto s, Store::Open(opts));
    ASSERT_OK(s->AddCounter("opened", 1));
  }
  opts.create = false;
  ASSERT_OK_AND_ASSIGN(auto s, Store::Open(opts));
  ASSERT_OK_AND_ASSIGN(auto counters, s->Counters());
  ASSERT_EQ(counters.size(), 1u);
  EXPECT_EQ(counters[0].second, 1);
}

TEST(StoreOpenTest, RefusesANonEmptyDirectoryWithoutCatalog) {
  TempDir tmp;
  std::string dir = tmp.Sub("home");
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  { std::ofstream(dir + "/precious.txt") << "user data"; }
  StoreOptions opts;
  opts.dir = dir;
  auto s = Store::Open(opts);
  EXPECT_CODE(s, Code::kInvalidArgument);
  EXPECT_NE(s.status().message().find("non-empty directory without a stashfs catalog"),
            std::string::npos)
      << s.status().message();
  // Nothing was created or changed there.
  EXPECT_FALSE(std::filesystem::exists(dir + "/catalog.db"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/packs"));
  struct stat st;
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);
}

TEST(StoreOpenTest, RefusesFilesMissingStoresAndNewerFormats) {
  TempDir tmp;
  StoreOptions opts;
  opts.dir = tmp.Sub("file");
  { std::ofstream(opts.dir) << "x"; }
  EXPECT_CODE(Store::Open(opts), Code::kInvalidArgument);

  opts.dir = tmp.Sub("missing");
  opts.create = false;
  auto missing = Store::Open(opts);
  EXPECT_CODE(missing, Code::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(opts.dir));

  opts.dir = tmp.Sub("newer");
  opts.create = true;
  { ASSERT_OK(Store::Open(opts)); }
  {
    SqliteDb db(opts.dir + "/catalog.db");
    db.Exec("UPDATE meta SET value='99' WHERE key='format_version'");
  }
  auto newer = Store::Open(opts);
  EXPECT_CODE(newer, Code::kUnsupported);
  EXPECT_NE(newer.status().message().find("upgrade stashfs"), std::string::npos)
      << newer.status().message();
}

// ---- the typed statements (catalog_*.h), each against a real catalog file ----------------

// `expr`, a Result, is ok and holds `want`.
#define EXPECT_OK_EQ(expr, want) \
  do {                           \
    auto result_ = (expr);       \
    ASSERT_OK(result_.status()); \
    EXPECT_EQ(*result_, want);   \
  } while (0)

Hash HashOf(const std::string& s) {
  return Hash::Of(std::string_view(s));
}

ObjectKey ChunkKey(const std::string& s) {
  return ObjectKey{HashOf(s), ObjectKind::kChunk};
}

// A pack with one block holding `key` at offset 10; returns the block's id.
int64_t CatalogueOne(Db* w, const ObjectKey& key, uint64_t block_offset = 16) {
  auto pack = catalog::InsertOpenPack(w, /*writer=*/7, /*now=*/100);
  EXPECT_OK(pack.status());
  BlockLocation loc{*pack, block_offset, 40, 300, 500, Codec::kZstd};
  auto block = catalog::InsertBlock(w, loc);
  EXPECT_OK(block.status());
  EXPECT_OK(catalog::InsertObject(w, BlockEntry{key.kind, 10, 20, key.hash}, *block, 100));
  return *block;
}

TEST(CatalogQueriesTest, ObjectLocationJoinsItsBlock) {
  TempDir tmp;
  ASSERT_OK_AND_ASSIGN(auto c, Catalog::Open(tmp.Sub("catalog.db"), true));
  ObjectKey key = ChunkKey("a");
  int64_t block = CatalogueOne(c->write().db(), key);
  ASSERT_OK_AND_ASSIGN(auto r, c->read());
  ASSERT_OK_AND_ASSIGN(auto where, catalog::FindObjectLocation(r.db(), key));
  ASSERT_TRUE(where.has_value());
  EXPECT_EQ(where->block_id, block);
  EXPECT_TRUE(where->has_block);
  EXPECT_EQ(where->offset, 10u);
  EXPECT_EQ(where->size, 20u);
  EXPECT_EQ(where->loc.offset, 16u);
  EXPECT_EQ(where->loc.header_len, 40u);
  EXPECT_EQ(where->loc.stored_len, 300u);
  EXPECT_EQ(where->loc.raw_len, 500u);
  EXPECT_EQ(where->loc.codec, Codec::kZstd);
  EXPECT_OK_EQ(catalog::HasStoredObject(r.db(), key), true);
  ASSERT_OK_AND_ASSIGN(auto none, catalog::FindObjectLocation(r.db(), ChunkKey("b")));
  EXPECT_FALSE(none.has_value());
  EXPECT_OK_EQ(catalog::HasStoredObject(r.db(), ChunkKey("b")), false);
}

TEST(CatalogQueriesTest, InsertObjectHealsOnlyLostRows) {
  TempDir tmp;
  ASSERT_OK_AND_ASSIGN(auto c, Catalog::Open(tmp.Sub("catalog.db"), true));
  auto w = c->write();
  ObjectKey key = ChunkKey("a");
  int64_t first = CatalogueOne(w.db(), key);
  int64_t second = CatalogueOne(w.db(), key, 4096);  // a second copy: the first row stays
  ASSERT_OK_AND_ASSIGN(auto where, catalog::FindObjectLocation(w.db(), key));
  EXPECT_EQ(where->block_id, first);

  ASSERT_OK_AND_ASSIGN(auto id, catalog::ObjectsOfBlock(w.db(), first));
  ASSERT_EQ(id.size(), 1u);
  ASSERT_OK(catalog::MarkObjectLost(w.db(), id[0].id));
  EXPECT_OK_EQ(catalog::HasStoredObject(w.db(), key), false);
  ASSERT_OK_AND_ASSIGN(where, catalog::FindObjectLocation(w.db(), key));
  EXPECT_EQ(where->block_id, 0);
  EXPECT_FALSE(where->has_block);

  ASSERT_OK(catalog::InsertObject(w.db(), BlockEntry{key.kind, 30, 20, key.hash}, second, 200));
  ASSERT_OK_AND_ASSIGN(where, catalog::FindObjectLocation(w.db(), key));
  EXPECT_EQ(where->block_id, second);
  EXPECT_EQ(where->offset, 30u);
}

TEST(CatalogQueriesTest, PinsCoverOnlyStoredObjectsAndKeepTheNewestGeneration) {
  TempDir tmp;
  ASSERT_OK_AND_ASSIGN(auto c, Catalog::Open(tmp.Sub("catalog.db"), true));
  auto w = c->write();
  ObjectKey key = ChunkKey("a");
  CatalogueOne(w.db(), key);
  EXPECT_OK_EQ(catalog::PinIfStored(w.db(), 1, 5, ChunkKey("unknown")), false);
  EXPECT_OK_EQ(catalog::PinIfStored(w.db(), 1, 5, key), true);
  ASSERT_OK(catalog::PinObject(w.db(), 1, 3, key));  // an older generation does not lower it
  ASSERT_OK_AND_ASSIGN(auto use, catalog::FindObjectUsage(w.db(), key));
  EXPECT_TRUE(use->pinned);
  ASSERT_OK(catalog::ReleasePins(w.db(), 1, 4));
  ASSERT_OK_AND_ASSIGN(use, catalog::FindObjectUsage(w.db(), key));
  EXPECT_TRUE(use->pinned);
  ASSERT_OK(catalog::ReleasePins(w.db(), 1, 5));
  ASSERT_OK_AND_ASSIGN(use, catalog::FindObjectUsage(w.db(), key));
  EXPECT_FALSE(use->pinned);
  EXPECT_EQ(use->stored_len, 300);
  EXPECT_EQ(use->raw_len, 500);
}

TEST(CatalogQueriesTest, RefsAndGarbage) {
  TempDir tmp;
  ASSERT_OK_AND_ASSIGN(auto c, Catalog::Open(tmp.Sub("catalog.db"), true));
  auto w = c->write();
  ObjectKey kept = ChunkKey("kept"), pinned = ChunkKey("pinned"), dead = ChunkKey("dead");
  for (const auto& k : {kept, pinned, dead})
    CatalogueOne(w.db(), k);
  EXPECT_OK_EQ(catalog::AddObjectRefs(w.db(), kept, +2), std::optional<int64_t>(2));
  EXPECT_OK_EQ(catalog::AddObjectRefs(w.db(), kept, -1), std::optional<int64_t>(1));
  EXPECT_OK_EQ(catalog::AddObjectRefs(w.db(), ChunkKey("none"), +1), std::optional<int64_t>());
  ASSERT_OK(catalog::PinObject(w.db(), 1, 9, pinned));
  ASSERT_OK_AND_ASSIGN(auto g, catalog::CountGarbage(w.db()));
  EXPECT_EQ(g.objects, 1u);
  EXPECT_EQ(g.bytes, 20u);
  ASSERT_OK_AND_ASSIGN(g, catalog::DeleteGarbageBatch(w.db()));
  EXPECT_EQ(g.objects, 1u);
  EXPECT_OK_EQ(catalog::HasStoredObject(w.db(), dead), false);
  EXPECT_OK_EQ(catalog::HasStoredObject(w.db(), kept), true);
  EXPECT_OK_EQ(catalog::HasStoredObject(w.db(), pinned), true);
}

TEST(CatalogQueriesTest, VolumesAndSnapshotsHoldTheirRoots) {
  TempDir tmp;
  ASSERT_OK_AND_ASSIGN(auto c, Catalog::Open(tmp.Sub("catalog.db"), true));
  auto w = c->write();
  Hash r1 = HashOf("root1"), r2 = HashOf("root2");
  EXPECT_OK_EQ(catalog::InsertVolume(w.db(), "v", r1, false, "", 10), true);
  EXPECT_OK_EQ(catalog::InsertVolume(w.db(), "v", r2, false, "", 11), false);
  ASSERT_OK_AND_ASSIGN(auto v, catalog::FindVolumeByName(w.db(), "v"));
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(v->root, r1);
  EXPECT_EQ(v->source, "");                                                 // NULL reads back empty
  EXPECT_OK_EQ(catalog::MoveVolumeRoot(w.db(), v->id, r2, r1, 12), false);  // not at r2
  EXPECT_OK_EQ(catalog::MoveVolumeRoot(w.db(), v->id, r1, r2, 12), true);
  EXPECT_OK_EQ(catalog::DeleteVolume(w.db(), v->id), std::optional<Hash>(r2));
  EXPECT_OK_EQ(catalog::DeleteVolume(w.db(), v->id), std::optional<Hash>());

  ASSERT_OK(catalog::InsertSnapshot(w.db(), "ci/a-1", r1, 100, 5, 1));
  ASSERT_OK(catalog::InsertSnapshot(w.db(), "ci/a-2", r2, 200, 6, 2));
  ASSERT_OK(catalog::InsertSnapshot(w.db(), "ci/b-1", r2, 300, 7, 3));
  ASSERT_OK_AND_ASSIGN(auto newest, catalog::NewestSnapshotWithPrefix(w.db(), "ci/a-"));
  ASSERT_TRUE(newest.has_value());
  EXPECT_EQ(newest->key, "ci/a-2");
  ASSERT_OK_AND_ASSIGN(auto found, catalog::FindSnapshotRoot(w.db(), "ci/a-1"));
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->root, r1);
  ASSERT_OK(catalog::MarkSnapshotDamaged(w.db(), "ci/a-1"));
  ASSERT_OK(catalog::ReplaceSnapshot(w.db(), found->id, r2, 400, 8, 4));  // clears the mark
  ASSERT_OK_AND_ASSIGN(auto s, catalog::FindSnapshotByKey(w.db(), "ci/a-1"));
  EXPECT_EQ(s->root, r2);
  EXPECT_EQ(s->created, 400);
  EXPECT_FALSE(s->damaged);
  EXPECT_OK_EQ(catalog::DeleteSnapshot(w.db(), found->id), std::optional<Hash>(r2));
}

}  // namespace
}  // namespace stashfs
