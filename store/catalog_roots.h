// The statements on the volumes, snapshots, mounts and counters tables that Store runs, and the
// row counts `stashfs stats` shows. See catalog_objects.h for how the catalog files divide the
// SQL and what the functions promise.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "store/hash.h"
#include "store/sqlite.h"
#include "store/status.h"
#include "store/store.h"  // VolumeInfo, SnapshotInfo, MountInfo: the rows of those tables

namespace stashfs::catalog {

// ---- mounts --------------------------------------------------------------------------------

// Returns the new row's id.
Result<int64_t> InsertMount(Db* w, int64_t pid, const std::string& host,
                            const std::string& mountpoint, int64_t started,
                            const std::string& lock);
Status DeleteMount(Db* w, int64_t mount_id);
Status SetMountVolume(Db* w, int64_t mount_id, int64_t volume_id);
struct MountLock {
  int64_t id = 0;
  std::string lock;  // file name under run/
};
Result<std::vector<MountLock>> ListMountLocks(Db* r);
// Ordered by id.
Result<std::vector<MountInfo>> ListMounts(Db* r);

// ---- volumes -------------------------------------------------------------------------------

Result<std::optional<VolumeInfo>> FindVolumeByName(Db* r, const std::string& name);
Result<std::optional<VolumeInfo>> FindVolumeById(Db* r, int64_t id);
// Ordered by name.
Result<std::vector<VolumeInfo>> ListVolumes(Db* r);
// False when a volume of that name exists already. An empty `source` is stored as NULL.
Result<bool> InsertVolume(Db* w, const std::string& name, const Hash& root, bool ephemeral,
                          const std::string& source, int64_t now);
Status TouchVolume(Db* w, int64_t volume_id, int64_t now);
// Moves the volume from `old_root` to `new_root`; false when its row is gone or no longer at
// `old_root` (changed by someone else).
Result<bool> MoveVolumeRoot(Db* w, int64_t volume_id, const Hash& old_root, const Hash& new_root,
                            int64_t now);
// Delete the row and return the root it held a reference on (nullopt: no such row). The
// caller drops that reference in the same transaction.
Result<std::optional<Hash>> DeleteVolume(Db* w, int64_t volume_id);
Result<std::optional<Hash>> DeleteEphemeralVolume(Db* w, const std::string& name);

// ---- snapshots -----------------------------------------------------------------------------

Result<std::optional<SnapshotInfo>> FindSnapshotByKey(Db* r, const std::string& key);
// Ordered by key.
Result<std::vector<SnapshotInfo>> ListSnapshots(Db* r);
// The most recently created snapshot whose key starts with `prefix`.
Result<std::optional<SnapshotInfo>> NewestSnapshotWithPrefix(Db* r, const std::string& prefix);
struct SnapshotRoot {
  int64_t id = 0;
  Hash root;
};
Result<std::optional<SnapshotRoot>> FindSnapshotRoot(Db* r, const std::string& key);
Status InsertSnapshot(Db* w, const std::string& key, const Hash& root, int64_t now,
                      uint64_t logical_bytes, uint64_t files);
// Points snapshot `id` at a new root, as if created now, and clears its damaged mark.
Status ReplaceSnapshot(Db* w, int64_t id, const Hash& root, int64_t now, uint64_t logical_bytes,
                       uint64_t files);
Status TouchSnapshot(Db* w, int64_t id, int64_t now);
Result<std::optional<Hash>> DeleteSnapshot(Db* w, int64_t id);

// ---- counters and totals -------------------------------------------------------------------

Status AddCounter(Db* w, const std::string& name, int64_t delta);
// Ordered by name.
Result<std::vector<std::pair<std::string, int64_t>>> ListCounters(Db* r);

struct Totals {
  uint64_t objects = 0;
  uint64_t object_bytes = 0;
  uint64_t chunks = 0;
  uint64_t chunk_bytes = 0;
  uint64_t unreferenced_objects = 0;
  uint64_t blocks = 0;
  uint64_t packs = 0;
  uint64_t pack_bytes = 0;
};
Result<Totals> CountRows(Db* r);

}  // namespace stashfs::catalog
