// A fixed set of worker threads for background work of the object store: decompressing and
// verifying chunks a sequential reader will ask for next, and compressing the chunks of one
// large file in parallel.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace stashfs {

class ThreadPool {
 public:
  explicit ThreadPool(size_t threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Queues `task`; false (and not queued) when more than `max_queued` tasks are waiting, so
  // optional work such as prefetching is dropped rather than piling up.
  bool Submit(std::function<void()> task, size_t max_queued = SIZE_MAX);
  size_t size() const { return threads_.size(); }

 private:
  void Run();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace stashfs
