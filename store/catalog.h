// The SQLite catalog of a store: its schema, its format version, and its connections.
//
// One write connection per process (SQLite allows one writer at a time anyway; a mutex orders our
// own threads) and a pool of read connections, so FUSE reads never queue behind a commit (WAL).
// The tables are documented in store/FORMAT.md; each is owned by one class: objects, blocks,
// packs and pins by ObjectStore; volumes, snapshots, mounts and counters by Store.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "store/sqlite.h"
#include "store/status.h"

namespace stashfs {

constexpr int kFormatVersion = 1;

class Catalog {
 public:
  // Opens (and with `create`, creates) the catalog at `path`, refusing newer formats.
  static Result<std::unique_ptr<Catalog>> Open(const std::string& path, bool create);

  // Exclusive use of the write connection for as long as the guard lives.
  class Writer {
   public:
    explicit Writer(Catalog* c) : lock_(c->write_mu_), db_(c->writer_.get()) {}
    Db* operator->() { return db_; }
    Db* db() { return db_; }

   private:
    std::unique_lock<std::mutex> lock_;
    Db* db_;
  };
  Writer write() { return Writer(this); }

  // A read connection from the pool, returned when the guard goes out of scope.
  class Reader {
   public:
    Reader(Catalog* c, std::unique_ptr<Db> db) : c_(c), db_(std::move(db)) {}
    Reader(Reader&&) = default;
    ~Reader();
    Db* operator->() { return db_.get(); }
    Db* db() { return db_.get(); }

   private:
    Catalog* c_;
    std::unique_ptr<Db> db_;
  };
  Result<Reader> read();

  const std::string& path() const { return path_; }
  // Folds the WAL back into the database file (at unmount and after gc).
  Status Checkpoint();

 private:
  explicit Catalog(std::string path) : path_(std::move(path)) {}
  Status Init(bool create);
  Result<std::unique_ptr<Db>> Connect(bool for_write);

  std::string path_;
  std::mutex write_mu_;
  std::unique_ptr<Db> writer_;
  std::mutex pool_mu_;
  std::vector<std::unique_ptr<Db>> pool_;
};

}  // namespace stashfs
