// An Env for tests that injects the failures real disks produce (after LevelDB's
// FaultInjectionTestEnv): a full disk (ENOSPC after a byte budget), failing syncs (EIO), and a
// power loss that forgets every byte written since a file's last successful sync.
//
// The crash model: files are appended to or written in place, and a crash truncates each file
// written through this Env back to its size at its last successful sync (0 if it was created and
// never synced). Names (creation, rename, removal) are treated as durable at once. SQLite does its
// own I/O and is not affected.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "store/env.h"

namespace stashfs::test {

class FaultEnv final : public Env {
 public:
  explicit FaultEnv(Env* base = Env::Default()) : base_(base) {}

  // Lets `bytes` more bytes be written, then fails writes with ENOSPC. A write that crosses the
  // limit writes the bytes that fit first, as a filling disk does.
  void FailWritesAfter(uint64_t bytes);
  // Makes every file and directory sync fail with `err`.
  void FailSyncs(int err = EIO);
  // Stops injecting failures.
  void ClearFaults();
  // Makes NowSeconds() answer `seconds` (the real clock again with nullopt).
  void SetNow(std::optional<int64_t> seconds) {
    std::lock_guard lock(mu_);
    now_ = seconds;
  }
  int64_t NowSeconds() override {
    {
      std::lock_guard lock(mu_);
      if (now_) return *now_;
    }
    return base_->NowSeconds();
  }

  // Simulates a power loss: truncates every file written through this Env to its last synced
  // size. Returns how many bytes were dropped.
  Result<uint64_t> DropUnsyncedData();
  // Bytes written through this Env that a crash would lose now.
  uint64_t UnsyncedBytes();

  uint64_t bytes_written() {
    std::lock_guard lock(mu_);
    return bytes_written_;
  }
  int failed_writes() {
    std::lock_guard lock(mu_);
    return failed_writes_;
  }
  int failed_syncs() {
    std::lock_guard lock(mu_);
    return failed_syncs_;
  }

  Result<std::unique_ptr<File>> Open(const std::string& path, int flags, mode_t mode) override;
  Status MakeDirs(const std::string& path, mode_t mode) override {
    return base_->MakeDirs(path, mode);
  }
  Status Remove(const std::string& path) override;
  Status Rename(const std::string& from, const std::string& to) override;
  Status SyncDir(const std::string& path) override;
  // A new name is durable at once in this crash model, like the others.
  Status Link(const std::string& from, const std::string& to) override {
    return base_->Link(from, to);
  }
  Result<FileStat> Stat(const std::string& path) override { return base_->Stat(path); }
  Result<std::vector<std::string>> List(const std::string& dir) override {
    return base_->List(dir);
  }
  bool Exists(const std::string& path) override { return base_->Exists(path); }
  Result<uint64_t> FileSize(const std::string& path) override { return base_->FileSize(path); }

 private:
  class FaultFile;
  struct Tracked {
    uint64_t synced_size = 0;  // what survives a crash
  };
  // How many of `n` bytes may be written now (n unless the budget runs out).
  size_t Admit(size_t n, bool* full);
  Status SyncFault(const std::string& what);
  void Synced(const std::string& path, uint64_t size);

  Env* base_;
  std::mutex mu_;
  std::optional<uint64_t> write_budget_;
  int sync_errno_ = 0;
  std::optional<int64_t> now_;
  uint64_t bytes_written_ = 0;
  int failed_writes_ = 0;
  int failed_syncs_ = 0;
  std::map<std::string, Tracked> files_;
};

}  // namespace stashfs::test
