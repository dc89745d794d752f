// A mounted volume: the live, writable tree that FUSE requests operate on. Kept apart from
// the FUSE adapter (fuse_ops.cc) so tests can drive it without a mount.
//
// The tree lives in memory and is loaded lazily from the store: a directory's TREE object is
// read the first time something looks inside it, so mounting a snapshot of any size costs one
// ROOT and one TREE. Changes mark the directory (and its ancestors) dirty; a commit re-encodes
// only dirty directories bottom-up, stores the new objects and moves the volume's root in one
// catalog transaction. Commits run every few seconds, on fsync and at unmount, so a crash loses
// at most what was written since the last commit and never leaves a half-written tree.
//
// Locking: ns_mu_ guards the inode table, directory contents and attributes. Each FileData has
// its own mutex for its bytes. Order: commit_mu_ -> ns_mu_ -> FileData::mu_; store calls that may
// block on I/O (loading a TREE, reading chunks) are made without ns_mu_ held where possible.
#pragma once

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "fs/file_data.h"
#include "store/commit.h"
#include "store/objects.h"
#include "store/status.h"
#include "store/store.h"

namespace stashfs::fs {

constexpr uint64_t kRootIno = 1;

// The wall-clock time, as attributes store it.
Timespec Now();

// Who is asking: from the FUSE request context.
struct Caller {
  uint32_t uid = 0;
  uint32_t gid = 0;
};

struct VolumeOptions {
  double commit_interval_s = 5.0;  // commit a dirty tree at least this often
  double flush_delay_s = 1.0;      // chunk a file this long after its last write, if not closed
  int flush_threads = 2;
  size_t mem_file_max = 1 << 20;
  int64_t mem_total_max = 64 << 20;
  uint64_t keep_scratch_min = 1 << 20;
  uint64_t keep_scratch_total = 1ull << 30;  // clean scratch copies kept, in bytes
  ChunkerParams chunker;
  bool read_only = false;
  // With FUSE's writeback cache the kernel owns mtime and ctime: it stamps writes itself and
  // sends the times in a setattr. A WRITE served after that setattr must not move them again.
  bool kernel_owns_write_times = false;
};

// setattr's request, as FUSE hands it over.
struct SetAttrRequest {
  std::optional<uint32_t> mode;
  std::optional<uint32_t> uid;
  std::optional<uint32_t> gid;
  std::optional<uint64_t> size;
  std::optional<Timespec> atime;  // "now" is resolved by the adapter
  std::optional<Timespec> mtime;
  std::optional<Timespec> ctime;
  // The kernel asks us to drop set-ID bits and file capabilities (FUSE_HANDLE_KILLPRIV_V2:
  // every chown of a non-directory, and a truncate by a caller without CAP_FSETID).
  bool kill_suidgid = false;
  // Whether the caller may keep set-group-ID on a file without group-execute (asked only then).
  std::function<bool(uint32_t gid)> caller_in_group;
};

struct DirEntryOut {
  std::string_view name;
  uint64_t ino;
  uint64_t cookie;   // offset to resume after this entry
  struct stat attr;  // for readdirplus; st_mode type bits always set
};

class Volume {
 public:
  // Opens `info` (whose lock the caller holds) for serving. `store` must be a registered writer
  // unless opts.read_only.
  static Result<std::unique_ptr<Volume>> Open(Store* store, const VolumeInfo& info,
                                              VolumeOptions opts);
  ~Volume();

  // Starts the flusher and committer threads.
  void Start();
  // Flushes every file, commits, and stops the threads. Idempotent.
  Status Shutdown();

  // Filesystem operations. Those that return an entry count as one kernel lookup of it.
  Result<struct stat> Lookup(uint64_t parent, std::string_view name);
  void Forget(uint64_t ino, uint64_t n);
  Result<struct stat> GetAttr(uint64_t ino);
  Result<struct stat> SetAttr(uint64_t ino, const SetAttrRequest& req);
  Result<std::string> ReadLink(uint64_t ino);
  Result<struct stat> MakeNode(uint64_t parent, std::string_view name, mode_t mode, dev_t rdev,
                               const Caller& who);
  Result<struct stat> MakeDir(uint64_t parent, std::string_view name, mode_t mode,
                              const Caller& who);
  Result<struct stat> MakeSymlink(uint64_t parent, std::string_view name, std::string_view target,
                                  const Caller& who);
  Result<struct stat> Link(uint64_t ino, uint64_t new_parent, std::string_view new_name);
  Status Unlink(uint64_t parent, std::string_view name);
  Status RemoveDir(uint64_t parent, std::string_view name);
  Status Rename(uint64_t parent, std::string_view name, uint64_t new_parent,
                std::string_view new_name, unsigned int flags);

  Result<size_t> Read(uint64_t ino, uint64_t off, size_t n, char* out);
  Result<size_t> Write(uint64_t ino, uint64_t off, const char* data, size_t n);
  // A file the kernel opened with CREATE was closed: store it soon.
  void Release(uint64_t ino);
  Status Fsync(uint64_t ino);
  Status Fallocate(uint64_t ino, int mode, uint64_t off, uint64_t len);
  Result<size_t> CopyFileRange(uint64_t in, uint64_t off_in, uint64_t out, uint64_t off_out,
                               size_t len);

  // Calls `add` for entries after `offset` until it returns false (buffer full). With `plus`,
  // every entry `add` accepted counts as a lookup.
  Status ReadDir(uint64_t ino, uint64_t offset, bool plus,
                 const std::function<bool(const DirEntryOut&)>& add);

  Status SetXattr(uint64_t ino, std::string_view name, std::string_view value, int flags);
  Result<std::string> GetXattr(uint64_t ino, std::string_view name);
  Result<std::vector<std::string>> ListXattr(uint64_t ino);
  Status RemoveXattr(uint64_t ino, std::string_view name);
  // What a write by a caller without CAP_FSETID does to a regular file under
  // FUSE_HANDLE_KILLPRIV_V2 (the kernel leaves it to us): clears the set-user-ID bit, the
  // set-group-ID bit (without group-execute only if !caller_in_group(file's gid)), and the
  // security.capability xattr.
  Status KillPrivileges(uint64_t ino, const std::function<bool(uint32_t gid)>& caller_in_group);
  Result<struct statvfs> StatFs();

  // Commits what is stored so far; returns once a commit that started after this call finished.
  // With `durable` that commit also survives a power loss (fsync, unmount, save).
  Status Commit(bool durable = false);
  // Stores every written file, then commits: after Sync() returns, everything written before
  // it survives a crash.
  Status Sync();
  // The ROOT object of the last commit.
  Hash committed_root();
  const VolumeInfo& info() const { return info_; }
  // What this mount counted: the store's statistics (one store, one mount per daemon).
  StatisticCounters& counters() { return stats_; }
  DataContext& data() { return data_; }
  // The first error a background commit or flush hit, if any (reported at unmount).
  Status background_error();

 private:
  struct Directory;
  struct Inode {
    uint64_t ino = 0;
    EntryType type = EntryType::kFile;
    uint64_t nlookup = 0;
    uint32_t nlink = 1;
    Attrs attrs;
    Timespec atime;
    uint64_t link_id = 0;           // nonzero: stored in the hard-link table
    std::vector<uint64_t> parents;  // one per name in a loaded directory
    std::unique_ptr<Directory> dir;
    std::shared_ptr<FileData> file;
    std::string target;
    bool read_from_base = false;  // counted in files_read_from_base
  };
  struct Child {
    uint64_t ino;
    uint64_t cookie;
  };
  static constexpr uint64_t kLoadedCookieBase = 1ull << 62;  // cookies 1, 2: "." and ".."
  struct Directory {
    bool loaded = false;
    bool dirty = false;  // must be re-encoded; implies every ancestor is dirty too
    Hash tree;           // the stored TREE (valid while !dirty)
    uint64_t bytes = 0, files = 0, subdirs = 0;  // totals as of `tree` (subdirs kept live)
    std::map<std::string, Child, std::less<>> children;
    std::map<uint64_t, const std::string*> by_cookie;  // readdir order; points into children
    // Readdir cookies. Entries loaded from the store count up from kLoadedCookieBase; entries
    // created later count down from below it, so they sort before every existing entry. A
    // listing in progress therefore never returns an entry created (or renamed) after it
    // started, as on tmpfs: a program that creates files while it lists a directory ends.
    uint64_t next_loaded_cookie = kLoadedCookieBase;
    uint64_t next_new_cookie = kLoadedCookieBase - 1;
  };
  struct LinkBucket {
    bool loaded = false;
    bool dirty = false;
    Hash hash;                               // stored LINKS object, if any
    std::map<uint64_t, LinkRecord> records;  // stored records, when loaded
  };

  Volume(Store* store, const VolumeInfo& info, VolumeOptions opts);
  Status LoadRoot(const Hash& root);

  // All of these run with ns_mu_ held.
  Inode* Find(uint64_t ino);
  Result<Inode*> FindDir(uint64_t ino);
  Status EnsureLoaded(Inode* dir);
  Status EnsureBucketLoaded(uint32_t bucket);
  Inode* NewInode(EntryType type);
  Result<Inode*> InstantiateEntry(const TreeEntry& e, uint64_t parent);
  void AddChild(Inode* dir, std::string_view name, Inode* child);
  void RemoveChild(Inode* dir, std::string_view name);
  void MarkDirDirty(Inode* dir);
  void MarkChanged(Inode* inode);
  // ns_mu_ held; see KillPrivileges.
  void DropPrivilegesLocked(Inode* inode, const std::function<bool(uint32_t gid)>& caller_in_group);
  void TouchDir(Inode* dir);  // mtime/ctime = now, dirty
  void DropLink(Inode* inode, uint64_t parent);
  void MaybeDelete(Inode* inode);
  struct stat StatOf(Inode* inode);
  Result<Inode*> CreateEntry(uint64_t parent, std::string_view name, EntryType type, mode_t mode,
                             const Caller& who);
  Status CheckWritable() const;

  // Commit machinery: encodes the dirty tree and hands it to a TreeCommit (store/commit.h).
  Status CommitLocked(bool durable);
  // Encodes a dirty directory bottom-up, adding its new TREE objects to `out` and their inodes
  // to `encoded`.
  Result<Hash> EncodeDir(Inode* dir, TreeCommit* out, std::vector<uint64_t>* encoded);
  // ns_mu_ held. After a failed commit: marks everything it encoded dirty again.
  void RestoreDirtyLocked(const std::vector<uint64_t>& encoded_dirs,
                          const std::vector<uint32_t>& encoded_buckets);
  TreeEntry EntryFor(const std::string& name, Inode* child);
  LinkRecord LinkRecordFor(Inode* inode);
  void FillBody(Inode* inode, Attrs* attrs, FileContent* content, std::string* target);

  // Flushing written files.
  void QueueFlush(uint64_t ino, bool now);
  void FlusherLoop();
  void QueueStream(uint64_t ino);
  void StreamFile(uint64_t ino);
  void StreamerLoop();
  void CommitterLoop();
  Status FlushFile(uint64_t ino);
  Status FlushAll();
  void TrimScratch();
  void RecordError(const Status& s);

  Store* store_;
  ObjectStore* objects_;
  VolumeInfo info_;
  VolumeOptions opts_;
  DataContext data_;
  StatisticCounters& stats_;

  std::mutex ns_mu_;
  std::unordered_map<uint64_t, std::unique_ptr<Inode>> inodes_;
  std::unordered_map<uint64_t, uint64_t> link_inodes_;  // link id -> live inode
  std::map<uint32_t, LinkBucket> buckets_;
  bool root_attrs_dirty_ = false;
  uint64_t next_ino_ = kRootIno + 1;

  std::mutex commit_mu_;
  Hash committed_root_;
  uint64_t commit_requests_ = 0;  // guarded by commit_mu_
  uint64_t commit_covered_ = 0;   // requests covered by the last commit
  bool covered_durable_ = false;  // whether that commit was synced to disk
  std::atomic<uint64_t> commit_tickets_{0};
  std::atomic<bool> dirty_since_commit_{false};

  std::mutex flush_mu_;
  std::condition_variable flush_cv_;
  std::condition_variable stream_cv_;  // stream_ready_ has work (for the streamer thread)
  std::deque<uint64_t> flush_ready_;   // closed files: store now
  std::deque<uint64_t> stream_ready_;  // large files being written: store their next part
  std::deque<uint64_t> flush_later_;   // written, not closed: store after flush_delay_s idle
  std::unordered_map<uint64_t, std::chrono::steady_clock::time_point> last_write_;
  std::unordered_set<uint64_t> queued_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
  std::condition_variable commit_cv_;
  bool started_ = false;
  bool shut_down_ = false;

  std::mutex error_mu_;
  Status background_error_;
  // Open files whose last name is gone keep their stored chunks pinned until the kernel
  // forgets them: once a commit drops the name nothing references those chunks, and gc must
  // not take them from a reader. ns_mu_ guards the sets; pins change in CommitLocked,
  // through the TreeCommit's hook.
  std::unordered_set<uint64_t> orphans_;  // to pin at the next commit
  std::unordered_map<uint64_t, std::vector<ObjectKey>> orphan_pins_;
  std::vector<ObjectKey> to_unpin_;
  Status PinOrphans();
  uint64_t last_activity_ = 0;  // committer thread only
  std::chrono::steady_clock::time_point last_touch_;
};

}  // namespace stashfs::fs
