#include "fault_env.h"

#include <fcntl.h>

#include <algorithm>

namespace stashfs::test {

class FaultEnv::FaultFile final : public File {
 public:
  FaultFile(FaultEnv* env, std::unique_ptr<File> base)
      : File(base->path()), env_(env), base_(std::move(base)) {}

  Status pread(uint64_t offset, void* buf, size_t n, size_t* got) override {
    return base_->pread(offset, buf, n, got);
  }
  Status pwrite(uint64_t offset, const void* buf, size_t n) override {
    bool full = false;
    size_t ok = env_->Admit(n, &full);
    if (ok > 0) RETURN_IF_ERROR(base_->pwrite(offset, buf, ok));
    if (full) return Status::IOError("writing " + path_ + " (injected)", ENOSPC);
    return Status::Ok();
  }
  Status sync(bool metadata) override {
    RETURN_IF_ERROR(env_->SyncFault("syncing " + path_));
    RETURN_IF_ERROR(base_->sync(metadata));
    ASSIGN_OR_RETURN(uint64_t size, base_->size());
    env_->Synced(path_, size);
    return Status::Ok();
  }
  void start_writeback(uint64_t offset, uint64_t n) override { base_->start_writeback(offset, n); }
  void drop_written(uint64_t offset, uint64_t n) override { base_->drop_written(offset, n); }
  Status truncate(uint64_t size) override { return base_->truncate(size); }
  Status punch_hole(uint64_t offset, uint64_t n) override { return base_->punch_hole(offset, n); }
  int64_t seek(uint64_t offset, int whence) override { return base_->seek(offset, whence); }
  Result<uint64_t> size() override { return base_->size(); }
  Result<uint64_t> link_count() override { return base_->link_count(); }

 private:
  FaultEnv* env_;
  std::unique_ptr<File> base_;
};

void FaultEnv::FailWritesAfter(uint64_t bytes) {
  std::lock_guard lock(mu_);
  write_budget_ = bytes;
}

void FaultEnv::FailSyncs(int err) {
  std::lock_guard lock(mu_);
  sync_errno_ = err;
}

void FaultEnv::ClearFaults() {
  std::lock_guard lock(mu_);
  write_budget_.reset();
  sync_errno_ = 0;
}

size_t FaultEnv::Admit(size_t n, bool* full) {
  std::lock_guard lock(mu_);
  size_t ok = n;
  if (write_budget_) {
    ok = static_cast<size_t>(std::min<uint64_t>(n, *write_budget_));
    *write_budget_ -= ok;
  }
  *full = ok < n;
  if (*full) ++failed_writes_;
  bytes_written_ += ok;
  return ok;
}

Status FaultEnv::SyncFault(const std::string& what) {
  std::lock_guard lock(mu_);
  if (!sync_errno_) return Status::Ok();
  ++failed_syncs_;
  return Status::IOError(what + " (injected)", sync_errno_);
}

void FaultEnv::Synced(const std::string& path, uint64_t size) {
  std::lock_guard lock(mu_);
  files_[path].synced_size = size;
}

Result<std::unique_ptr<File>> FaultEnv::Open(const std::string& path, int flags, mode_t mode) {
  bool writable = (flags & O_ACCMODE) != O_RDONLY;
  bool existed = base_->Exists(path);
  ASSIGN_OR_RETURN(auto f, base_->Open(path, flags, mode));
  if (writable) {
    std::lock_guard lock(mu_);
    if (!files_.count(path)) {
      // A file that was there before is taken as durable as it is; a new one holds nothing yet.
      uint64_t size = 0;
      if (existed && !(flags & O_TRUNC)) {
        auto s = f->size();
        if (s.ok()) size = *s;
      }
      files_[path].synced_size = size;
    } else if (flags & O_TRUNC) {
      files_[path].synced_size = 0;
    }
  }
  return std::unique_ptr<File>(new FaultFile(this, std::move(f)));
}

Status FaultEnv::Remove(const std::string& path) {
  RETURN_IF_ERROR(base_->Remove(path));
  std::lock_guard lock(mu_);
  files_.erase(path);
  return Status::Ok();
}

Status FaultEnv::Rename(const std::string& from, const std::string& to) {
  RETURN_IF_ERROR(base_->Rename(from, to));
  std::lock_guard lock(mu_);
  auto it = files_.find(from);
  if (it != files_.end()) {
    files_[to] = it->second;
    files_.erase(from);
  } else {
    files_.erase(to);
  }
  return Status::Ok();
}

Status FaultEnv::SyncDir(const std::string& path) {
  RETURN_IF_ERROR(SyncFault("syncing directory " + path));
  return base_->SyncDir(path);
}

uint64_t FaultEnv::UnsyncedBytes() {
  std::lock_guard lock(mu_);
  uint64_t total = 0;
  for (const auto& [path, t] : files_) {
    auto size = base_->FileSize(path);
    if (size.ok() && *size > t.synced_size) total += *size - t.synced_size;
  }
  return total;
}

Result<uint64_t> FaultEnv::DropUnsyncedData() {
  std::lock_guard lock(mu_);
  uint64_t dropped = 0;
  for (const auto& [path, t] : files_) {
    if (!base_->Exists(path)) continue;
    ASSIGN_OR_RETURN(uint64_t size, base_->FileSize(path));
    if (size <= t.synced_size) continue;
    ASSIGN_OR_RETURN(auto f, base_->Open(path, O_WRONLY));
    RETURN_IF_ERROR(f->truncate(t.synced_size));
    dropped += size - t.synced_size;
  }
  return dropped;
}

}  // namespace stashfs::test
