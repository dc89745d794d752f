#include "store/catalog.h"

#include <unistd.h>

namespace stashfs {

namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
-- AUTOINCREMENT: ids are never reused, so a mount's cache of blocks by (pack id, offset), a dead
-- writer's pins or a volume's lock file (run/volume-ID.lock) can never be mistaken for newer ones.
CREATE TABLE packs(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  state INTEGER NOT NULL,            -- 0 open (a live writer appends), 1 sealed
  size INTEGER NOT NULL DEFAULT 0,   -- bytes up to the end of the last catalogued block
  writer INTEGER,                    -- mounts.id of the appender while open
  created INTEGER NOT NULL);
CREATE TABLE blocks(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  pack_id INTEGER NOT NULL,
  offset INTEGER NOT NULL,           -- of the block header within the pack
  header_len INTEGER NOT NULL,
  stored_len INTEGER NOT NULL,
  raw_len INTEGER NOT NULL,
  codec INTEGER NOT NULL);
CREATE INDEX blocks_pack ON blocks(pack_id);
CREATE TABLE objects(
  id INTEGER PRIMARY KEY,
  hash BLOB NOT NULL,
  kind INTEGER NOT NULL,
  block_id INTEGER NOT NULL,         -- 0: lost (fsck found it damaged); the next put heals it
  offset INTEGER NOT NULL,           -- within the block's uncompressed bytes
  size INTEGER NOT NULL,
  refs INTEGER NOT NULL DEFAULT 0,   -- references from roots and from referenced objects
  created INTEGER NOT NULL,
  verified INTEGER NOT NULL DEFAULT 0,
  UNIQUE(hash, kind));
CREATE INDEX objects_block ON objects(block_id);
CREATE INDEX objects_unreferenced ON objects(id) WHERE refs = 0;
CREATE TABLE pins(
  mount_id INTEGER NOT NULL,
  object_id INTEGER NOT NULL,
  gen INTEGER NOT NULL,              -- 0 = held until released (open unlinked files)
  PRIMARY KEY(mount_id, object_id)) WITHOUT ROWID;
CREATE INDEX pins_object ON pins(object_id);
CREATE TABLE mounts(                 -- live writers: mount daemons and writing commands
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  pid INTEGER NOT NULL,
  host TEXT NOT NULL,
  mountpoint TEXT NOT NULL,
  volume_id INTEGER,
  started INTEGER NOT NULL,
  lock TEXT NOT NULL);               -- run/<lock>: flock-held while the writer lives
CREATE TABLE volumes(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL UNIQUE,
  root BLOB NOT NULL,                -- a ROOT object; holds one reference on it
  ephemeral INTEGER NOT NULL DEFAULT 0,
  source TEXT,                       -- the snapshot key it was restored from
  created INTEGER NOT NULL,
  updated INTEGER NOT NULL,
  last_used INTEGER NOT NULL,
  damaged INTEGER NOT NULL DEFAULT 0);
CREATE TABLE snapshots(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  key TEXT NOT NULL UNIQUE,
  root BLOB NOT NULL,                -- a ROOT object; holds one reference on it
  created INTEGER NOT NULL,
  last_used INTEGER NOT NULL,
  logical_bytes INTEGER NOT NULL,
  files INTEGER NOT NULL,
  damaged INTEGER NOT NULL DEFAULT 0);
CREATE INDEX snapshots_created ON snapshots(created);
CREATE TABLE counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
)sql";

Status Pragmas(Db* db, bool for_write) {
  // WAL lets readers run beside the one writer; NORMAL sync is durable at checkpoints and
  // consistent at every commit (an fsync the user asks for is honoured by our own commit path).
  RETURN_IF_ERROR(db->Exec("PRAGMA busy_timeout=60000"));
  RETURN_IF_ERROR(db->Exec("PRAGMA synchronous=NORMAL"));
  RETURN_IF_ERROR(db->Exec("PRAGMA temp_store=MEMORY"));
  if (for_write) {
    RETURN_IF_ERROR(db->Exec("PRAGMA wal_autocheckpoint=8192"));
    RETURN_IF_ERROR(db->Exec("PRAGMA cache_size=-16384"));
  } else {
    // One reader connection per FUSE thread: keep each small, the OS caches the file anyway.
    RETURN_IF_ERROR(db->Exec("PRAGMA cache_size=-4096"));
  }
  return Status::Ok();
}

}  // namespace

Catalog::Reader::~Reader() {
  if (!db_) return;
  std::lock_guard lock(c_->pool_mu_);
  c_->pool_.push_back(std::move(db_));
}

Result<std::unique_ptr<Catalog>> Catalog::Open(const std::string& path, bool create) {
  std::unique_ptr<Catalog> c(new Catalog(path));
  RETURN_IF_ERROR(c->Init(create));
  return c;
}

Result<std::unique_ptr<Db>> Catalog::Connect(bool for_write) {
  ASSIGN_OR_RETURN(auto db, Db::Open(path_, false, false));
  RETURN_IF_ERROR(Pragmas(db.get(), for_write));
  return db;
}

Status Catalog::Init(bool create) {
  if (access(path_.c_str(), F_OK) != 0 && !create)
    return Status::NotFound("no catalog at " + path_);
  ASSIGN_OR_RETURN(writer_, Db::Open(path_, false, create));
  RETURN_IF_ERROR(writer_->Exec("PRAGMA journal_mode=WAL"));
  RETURN_IF_ERROR(Pragmas(writer_.get(), true));

  Txn txn(writer_.get());
  RETURN_IF_ERROR(txn.Begin());
  ASSIGN_OR_RETURN(
      auto q,
      writer_->Prepare("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='meta'"));
  ASSIGN_OR_RETURN(bool row, q.step());
  bool exists = row && q.i64(0) > 0;
  if (!exists) {
    if (!create) return Status::Corruption("catalog " + path_ + " has no schema");
    RETURN_IF_ERROR(writer_->Exec(kSchema));
    ASSIGN_OR_RETURN(auto ins, writer_->Prepare("INSERT INTO meta(key, value) VALUES(?, ?)"));
    RETURN_IF_ERROR(ins.bind(1, "format_version").bind(2, std::to_string(kFormatVersion)).run());
  } else {
    ASSIGN_OR_RETURN(auto v, writer_->Prepare("SELECT value FROM meta WHERE key='format_version'"));
    ASSIGN_OR_RETURN(bool has, v.step());
    if (!has) return Status::Corruption("catalog " + path_ + " has no format version");
    int version = std::atoi(v.text(0).c_str());
    if (version <= 0) return Status::Corruption("catalog " + path_ + " has a bad format version");
    if (version > kFormatVersion) {
      return Status::Unsupported("store format " + std::to_string(version) +
                                 " is newer than this stashfs understands (" +
                                 std::to_string(kFormatVersion) + "); upgrade stashfs");
    }
  }
  return txn.Commit();
}

Result<Catalog::Reader> Catalog::read() {
  {
    std::lock_guard lock(pool_mu_);
    if (!pool_.empty()) {
      auto db = std::move(pool_.back());
      pool_.pop_back();
      return Reader(this, std::move(db));
    }
  }
  ASSIGN_OR_RETURN(auto db, Connect(false));
  return Reader(this, std::move(db));
}

Status Catalog::Checkpoint() {
  auto w = write();
  return w->Exec("PRAGMA wal_checkpoint(TRUNCATE)");
}

}  // namespace stashfs
