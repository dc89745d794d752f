#include "store/store.h"
#include "store/log.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <random>

#include "store/catalog_objects.h"
#include "store/catalog_roots.h"
#include "store/sqlite.h"

namespace stashfs {

namespace {

std::string Hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

std::string RandomHex(int n) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < n; ++i)
    s += digits[rng() & 15];
  return s;
}

}  // namespace

namespace {
// A name as it can be printed in a one-line message.
std::string Printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}
}  // namespace

Status ValidateName(const std::string& what, const std::string& name, size_t max_len) {
  std::string shown = "'" + Printable(name) + "'";
  if (name.empty() || name.size() > max_len) {
    return Status::Invalid(what + " " + shown + " must be 1 to " + std::to_string(max_len) +
                           " characters long");
  }
  if (name[0] == '.' || name[0] == '-' || name[0] == '/') {
    return Status::Invalid(what + " " + shown + " must not start with '.', '-' or '/'");
  }
  for (unsigned char c : name) {
    bool ok = (c < 0x80 && std::isalnum(c)) ||
              std::string_view("._+=:@/-").find(static_cast<char>(c)) != std::string_view::npos;
    if (!ok) {
      return Status::Invalid(what + " " + shown + " has the character '" +
                             Printable(std::string(1, static_cast<char>(c))) +
                             "'; use letters, digits and . _ + = : @ / -");
    }
  }
  return Status::Ok();
}

std::string DefaultStoreDir() {
  if (const char* s = std::getenv("STASHFS_STORE"); s && *s) return s;
  if (geteuid() == 0) return "/var/lib/stashfs";
  if (const char* x = std::getenv("XDG_DATA_HOME"); x && *x) return std::string(x) + "/stashfs";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.local/share/stashfs";
}

Result<std::unique_ptr<FileLock>> FileLock::TryExclusive(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return Status::IOError("opening lock file " + path, errno);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) return Status::Busy(path + " is locked by another process");
    return Status::IOError("locking " + path, err);
  }
  return std::unique_ptr<FileLock>(new FileLock(fd, path));
}

FileLock::~FileLock() {
  ::close(fd_);
}

Result<std::unique_ptr<Store>> Store::Open(const StoreOptions& opts) {
  std::unique_ptr<Store> s(new Store());
  s->env_ = opts.env;
  std::error_code ec;
  s->dir_ = std::filesystem::absolute(opts.dir, ec).lexically_normal().string();
  if (s->dir_.size() > 1 && s->dir_.back() == '/') s->dir_.pop_back();
  const std::string& dir = s->dir_;
  std::string catalog = dir + "/catalog.db";
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT) return Status::IOError("store " + dir, errno);
    if (!opts.create) {
      return Status::NotFound(
          "no store at " + dir +
          "; mount a volume to create one, or pass --store with the right path");
    }
    RETURN_IF_ERROR(s->env_->MakeDirs(dir, 0700).context("creating store"));
  } else if (!S_ISDIR(st.st_mode)) {
    return Status::Invalid("store " + dir + " is not a directory; pass --store with a directory");
  } else if (!s->env_->Exists(catalog)) {
    ASSIGN_OR_RETURN(auto names, s->env_->List(dir));
    if (!names.empty()) {
      return Status::Invalid("store " + dir +
                             " is a non-empty directory without a stashfs catalog; use an empty "
                             "or new directory for --store");
    }
    if (!opts.create) return Status::NotFound("no store at " + dir);
  }
  // Stores hold other people's caches (tokens in pip's cache, private packages): private to
  // their owner, as README's Guarantees say.
  if (::chmod(dir.c_str(), 0700) != 0 && errno != EPERM)
    return Status::IOError("chmod 0700 " + dir, errno);
  ASSIGN_OR_RETURN(s->catalog_, Catalog::Open(catalog, opts.create));
  for (const char* sub : {"/packs", "/scratch", "/run"})
    RETURN_IF_ERROR(s->env_->MakeDirs(dir + sub, 0700));
  s->objects_ = std::make_unique<ObjectStore>(s->env_, s->catalog_.get(), dir + "/packs",
                                              opts.objects, &s->statistics_);
  return s;
}

Store::~Store() {
  if (writer_id_) {
    Status st = UnregisterWriter();
    if (!st.ok()) LogError(st.message());
  }
}

Result<int64_t> Store::RegisterWriter(const std::string& mountpoint) {
  RETURN_IF_ERROR(ReapDeadWriters());
  // Lock first, then publish the row: a reaper that finds the row always finds the lock held.
  std::string lock = "writer-" + std::to_string(getpid()) + "-" + RandomHex(12) + ".lock";
  ASSIGN_OR_RETURN(writer_lock_, FileLock::TryExclusive(run_dir() + "/" + lock));
  auto w = catalog_->write();
  ASSIGN_OR_RETURN(writer_id_,
                   catalog::InsertMount(w.db(), static_cast<int64_t>(getpid()), Hostname(),
                                        mountpoint, env_->NowSeconds(), lock));
  objects_->EnableWriting(writer_id_);
  return writer_id_;
}

Status Store::UnregisterWriter() {
  if (!writer_id_) return Status::Ok();
  Status st = objects_->Close();
  {
    auto w = catalog_->write();
    Txn txn(w.db());
    RETURN_IF_ERROR(txn.Begin());
    RETURN_IF_ERROR(catalog::DropPinsOfMount(w.db(), writer_id_));
    RETURN_IF_ERROR(catalog::DeleteMount(w.db(), writer_id_));
    RETURN_IF_ERROR(txn.Commit());
  }
  std::filesystem::remove_all(scratch_dir() + "/" + std::to_string(writer_id_));
  writer_id_ = 0;
  objects_->EnableWriting(0);
  // The row is gone, so no reaper looks for this lock file any more: do not leave it behind.
  if (writer_lock_) env_->Remove(writer_lock_->path());
  writer_lock_.reset();
  return st;
}

Status Store::ReapDeadWriters() {
  std::vector<catalog::MountLock> rows;
  {
    ASSIGN_OR_RETURN(auto r, catalog_->read());
    ASSIGN_OR_RETURN(rows, catalog::ListMountLocks(r.db()));
  }
  for (const auto& [id, lock] : rows) {
    if (id == writer_id_) continue;
    std::string path = run_dir() + "/" + lock;
    auto held = FileLock::TryExclusive(path);
    if (!held.ok()) {
      if (held.status().code() == Code::kBusy) continue;  // alive
      return held.status();
    }
    // We hold a dead writer's lock: nobody else can be reaping it now.
    auto w = catalog_->write();
    Txn txn(w.db());
    RETURN_IF_ERROR(txn.Begin());
    RETURN_IF_ERROR(catalog::DropPinsOfMount(w.db(), id));
    RETURN_IF_ERROR(catalog::SealPacksOfWriter(w.db(), id));
    RETURN_IF_ERROR(catalog::DeleteMount(w.db(), id));
    // The private volume of a cache-key mount dies with its writer; its last commit was never
    // saved under the key, so nothing else needs it.
    ASSIGN_OR_RETURN(auto root, catalog::DeleteEphemeralVolume(w.db(), EphemeralVolumeName(id)));
    if (root) RETURN_IF_ERROR(AddRef(w.db(), ObjectKind::kRoot, *root, -1));
    RETURN_IF_ERROR(txn.Commit());
    std::error_code ec;
    std::filesystem::remove_all(scratch_dir() + "/" + std::to_string(id), ec);
    env_->Remove(path);
  }
  return Status::Ok();
}

Result<std::vector<MountInfo>> Store::LiveMounts() {
  RETURN_IF_ERROR(ReapDeadWriters());
  ASSIGN_OR_RETURN(auto r, catalog_->read());
  return catalog::ListMounts(r.db());
}

Result<std::unique_ptr<FileLock>> Store::LockVolume(const VolumeInfo& v) {
  auto lock = FileLock::TryExclusive(run_dir() + "/volume-" + std::to_string(v.id) + ".lock");
  if (lock.ok() || lock.status().code() != Code::kBusy) return lock;
  ASSIGN_OR_RETURN(auto mounts, LiveMounts());
  for (const auto& m : mounts) {
    if (m.volume_id == v.id) {
      return Status::Busy("volume '" + v.name + "' is already mounted at " + m.mountpoint +
                          " (pid " + std::to_string(m.pid) +
                          "); unmount it first with `stashfs umount " + m.mountpoint + "`");
    }
  }
  return Status::Busy("volume '" + v.name + "' is in use by another stashfs process; try again");
}

Status Store::SetMountVolume(int64_t volume_id) {
  auto w = catalog_->write();
  return catalog::SetMountVolume(w.db(), writer_id_, volume_id);
}

Result<std::optional<VolumeInfo>> Store::FindVolume(const std::string& name) {
  ASSIGN_OR_RETURN(auto r, catalog_->read());
  return catalog::FindVolumeByName(r.db(), name);
}

Result<VolumeInfo> Store::FindVolumeById(int64_t id) {
  ASSIGN_OR_RETURN(auto r, catalog_->read());
  ASSIGN_OR_RETURN(auto v, catalog::FindVolumeById(r.db(), id));
  if (!v) return Status::NotFound("no volume with id " + std::to_string(id));
  return *v;
}

Result<std::vector<VolumeInfo>> Store::ListVolumes() {
  ASSIGN_OR_RETURN(auto r, catalog_->read());
  return catalog::ListVolumes(r.db());
}

Result<VolumeInfo> Store::CreateVolume(const std::string& name, const Hash& root, bool ephemeral,
                                       const std::string& source) {
  {
    auto w = catalog_->write();
    Txn txn(w.db());
    RETURN_IF_ERROR(txn.Begin());
    ASSIGN_OR_RETURN(bool created, catalog::InsertVolume(w.db(), name, root, ephemeral, source,
                                                         env_->NowSeconds()));
    if (!created) return Status::AlreadyExists("volume '" + name + "' already exists");
    RETURN_IF_ERROR(AddRef(w.db(), ObjectKind::kRoot, root, +1));
    RETURN_IF_ERROR(txn.Commit());
  }
  ASSIGN_OR_RETURN(auto v, FindVolume(name));
  if (!v) return Status::Corruption("volume '" + name + "' vanished after creation");
  return *v;
}

Status Store::DeleteVolume(int64_t id) {
  auto w = catalog_->write();
  Txn txn(w.db());
  RETURN_IF_ERROR(txn.Begin());
  ASSIGN_OR_RETURN(auto root, catalog::DeleteVolume(w.db(), id));
  if (!root) return Status::NotFound("no volume with id " + std::to_string(id));
  RETURN_IF_ERROR(AddRef(w.db(), ObjectKind::kRoot, *root, -1));
  RETURN_IF_ERROR(txn.Commit());
  // Ids are never reused, so nobody will lock this file again.
  return env_->Remove(run_dir() + "/volume-" + std::to_string(id) + ".lock");
}

Status Store::CommitVolume(int64_t volume_id, const Hash& old_root, const Hash& new_root,
                           uint64_t release_upto, bool durable) {
  auto w = catalog_->write();
  // In WAL mode synchronous=NORMAL makes commits atomic but not durable until a checkpoint;
  // FULL fsyncs the WAL at this commit, which also makes every earlier commit durable.
  SyncMode mode(w.db(), durable);
  Txn txn(w.db());
  RETURN_IF_ERROR(txn.Begin());
  if (durable) {
    // Always write something, so the commit (and its WAL sync) happens even when the tree
    // did not change since a commit that was not durable.
    RETURN_IF_ERROR(catalog::TouchVolume(w.db(), volume_id, env_->NowSeconds()));
  }
  if (new_root != old_root) {
    // Reference the new tree before dropping the old, so shared subtrees never reach zero.
    RETURN_IF_ERROR(AddRef(w.db(), ObjectKind::kRoot, new_root, +1));
    ASSIGN_OR_RETURN(bool moved, catalog::MoveVolumeRoot(w.db(), volume_id, old_root, new_root,
                                                         env_->NowSeconds()));
    if (!moved) {
      return Status::Corruption("volume " + std::to_string(volume_id) +
                                " was changed or removed by another process while mounted");
    }
    RETURN_IF_ERROR(AddRef(w.db(), ObjectKind::kRoot, old_root, -1));
  }
  RETURN_IF_ERROR(objects_->ReleasePins(w.db(), release_upto));
  return txn.Commit();
}

Status Store::TouchVolume(int64_t volume_id) {
  auto w = catalog_->write();
  return catalog::TouchVolume(w.db(), volume_id, env_->NowSeconds());
}

Result<std::optional<SnapshotInfo>> Store::FindSnapshot(const std::string& key) {
  ASSIGN_OR_RETURN(auto r, catalog_->read());
  return catalog::FindSnapshotByKey(r.db(), key);
}

Result<std::vector<SnapshotInfo>> Store::ListSnapshots() {
  ASSIGN_OR_RETURN(auto r, catalog_->read());
  return catalog::ListSnapshots(r.db());
}

Result<SnapshotInfo> Store::CreateSnapshot(const std::string& key, const Hash& root, bool replace) {
  ASSIGN_OR_RETURN(RootRecord rec, ReadRoot(root));
  {
    auto w = catalog_->write();
    SyncMode durable(w.db(), true);  // a saved key must survive a power loss
    Txn txn(w.db());
    RETURN_IF_ERROR(txn.Begin());
    ASSIGN_OR_RETURN(auto found, catalog::FindSnapshotRoot(w.db(), key));
    int64_t now = env_->NowSeconds();
    if (found) {
      if (!replace) return Status::AlreadyExists("snapshot '" + key + "' already exists");
      RETURN_IF_ERROR(AddRef(w.db(), ObjectKind::kRoot, root, +1));
      RETURN_IF_ERROR(
          catalog::ReplaceSnapshot(w.db(), found->id, root, now, rec.total_bytes, rec.total_files));
      RETURN_IF_ERROR(AddRef(w.db(), ObjectKind::kRoot, found->root, -1));
    } else {
      RETURN_IF_ERROR(
          catalog::InsertSnapshot(w.db(), key, root, now, rec.total_bytes, rec.total_files));
      RETURN_IF_ERROR(AddRef(w.db(), ObjectKind::kRoot, root, +1));
    }
    RETURN_IF_ERROR(txn.Commit());
  }
  ASSIGN_OR_RETURN(auto s, FindSnapshot(key));
  if (!s) return Status::Corruption("snapshot '" + key + "' vanished after creation");
  return *s;
}

Status Store::DeleteSnapshot(int64_t id) {
  auto w = catalog_->write();
  Txn txn(w.db());
  RETURN_IF_ERROR(txn.Begin());
  ASSIGN_OR_RETURN(auto root, catalog::DeleteSnapshot(w.db(), id));
  if (!root) return Status::NotFound("no snapshot with id " + std::to_string(id));
  RETURN_IF_ERROR(AddRef(w.db(), ObjectKind::kRoot, *root, -1));
  return txn.Commit();
}

std::string Store::EphemeralVolumeName(int64_t writer_id) {
  return ".mount-" + std::to_string(writer_id);
}

Result<std::optional<SnapshotInfo>> Store::NewestSnapshotWithPrefix(const std::string& prefix) {
  ASSIGN_OR_RETURN(auto r, catalog_->read());
  return catalog::NewestSnapshotWithPrefix(r.db(), prefix);
}

Result<uint64_t> Store::ExclusiveStoredBytes(const Hash& root) {
  ReleaseEstimator estimate(*this);
  return estimate.Drop(root);
}

Result<uint64_t> ReleaseEstimator::Drop(const Hash& root) {
  ASSIGN_OR_RETURN(auto r, store_.catalog().read());
  uint64_t freed = 0;
  std::vector<ChildRef> stack{{ObjectKind::kRoot, root}};
  while (!stack.empty()) {
    ChildRef c = stack.back();
    stack.pop_back();
    ASSIGN_OR_RETURN(auto use, catalog::FindObjectUsage(r.db(), ObjectKey{c.hash, c.kind}));
    if (!use) continue;
    int64_t refs = use->refs;
    double size = static_cast<double>(use->size), stored = static_cast<double>(use->stored_len),
           raw = static_cast<double>(use->raw_len);
    bool pinned = use->pinned;
    int64_t& dropped = dropped_[ObjectKey{c.hash, c.kind}];
    if (refs - ++dropped != 0) continue;
    if (!pinned) freed += static_cast<uint64_t>(raw > 0 ? stored * size / raw : 0);
    if (!KindHasChildren(c.kind)) continue;
    // Damaged metadata hides its subtree from the estimate; fsck reports the damage itself.
    auto data = store_.objects().Get(c.kind, c.hash);
    if (!data.ok()) continue;
    ASSIGN_OR_RETURN(auto children, ChildrenOf(c.kind, data->bytes));
    stack.insert(stack.end(), children.begin(), children.end());
  }
  return freed;
}

Status Store::TouchSnapshot(int64_t id) {
  auto w = catalog_->write();
  return catalog::TouchSnapshot(w.db(), id, env_->NowSeconds());
}

Result<Hash> Store::PutEmptyRoot(uint32_t uid, uint32_t gid, uint32_t mode) {
  ASSIGN_OR_RETURN(Hash tree, objects_->Put(ObjectKind::kTree, EncodeTree(Tree{})));
  RootRecord root;
  root.tree = tree;
  root.attrs.uid = uid;
  root.attrs.gid = gid;
  root.attrs.mode = mode & 07777;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  root.attrs.mtime = root.attrs.ctime = {ts.tv_sec, static_cast<uint32_t>(ts.tv_nsec)};
  ASSIGN_OR_RETURN(Hash h, objects_->Put(ObjectKind::kRoot, EncodeRoot(root)));
  RETURN_IF_ERROR(objects_->Flush());
  return h;
}

Result<RootRecord> Store::ReadRoot(const Hash& root) {
  ASSIGN_OR_RETURN(auto data, objects_->Get(ObjectKind::kRoot, root));
  return DecodeRoot(data.bytes);
}

Status Store::AddRef(Db* w, ObjectKind kind, const Hash& hash, int delta) {
  std::vector<ChildRef> stack{{kind, hash}};
  while (!stack.empty()) {
    ChildRef c = stack.back();
    stack.pop_back();
    ASSIGN_OR_RETURN(auto now_refs, catalog::AddObjectRefs(w, ObjectKey{c.hash, c.kind}, delta));
    if (!now_refs) {
      return Status::Corruption(std::string(KindName(c.kind)) + " " + c.hash.hex() +
                                " is referenced but missing from the store; run `stashfs fsck`");
    }
    int64_t refs = *now_refs;
    if (refs < 0) {
      return Status::Corruption(std::string(KindName(c.kind)) + " " + c.hash.hex() +
                                " has a negative reference count; run `stashfs fsck --repair`");
    }
    bool edge = delta > 0 ? refs == 1 : refs == 0;
    if (!edge || !KindHasChildren(c.kind)) continue;
    auto data = objects_->Get(c.kind, c.hash);
    auto children =
        data.ok() ? ChildrenOf(c.kind, data->bytes) : Result<std::vector<ChildRef>>(data.status());
    if (!children.ok()) {
      if (delta > 0) return children.status();
      // Dropping a damaged object: its children keep a stale reference that fsck --repair
      // recounts; refusing would make the damage impossible to remove.
      LogWarning(children.status().message());
      continue;
    }
    stack.insert(stack.end(), children->begin(), children->end());
  }
  return Status::Ok();
}

Result<StoreStats> Store::Stats() {
  StoreStats s;
  ASSIGN_OR_RETURN(auto vols, ListVolumes());
  ASSIGN_OR_RETURN(auto snaps, ListSnapshots());
  s.volumes = vols.size();
  s.snapshots = snaps.size();
  for (const auto& v : vols) {
    ASSIGN_OR_RETURN(auto r, ReadRoot(v.root));
    s.logical_bytes += r.total_bytes;
    s.logical_files += r.total_files;
  }
  for (const auto& sn : snaps) {
    s.logical_bytes += sn.logical_bytes;
    s.logical_files += sn.files;
  }
  ASSIGN_OR_RETURN(auto r, catalog_->read());
  ASSIGN_OR_RETURN(auto t, catalog::CountRows(r.db()));
  s.objects = t.objects;
  s.object_bytes = t.object_bytes;
  s.chunks = t.chunks;
  s.unique_bytes = t.chunk_bytes;
  s.unreferenced_objects = t.unreferenced_objects;
  s.blocks = t.blocks;
  s.packs = t.packs;
  s.stored_bytes = t.pack_bytes;
  for (const char* suffix : {"", "-wal"}) {
    auto size = env_->FileSize(catalog_->path() + suffix);
    if (size.ok()) s.catalog_bytes += *size;
  }
  return s;
}

Status Store::AddCounter(const std::string& name, int64_t delta) {
  auto w = catalog_->write();
  return catalog::AddCounter(w.db(), name, delta);
}

Result<std::vector<std::pair<std::string, int64_t>>> Store::Counters() {
  ASSIGN_OR_RETURN(auto r, catalog_->read());
  return catalog::ListCounters(r.db());
}

}  // namespace stashfs
