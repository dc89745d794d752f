// A store: one directory holding the catalog, the packs and scratch space for every cache on a
// machine. Store ties the ObjectStore to volumes and snapshots and keeps reference counts exact.
//
// Layout (see FORMAT.md): catalog.db, packs/NN/ID.pack, scratch/MOUNT-ID/, run/*.lock, config.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "store/catalog.h"
#include "store/env.h"
#include "store/object_store.h"
#include "store/objects.h"
#include "store/status.h"

namespace stashfs {

// Volume names and cache keys users pick: 1 to max_len characters of [A-Za-z0-9._+=:@/-], not
// starting with '.' (reserved for stashfs's own volumes), '-' or '/'. Invalid says which rule
// failed, quoting the name with unprintable bytes escaped.
Status ValidateName(const std::string& what, const std::string& name, size_t max_len);
constexpr size_t kMaxKeyLength = 512;
constexpr size_t kMaxVolumeNameLength = 128;

// The store directory used when none is given: $STASHFS_STORE, else /var/lib/stashfs for root,
// else $XDG_DATA_HOME/stashfs (default ~/.local/share/stashfs).
std::string DefaultStoreDir();

struct StoreOptions {
  std::string dir;
  bool create = true;  // create the store on first use
  ObjectStoreOptions objects;
  Env* env = Env::Default();
};

struct VolumeInfo {
  int64_t id = 0;
  std::string name;
  Hash root;
  bool ephemeral = false;
  std::string source;  // snapshot key it was restored from, if any
  int64_t created = 0;
  int64_t updated = 0;
  int64_t last_used = 0;
};

struct SnapshotInfo {
  int64_t id = 0;
  std::string key;
  Hash root;
  int64_t created = 0;
  int64_t last_used = 0;
  uint64_t logical_bytes = 0;
  uint64_t files = 0;
  bool damaged = false;
};

struct MountInfo {
  int64_t id = 0;
  int64_t pid = 0;
  std::string host;
  std::string mountpoint;
  int64_t volume_id = 0;
  int64_t started = 0;
};

struct StoreStats {
  uint64_t logical_bytes = 0;  // file bytes over all volumes and snapshots, each time they appear
  uint64_t logical_files = 0;
  uint64_t unique_bytes = 0;  // uncompressed bytes of distinct file chunks
  uint64_t object_bytes = 0;  // uncompressed bytes of all distinct objects (incl. metadata)
  uint64_t stored_bytes = 0;  // bytes of pack files on disk
  uint64_t catalog_bytes = 0;
  uint64_t objects = 0;
  uint64_t chunks = 0;
  uint64_t blocks = 0;
  uint64_t packs = 0;
  uint64_t unreferenced_objects = 0;
  uint64_t volumes = 0;
  uint64_t snapshots = 0;
};

// An flock(2) on a file, held until destroyed; the kernel drops it if the process dies.
class FileLock {
 public:
  // Takes an exclusive lock without waiting; Busy if another process holds it.
  static Result<std::unique_ptr<FileLock>> TryExclusive(const std::string& path);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  const std::string& path() const { return path_; }

 private:
  FileLock(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_;
  std::string path_;
};

class Store {
 public:
  static Result<std::unique_ptr<Store>> Open(const StoreOptions& opts);
  ~Store();

  const std::string& dir() const { return dir_; }
  Env* env() const { return env_; }
  Catalog& catalog() { return *catalog_; }
  ObjectStore& objects() { return *objects_; }
  // What this process counted (store/statistic.h); a mount adds the persisted ones to the
  // store's totals when it ends.
  StatisticCounters& statistics() { return statistics_; }
  std::string scratch_dir() const { return dir_ + "/scratch"; }
  std::string run_dir() const { return dir_ + "/run"; }

  // Registers this process as a writer (a mounts row plus a liveness lock) and enables Put().
  // Cleans up after writers that died first.
  Result<int64_t> RegisterWriter(const std::string& mountpoint);
  // Flushes and closes this writer's packs and removes its registration.
  Status UnregisterWriter();
  int64_t writer_id() const { return writer_id_; }
  // Releases what dead writers left: pins, open packs, scratch directories, registrations.
  Status ReapDeadWriters();
  Result<std::vector<MountInfo>> LiveMounts();

  // Takes the volume's exclusive lock for this process; Busy names the current mountpoint.
  Result<std::unique_ptr<FileLock>> LockVolume(const VolumeInfo& v);
  Status SetMountVolume(int64_t volume_id);

  // Volumes.
  Result<std::optional<VolumeInfo>> FindVolume(const std::string& name);
  Result<VolumeInfo> FindVolumeById(int64_t id);
  // Creates a volume whose tree is `root` (a ROOT object already stored and pinned).
  Result<VolumeInfo> CreateVolume(const std::string& name, const Hash& root, bool ephemeral,
                                  const std::string& source);
  Status DeleteVolume(int64_t id);
  Result<std::vector<VolumeInfo>> ListVolumes();
  // Moves a volume from `old_root` to `new_root` and releases this writer's pins up to
  // `release_upto`, in one transaction. Fails if another process moved the volume meanwhile.
  // With `durable` the transaction survives a power loss once this returns (a user's fsync,
  // unmount, save): SQLite's WAL is fsynced at commit, and with it every earlier commit.
  Status CommitVolume(int64_t volume_id, const Hash& old_root, const Hash& new_root,
                      uint64_t release_upto, bool durable = false);
  Status TouchVolume(int64_t volume_id);

  // Snapshots.
  Result<std::optional<SnapshotInfo>> FindSnapshot(const std::string& key);
  // AlreadyExists when the key is taken (unless `replace`).
  Result<SnapshotInfo> CreateSnapshot(const std::string& key, const Hash& root, bool replace);
  Status DeleteSnapshot(int64_t id);
  Result<std::vector<SnapshotInfo>> ListSnapshots();
  Status TouchSnapshot(int64_t id);
  // The most recently created snapshot whose key starts with `prefix` (actions/cache's
  // restore-keys rule), if any.
  Result<std::optional<SnapshotInfo>> NewestSnapshotWithPrefix(const std::string& prefix);

  // Per-mount volumes: a mount of a cache key writes to a private volume cloned from the
  // restored snapshot, named after its writer so a crashed mount's volume is reclaimed.
  static std::string EphemeralVolumeName(int64_t writer_id);

  // Stored bytes reachable only through `root` (objects no other root or object shares),
  // a block's stored size shared among its objects by their raw size: what deleting that one
  // root would free (ReleaseEstimator on its own).
  Result<uint64_t> ExclusiveStoredBytes(const Hash& root);

  // Stores an empty tree owned by uid:gid with the given permission bits; returns its ROOT.
  Result<Hash> PutEmptyRoot(uint32_t uid, uint32_t gid, uint32_t mode);
  Result<RootRecord> ReadRoot(const Hash& root);

  // Adds `delta` (+1/-1) to an object's reference count inside the caller's transaction; the
  // first reference to an object takes references on its children, the last one drops them.
  Status AddRef(Db* w, ObjectKind kind, const Hash& hash, int delta);

  Result<StoreStats> Stats();
  Status AddCounter(const std::string& name, int64_t delta);
  Result<std::vector<std::pair<std::string, int64_t>>> Counters();

 private:
  Store() = default;

  std::string dir_;
  Env* env_ = nullptr;
  std::unique_ptr<Catalog> catalog_;
  StatisticCounters statistics_;  // before objects_, which counts into it
  std::unique_ptr<ObjectStore> objects_;
  int64_t writer_id_ = 0;
  std::unique_ptr<FileLock> writer_lock_;
};

// Predicts what deleting roots would free, by dropping their references in memory as the
// catalog's reference counting would: an object is freed when every reference to it is gone,
// so data that several dropped roots shared counts as soon as the last of them goes ("bytes
// only it holds" alone counts shared data for nobody, and evicting by it empties the store).
// Objects a writer has pinned are not counted: they stay until the writer commits.
class ReleaseEstimator {
 public:
  explicit ReleaseEstimator(Store& store) : store_(store) {}
  // Stored bytes freed by dropping one more reference to `root`.
  Result<uint64_t> Drop(const Hash& root);

 private:
  Store& store_;
  std::unordered_map<ObjectKey, int64_t, ObjectKeyHasher> dropped_;
};

}  // namespace stashfs
