// Reusable byte buffers for the large transient allocations of ingest and reads: chunk copies
// handed to the store's workers, compressed blocks on their way to a pack, payloads read from a
// pack and the decompressed blocks the block cache holds.
//
// Why a pool: those buffers are 64 KiB to 8 MiB, so glibc serves each with its own mmap (the
// daemon holds M_MMAP_THRESHOLD at 128 KiB, because cached blocks living in the heap fragment
// it and RSS drifts upward). A fresh mapping is faulted in and zeroed page by page and unmapped
// on free: perf put a quarter of the daemon's CPU on a 1 GiB write there. Keeping a few whole
// buffers keeps their pages mapped and reuses them, without putting blocks in the heap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace stashfs {

class BufferPool {
 public:
  // Buffers are kept in power-of-two capacity classes from kMinPooled up to kMaxPooled; at most
  // `max_free_bytes` of capacity waits in the pool (beyond that, returned buffers are freed).
  static constexpr size_t kMinPooled = 64 * 1024;
  static constexpr size_t kMaxPooled = 8 * 1024 * 1024;
  explicit BufferPool(size_t max_free_bytes = 12 * 1024 * 1024) : max_free_bytes_(max_free_bytes) {}
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // An empty vector with capacity for at least `capacity` bytes (a power of two when the
  // request is in the pooled range, so it can come back to its class: the request's class, or
  // the one above when only that one has a buffer waiting).
  std::vector<uint8_t> Take(size_t capacity);
  // A vector of `size` bytes (capacity at least `capacity`) whose contents are unspecified:
  // bytes a previous user of the buffer had are not zeroed again, which matters when the
  // caller is about to overwrite all of them (a pread, a decompression).
  std::vector<uint8_t> TakeSized(size_t size, size_t capacity = 0);
  // A vector whose size is its whole capacity, at least `size` bytes, contents unspecified: for
  // a caller that fills a prefix through a span and keeps the length itself. Unlike TakeSized,
  // its buffer goes back to the pool at full size, so neither end of a reuse zero-fills.
  std::vector<uint8_t> TakeFull(size_t size);
  // Takes the buffer back for reuse. Anything outside the classes (grown past its capacity,
  // or too small or too large to pool) is simply freed.
  void Give(std::vector<uint8_t>&& buf);
  // Frees what waits in the pool if nothing was taken since the previous call: a mount that
  // went idle gives the memory back (called from the periodic committer).
  void TrimIfIdle();

  size_t free_bytes() const;
  uint64_t reused() const;  // Takes served from the pool, for tests

 private:
  std::vector<uint8_t> TakeRaw(size_t capacity);  // as returned, size and all
  static constexpr int kClasses = 8;              // 64 KiB .. 8 MiB
  mutable std::mutex mu_;
  std::vector<std::vector<uint8_t>> free_[kClasses];
  size_t free_bytes_ = 0;
  const size_t max_free_bytes_;
  uint64_t takes_ = 0;
  uint64_t takes_at_trim_ = 0;
  uint64_t reused_ = 0;
};

// A decompressed block shared with readers: the buffer goes back to `pool` when the last reader
// and the block cache have let go of it.
std::shared_ptr<const std::vector<uint8_t>> ShareWithPool(std::vector<uint8_t>&& buf,
                                                          std::shared_ptr<BufferPool> pool);

}  // namespace stashfs
