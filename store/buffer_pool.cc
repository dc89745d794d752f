#include "store/buffer_pool.h"

#include <algorithm>
#include <bit>

namespace stashfs {

namespace {
// Class k holds buffers of capacity kMinPooled << k; -1 when not pooled.
int ClassOf(size_t capacity) {
  if (capacity > BufferPool::kMaxPooled) return -1;
  size_t c = std::bit_ceil(std::max(capacity, BufferPool::kMinPooled));
  return std::countr_zero(c) - std::countr_zero(BufferPool::kMinPooled);
}
}  // namespace

std::vector<uint8_t> BufferPool::Take(size_t capacity) {
  std::vector<uint8_t> buf = TakeSized(0, capacity);
  buf.clear();
  return buf;
}

std::vector<uint8_t> BufferPool::TakeSized(size_t size, size_t capacity) {
  capacity = std::max(size, capacity);
  std::vector<uint8_t> buf = TakeRaw(capacity);
  // A pooled buffer comes back at its whole capacity, so this only shrinks it (keeping the
  // bytes); only a fresh buffer is zero-filled.
  buf.resize(size);
  return buf;
}

std::vector<uint8_t> BufferPool::TakeFull(size_t size) {
  std::vector<uint8_t> buf = TakeRaw(size);
  // Only a fresh buffer grows here (zero-filled once, its pages faulted in once).
  buf.resize(buf.capacity());
  return buf;
}

std::vector<uint8_t> BufferPool::TakeRaw(size_t capacity) {
  std::vector<uint8_t> buf;
  int k = capacity >= kMinPooled ? ClassOf(capacity) : -1;
  if (k < 0) {
    buf.reserve(capacity);
    return buf;
  }
  {
    std::lock_guard lock(mu_);
    ++takes_;
    // The class above serves too: decompressed chunks are 128 KiB to 2 MiB, so the buffers the
    // block cache evicts rarely match the next block's class exactly, and a miss maps, faults
    // in and zeroes fresh pages (a fifth of the daemon's CPU on a cold 1 GiB read).
    for (int c = k; c <= std::min(k + 1, kClasses - 1); ++c) {
      if (free_[c].empty()) continue;
      buf = std::move(free_[c].back());
      free_[c].pop_back();
      free_bytes_ -= buf.capacity();
      ++reused_;
      return buf;
    }
  }
  buf.reserve(kMinPooled << k);  // libstdc++ reserves exactly what is asked
  return buf;
}

void BufferPool::Give(std::vector<uint8_t>&& buf) {
  std::vector<uint8_t> own = std::move(buf);
  const size_t cap = own.capacity();
  if (cap < kMinPooled || !std::has_single_bit(cap)) return;
  int k = ClassOf(cap);
  if (k < 0) return;
  {
    std::lock_guard lock(mu_);
    if (free_bytes_ + cap > max_free_bytes_) return;  // `own` is freed after the lock is released
    free_bytes_ += cap;  // the place is taken now; the buffer joins its class below
  }
  // Kept at its whole capacity, zero-filled once here: a later TakeSized only shrinks it and
  // never zeroes again. Left at its size, every take of a bigger block zero-filled the growth,
  // 15 % of the daemon's CPU on a cold 1 GiB read, most of it faulting pages in.
  own.resize(cap);
  std::lock_guard lock(mu_);
  free_[k].push_back(std::move(own));
}

void BufferPool::TrimIfIdle() {
  std::vector<std::vector<uint8_t>> drop;
  {
    std::lock_guard lock(mu_);
    if (takes_ != takes_at_trim_) {
      takes_at_trim_ = takes_;
      return;
    }
    for (auto& cls : free_) {
      for (auto& b : cls) {
        free_bytes_ -= b.capacity();  // not zeroed: a Give between its two locks holds a place
        drop.push_back(std::move(b));
      }
      cls.clear();
    }
  }
  // `drop` is freed here, outside the lock.
}

size_t BufferPool::free_bytes() const {
  std::lock_guard lock(mu_);
  return free_bytes_;
}

uint64_t BufferPool::reused() const {
  std::lock_guard lock(mu_);
  return reused_;
}

std::shared_ptr<const std::vector<uint8_t>> ShareWithPool(std::vector<uint8_t>&& buf,
                                                          std::shared_ptr<BufferPool> pool) {
  auto* owned = new std::vector<uint8_t>(std::move(buf));
  return std::shared_ptr<const std::vector<uint8_t>>(
      owned, [pool = std::move(pool)](const std::vector<uint8_t>* v) {
        auto* mut = const_cast<std::vector<uint8_t>*>(v);
        pool->Give(std::move(*mut));
        delete mut;
      });
}

}  // namespace stashfs
