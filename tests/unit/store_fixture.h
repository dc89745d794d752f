// A test fixture with a fresh store in a temp directory and helpers to build object graphs.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "fault_env.h"
#include "store/objects.h"
#include "store/pack.h"
#include "store/store.h"
#include "test_util.h"

namespace stashfs::test {

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override { OpenStore(); }

  // Opens (creating on first use) the store at dir(); registers a writer unless told not to.
  void OpenStore(Env* env = Env::Default(), bool writer = true) {
    StoreOptions opts;
    opts.dir = dir();
    opts.env = env;
    opts.objects = object_options_;
    auto s = Store::Open(opts);
    ASSERT_TRUE(s.ok()) << s.status().message();
    store_ = std::move(s).value();
    if (writer) {
      auto id = store_->RegisterWriter("/test");
      ASSERT_TRUE(id.ok()) << id.status().message();
      writer_id_ = *id;
    }
  }
  // Closes the store (flushing, as at unmount) and opens it again: no staging, no block cache.
  void ReopenStore(Env* env = Env::Default(), bool writer = true) {
    store_.reset();
    OpenStore(env, writer);
  }

  std::string dir() const { return tmp_.Sub("store"); }
  std::string catalog_path() const { return dir() + "/catalog.db"; }
  std::string packs_dir() const { return dir() + "/packs"; }
  Store& store() { return *store_; }
  ObjectStore& objects() { return store_->objects(); }
  // The test's own connection to the catalog.
  SqliteDb& db() {
    if (!db_) db_ = std::make_unique<SqliteDb>(catalog_path());
    return *db_;
  }

  Hash Put(ObjectKind kind, std::span<const uint8_t> data) {
    auto h = objects().Put(kind, data);
    EXPECT_TRUE(h.ok()) << h.status().message();
    return h.ok() ? *h : Hash{};
  }
  Hash PutChunk(std::string_view data) { return Put(ObjectKind::kChunk, Span(data)); }
  Hash PutTree(const Tree& t) { return Put(ObjectKind::kTree, EncodeTree(t)); }
  Hash PutList(const std::vector<ChunkRef>& chunks) {
    return Put(ObjectKind::kList, EncodeList(chunks));
  }
  Hash PutLinks(const std::vector<LinkRecord>& links) {
    return Put(ObjectKind::kLinks, EncodeLinks(links));
  }
  Hash PutRoot(const Hash& tree, uint64_t bytes = 0, uint64_t files = 0,
               std::vector<std::pair<uint32_t, Hash>> buckets = {}) {
    RootRecord r;
    r.attrs.mode = 0755;
    r.tree = tree;
    r.total_bytes = bytes;
    r.total_files = files;
    r.link_buckets = std::move(buckets);
    return Put(ObjectKind::kRoot, EncodeRoot(r));
  }
  void Flush() {
    Status st = objects().Flush();
    EXPECT_TRUE(st.ok()) << st.message();
  }

  // An object's verified bytes as a string, or "<error: message>".
  std::string Read(ObjectKind kind, const Hash& h) {
    auto d = objects().Get(kind, h);
    if (!d.ok()) return "<error: " + d.status().message() + ">";
    return Str(d->bytes);
  }

  // Whether the store returns exactly `want` for the object (a failure says what went wrong
  // without dumping binary data).
  ::testing::AssertionResult Holds(ObjectKind kind, const Hash& h, std::span<const uint8_t> want) {
    auto d = objects().Get(kind, h);
    if (!d.ok()) {
      return ::testing::AssertionFailure()
             << KindName(kind) << " " << h.short_hex() << ": " << d.status().message();
    }
    if (!std::equal(d->bytes.begin(), d->bytes.end(), want.begin(), want.end())) {
      return ::testing::AssertionFailure()
             << KindName(kind) << " " << h.short_hex() << ": wrong bytes (" << d->bytes.size()
             << " bytes, want " << want.size() << ")";
    }
    return ::testing::AssertionSuccess();
  }

  static TreeEntry FileEntry(std::string name, std::vector<ChunkRef> chunks) {
    TreeEntry e;
    e.name = std::move(name);
    e.type = EntryType::kFile;
    e.attrs.mode = 0644;
    for (const auto& c : chunks)
      e.content.size += c.size;
    e.content.chunks = std::move(chunks);
    return e;
  }
  static TreeEntry ListFileEntry(std::string name, uint64_t size, const Hash& list) {
    TreeEntry e;
    e.name = std::move(name);
    e.type = EntryType::kFile;
    e.attrs.mode = 0644;
    e.content.size = size;
    e.content.list = list;
    return e;
  }
  static TreeEntry DirEntry(std::string name, const Hash& tree) {
    TreeEntry e;
    e.name = std::move(name);
    e.type = EntryType::kDir;
    e.attrs.mode = 0755;
    e.tree = tree;
    return e;
  }

  // Where the catalog says an object's block is: {pack_id, block offset, header_len, object
  // offset within the raw block, object size, codec}; empty if not catalogued.
  std::vector<int64_t> Location(ObjectKind kind, const Hash& h) {
    auto rows = db().Rows(
        "SELECT b.pack_id, b.offset, b.header_len, o.offset, o.size, b.codec FROM objects o "
        "JOIN blocks b ON b.id = o.block_id WHERE o.hash=? AND o.kind=?",
        {h, static_cast<int64_t>(kind)});
    return rows.empty() ? std::vector<int64_t>{} : rows[0];
  }

  // An Env that injects faults, owned here so that it outlives store_ (destroyed first, as
  // members go in reverse order) even when a test ends early: pass &fault_env() to OpenStore.
  FaultEnv& fault_env() {
    if (!fault_env_) fault_env_ = std::make_unique<FaultEnv>();
    return *fault_env_;
  }

  ObjectStoreOptions object_options_;
  TempDir tmp_;
  std::unique_ptr<FaultEnv> fault_env_;
  std::unique_ptr<Store> store_;
  int64_t writer_id_ = 0;
  std::unique_ptr<SqliteDb> db_;
};

}  // namespace stashfs::test
