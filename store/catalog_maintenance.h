// The statements only gc, prune and fsck run: whole-table scans, compaction's moves and fsck's
// repairs. See catalog_objects.h for how the catalog files divide the SQL.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "store/hash.h"
#include "store/object_store.h"  // ObjectKey
#include "store/objects.h"
#include "store/pack.h"
#include "store/sqlite.h"
#include "store/status.h"

namespace stashfs::catalog {

// ---- gc and fsck ---------------------------------------------------------------------------

// Bytes per pack of blocks that keep at least one object referenced or pinned.
struct PackLive {
  int64_t id = 0;
  int state = 0;
  uint64_t live = 0;
};
// Ordered by pack id.
Result<std::vector<PackLive>> PackLiveBytes(Db* r);
Result<std::vector<int64_t>> ListPackIds(Db* r);

Status DeleteBlock(Db* w, int64_t block_id);
Status DeleteBlocksOfPack(Db* w, int64_t pack_id);

struct BlockRow {
  int64_t id = 0;
  BlockLocation loc;
};
// The blocks of one pack in file order.
Result<std::vector<BlockRow>> BlocksOfPack(Db* r, int64_t pack_id);

// Objects of one block in block order.
struct BlockObject {
  int64_t id = 0;
  Hash hash;
  ObjectKind kind = ObjectKind::kChunk;
  uint32_t offset = 0;
  uint32_t size = 0;
};
Result<std::vector<BlockObject>> ObjectsOfBlock(Db* r, int64_t block_id);
// Points an object at its copy in another block.
Status MoveObject(Db* w, int64_t object_id, int64_t block_id, uint32_t offset);

// Objects neither referenced nor pinned: what gc deletes.
struct Garbage {
  uint64_t objects = 0;
  uint64_t bytes = 0;
};
Result<Garbage> CountGarbage(Db* r);
// Deletes up to 5000 of them (small transactions: committing mounts wait at most one batch).
Result<Garbage> DeleteGarbageBatch(Db* w);
// Deletes the blocks no object lies in any more.
Status DeleteEmptyBlocks(Db* w);

// SQLite's own check; calls `problem` with each message it reports other than "ok".
Status IntegrityCheck(Db* r, const std::function<void(const std::string&)>& problem);

// Whole-table scans, streamed (a store can hold millions of objects).
Status ForEachPack(Db* r, const std::function<void(int64_t id, uint64_t size)>& fn);
Status ForEachBlock(Db* r, const std::function<void(int64_t id, const BlockLocation&)>& fn);
struct ObjectRow {
  int64_t id = 0;
  ObjectKey key;
  int64_t block_id = 0;
  uint32_t offset = 0;
  uint32_t size = 0;
  int64_t refs = 0;
  int64_t verified = 0;
};
Status ForEachObject(Db* r, const std::function<void(const ObjectRow&)>& fn);
Status ForEachSnapshotRoot(Db* r,
                           const std::function<void(const std::string& key, const Hash&)>& fn);
Status ForEachVolumeRoot(Db* r,
                         const std::function<void(const std::string& name, const Hash&)>& fn);

// fsck's results.
Status SetBlockVerified(Db* w, int64_t block_id, int64_t now);
Status MarkObjectLost(Db* w, int64_t object_id);
Status FixObjectRefs(Db* w, int64_t object_id, int64_t delta);
Status ClearDamagedMarks(Db* w);
Status MarkSnapshotDamaged(Db* w, const std::string& key);
Status MarkVolumeDamaged(Db* w, const std::string& name);

}  // namespace stashfs::catalog
