#include "fault_backend.h"

#include <thread>

namespace stashfs::test {

void FaultBackend::SetLatency(std::chrono::microseconds d) {
  std::lock_guard lock(mu_);
  latency_ = d;
}

void FaultBackend::FailNext(Op op, int count, Status err) {
  std::lock_guard lock(mu_);
  fail_[op] = {count, std::move(err)};
}

void FaultBackend::TearNextPut(size_t keep) {
  std::lock_guard lock(mu_);
  tear_ = true;
  tear_keep_ = keep;
}

void FaultBackend::LoseNextReply(Op op) {
  std::lock_guard lock(mu_);
  lose_[op] = 1;
}

void FaultBackend::ClearFaults() {
  std::lock_guard lock(mu_);
  latency_ = {};
  fail_.clear();
  lose_.clear();
  tear_ = false;
}

int FaultBackend::calls(Op op) {
  std::lock_guard lock(mu_);
  return calls_[op];
}

Status FaultBackend::Before(Op op) {
  std::chrono::microseconds wait;
  {
    std::lock_guard lock(mu_);
    wait = latency_;
  }
  if (wait.count() > 0) std::this_thread::sleep_for(wait);
  std::lock_guard lock(mu_);
  auto it = fail_.find(op);
  if (it != fail_.end() && it->second.first > 0) {
    --it->second.first;
    return it->second.second;
  }
  ++calls_[op];
  return Status::Ok();
}

bool FaultBackend::LoseReply(Op op) {
  std::lock_guard lock(mu_);
  auto it = lose_.find(op);
  if (it == lose_.end() || it->second == 0) return false;
  --it->second;
  return true;
}

namespace {
Status Lost() {
  return Status::IOError("injected fault: the reply was lost after the call took effect",
                         ETIMEDOUT);
}
}  // namespace

Status FaultBackend::Put(const std::string& name, std::span<const uint8_t> data) {
  RETURN_IF_ERROR(Before(Op::kPut));
  size_t keep = 0;
  bool tear = false;
  {
    std::lock_guard lock(mu_);
    std::swap(tear, tear_);
    keep = std::min(tear_keep_, data.size());
  }
  if (tear) {
    RETURN_IF_ERROR(base_->Put(name, data.first(keep)));
    return Status::IOError("injected fault: torn put of " + name, EIO);
  }
  Status st = base_->Put(name, data);
  return st.ok() && LoseReply(Op::kPut) ? Lost() : st;
}

Status FaultBackend::PutIfAbsent(const std::string& name, std::span<const uint8_t> data) {
  RETURN_IF_ERROR(Before(Op::kPutIfAbsent));
  Status st = base_->PutIfAbsent(name, data);
  return st.ok() && LoseReply(Op::kPutIfAbsent) ? Lost() : st;
}

Status FaultBackend::ReadRange(const std::string& name, uint64_t offset, size_t n,
                               std::vector<uint8_t>* out) {
  RETURN_IF_ERROR(Before(Op::kReadRange));
  Status st = base_->ReadRange(name, offset, n, out);
  return st.ok() && LoseReply(Op::kReadRange) ? Lost() : st;
}

Result<std::optional<BlobInfo>> FaultBackend::Stat(const std::string& name) {
  RETURN_IF_ERROR(Before(Op::kStat));
  auto r = base_->Stat(name);
  if (r.ok() && LoseReply(Op::kStat)) return Lost();
  return r;
}

Result<std::vector<BlobInfo>> FaultBackend::List(const std::string& prefix) {
  RETURN_IF_ERROR(Before(Op::kList));
  auto r = base_->List(prefix);
  if (r.ok() && LoseReply(Op::kList)) return Lost();
  return r;
}

Status FaultBackend::Delete(const std::string& name) {
  RETURN_IF_ERROR(Before(Op::kDelete));
  Status st = base_->Delete(name);
  return st.ok() && LoseReply(Op::kDelete) ? Lost() : st;
}

}  // namespace stashfs::test
