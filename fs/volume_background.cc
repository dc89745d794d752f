// Volume's background work: the queues of written files and the threads that serve them. Flusher
// threads store files once closed or idle, a low-priority streamer stores large files while they
// are still being written, and the committer commits a dirty tree every commit_interval_s and
// does housekeeping (scratch trimming, closing deleted packs, keeping the volume fresh for prune).
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "fs/volume.h"
#include "store/log.h"

namespace stashfs::fs {

void Volume::Start() {
  std::lock_guard lock(flush_mu_);
  if (started_ || opts_.read_only) return;
  started_ = true;
  for (int i = 0; i < std::max(1, opts_.flush_threads); ++i)
    threads_.emplace_back([this] { FlusherLoop(); });
  threads_.emplace_back([this] { CommitterLoop(); });
  threads_.emplace_back([this] { StreamerLoop(); });
}

Status Volume::Shutdown() {
  {
    std::lock_guard lock(flush_mu_);
    if (shut_down_) return Status::Ok();
    shut_down_ = true;
    stopping_ = true;
  }
  flush_cv_.notify_all();
  commit_cv_.notify_all();
  stream_cv_.notify_all();
  for (auto& t : threads_)
    t.join();
  threads_.clear();
  if (opts_.read_only) return Status::Ok();
  Status st = FlushAll();
  if (st.ok()) st = Commit(true);
  if (st.ok()) st = background_error();
  return st;
}

void Volume::RecordError(const Status& s) {
  LogError(s.message());
  std::lock_guard lock(error_mu_);
  if (background_error_.ok()) background_error_ = s;
}

void Volume::QueueFlush(uint64_t ino, bool now) {
  {
    std::lock_guard lock(flush_mu_);
    if (stopping_) return;
    last_write_[ino] = std::chrono::steady_clock::now();
    auto [it, fresh] = queued_.insert(ino);
    if (now) {
      flush_ready_.push_back(ino);
    } else if (fresh) {
      // Waking a flusher for a file due in flush_delay_s only makes it sleep again: a flusher
      // idle over a non-empty queue already wakes at the head's deadline, which is earlier than
      // ours. (tar -x: one wake and a context switch per file saved.) An empty queue has no such
      // waiter, and memory pressure means flushing now.
      bool wake = flush_later_.empty() || data_.mem_used.load() > data_.mem_total_max / 2;
      flush_later_.push_back(ino);
      if (!wake) return;
    } else {
      return;
    }
  }
  flush_cv_.notify_one();
}

void Volume::QueueStream(uint64_t ino) {
  {
    std::lock_guard lock(flush_mu_);
    if (stopping_) return;
    stream_ready_.push_back(ino);
  }
  stream_cv_.notify_one();
}

void Volume::StreamerLoop() {
  // Streaming is optional work: it should use only CPU the writer and the rest of the mount
  // leave idle. At nice 10 the scheduler gives it about a tenth of a busy core, so on a small
  // machine a big write is not slowed by storing itself; when the writer waits for its source
  // or the disk, the stream takes the idle cores. (Per-thread nice is Linux behaviour.)
  setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), 10);
  for (;;) {
    uint64_t ino;
    {
      std::unique_lock lock(flush_mu_);
      stream_cv_.wait(lock, [&] { return stopping_ || !stream_ready_.empty(); });
      if (stopping_) return;
      ino = stream_ready_.front();
      stream_ready_.pop_front();
    }
    StreamFile(ino);
  }
}

void Volume::FlusherLoop() {
  for (;;) {
    uint64_t ino;
    {
      std::unique_lock lock(flush_mu_);
      for (;;) {
        if (stopping_) return;
        if (!flush_ready_.empty()) {
          ino = flush_ready_.front();
          flush_ready_.pop_front();
          break;
        }
        if (!flush_later_.empty()) {
          ino = flush_later_.front();
          auto lw = last_write_.find(ino);
          auto due = (lw == last_write_.end() ? std::chrono::steady_clock::now() : lw->second) +
                     std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                         std::chrono::duration<double>(opts_.flush_delay_s));
          // Memory staging is bounded: under pressure, store the oldest file now.
          bool pressure = data_.mem_used.load() > data_.mem_total_max / 2;
          if (due <= std::chrono::steady_clock::now() || pressure) {
            flush_later_.pop_front();
            break;
          }
          flush_cv_.wait_until(lock, due);
          continue;
        }
        flush_cv_.wait(lock);
      }
      queued_.erase(ino);
      last_write_.erase(ino);
    }
    Status s = FlushFile(ino);
    if (!s.ok()) RecordError(s);
  }
}

void Volume::StreamFile(uint64_t ino) {
  std::shared_ptr<FileData> f;
  {
    std::unique_lock lock(ns_mu_);
    Inode* inode = Find(ino);
    if (!inode || !inode->file || inode->nlink == 0) return;
    f = inode->file;
  }
  // A bounded step, so one large writer does not hold this thread from the other files; a
  // failure is not reported here: the file's flush stores it all again and reports that.
  if (f->StreamStep(16 << 20).ok() && f->TakeStreamTurn()) QueueStream(ino);
}

Status Volume::FlushFile(uint64_t ino) {
  auto lease = objects_->BeginLease();
  std::shared_ptr<FileData> f;
  {
    std::unique_lock lock(ns_mu_);
    Inode* inode = Find(ino);
    // Deleted files need not be stored.
    if (!inode || !inode->file || inode->nlink == 0) return Status::Ok();
    f = inode->file;
  }
  std::optional<ObjectStore::Lease> stream_lease;
  ASSIGN_OR_RETURN(bool changed, f->Flush(&stream_lease));
  if (changed) {
    stats_.Add(Statistic::kFileFlushes);
    std::unique_lock lock(ns_mu_);
    Inode* inode = Find(ino);
    if (inode && inode->file == f) MarkChanged(inode);
  } else if (f->dirty()) {
    QueueFlush(ino, false);
  }
  return Status::Ok();
}

Status Volume::FlushAll() {
  std::vector<uint64_t> dirty;
  {
    std::unique_lock lock(ns_mu_);
    for (const auto& [ino, inode] : inodes_)
      if (inode->file && inode->nlink > 0 && inode->file->dirty()) dirty.push_back(ino);
  }
  // Two threads: chunking and compression are CPU-bound and this runs at unmount and save.
  std::atomic<size_t> next{0};
  Status first;
  std::mutex mu;
  auto work = [&] {
    for (size_t i; (i = next++) < dirty.size();) {
      Status s = FlushFile(dirty[i]);
      if (!s.ok()) {
        std::lock_guard lock(mu);
        if (first.ok()) first = s;
      }
    }
  };
  std::vector<std::thread> pool;
  for (int i = 1; i < std::max(1, opts_.flush_threads); ++i)
    pool.emplace_back(work);
  work();
  for (auto& t : pool)
    t.join();
  return first;
}

void Volume::TrimScratch() {
  std::vector<std::shared_ptr<FileData>> clean;
  uint64_t total = 0;
  {
    std::unique_lock lock(ns_mu_);
    for (const auto& [ino, inode] : inodes_) {
      if (!inode->file) continue;
      uint64_t b = inode->file->scratch_bytes();
      total += b;
      if (b && inode->file->has_clean_scratch()) clean.push_back(inode->file);
    }
  }
  for (auto& f : clean) {
    if (total <= opts_.keep_scratch_total) break;
    total -= f->scratch_bytes();
    f->DropCleanScratch();
  }
}

void Volume::CommitterLoop() {
  auto interval = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(opts_.commit_interval_s));
  for (;;) {
    {
      std::unique_lock lock(flush_mu_);
      commit_cv_.wait_for(lock, interval, [this] { return stopping_; });
      if (stopping_) return;
    }
    if (dirty_since_commit_) {
      Status s = Commit();
      if (!s.ok()) RecordError(s);
    }
    TrimScratch();
    objects_->DropDeletedPacks();
    objects_->buffers().TrimIfIdle();
    // Prune evicts least recently used volumes first: keep ours fresh while it is in use, at most
    // one catalog write a minute.
    auto now = std::chrono::steady_clock::now();
    uint64_t activity = stats_.Get(Statistic::kLookups) + stats_.Get(Statistic::kBytesWritten) +
                        stats_.Get(Statistic::kBytesReadFromStore);
    if (activity != last_activity_ && now - last_touch_ > std::chrono::minutes(1)) {
      last_activity_ = activity;
      last_touch_ = now;
      Status s = store_->TouchVolume(info_.id);
      if (!s.ok()) RecordError(s);
    }
  }
}

}  // namespace stashfs::fs
