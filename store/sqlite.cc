#include "store/sqlite.h"

namespace stashfs {

Query::~Query() {
  if (s_) {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
}

Query& Query::bind(int i, int64_t v) {
  sqlite3_bind_int64(s_, i, v);
  return *this;
}
Query& Query::bind(int i, std::string_view v) {
  sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  return *this;
}
Query& Query::bind_blob(int i, std::span<const uint8_t> v) {
  sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  return *this;
}
Query& Query::bind_null(int i) {
  sqlite3_bind_null(s_, i);
  return *this;
}

Result<bool> Query::step() {
  int rc = sqlite3_step(s_);
  if (rc == SQLITE_ROW) return true;
  // A finished statement must be reset before it can be bound again: sqlite3_bind_*() on it
  // fails with SQLITE_MISUSE, and the next step would silently rerun it with the old values.
  if (rc == SQLITE_DONE) {
    sqlite3_reset(s_);
    return false;
  }
  Status st = db_->Error("catalog query failed");
  sqlite3_reset(s_);
  return st;
}

Status Query::run() {
  for (;;) {
    ASSIGN_OR_RETURN(bool row, step());
    if (!row) return Status::Ok();
  }
}

std::string Query::text(int col) const {
  auto* p = sqlite3_column_text(s_, col);
  int n = sqlite3_column_bytes(s_, col);
  return p ? std::string(reinterpret_cast<const char*>(p), n) : std::string();
}

std::span<const uint8_t> Query::blob(int col) const {
  auto* p = static_cast<const uint8_t*>(sqlite3_column_blob(s_, col));
  int n = sqlite3_column_bytes(s_, col);
  return {p, static_cast<size_t>(n)};
}

Hash Query::hash(int col) const {
  auto b = blob(col);
  if (b.size() != 32) return Hash{};
  return Hash::FromBytes(b.data());
}

Result<std::unique_ptr<Db>> Db::Open(const std::string& path, bool readonly, bool create) {
  sqlite3* db = nullptr;
  int flags = (readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) |
              (create && !readonly ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX;
  int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return Status::IOError("opening catalog " + path + ": " + msg, EIO);
  }
  sqlite3_extended_result_codes(db, 1);
  // Before any statement: even switching to WAL must wait for another process's lock.
  sqlite3_busy_timeout(db, 60000);
  return std::unique_ptr<Db>(new Db(db, path));
}

Db::~Db() {
  for (auto& [sql, s] : stmts_)
    sqlite3_finalize(s);
  sqlite3_close(db_);
}

Status Db::Error(const std::string& what) const {
  int code = sqlite3_extended_errcode(db_);
  std::string msg = what + " (" + path_ + "): " + sqlite3_errmsg(db_);
  if ((code & 0xff) == SQLITE_FULL) return Status::IOError(msg, ENOSPC);
  if ((code & 0xff) == SQLITE_BUSY || (code & 0xff) == SQLITE_LOCKED)
    return Status::Busy(msg + "; another stashfs process holds the catalog, try again");
  if ((code & 0xff) == SQLITE_CORRUPT || (code & 0xff) == SQLITE_NOTADB)
    return Status::Corruption(msg + "; run `stashfs fsck`");
  if ((code & 0xff) == SQLITE_READONLY) return Status::IOError(msg, EROFS);
  return Status::IOError(msg, EIO);
}

Status Db::Exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string m = err ? err : "unknown error";
    sqlite3_free(err);
    Status s = Error("catalog statement failed");
    return s.context(m);
  }
  return Status::Ok();
}

Result<Query> Db::Prepare(const char* sql) {
  auto it = stmts_.find(std::string_view(sql));
  if (it != stmts_.end()) return Query(this, it->second);
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK)
    return Error(std::string("preparing `") + sql + "`");
  stmts_[sql] = s;
  return Query(this, s);
}

SyncMode::SyncMode(Db* db, bool full) : db_(full ? db : nullptr) {
  if (db_) db_->Exec("PRAGMA synchronous=FULL");
}

SyncMode::~SyncMode() {
  if (db_) db_->Exec("PRAGMA synchronous=NORMAL");
}

Status Txn::Begin() {
  RETURN_IF_ERROR(db_->Exec("BEGIN IMMEDIATE"));
  open_ = true;
  return Status::Ok();
}

Status Txn::Commit() {
  Status s = db_->Exec("COMMIT");
  if (s.ok()) open_ = false;
  return s;
}

Txn::~Txn() {
  if (open_) db_->Exec("ROLLBACK");
}

Status ReadTxn::Begin() {
  RETURN_IF_ERROR(db_->Exec("BEGIN"));
  open_ = true;
  return Status::Ok();
}

ReadTxn::~ReadTxn() {
  if (open_) db_->Exec("COMMIT");
}

}  // namespace stashfs
