// Volume's commit encoding: turning the dirty directories and hard-link buckets into TREE, LINKS
// and ROOT objects, and handing them to the store's TreeCommit (store/commit.h), which owns the
// protocol that stores them and moves the volume's root.
#include "fs/volume.h"

namespace stashfs::fs {

void Volume::FillBody(Inode* inode, Attrs* attrs, FileContent* content, std::string* target) {
  *attrs = inode->attrs;
  if (inode->type != EntryType::kCharDev && inode->type != EntryType::kBlockDev) attrs->rdev = 0;
  if (inode->file) *content = inode->file->committed();
  *target = inode->target;
}

TreeEntry Volume::EntryFor(const std::string& name, Inode* child) {
  TreeEntry e;
  e.name = name;
  e.type = child->type;
  if (child->link_id) {
    e.link_id = child->link_id;
  } else {
    FillBody(child, &e.attrs, &e.content, &e.target);
  }
  return e;
}

LinkRecord Volume::LinkRecordFor(Inode* inode) {
  LinkRecord r;
  r.link_id = inode->link_id;
  r.nlink = inode->nlink;
  r.type = inode->type;
  FillBody(inode, &r.attrs, &r.content, &r.target);
  return r;
}

Result<Hash> Volume::EncodeDir(Inode* inode, TreeCommit* out, std::vector<uint64_t>* encoded) {
  Directory* d = inode->dir.get();
  if (!d->dirty) return d->tree;
  Tree t;
  t.entries.reserve(d->children.size());
  uint64_t bytes = 0, files = 0, subdirs = 0;
  for (const auto& [name, ch] : d->children) {
    Inode* child = Find(ch.ino);
    TreeEntry e = EntryFor(name, child);
    if (child->type == EntryType::kDir) {
      ASSIGN_OR_RETURN(e.tree, EncodeDir(child, out, encoded));
      e.dir_bytes = child->dir->bytes;
      e.dir_files = child->dir->files;
      e.dir_subdirs = child->dir->subdirs;
      bytes += e.dir_bytes;
      files += e.dir_files;
      ++subdirs;
    } else {
      ++files;
      if (child->file) bytes += child->link_id ? child->file->committed().size : e.content.size;
    }
    t.entries.push_back(std::move(e));
  }
  std::vector<uint8_t> enc = EncodeTree(t);
  Hash h = Hash::Of(enc);
  out->Add({ObjectKind::kTree, h, std::move(enc)});
  d->tree = h;
  d->bytes = bytes;
  d->files = files;
  d->subdirs = subdirs;
  d->dirty = false;
  encoded->push_back(inode->ino);
  return h;
}

Status Volume::Commit(bool durable) {
  if (opts_.read_only) return Status::Ok();
  uint64_t ticket = ++commit_tickets_;
  std::lock_guard lock(commit_mu_);
  // Group commit: a commit that started after our request covers it, if it was durable enough.
  if (commit_covered_ >= ticket && (covered_durable_ || !durable)) return Status::Ok();
  uint64_t covering = commit_tickets_.load();
  RETURN_IF_ERROR(CommitLocked(durable));
  commit_covered_ = covering;
  covered_durable_ = durable;
  return Status::Ok();
}

Status Volume::Sync() {
  if (opts_.read_only) return Status::Ok();
  RETURN_IF_ERROR(FlushAll());
  return Commit(true);
}

Status Volume::CommitLocked(bool durable) {
  std::vector<uint64_t> encoded_dirs;  // inode numbers are never reused within a mount
  std::vector<uint32_t> encoded_buckets;
  std::optional<TreeCommit> commit;
  Hash new_root;
  {
    std::unique_lock lock(ns_mu_);
    Inode* root = Find(kRootIno);
    bool buckets_dirty = false;
    for (auto& [b, bucket] : buckets_)
      buckets_dirty |= bucket.dirty;
    if (!root->dir->dirty && !root_attrs_dirty_ && !buckets_dirty) {
      lock.unlock();
      // Nothing new, but earlier commits may not be durable yet.
      if (!durable) return Status::Ok();
      return TreeCommit(store_, info_.id).Commit(committed_root_, committed_root_, true);
    }
    dirty_since_commit_ = false;
    // Pins up to this cut are covered by the tree encoded below, once it is committed.
    commit.emplace(store_, info_.id);
    auto tree = EncodeDir(root, &*commit, &encoded_dirs);
    Status st = tree.status();
    RootRecord rec;
    if (st.ok()) {
      rec.tree = *tree;
      rec.attrs = root->attrs;
      rec.total_bytes = root->dir->bytes;
      rec.total_files = root->dir->files;
      rec.subdirs = root->dir->subdirs;
    }
    for (auto& [b, bucket] : buckets_) {
      if (!st.ok()) break;
      if (bucket.dirty) {
        st = EnsureBucketLoaded(b);
        if (!st.ok()) break;
        // Stored records, overlaid with the live state of every loaded hard-linked inode.
        for (const auto& [id, ino] : link_inodes_) {
          if (LinkBucketOf(id) != b) continue;
          Inode* inode = Find(ino);
          if (inode->nlink == 0) {
            bucket.records.erase(id);
          } else {
            bucket.records[id] = LinkRecordFor(inode);
          }
        }
        if (bucket.records.empty()) {
          bucket.hash = Hash{};
        } else {
          std::vector<LinkRecord> records;
          for (const auto& [id, r] : bucket.records)
            records.push_back(r);
          std::vector<uint8_t> enc = EncodeLinks(records);
          bucket.hash = Hash::Of(enc);
          commit->Add({ObjectKind::kLinks, bucket.hash, std::move(enc)});
        }
        bucket.dirty = false;
        encoded_buckets.push_back(b);
      }
      if (!bucket.hash.is_zero()) rec.link_buckets.emplace_back(b, bucket.hash);
    }
    if (st.ok()) {
      std::vector<uint8_t> enc = EncodeRoot(rec);
      new_root = Hash::Of(enc);
      commit->Add({ObjectKind::kRoot, new_root, std::move(enc)});
      root_attrs_dirty_ = false;
    }
    if (!st.ok()) {
      RestoreDirtyLocked(encoded_dirs, encoded_buckets);
      return st;
    }
  }
  // While the old root still references them: pin what open, unnamed files read.
  Status st = commit->Commit(committed_root_, new_root, durable, [this] { return PinOrphans(); });
  if (!st.ok()) {
    std::unique_lock lock(ns_mu_);
    RestoreDirtyLocked(encoded_dirs, encoded_buckets);
    return st.context("committing volume '" + info_.name + "'");
  }
  committed_root_ = new_root;
  stats_.Add(Statistic::kCommits);
  return Status::Ok();
}

void Volume::RestoreDirtyLocked(const std::vector<uint64_t>& encoded_dirs,
                                const std::vector<uint32_t>& encoded_buckets) {
  // Nothing was committed: make sure the next attempt encodes everything again (a failed
  // TreeCommit stores nothing for sure). Directories encoded here that were deleted since are
  // no longer in the table.
  for (uint64_t ino : encoded_dirs) {
    if (Inode* d = Find(ino)) {
      d->dir->dirty = false;  // let MarkDirDirty walk up from here
      MarkDirDirty(d);
    }
  }
  for (uint32_t b : encoded_buckets)
    buckets_[b].dirty = true;
  root_attrs_dirty_ = true;
  dirty_since_commit_ = true;
}

Status Volume::PinOrphans() {
  std::vector<std::pair<uint64_t, FileContent>> fresh;
  std::vector<ObjectKey> unpin;
  {
    std::unique_lock lock(ns_mu_);
    for (uint64_t ino : orphans_) {
      Inode* inode = Find(ino);
      if (inode && inode->file && !orphan_pins_.count(ino))
        fresh.emplace_back(ino, inode->file->committed());
    }
    orphans_.clear();
    unpin.swap(to_unpin_);
  }
  for (const auto& [ino, content] : fresh) {
    std::vector<ObjectKey> keys;
    std::vector<ChunkRef> chunks = content.chunks;
    if (content.list) {
      keys.push_back({*content.list, ObjectKind::kList});
      ASSIGN_OR_RETURN(auto data, objects_->Get(ObjectKind::kList, *content.list));
      ASSIGN_OR_RETURN(chunks, DecodeList(data.bytes));
    }
    for (const auto& c : chunks)
      if (!c.is_hole()) keys.push_back({c.hash, ObjectKind::kChunk});
    for (const auto& k : keys) {
      Status s = objects_->PinForever(k);
      // Never stored (or lost): nothing to keep, the staged bytes are in memory or scratch.
      if (!s.ok() && s.code() != Code::kNotFound) return s;
    }
    std::unique_lock lock(ns_mu_);
    if (Find(ino)) {
      orphan_pins_[ino] = std::move(keys);
    } else {
      unpin.insert(unpin.end(), keys.begin(), keys.end());  // forgotten meanwhile
    }
  }
  for (const auto& k : unpin)
    RETURN_IF_ERROR(objects_->Unpin(k));
  return Status::Ok();
}

}  // namespace stashfs::fs
