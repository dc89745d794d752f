// Keeping a store within its limits and proving its data intact: gc, prune and fsck. All are
// safe while volumes are mounted and written; each step is a transaction, so a crash (or
// Ctrl-C) at any point leaves a consistent store and the next run picks up where this one ended.
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "store/archive.h"
#include "store/store.h"

namespace stashfs {

struct GcOptions {
  bool dry_run = false;
  // Packs with less than this fraction of live bytes are rewritten without the dead ones...
  double compact_below = 0.5;
  // ...when that frees at least this much.
  uint64_t compact_min_bytes = 1 << 20;
  ProgressFn progress;
};

struct GcReport {
  uint64_t objects_deleted = 0;
  uint64_t object_bytes_deleted = 0;  // uncompressed
  uint64_t packs_deleted = 0;
  uint64_t packs_compacted = 0;
  uint64_t orphan_files_removed = 0;
  uint64_t disk_bytes_before = 0;
  uint64_t disk_bytes_after = 0;  // estimated in a dry run
};

// Deletes every object nothing references (and no writer has pinned), then frees the space they
// held: empty packs are deleted and mostly-dead packs rewritten. The store must have a
// registered writer (compaction writes a pack).
Result<GcReport> CollectGarbage(Store& store, const GcOptions& opts);

struct PruneOptions {
  uint64_t max_size = 0;  // bytes on disk (packs + catalog); 0: no size limit
  int64_t max_age = 0;    // seconds since last use; 0: no age limit
  bool dry_run = false;
  std::set<std::string> keep;  // snapshot keys never to evict (the one a save just made)
  ProgressFn progress;
};

struct Evicted {
  std::string kind;  // "snapshot" or "volume"
  std::string name;
  int64_t last_used = 0;
  uint64_t exclusive_bytes = 0;
  std::string reason;  // "age" or "size"
};

struct PruneReport {
  std::vector<Evicted> evicted;
  std::vector<std::string> kept_in_use;  // over the limit but mounted or restored by a mount
  uint64_t disk_bytes_before = 0;
  uint64_t disk_bytes_after = 0;
  GcReport gc;
};

// Evicts whole snapshots and unmounted volumes, least recently used first, until the store is
// under max_size and nothing is older than max_age. Never evicts a mounted volume or a snapshot
// a live mount was restored from; never evicts single chunks. Runs gc to free the space.
Result<PruneReport> Prune(Store& store, const PruneOptions& opts);

// What gc would free now (a dry run without taking the maintenance lock), for `stats`.
Result<GcReport> EstimateGarbage(Store& store);

// Bytes the store occupies on disk: pack files plus the catalog.
Result<uint64_t> DiskUsage(Store& store);

struct FsckOptions {
  bool repair = false;
  double sample_percent = 100;  // re-hash this share of blocks, least recently verified first
  ProgressFn progress;
};

struct FsckReport {
  std::vector<std::string> problems;  // one line each
  uint64_t blocks_checked = 0;
  uint64_t objects_checked = 0;
  uint64_t bytes_checked = 0;
  uint64_t damaged_objects = 0;
  uint64_t refcount_errors = 0;
  std::vector<std::string> damaged_snapshots;
  std::vector<std::string> damaged_volumes;
  bool repaired = false;
  bool clean() const { return problems.empty(); }
};

// Checks the catalog (SQLite integrity, references, reference counts) and re-hashes stored data.
// With repair: damaged objects are marked lost (reads give EIO, the next write of the same bytes
// heals them), reference counts are corrected, and snapshots and volumes that reach lost data
// are marked damaged.
Result<FsckReport> Fsck(Store& store, const FsckOptions& opts);

}  // namespace stashfs
