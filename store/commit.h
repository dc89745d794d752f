// Committing a writer's tree: the one way a mounted volume moves to a new root.
//
// A writer (a mounted Volume) encodes the directories that changed into new objects and asks
// the store to make the volume point at the new ROOT. The steps, and why they run in this order:
//
// 1. Cut (the constructor), when the writer snapshots its tree, before it encodes it. Every pin
//    up to the cut belongs to an object the snapshot can reference, so committing that snapshot
//    may release them; a put made after the cut (a flusher storing a file while the tree is
//    encoded) is for a later tree and keeps its pin. Work under a lease holds the cut back.
// 2. Put the encoded objects (TREEs, LINKS, the ROOT): each is pinned from here on, so gc cannot
//    take one that is already catalogued before the root references it.
// 3. Flush: the packs holding them, and every chunk put before, are fdatasynced and catalogued
//    before any catalog row refers to them. Moving the root first could make a crash leave a
//    root whose objects were never written.
// 4. The caller's `before_move`, while the old root still references everything it did (a
//    Volume pins the chunks of open files whose last name this commit drops).
// 5. Store::CommitVolume: reference the new root, drop the old one and release this writer's
//    pins up to the cut, in one transaction. gc therefore never sees an object of either tree
//    both unreferenced and unpinned. It fails if another process moved the volume meanwhile.
//
// Rollback is the same whatever step fails: the catalog is unchanged (the volume keeps its old
// root, no pin is released, staged objects stay staged and the next Flush writes them again).
// A failed commit stores nothing for sure, so the caller must retry with every object again:
// the next TreeCommit gets everything the failed one had (a Volume marks what it encoded dirty).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "store/hash.h"
#include "store/objects.h"
#include "store/status.h"
#include "store/store.h"

namespace stashfs {

// An object of a new tree, encoded by the writer.
struct EncodedObject {
  ObjectKind kind;
  Hash hash;
  std::vector<uint8_t> bytes;
};

class TreeCommit {
 public:
  // Cuts this writer's pin generation (step 1): construct it when the snapshot starts.
  TreeCommit(Store* store, int64_t volume_id);
  TreeCommit(const TreeCommit&) = delete;
  TreeCommit& operator=(const TreeCommit&) = delete;

  // Adds an object of the new tree, in any order (children before parents is usual).
  void Add(EncodedObject obj) { objects_.push_back(std::move(obj)); }
  // The highest generation whose pins Commit releases.
  uint64_t cut() const { return cut_; }

  // Steps 2-5: moves the volume from `old_root` to `new_root`. With no objects added (nothing
  // changed) there is nothing to store or flush: the commit only releases pins and, with
  // `durable`, makes earlier commits survive a power loss. Call at most once.
  Status Commit(const Hash& old_root, const Hash& new_root, bool durable,
                const std::function<Status()>& before_move = {});

 private:
  Store* store_;
  int64_t volume_id_;
  uint64_t cut_;
  std::vector<EncodedObject> objects_;
};

}  // namespace stashfs
