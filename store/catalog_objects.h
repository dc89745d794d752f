// The statements on the objects, blocks, packs and pins tables that ObjectStore (and gc's pack
// writer) run: every SQL statement of the store lives in the catalog files, next to the schema
// (catalog.cc), behind typed functions, so the on-disk format is read and written in one place.
// A change to a table is a change to these files and FORMAT.md; callers only say what they want.
//
// Each function takes the connection it runs on: callers choose the transaction (the write
// connection, often inside a Txn, or a reader from the pool); none of these opens or commits
// one. Statements are compiled once per connection (Db::Prepare caches them by text), so a call
// costs a cache lookup plus the statement's own work.
//
// The other tables: catalog_roots.h (Store's), catalog_maintenance.h (gc's and fsck's scans).
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

// ---- packs ---------------------------------------------------------------------------------

// A new open pack appended to by `writer` (a mounts.id), sized to its header; returns its id.
Result<int64_t> InsertOpenPack(Db* w, int64_t writer, int64_t now);
Status SetPackSize(Db* w, int64_t pack_id, uint64_t size);
// Sealed at `size`: no writer appends to it any more.
Status SealPack(Db* w, int64_t pack_id, uint64_t size);
// Seals the packs a dead writer left open, at the size its last flush catalogued.
Status SealPacksOfWriter(Db* w, int64_t writer);
Status DeletePack(Db* w, int64_t pack_id);

// ---- blocks --------------------------------------------------------------------------------

// Returns the new block's id.
Result<int64_t> InsertBlock(Db* w, const BlockLocation& loc);

// ---- objects -------------------------------------------------------------------------------

// Catalogues an object stored at `offset` of block `block_id`. An existing row is left alone
// unless it is lost (block_id 0), which this heals.
Status InsertObject(Db* w, const BlockEntry& e, int64_t block_id, int64_t now);

// Where an object's bytes are: the block's location, and the object within the block.
struct ObjectLocation {
  int64_t block_id = 0;    // 0: lost
  bool has_block = false;  // false: block_id names no blocks row
  uint32_t offset = 0;
  uint32_t size = 0;
  BlockLocation loc;  // valid when has_block
};
Result<std::optional<ObjectLocation>> FindObjectLocation(Db* r, const ObjectKey& key);
// Catalogued and not lost.
Result<bool> HasStoredObject(Db* r, const ObjectKey& key);

// What dropping a reference to an object could free (ReleaseEstimator).
struct ObjectUsage {
  int64_t refs = 0;
  int64_t size = 0;
  int64_t stored_len = 0;  // of its block, 0 when lost
  int64_t raw_len = 0;
  bool pinned = false;
};
Result<std::optional<ObjectUsage>> FindObjectUsage(Db* r, const ObjectKey& key);

// refs += delta; returns the new count, or nullopt when the object has no row.
Result<std::optional<int64_t>> AddObjectRefs(Db* w, const ObjectKey& key, int64_t delta);

// ---- pins ----------------------------------------------------------------------------------

// Pins an object for `mount_id` at generation `gen` (raising an existing pin's generation) if
// it is catalogued and not lost; false when it is not. One statement, so gc sees either no row
// or the pin.
Result<bool> PinIfStored(Db* w, int64_t mount_id, uint64_t gen, const ObjectKey& key);
// The same for an object just catalogued in this transaction (lost or not).
Status PinObject(Db* w, int64_t mount_id, uint64_t gen, const ObjectKey& key);
Status UnpinObject(Db* w, int64_t mount_id, uint64_t gen, const ObjectKey& key);
// Drops a mount's pins of generations up to `upto`.
Status ReleasePins(Db* w, int64_t mount_id, uint64_t upto);
Status DropPinsOfMount(Db* w, int64_t mount_id);

}  // namespace stashfs::catalog
