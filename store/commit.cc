#include "store/commit.h"

namespace stashfs {

TreeCommit::TreeCommit(Store* store, int64_t volume_id)
    : store_(store), volume_id_(volume_id), cut_(store->objects().CutGeneration()) {}

Status TreeCommit::Commit(const Hash& old_root, const Hash& new_root, bool durable,
                          const std::function<Status()>& before_move) {
  // Every failure returns before CommitVolume's transaction, or fails inside it: the one
  // rollback is that nothing moved (see the header).
  if (!objects_.empty()) {
    ObjectStore& objects = store_->objects();
    for (const auto& o : objects_)
      RETURN_IF_ERROR(objects.PutHashed(o.kind, o.hash, o.bytes));
    RETURN_IF_ERROR(objects.Flush());
  }
  if (before_move) RETURN_IF_ERROR(before_move());
  return store_->CommitVolume(volume_id_, old_root, new_root, cut_, durable);
}

}  // namespace stashfs
