// The store's seam to the operating system for the files whose crash behaviour matters (packs,
// the config, lock files). Tests substitute an Env that fails writes with ENOSPC or EIO, flips
// bytes, or forgets everything not yet synced, as a crash would (after LevelDB's Env).
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "store/status.h"

namespace stashfs {

class File {
 public:
  virtual ~File() = default;
  // Reads up to n bytes; *got < n only at end of file.
  virtual Status pread(uint64_t offset, void* buf, size_t n, size_t* got) = 0;
  // Writes all n bytes or fails.
  virtual Status pwrite(uint64_t offset, const void* buf, size_t n) = 0;
  // Makes written data durable (fdatasync; fsync when metadata=true).
  virtual Status sync(bool metadata) = 0;
  // Starts writing [offset, offset+n) to disk without waiting, so a later sync has little left
  // to do. Only a hint: no error, no durability.
  virtual void start_writeback(uint64_t offset, uint64_t n) {
    (void)offset;
    (void)n;
  }
  // Waits until [offset, offset+n) is on disk (as far as writeback goes: no cache flush, no
  // durability) and then drops it from the page cache. Only a hint: no error.
  virtual void drop_written(uint64_t offset, uint64_t n) {
    (void)offset;
    (void)n;
  }
  virtual Status truncate(uint64_t size) = 0;
  // Deallocates [offset, offset + n) and keeps the size (FALLOC_FL_PUNCH_HOLE): the range then
  // reads as zeros. Fails with errno EOPNOTSUPP where the filesystem cannot.
  virtual Status punch_hole(uint64_t offset, uint64_t n) {
    (void)offset;
    (void)n;
    return Status::IOError("punching a hole in " + path_, EOPNOTSUPP);
  }
  // lseek(2)'s SEEK_DATA or SEEK_HOLE from `offset`, or -1 where it cannot say (past the end,
  // or no support). By default the whole file is data: the next data is here, no hole follows.
  virtual int64_t seek(uint64_t offset, int whence) {
    return whence == SEEK_DATA ? static_cast<int64_t>(offset) : -1;
  }
  virtual Result<uint64_t> size() = 0;
  // Names the file has; 0 once it was deleted while open.
  virtual Result<uint64_t> link_count() = 0;
  const std::string& path() const { return path_; }

 protected:
  explicit File(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

struct FileStat {
  uint64_t size = 0;
  int64_t modified = 0;  // st_mtime, seconds since the epoch
  bool is_dir = false;
};

class Env {
 public:
  virtual ~Env() = default;
  static Env* Default();

  // flags as for open(2); O_CLOEXEC is always added.
  virtual Result<std::unique_ptr<File>> Open(const std::string& path, int flags,
                                             mode_t mode = 0600) = 0;
  virtual Status MakeDirs(const std::string& path, mode_t mode) = 0;
  virtual Status Remove(const std::string& path) = 0;  // ENOENT is not an error
  virtual Status Rename(const std::string& from, const std::string& to) = 0;
  // A second name for a file, failing with errno EEXIST if `to` exists: the one atomic
  // create-if-absent a directory offers for a file whose contents are already written.
  virtual Status Link(const std::string& from, const std::string& to) = 0;
  // fsync of a directory, so a created, renamed or removed name in it is durable.
  virtual Status SyncDir(const std::string& path) = 0;
  virtual Result<std::vector<std::string>> List(const std::string& dir) = 0;
  virtual bool Exists(const std::string& path) = 0;
  virtual Result<uint64_t> FileSize(const std::string& path) = 0;
  // NotFound if nothing has that name.
  virtual Result<FileStat> Stat(const std::string& path) = 0;
  // Wall-clock seconds since the epoch: creation and last-use times, prune's ages, gc's grace
  // periods. Tests move it to age a store without waiting.
  virtual int64_t NowSeconds();
};

// Writes `data` to `path` atomically and durably: temp file, fsync, rename, fsync of the dir.
Status WriteFileAtomic(Env* env, const std::string& path, const std::string& data, mode_t mode);
Result<std::string> ReadFileToString(Env* env, const std::string& path);

}  // namespace stashfs
