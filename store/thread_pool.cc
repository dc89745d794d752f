#include "store/thread_pool.h"

namespace stashfs {

ThreadPool::ThreadPool(size_t threads) {
  for (size_t i = 0; i < threads; ++i)
    threads_.emplace_back([this] { Run(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_)
    t.join();
}

bool ThreadPool::Submit(std::function<void()> task, size_t max_queued) {
  {
    std::lock_guard lock(mu_);
    if (queue_.size() >= max_queued) return false;
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
  return true;
}

void ThreadPool::Run() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      // Finish queued work before stopping: a caller may wait on it.
      if (queue_.empty()) return;
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

}  // namespace stashfs
