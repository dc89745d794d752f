// A thin RAII layer over SQLite: cached prepared statements, typed binds, transactions.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "store/hash.h"
#include "store/status.h"

namespace stashfs {

class Db;

// A prepared statement in use; resets it (and clears its binds) when it goes out of scope.
class Query {
 public:
  Query(Db* db, sqlite3_stmt* s) : db_(db), s_(s) {}
  Query(Query&& o) noexcept : db_(o.db_), s_(o.s_) { o.s_ = nullptr; }
  Query(const Query&) = delete;
  ~Query();

  Query& bind(int i, int64_t v);
  Query& bind(int i, uint64_t v) { return bind(i, static_cast<int64_t>(v)); }
  Query& bind(int i, int v) { return bind(i, static_cast<int64_t>(v)); }
  Query& bind(int i, uint32_t v) { return bind(i, static_cast<int64_t>(v)); }
  Query& bind(int i, std::string_view v);
  Query& bind(int i, const char* v) { return bind(i, std::string_view(v)); }
  Query& bind(int i, const std::string& v) { return bind(i, std::string_view(v)); }
  Query& bind_blob(int i, std::span<const uint8_t> v);
  Query& bind(int i, const Hash& h) { return bind_blob(i, h.bytes); }
  Query& bind_null(int i);

  // Steps once: true when a row is available, false when done.
  Result<bool> step();
  // Steps to completion, for statements without result rows.
  Status run();

  int64_t i64(int col) const { return sqlite3_column_int64(s_, col); }
  std::string text(int col) const;
  std::span<const uint8_t> blob(int col) const;
  Hash hash(int col) const;
  bool is_null(int col) const { return sqlite3_column_type(s_, col) == SQLITE_NULL; }

 private:
  Db* db_;
  sqlite3_stmt* s_;
};

class Db {
 public:
  static Result<std::unique_ptr<Db>> Open(const std::string& path, bool readonly, bool create);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  Status Exec(const std::string& sql);
  // Statements are compiled once per connection and reused (cached by their text).
  Result<Query> Prepare(const char* sql);
  int64_t changes() const { return sqlite3_changes64(db_); }
  int64_t last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }
  Status Error(const std::string& what) const;
  const std::string& path() const { return path_; }
  sqlite3* raw() { return db_; }

 private:
  Db(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  sqlite3* db_;
  std::string path_;
  // Looked up by string_view (heterogeneous lookup): a statement run per object (the catalog
  // functions prepare at every call) must not allocate a copy of its text to find itself.
  struct TextHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
  };
  std::unordered_map<std::string, sqlite3_stmt*, TextHash, std::equal_to<>> stmts_;
};

// Raises a connection to synchronous=FULL for its lifetime (when `full`): commits made meanwhile
// are durable, not only atomic. Must not be created inside a transaction.
class SyncMode {
 public:
  SyncMode(Db* db, bool full);
  ~SyncMode();
  SyncMode(const SyncMode&) = delete;
  SyncMode& operator=(const SyncMode&) = delete;

 private:
  Db* db_;
};

// BEGIN IMMEDIATE ... COMMIT; rolls back unless committed. IMMEDIATE takes the write lock up
// front so a transaction never fails half way with SQLITE_BUSY on lock upgrade.
class Txn {
 public:
  explicit Txn(Db* db) : db_(db) {}
  Status Begin();
  Status Commit();
  ~Txn();

 private:
  Db* db_;
  bool open_ = false;
};

// BEGIN ... COMMIT on a reader: the statements in between read one consistent snapshot while
// writers keep committing (WAL). Commits when it goes out of scope, since nothing was written.
class ReadTxn {
 public:
  explicit ReadTxn(Db* db) : db_(db) {}
  Status Begin();
  ~ReadTxn();
  ReadTxn(const ReadTxn&) = delete;
  ReadTxn& operator=(const ReadTxn&) = delete;

 private:
  Db* db_;
  bool open_ = false;
};

}  // namespace stashfs
