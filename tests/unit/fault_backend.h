// A Backend for tests that wraps another and injects what remote stores do to their clients:
// latency on every call, calls that fail (a 5xx, a timeout, a refused connection), puts that
// leave a torn blob behind (an interrupted copy onto a store without atomic replace), and calls
// that took effect although the caller was told they failed (a reply lost after the server
// acted: the case that makes "create a ref only if absent" interesting).
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <string>

#include "store/backend.h"

namespace stashfs::test {

class FaultBackend final : public Backend {
 public:
  enum class Op { kPut, kPutIfAbsent, kReadRange, kStat, kList, kDelete };

  explicit FaultBackend(Backend* base) : base_(base) {}

  // Every call sleeps this long first.
  void SetLatency(std::chrono::microseconds d);
  // The next `count` calls of `op` fail with `err` without reaching the base backend.
  void FailNext(Op op, int count, Status err = Status::IOError("injected fault", EIO));
  // The next Put stores only the first `keep` bytes, then fails.
  void TearNextPut(size_t keep);
  // The next call of `op` reaches the base backend, but its caller is told it failed.
  void LoseNextReply(Op op);
  void ClearFaults();
  // Calls of `op` that reached the base backend.
  int calls(Op op);

  std::string Describe() const override { return "faulty " + base_->Describe(); }
  Status Put(const std::string& name, std::span<const uint8_t> data) override;
  Status PutIfAbsent(const std::string& name, std::span<const uint8_t> data) override;
  Status ReadRange(const std::string& name, uint64_t offset, size_t n,
                   std::vector<uint8_t>* out) override;
  Result<std::optional<BlobInfo>> Stat(const std::string& name) override;
  Result<std::vector<BlobInfo>> List(const std::string& prefix) override;
  Status Delete(const std::string& name) override;

 private:
  // Sleeps, counts, and says whether (and how) this call fails before reaching the base.
  Status Before(Op op);
  // Whether the reply of a call that reached the base is to be lost.
  bool LoseReply(Op op);

  Backend* base_;
  std::mutex mu_;
  std::chrono::microseconds latency_{0};
  std::map<Op, std::pair<int, Status>> fail_;
  std::map<Op, int> lose_;
  std::map<Op, int> calls_;
  size_t tear_keep_ = 0;
  bool tear_ = false;
};

}  // namespace stashfs::test
