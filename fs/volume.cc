#include "fs/volume.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <random>

#include "store/log.h"

namespace stashfs::fs {

Timespec Now() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return {ts.tv_sec, static_cast<uint32_t>(ts.tv_nsec)};
}

namespace {

struct timespec ToTimespec(const Timespec& t) {
  struct timespec ts;
  ts.tv_sec = t.sec;
  ts.tv_nsec = t.nsec;
  return ts;
}

uint64_t RandomLinkId() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard lock(mu);
  uint64_t v;
  do {
    v = rng() >> 1;
  } while (v == 0);
  return v;
}

Status ValidateName(std::string_view name) {
  if (name.size() > kNameMax) return Status::Errno(ENAMETOOLONG);
  if (!ValidEntryName(name)) return Status::Errno(EINVAL);
  return Status::Ok();
}

}  // namespace

Volume::Volume(Store* store, const VolumeInfo& info, VolumeOptions opts)
    : store_(store),
      objects_(&store->objects()),
      info_(info),
      opts_(opts),
      stats_(store->statistics()) {
  data_.objects = objects_;
  data_.env = store->env();
  data_.stats = &store->statistics();
  data_.scratch_dir =
      store->scratch_dir() + "/" +
      (store->writer_id() ? std::to_string(store->writer_id()) : "ro-" + std::to_string(getpid()));
  data_.mem_file_max = opts.mem_file_max;
  data_.mem_total_max = opts.mem_total_max;
  data_.keep_scratch_min = opts.keep_scratch_min;
  data_.chunker = opts.chunker;
}

Result<std::unique_ptr<Volume>> Volume::Open(Store* store, const VolumeInfo& info,
                                             VolumeOptions opts) {
  if (!opts.read_only && !store->writer_id())
    return Status::Invalid("a writable volume needs a registered writer");
  std::unique_ptr<Volume> v(new Volume(store, info, opts));
  RETURN_IF_ERROR(v->LoadRoot(info.root));
  return v;
}

Volume::~Volume() {
  Status s = Shutdown();
  if (!s.ok()) LogError(s.message());
}

Status Volume::LoadRoot(const Hash& root) {
  ASSIGN_OR_RETURN(RootRecord rec, store_->ReadRoot(root));
  auto inode = std::make_unique<Inode>();
  inode->ino = kRootIno;
  inode->type = EntryType::kDir;
  inode->nlookup = 1;  // the kernel never forgets the root
  inode->attrs = rec.attrs;
  inode->atime = rec.attrs.mtime;
  inode->dir = std::make_unique<Directory>();
  inode->dir->tree = rec.tree;
  inode->dir->bytes = rec.total_bytes;
  inode->dir->files = rec.total_files;
  inode->dir->subdirs = rec.subdirs;
  inodes_[kRootIno] = std::move(inode);
  for (const auto& [bucket, h] : rec.link_buckets)
    buckets_[bucket].hash = h;
  committed_root_ = root;
  return Status::Ok();
}

Status Volume::background_error() {
  std::lock_guard lock(error_mu_);
  return background_error_;
}

Hash Volume::committed_root() {
  std::lock_guard lock(commit_mu_);
  return committed_root_;
}

Status Volume::CheckWritable() const {
  return opts_.read_only ? Status::Errno(EROFS) : Status::Ok();
}

// ---- inode table ------------------------------------------------------------------------

Volume::Inode* Volume::Find(uint64_t ino) {
  auto it = inodes_.find(ino);
  return it == inodes_.end() ? nullptr : it->second.get();
}

Result<Volume::Inode*> Volume::FindDir(uint64_t ino) {
  Inode* d = Find(ino);
  if (!d) return Status::Errno(ENOENT);
  if (d->type != EntryType::kDir) return Status::Errno(ENOTDIR);
  RETURN_IF_ERROR(EnsureLoaded(d));
  return d;
}

Volume::Inode* Volume::NewInode(EntryType type) {
  auto inode = std::make_unique<Inode>();
  inode->ino = next_ino_++;
  inode->type = type;
  Inode* raw = inode.get();
  inodes_[raw->ino] = std::move(inode);
  return raw;
}

Status Volume::EnsureBucketLoaded(uint32_t bucket) {
  LinkBucket& b = buckets_[bucket];
  if (b.loaded) return Status::Ok();
  if (!b.hash.is_zero()) {
    ASSIGN_OR_RETURN(auto data, objects_->Get(ObjectKind::kLinks, b.hash));
    ASSIGN_OR_RETURN(auto records, DecodeLinks(data.bytes));
    for (auto& r : records) {
      if (LinkBucketOf(r.link_id) != bucket)
        return Status::Corruption("link record in wrong bucket");
      b.records.emplace(r.link_id, std::move(r));
    }
  }
  b.loaded = true;
  return Status::Ok();
}

Result<Volume::Inode*> Volume::InstantiateEntry(const TreeEntry& e, uint64_t parent) {
  Inode* inode;
  if (e.link_id) {
    auto live = link_inodes_.find(e.link_id);
    if (live != link_inodes_.end()) {
      inode = Find(live->second);
      inode->parents.push_back(parent);
      return inode;
    }
    uint32_t bucket = LinkBucketOf(e.link_id);
    RETURN_IF_ERROR(EnsureBucketLoaded(bucket));
    auto rec = buckets_[bucket].records.find(e.link_id);
    if (rec == buckets_[bucket].records.end() || rec->second.type != e.type)
      return Status::Corruption("hard link " + std::to_string(e.link_id) + " has no record");
    const LinkRecord& r = rec->second;
    inode = NewInode(r.type);
    inode->attrs = r.attrs;
    inode->nlink = r.nlink;
    inode->link_id = r.link_id;
    if (r.type == EntryType::kFile) inode->file = std::make_shared<FileData>(&data_, r.content);
    inode->target = r.target;
    link_inodes_[r.link_id] = inode->ino;
  } else {
    inode = NewInode(e.type);
    inode->attrs = e.attrs;
    if (e.type == EntryType::kDir) {
      inode->dir = std::make_unique<Directory>();
      inode->dir->tree = e.tree;
      inode->dir->bytes = e.dir_bytes;
      inode->dir->files = e.dir_files;
      inode->dir->subdirs = e.dir_subdirs;
    } else if (e.type == EntryType::kFile) {
      inode->file = std::make_shared<FileData>(&data_, e.content);
    }
    inode->target = e.target;
  }
  inode->atime = inode->attrs.mtime;
  inode->parents.push_back(parent);
  return inode;
}

Status Volume::EnsureLoaded(Inode* dir) {
  Directory* d = dir->dir.get();
  if (d->loaded) return Status::Ok();
  // Loaded with ns_mu_ held: a TREE is one cached block read and a parse, and holding the lock
  // keeps every operation free of reload races.
  ASSIGN_OR_RETURN(auto data, objects_->Get(ObjectKind::kTree, d->tree));
  ASSIGN_OR_RETURN(Tree tree, DecodeTree(data.bytes));
  uint64_t subdirs = 0;
  for (const auto& e : tree.entries) {
    ASSIGN_OR_RETURN(Inode * child, InstantiateEntry(e, dir->ino));
    auto [it, inserted] = d->children.emplace(e.name, Child{child->ino, d->next_loaded_cookie});
    d->by_cookie[d->next_loaded_cookie++] = &it->first;
    if (e.type == EntryType::kDir) ++subdirs;
  }
  d->subdirs = subdirs;
  d->loaded = true;
  stats_.Add(Statistic::kDirectoriesLoaded);
  return Status::Ok();
}

void Volume::AddChild(Inode* dir, std::string_view name, Inode* child) {
  Directory* d = dir->dir.get();
  uint64_t cookie = d->next_new_cookie--;
  auto [it, inserted] = d->children.emplace(std::string(name), Child{child->ino, cookie});
  d->by_cookie[cookie] = &it->first;
  if (child->type == EntryType::kDir) ++d->subdirs;
}

void Volume::RemoveChild(Inode* dir, std::string_view name) {
  Directory* d = dir->dir.get();
  auto it = d->children.find(name);
  if (it == d->children.end()) return;
  Inode* child = Find(it->second.ino);
  if (child && child->type == EntryType::kDir && d->subdirs) --d->subdirs;
  d->by_cookie.erase(it->second.cookie);
  d->children.erase(it);
}

void Volume::MarkDirDirty(Inode* dir) {
  dirty_since_commit_ = true;
  while (dir && !dir->dir->dirty) {
    dir->dir->dirty = true;
    dir = dir->parents.empty() ? nullptr : Find(dir->parents.front());
  }
}

void Volume::MarkChanged(Inode* inode) {
  dirty_since_commit_ = true;
  if (inode->ino == kRootIno) root_attrs_dirty_ = true;
  if (inode->link_id) {
    buckets_[LinkBucketOf(inode->link_id)].dirty = true;
    return;
  }
  for (uint64_t p : inode->parents)
    MarkDirDirty(Find(p));
}

void Volume::TouchDir(Inode* dir) {
  dir->attrs.mtime = dir->attrs.ctime = Now();
  MarkDirDirty(dir);
  MarkChanged(dir);
}

void Volume::DropLink(Inode* inode, uint64_t parent) {
  if (inode->nlink) --inode->nlink;
  auto it = std::find(inode->parents.begin(), inode->parents.end(), parent);
  if (it != inode->parents.end()) inode->parents.erase(it);
  inode->attrs.ctime = Now();
  if (inode->link_id) {
    LinkBucket& b = buckets_[LinkBucketOf(inode->link_id)];
    if (inode->nlink == 0) b.records.erase(inode->link_id);
    b.dirty = true;
    dirty_since_commit_ = true;
  }
  MarkChanged(inode);
}

void Volume::MaybeDelete(Inode* inode) {
  if (inode->ino == kRootIno || inode->nlink > 0) return;
  if (inode->nlookup > 0) {
    if (inode->file) orphans_.insert(inode->ino);
    return;
  }
  orphans_.erase(inode->ino);
  auto pins = orphan_pins_.find(inode->ino);
  if (pins != orphan_pins_.end()) {
    to_unpin_.insert(to_unpin_.end(), pins->second.begin(), pins->second.end());
    orphan_pins_.erase(pins);
  }
  if (inode->link_id) link_inodes_.erase(inode->link_id);
  inodes_.erase(inode->ino);
}

struct stat Volume::StatOf(Inode* inode) {
  struct stat st {};
  st.st_ino = inode->ino;
  st.st_mode = ModeTypeBits(inode->type) | inode->attrs.mode;
  st.st_uid = inode->attrs.uid;
  st.st_gid = inode->attrs.gid;
  st.st_blksize = 4096;
  switch (inode->type) {
    case EntryType::kDir:
      st.st_nlink = static_cast<nlink_t>(2 + inode->dir->subdirs);
      st.st_size = 4096;
      break;
    case EntryType::kFile:
      st.st_nlink = inode->nlink;
      st.st_size = static_cast<off_t>(inode->file->size());
      break;
    case EntryType::kSymlink:
      st.st_nlink = inode->nlink;
      st.st_size = static_cast<off_t>(inode->target.size());
      break;
    default:
      st.st_nlink = inode->nlink;
      st.st_rdev = static_cast<dev_t>(inode->attrs.rdev);
  }
  st.st_blocks = (st.st_size + 511) / 512;
  st.st_atim = ToTimespec(inode->atime);
  st.st_mtim = ToTimespec(inode->attrs.mtime);
  st.st_ctim = ToTimespec(inode->attrs.ctime);
  return st;
}

// ---- namespace operations --------------------------------------------------------------

Result<struct stat> Volume::Lookup(uint64_t parent, std::string_view name) {
  if (name.size() > kNameMax) return Status::Errno(ENAMETOOLONG);
  std::unique_lock lock(ns_mu_);
  stats_.Add(Statistic::kLookups);
  ASSIGN_OR_RETURN(Inode * dir, FindDir(parent));
  auto it = dir->dir->children.find(name);
  if (it == dir->dir->children.end()) {
    stats_.Add(Statistic::kNegativeLookups);
    return Status::Errno(ENOENT);
  }
  Inode* child = Find(it->second.ino);
  child->nlookup++;
  return StatOf(child);
}

void Volume::Forget(uint64_t ino, uint64_t n) {
  std::unique_lock lock(ns_mu_);
  Inode* inode = Find(ino);
  if (!inode) return;
  inode->nlookup -= std::min(n, inode->nlookup);
  MaybeDelete(inode);
}

Result<struct stat> Volume::GetAttr(uint64_t ino) {
  std::unique_lock lock(ns_mu_);
  Inode* inode = Find(ino);
  if (!inode) return Status::Errno(ENOENT);
  return StatOf(inode);
}

Result<struct stat> Volume::SetAttr(uint64_t ino, const SetAttrRequest& req) {
  RETURN_IF_ERROR(CheckWritable());
  if (req.size) {
    std::shared_ptr<FileData> f;
    {
      std::unique_lock lock(ns_mu_);
      Inode* inode = Find(ino);
      if (!inode) return Status::Errno(ENOENT);
      if (inode->type == EntryType::kDir) return Status::Errno(EISDIR);
      if (inode->type != EntryType::kFile) return Status::Errno(EINVAL);
      f = inode->file;
    }
    // A truncate may copy the file out of the store: not under the namespace lock.
    RETURN_IF_ERROR(f->Truncate(*req.size));
  }
  std::unique_lock lock(ns_mu_);
  Inode* inode = Find(ino);
  if (!inode) return Status::Errno(ENOENT);
  Timespec now = Now();
  if (req.mode) inode->attrs.mode = *req.mode & 07777;
  if (req.uid) inode->attrs.uid = *req.uid;
  if (req.gid) inode->attrs.gid = *req.gid;
  if (req.kill_suidgid && inode->type != EntryType::kDir)
    DropPrivilegesLocked(inode, req.caller_in_group);
  if (req.atime) inode->atime = *req.atime;
  if (req.mtime) inode->attrs.mtime = *req.mtime;
  if (req.size && !req.mtime) inode->attrs.mtime = now;
  inode->attrs.ctime = req.ctime ? *req.ctime : now;
  MarkChanged(inode);
  if (req.size) QueueFlush(ino, false);
  return StatOf(inode);
}

Result<std::string> Volume::ReadLink(uint64_t ino) {
  std::unique_lock lock(ns_mu_);
  Inode* inode = Find(ino);
  if (!inode) return Status::Errno(ENOENT);
  if (inode->type != EntryType::kSymlink) return Status::Errno(EINVAL);
  return inode->target;
}

Result<Volume::Inode*> Volume::CreateEntry(uint64_t parent, std::string_view name, EntryType type,
                                           mode_t mode, const Caller& who) {
  RETURN_IF_ERROR(CheckWritable());
  RETURN_IF_ERROR(ValidateName(name));
  ASSIGN_OR_RETURN(Inode * dir, FindDir(parent));
  if (dir->dir->children.count(name)) return Status::Errno(EEXIST);
  Inode* inode = NewInode(type);
  inode->attrs.mode = mode & 07777;
  inode->attrs.uid = who.uid;
  inode->attrs.gid = who.gid;
  if (dir->attrs.mode & S_ISGID) {
    // BSD group semantics on setgid directories, which the kernel leaves to the filesystem.
    inode->attrs.gid = dir->attrs.gid;
    if (type == EntryType::kDir) inode->attrs.mode |= S_ISGID;
  }
  inode->attrs.mtime = inode->attrs.ctime = inode->atime = Now();
  if (type == EntryType::kDir) {
    inode->dir = std::make_unique<Directory>();
    inode->dir->loaded = true;
  } else if (type == EntryType::kFile) {
    inode->file = std::make_shared<FileData>(&data_, FileContent{});
  }
  inode->parents.push_back(parent);
  inode->nlookup = 1;
  AddChild(dir, name, inode);
  if (type == EntryType::kDir) MarkDirDirty(inode);
  TouchDir(dir);
  stats_.Add(Statistic::kFilesCreated);
  return inode;
}

Result<struct stat> Volume::MakeNode(uint64_t parent, std::string_view name, mode_t mode,
                                     dev_t rdev, const Caller& who) {
  std::unique_lock lock(ns_mu_);
  EntryType type = TypeFromMode(mode);
  if (type == EntryType::kDir || type == EntryType::kSymlink) return Status::Errno(EINVAL);
  ASSIGN_OR_RETURN(Inode * inode, CreateEntry(parent, name, type, mode, who));
  inode->attrs.rdev = rdev;
  return StatOf(inode);
}

Result<struct stat> Volume::MakeDir(uint64_t parent, std::string_view name, mode_t mode,
                                    const Caller& who) {
  std::unique_lock lock(ns_mu_);
  ASSIGN_OR_RETURN(Inode * inode, CreateEntry(parent, name, EntryType::kDir, mode, who));
  return StatOf(inode);
}

Result<struct stat> Volume::MakeSymlink(uint64_t parent, std::string_view name,
                                        std::string_view target, const Caller& who) {
  if (target.empty() || target.size() > kSymlinkMax) return Status::Errno(ENAMETOOLONG);
  std::unique_lock lock(ns_mu_);
  ASSIGN_OR_RETURN(Inode * inode, CreateEntry(parent, name, EntryType::kSymlink, 0777, who));
  inode->target = std::string(target);
  return StatOf(inode);
}

Result<struct stat> Volume::Link(uint64_t ino, uint64_t new_parent, std::string_view new_name) {
  RETURN_IF_ERROR(CheckWritable());
  RETURN_IF_ERROR(ValidateName(new_name));
  std::unique_lock lock(ns_mu_);
  Inode* inode = Find(ino);
  if (!inode) return Status::Errno(ENOENT);
  if (inode->type == EntryType::kDir) return Status::Errno(EPERM);
  ASSIGN_OR_RETURN(Inode * dir, FindDir(new_parent));
  if (dir->dir->children.count(new_name)) return Status::Errno(EEXIST);
  if (inode->nlink >= 65000) return Status::Errno(EMLINK);
  if (!inode->link_id) {
    // From now on the file's data lives in the hard-link table and every name refers to it.
    uint64_t id = RandomLinkId();
    while (link_inodes_.count(id))
      id = RandomLinkId();
    RETURN_IF_ERROR(EnsureBucketLoaded(LinkBucketOf(id)));
    for (uint64_t p : inode->parents)
      MarkDirDirty(Find(p));
    inode->link_id = id;
    link_inodes_[id] = inode->ino;
  }
  inode->nlink++;
  inode->parents.push_back(new_parent);
  inode->attrs.ctime = Now();
  AddChild(dir, new_name, inode);
  TouchDir(dir);
  MarkChanged(inode);
  inode->nlookup++;
  return StatOf(inode);
}

Status Volume::Unlink(uint64_t parent, std::string_view name) {
  RETURN_IF_ERROR(CheckWritable());
  std::unique_lock lock(ns_mu_);
  ASSIGN_OR_RETURN(Inode * dir, FindDir(parent));
  auto it = dir->dir->children.find(name);
  if (it == dir->dir->children.end()) return Status::Errno(ENOENT);
  Inode* child = Find(it->second.ino);
  if (child->type == EntryType::kDir) return Status::Errno(EISDIR);
  RemoveChild(dir, name);
  TouchDir(dir);
  DropLink(child, parent);
  MaybeDelete(child);
  return Status::Ok();
}

Status Volume::RemoveDir(uint64_t parent, std::string_view name) {
  RETURN_IF_ERROR(CheckWritable());
  std::unique_lock lock(ns_mu_);
  ASSIGN_OR_RETURN(Inode * dir, FindDir(parent));
  auto it = dir->dir->children.find(name);
  if (it == dir->dir->children.end()) return Status::Errno(ENOENT);
  Inode* child = Find(it->second.ino);
  if (child->type != EntryType::kDir) return Status::Errno(ENOTDIR);
  RETURN_IF_ERROR(EnsureLoaded(child));
  if (!child->dir->children.empty()) return Status::Errno(ENOTEMPTY);
  RemoveChild(dir, name);
  TouchDir(dir);
  child->nlink = 0;
  child->parents.clear();
  MaybeDelete(child);
  return Status::Ok();
}

Status Volume::Rename(uint64_t parent, std::string_view name, uint64_t new_parent,
                      std::string_view new_name, unsigned int flags) {
  RETURN_IF_ERROR(CheckWritable());
  if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) return Status::Errno(EINVAL);
  if ((flags & RENAME_NOREPLACE) && (flags & RENAME_EXCHANGE)) return Status::Errno(EINVAL);
  RETURN_IF_ERROR(ValidateName(new_name));
  std::unique_lock lock(ns_mu_);
  ASSIGN_OR_RETURN(Inode * src_dir, FindDir(parent));
  ASSIGN_OR_RETURN(Inode * dst_dir, FindDir(new_parent));
  auto sit = src_dir->dir->children.find(name);
  if (sit == src_dir->dir->children.end()) return Status::Errno(ENOENT);
  Inode* src = Find(sit->second.ino);
  auto dit = dst_dir->dir->children.find(new_name);
  Inode* dst = dit == dst_dir->dir->children.end() ? nullptr : Find(dit->second.ino);
  Timespec now = Now();

  if (flags & RENAME_EXCHANGE) {
    if (!dst) return Status::Errno(ENOENT);
    if (src == dst) return Status::Ok();
    // Swap in place: both names keep their readdir positions.
    sit->second.ino = dst->ino;
    dit->second.ino = src->ino;
    if (parent != new_parent) {
      std::replace(src->parents.begin(), src->parents.end(), parent, new_parent);
      std::replace(dst->parents.begin(), dst->parents.end(), new_parent, parent);
      bool sd = src->type == EntryType::kDir, dd = dst->type == EntryType::kDir;
      if (sd != dd) {
        if (sd) {
          --src_dir->dir->subdirs;
          ++dst_dir->dir->subdirs;
        } else {
          ++src_dir->dir->subdirs;
          --dst_dir->dir->subdirs;
        }
      }
    }
    src->attrs.ctime = dst->attrs.ctime = now;
    TouchDir(src_dir);
    TouchDir(dst_dir);
    MarkChanged(src);
    MarkChanged(dst);
    return Status::Ok();
  }

  if (dst) {
    if (flags & RENAME_NOREPLACE) return Status::Errno(EEXIST);
    if (src == dst) return Status::Ok();  // two names of one file: POSIX says do nothing
    if (src->type == EntryType::kDir) {
      if (dst->type != EntryType::kDir) return Status::Errno(ENOTDIR);
      RETURN_IF_ERROR(EnsureLoaded(dst));
      if (!dst->dir->children.empty()) return Status::Errno(ENOTEMPTY);
    } else if (dst->type == EntryType::kDir) {
      return Status::Errno(EISDIR);
    }
    RemoveChild(dst_dir, new_name);
    if (dst->type == EntryType::kDir) {
      dst->nlink = 0;
      dst->parents.clear();
    } else {
      DropLink(dst, new_parent);
    }
  }
  // Re-find: RemoveChild may have rehashed nothing, but keep the iterator use obvious.
  RemoveChild(src_dir, name);
  AddChild(dst_dir, new_name, src);
  auto p = std::find(src->parents.begin(), src->parents.end(), parent);
  if (p != src->parents.end()) *p = new_parent;
  src->attrs.ctime = now;
  TouchDir(src_dir);
  if (dst_dir != src_dir) TouchDir(dst_dir);
  MarkChanged(src);
  if (dst) MaybeDelete(dst);
  return Status::Ok();
}

// ---- data ------------------------------------------------------------------------------

Result<size_t> Volume::Read(uint64_t ino, uint64_t off, size_t n, char* out) {
  std::shared_ptr<FileData> f;
  {
    std::unique_lock lock(ns_mu_);
    Inode* inode = Find(ino);
    if (!inode) return Status::Errno(ENOENT);
    if (inode->type == EntryType::kDir) return Status::Errno(EISDIR);
    if (!inode->file) return Status::Errno(EINVAL);
    f = inode->file;
    if (!inode->read_from_base) {
      inode->read_from_base = true;
      stats_.Add(Statistic::kFilesReadFromStore);
    }
  }
  auto r = f->Read(off, n, out);
  // Stored data that is missing or damaged is an I/O error to the reader, whatever the cause;
  // the message (which chunk, what to do) goes to the log through the adapter.
  if (!r.ok() && (r.status().code() == Code::kCorruption || r.status().code() == Code::kNotFound))
    return Status::IOError(r.status().message(), EIO);
  return r;
}

Result<size_t> Volume::Write(uint64_t ino, uint64_t off, const char* data, size_t n) {
  RETURN_IF_ERROR(CheckWritable());
  std::shared_ptr<FileData> f;
  {
    std::unique_lock lock(ns_mu_);
    Inode* inode = Find(ino);
    if (!inode) return Status::Errno(ENOENT);
    if (!inode->file) return Status::Errno(inode->type == EntryType::kDir ? EISDIR : EINVAL);
    f = inode->file;
  }
  bool stream_turn = false;
  RETURN_IF_ERROR(f->Write(off, data, n, opts_.read_only ? nullptr : &stream_turn));
  {
    std::unique_lock lock(ns_mu_);
    Inode* inode = Find(ino);
    if (inode && inode->file == f) {
      if (!opts_.kernel_owns_write_times) inode->attrs.mtime = inode->attrs.ctime = Now();
      MarkChanged(inode);
    }
  }
  QueueFlush(ino, false);
  if (stream_turn) QueueStream(ino);
  return n;
}

void Volume::Release(uint64_t ino) {
  if (!opts_.read_only) QueueFlush(ino, true);
}

Status Volume::Fsync(uint64_t ino) {
  if (opts_.read_only) return Status::Ok();
  RETURN_IF_ERROR(FlushFile(ino));
  return Commit(true);
}

Status Volume::Fallocate(uint64_t ino, int mode, uint64_t off, uint64_t len) {
  RETURN_IF_ERROR(CheckWritable());
  if (mode & ~FALLOC_FL_KEEP_SIZE) return Status::Errno(EOPNOTSUPP);
  if (off > UINT64_MAX - len) return Status::Errno(EFBIG);
  std::shared_ptr<FileData> f;
  {
    std::unique_lock lock(ns_mu_);
    Inode* inode = Find(ino);
    if (!inode || !inode->file) return Status::Errno(inode ? ENODEV : ENOENT);
    f = inode->file;
  }
  // The store has no preallocation; only the size change is visible.
  if (mode & FALLOC_FL_KEEP_SIZE) return Status::Ok();
  if (off + len <= f->size()) return Status::Ok();
  RETURN_IF_ERROR(f->Extend(off + len));
  std::unique_lock lock(ns_mu_);
  if (Inode* inode = Find(ino)) {
    inode->attrs.mtime = inode->attrs.ctime = Now();
    MarkChanged(inode);
  }
  QueueFlush(ino, false);
  return Status::Ok();
}

Result<size_t> Volume::CopyFileRange(uint64_t in, uint64_t off_in, uint64_t out, uint64_t off_out,
                                     size_t len) {
  RETURN_IF_ERROR(CheckWritable());
  std::shared_ptr<FileData> src, dst;
  {
    std::unique_lock lock(ns_mu_);
    Inode* a = Find(in);
    Inode* b = Find(out);
    if (!a || !b) return Status::Errno(ENOENT);
    if (!a->file || !b->file) return Status::Errno(EINVAL);
    src = a->file;
    dst = b->file;
  }
  // Share chunks when the whole source becomes the whole destination (cp, install, pip's
  // copies); anything else goes back to the kernel's own read/write copy.
  uint64_t size = src->size();
  if (in == out || off_in != 0 || off_out != 0 || len < size || dst->size() > size)
    return Status::Errno(EOPNOTSUPP);
  auto lease = objects_->BeginLease();
  if (src->dirty()) {
    std::optional<ObjectStore::Lease> stream_lease;
    ASSIGN_OR_RETURN(bool changed, src->Flush(&stream_lease));
    if (changed) {
      std::unique_lock lock(ns_mu_);
      if (Inode* a = Find(in)) MarkChanged(a);
    }
    if (src->dirty()) return Status::Errno(EOPNOTSUPP);  // being written right now
  }
  FileContent content = src->committed();
  if (content.size != size) return Status::Errno(EOPNOTSUPP);
  dst->SetContent(content);
  std::unique_lock lock(ns_mu_);
  if (Inode* b = Find(out)) {
    b->attrs.mtime = b->attrs.ctime = Now();
    MarkChanged(b);
  }
  return static_cast<size_t>(size);
}

// ---- directories, statfs (xattrs: volume_xattr.cc, commit: volume_commit.cc)
// -------------------------------------------------------------

Status Volume::ReadDir(uint64_t ino, uint64_t offset, bool plus,
                       const std::function<bool(const DirEntryOut&)>& add) {
  std::unique_lock lock(ns_mu_);
  ASSIGN_OR_RETURN(Inode * dir, FindDir(ino));
  if (offset < 1) {
    DirEntryOut e{".", dir->ino, 1, StatOf(dir)};
    if (!add(e)) return Status::Ok();
  }
  if (offset < 2) {
    Inode* parent = dir->parents.empty() ? dir : Find(dir->parents.front());
    if (!parent) parent = dir;
    DirEntryOut e{"..", parent->ino, 2, StatOf(parent)};
    if (!add(e)) return Status::Ok();
  }
  // Cookies only grow: entries added during a listing come after it, removed ones vanish, and
  // no entry is returned twice.
  auto& by_cookie = dir->dir->by_cookie;
  for (auto it = by_cookie.upper_bound(std::max<uint64_t>(offset, 2)); it != by_cookie.end();
       ++it) {
    const std::string& name = *it->second;
    Inode* child = Find(dir->dir->children.find(name)->second.ino);
    DirEntryOut e{name, child->ino, it->first, StatOf(child)};
    if (!add(e)) break;
    if (plus) child->nlookup++;
  }
  return Status::Ok();
}

Result<struct statvfs> Volume::StatFs() {
  struct statvfs st;
  if (::statvfs(store_->dir().c_str(), &st) != 0) return Status::IOError("statvfs", errno);
  st.f_namemax = kNameMax;
  return st;
}

}  // namespace stashfs::fs
