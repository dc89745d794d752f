#include "fs/file_data.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <future>

namespace stashfs::fs {

namespace {

bool AllZero(std::span<const uint8_t> d) {
  // Word-at-a-time would be faster; holes are rare enough that memcmp against the start wins.
  if (d.empty()) return true;
  return d[0] == 0 && std::memcmp(d.data(), d.data() + 1, d.size() - 1) == 0;
}

// Reads n bytes of a scratch file; past its end (a truncate extended it) they are a hole: zeros.
Status PreadAll(File& f, uint64_t off, char* out, size_t n) {
  size_t got = 0;
  RETURN_IF_ERROR(f.pread(off, out, n, &got));
  if (got < n) std::memset(out + got, 0, n - got);
  return Status::Ok();
}

}  // namespace

// A file's content as it is being cut: chunks already stored, then puts still running on the
// store's workers (hashing and compressing), kept in order so the list comes out in file order.
class ContentBuilder {
 public:
  explicit ContentBuilder(DataContext* ctx) : ctx_(ctx) {}

  // A run of zeros: stored as a hole, not as data.
  void AddHole(uint64_t n) {
    pending_.push_back({n, true, {}});
    added_ += n;
  }
  // One chunk. `parallel`: put it on the store's workers (large files), at most kInFlight at a
  // time, which bounds the memory a fast writer can pile up.
  Status Add(std::span<const uint8_t> data, bool parallel) {
    added_ += data.size();
    if (AllZero(data)) {
      pending_.push_back({data.size(), true, {}});
    } else if (parallel) {
      // The worker owns its copy (this window moves on); it comes from the store's pool and
      // becomes the staged block itself.
      std::vector<uint8_t> copy = ctx_->objects->buffers().Take(data.size());
      copy.assign(data.begin(), data.end());
      pending_.push_back(
          {data.size(), false, ctx_->objects->PutAsync(ObjectKind::kChunk, std::move(copy))});
    } else {
      std::promise<Result<Hash>> done;
      done.set_value(ctx_->objects->Put(ObjectKind::kChunk, data));
      pending_.push_back({data.size(), false, done.get_future()});
    }
    return Settle(kInFlight);
  }
  // Waits for everything in flight and returns the content of `size` bytes.
  Result<FileContent> Finish(uint64_t size) {
    RETURN_IF_ERROR(Settle(0));
    if (added_ != size)
      return Status::IOError("chunking a file: its chunks do not add up to its size", EIO);
    content_.size = size;
    if (content_.chunks.size() > kDirectChunksMax) {
      ASSIGN_OR_RETURN(Hash list,
                       ctx_->objects->Put(ObjectKind::kList, EncodeList(content_.chunks)));
      content_.list = list;
      content_.chunks.clear();
    }
    return std::move(content_);
  }
  // Settles every put (a stream step's puts ran on the caller's thread, so nothing waits):
  // settled_chunks() then covers every byte added, for punching them out of the scratch file.
  Status SettleAll() { return Settle(0); }
  // Starts the content with chunks already stored (a punched prefix the stream resumes after).
  void Seed(const std::vector<ChunkRef>& chunks, uint64_t size) {
    content_.chunks = chunks;
    added_ = settled_ = size;
  }
  // The chunks settled so far (all but the last few puts in flight) and the bytes they cover.
  const std::vector<ChunkRef>& settled_chunks() const { return content_.chunks; }
  uint64_t settled_bytes() const { return settled_; }
  // Waits for the puts in flight, also after an error (they use the data they own).
  Status Drain() {
    Status first;
    while (!pending_.empty()) {
      Status s = Settle(pending_.size() - 1);
      if (first.ok() && !s.ok()) first = s;
    }
    return first;
  }

 private:
  static constexpr size_t kInFlight = 4;
  struct Pending {
    uint64_t size;
    bool hole;
    std::future<Result<Hash>> hash;
  };

  Status Settle(size_t keep) {
    while (pending_.size() > keep) {
      Pending p = std::move(pending_.front());
      pending_.pop_front();
      settled_ += p.size;
      if (p.hole) {
        if (!content_.chunks.empty() && content_.chunks.back().is_hole()) {
          content_.chunks.back().size += p.size;
        } else {
          content_.chunks.push_back({Hash{}, p.size});
        }
        continue;
      }
      ASSIGN_OR_RETURN(Hash h, p.hash.get());
      content_.chunks.push_back({h, p.size});
    }
    return Status::Ok();
  }

  DataContext* ctx_;
  FileContent content_;
  std::deque<Pending> pending_;
  uint64_t added_ = 0;
  uint64_t settled_ = 0;
};

namespace {

// Cuts the scratch file's bytes [*pos, end) into chunks and adds them to `b`, advancing *pos.
// `whole_windows`: cut only where a whole window of the chunker's max_size is present (a
// streamed prefix: such a cut does not depend on bytes not yet written), else up to `end` (a
// flush: `end` is where the data segment ends). Stops after `budget` bytes or once `*stop` is
// set. Reads go through a buffer of two windows, refilled when less than a window is left: the
// tail moved to its front on a refill is smaller than what the refill brings in (a one-window
// buffer moved ~1.5 MiB for every chunk cut). `on_step`, if set, runs each time another `step`
// bytes have been cut (a flush punches what it has stored), with the one buffer kept: taking a
// fresh one per step cost a page fault and a zeroed page per 4 KiB of it.
Status ChunkScratch(File& scratch, uint64_t* pos, uint64_t end, bool whole_windows, bool parallel,
                    uint64_t budget, const std::atomic<int>* stop, const ChunkerParams& params,
                    ContentBuilder* b, BufferPool* pool, uint64_t step = 0,
                    const std::function<void()>& on_step = nullptr) {
  const size_t window = params.max_size;
  const uint64_t start = *pos;
  // No chunk starts at or past start + budget, and none is longer than a window (`budget` is
  // UINT64_MAX for a flush, hence the test before adding).
  const uint64_t read_end = std::min(end, budget >= end ? end : start + budget + window);
  const size_t buf_size =
      static_cast<size_t>(std::min<uint64_t>(2 * window, std::max<uint64_t>(read_end - start, 1)));
  std::vector<uint8_t> buf = pool->TakeSized(buf_size);
  size_t head = 0, tail = 0;  // buf[head, tail) holds the file's bytes from *pos on
  uint64_t next_step = step;
  Status st;
  while (*pos < end && (!whole_windows || *pos + window <= end) && *pos - start < budget) {
    const uint64_t have_to = *pos + (tail - head);
    if (tail - head < window && have_to < read_end) {
      std::memmove(buf.data(), buf.data() + head, tail - head);
      tail -= head;
      head = 0;
      size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size() - tail, read_end - have_to));
      st = PreadAll(scratch, have_to, reinterpret_cast<char*>(buf.data()) + tail, want);
      if (!st.ok()) break;
      tail += want;
    }
    size_t len = NextChunkLength(std::span(buf.data() + head, tail - head), params);
    st = b->Add(std::span(buf.data() + head, len), parallel);
    if (!st.ok()) break;
    head += len;
    *pos += len;
    if (on_step && *pos - start >= next_step) {
      on_step();
      next_step += step;
    }
    if (stop && stop->load()) break;
  }
  pool->Give(std::move(buf));
  return st;
}

}  // namespace

std::shared_ptr<const ContentView> MakeView(FileContent content) {
  auto v = std::make_shared<ContentView>();
  v->content = std::move(content);
  if (!v->content.list) {
    uint64_t end = 0;
    v->ends.reserve(v->content.chunks.size());
    for (const auto& c : v->content.chunks)
      v->ends.push_back(end += c.size);
    v->resolved = true;
  }
  return v;
}

FileData::FileData(DataContext* ctx, FileContent content)
    : ctx_(ctx), size_(content.size), view_(MakeView(std::move(content))) {}

FileData::~FileData() {
  std::lock_guard lock(mu_);
  DropStaging();
}

void FileData::AccountMemory(int64_t delta) {
  ctx_->mem_used += delta;
}

uint64_t FileData::size() {
  std::lock_guard lock(mu_);
  return size_;
}

bool FileData::dirty() {
  std::lock_guard lock(mu_);
  return dirty_;
}

FileContent FileData::committed() {
  std::lock_guard lock(mu_);
  return view_->content;
}

bool FileData::has_clean_scratch() {
  std::lock_guard lock(mu_);
  return stage_ == Stage::kScratch && !dirty_;
}

uint64_t FileData::scratch_bytes() {
  std::lock_guard lock(mu_);
  return stage_ == Stage::kScratch ? size_ - std::min(size_, punched_) : 0;
}

void FileData::DropStaging() {
  StopStream(true);
  if (stage_ == Stage::kMemory) {
    AccountMemory(-static_cast<int64_t>(mem_.capacity()));
    std::string().swap(mem_);
  } else if (stage_ == Stage::kScratch) {
    // A stream step or flush still reading keeps its own reference to the open file.
    scratch_.reset();
    (void)ctx_->env->Remove(scratch_path_);
    scratch_path_.clear();
  }
  punched_ = 0;
  punched_view_.reset();
  stage_ = Stage::kNone;
}

void FileData::DropCleanScratch() {
  std::lock_guard lock(mu_);
  if (stage_ == Stage::kScratch && !dirty_) DropStaging();
}

Result<std::shared_ptr<const ContentView>> FileData::Resolve(
    std::shared_ptr<const ContentView> view) {
  if (view->resolved) return view;
  ASSIGN_OR_RETURN(auto data, ctx_->objects->Get(ObjectKind::kList, *view->content.list));
  ASSIGN_OR_RETURN(auto chunks, DecodeList(data.bytes));
  auto v = std::make_shared<ContentView>();
  v->content = view->content;
  v->list_chunks = std::move(chunks);
  uint64_t end = 0;
  for (const auto& c : v->list_chunks)
    v->ends.push_back(end += c.size);
  if (end != v->content.size) return Status::Corruption("chunk list does not match file size");
  v->resolved = true;
  std::lock_guard lock(mu_);
  if (view_ == view) view_ = v;  // cache the resolved list for later reads
  return std::shared_ptr<const ContentView>(v);
}

Status FileData::ReadStored(const std::shared_ptr<const ContentView>& view_in, uint64_t off,
                            size_t n, char* out) {
  const FileContent& c = view_in->content;
  if (c.chunks.empty() && !c.list) {
    // Inline (or empty) content.
    size_t have = off < c.inline_data.size() ? c.inline_data.size() - off : 0;
    size_t k = std::min(n, have);
    if (k) std::memcpy(out, c.inline_data.data() + off, k);
    if (k < n) std::memset(out + k, 0, n - k);
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(auto view, Resolve(view_in));
  auto it = std::upper_bound(view->ends.begin(), view->ends.end(), off);
  size_t i = static_cast<size_t>(it - view->ends.begin());
  // A sequential reader gets the next few chunks decompressed and verified on other threads
  // while it copies this one: cold reads of large files use more than one core.
  bool sequential = off == next_read_->exchange(off + n);
  if (sequential) {
    constexpr size_t kAhead = 3;
    size_t from = std::max<size_t>(i + 1, prefetched_upto_.load());
    const auto& chunks = view->chunks();
    size_t to = std::min(chunks.size(), i + 1 + kAhead);
    for (size_t k = from; k < to; ++k) {
      if (chunks[k].is_hole()) continue;
      ctx_->objects->Prefetch(ObjectKind::kChunk, chunks[k].hash,
                              [pos = next_read_, end = view->ends[k]] { return *pos < end; });
    }
    if (to > from) prefetched_upto_ = to;
  }
  size_t done = 0;
  while (done < n && i < view->chunks().size()) {
    const ChunkRef& ch = view->chunks()[i];
    uint64_t start = view->ends[i] - ch.size;
    uint64_t in_chunk = off + done - start;
    size_t k = static_cast<size_t>(std::min<uint64_t>(n - done, ch.size - in_chunk));
    if (ch.is_hole()) {
      std::memset(out + done, 0, k);
    } else {
      ASSIGN_OR_RETURN(auto data, ctx_->objects->Get(ObjectKind::kChunk, ch.hash));
      if (data.bytes.size() != ch.size) return Status::Corruption("chunk has the wrong size");
      std::memcpy(out + done, data.bytes.data() + in_chunk, k);
      ctx_->stats->Add(Statistic::kBytesReadFromStore, k);
      // Read to its end by a sequential reader: the kernel's page cache has it now. Dropping
      // it lets its buffer serve the chunks prefetched next instead of mapping fresh memory
      // (cold 1 GiB read: 5-8 % less daemon CPU than with 64 MiB of spent chunks cached).
      if (sequential && in_chunk + k == ch.size)
        ctx_->objects->DropIfAlone(ObjectKind::kChunk, ch.hash);
    }
    done += k;
    ++i;
  }
  if (done < n) std::memset(out + done, 0, n - done);
  return Status::Ok();
}

Result<size_t> FileData::Read(uint64_t off, size_t n, char* out) {
  std::shared_ptr<const ContentView> view;
  {
    std::lock_guard lock(mu_);
    if (off >= size_) return size_t{0};
    n = static_cast<size_t>(std::min<uint64_t>(n, size_ - off));
    if (stage_ == Stage::kMemory) {
      std::memcpy(out, mem_.data() + off, n);
      return n;
    }
    if (stage_ == Stage::kScratch) {
      size_t k = 0;
      if (off < punched_) {  // stored and punched out: the chunks hold these bytes
        k = static_cast<size_t>(std::min<uint64_t>(n, punched_ - off));
        RETURN_IF_ERROR(ReadStored(punched_view_, off, k, out));
      }
      if (k < n) RETURN_IF_ERROR(PreadAll(*scratch_, off + k, out + k, n - k));
      return n;
    }
    view = view_;
  }
  // Stored content is immutable: read it without holding the file's lock.
  RETURN_IF_ERROR(ReadStored(view, off, n, out));
  return n;
}

Status FileData::CreateScratch() {
  RETURN_IF_ERROR(ctx_->env->MakeDirs(ctx_->scratch_dir, 0700).context("creating scratch space"));
  std::string path = ctx_->scratch_dir + "/" + std::to_string(ctx_->next_scratch_id++);
  auto f = ctx_->env->Open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (!f.ok()) return f.status().context("creating a scratch file");
  scratch_ = std::move(*f);
  scratch_path_ = path;
  stage_ = Stage::kScratch;
  return Status::Ok();
}

Status FileData::SpillToScratch() {
  std::string mem = std::move(mem_);
  AccountMemory(-static_cast<int64_t>(mem.capacity()));
  mem_.clear();
  stage_ = Stage::kNone;
  RETURN_IF_ERROR(CreateScratch());
  RETURN_IF_ERROR(scratch_->pwrite(0, mem.data(), mem.size()));
  return scratch_->truncate(size_);
}

Status FileData::CopyStoredToScratch(const std::shared_ptr<const ContentView>& view, uint64_t end) {
  // Window by window, skipping zeros so sparse files stay sparse (and punched ranges, which
  // already read as zeros, are not written twice).
  std::vector<char> buf(ctx_->chunker.max_size);
  for (uint64_t off = 0; off < end;) {
    size_t k = static_cast<size_t>(std::min<uint64_t>(buf.size(), end - off));
    RETURN_IF_ERROR(ReadStored(view, off, k, buf.data()));
    if (!AllZero(std::span(reinterpret_cast<const uint8_t*>(buf.data()), k)))
      RETURN_IF_ERROR(scratch_->pwrite(off, buf.data(), k));
    off += k;
  }
  return Status::Ok();
}

Status FileData::EnsureStaged(uint64_t new_end) {
  uint64_t final_size = std::max(size_, new_end);
  if (stage_ == Stage::kNone) {
    bool small = final_size <= ctx_->mem_file_max &&
                 ctx_->mem_used.load() + static_cast<int64_t>(final_size) <= ctx_->mem_total_max;
    if (small) {
      mem_.resize(size_);
      AccountMemory(static_cast<int64_t>(mem_.capacity()));
      stage_ = Stage::kMemory;
      if (size_) {
        ctx_->stats->Add(Statistic::kCopyUps);
        Status st = ReadStored(view_, 0, size_, mem_.data());
        if (!st.ok()) {
          DropStaging();
          return st;
        }
      }
    } else {
      RETURN_IF_ERROR(CreateScratch());
      if (Status st = scratch_->truncate(size_); !st.ok()) {
        DropStaging();
        return st;
      }
      if (size_) {
        ctx_->stats->Add(Statistic::kCopyUps);
        Status st = CopyStoredToScratch(view_, size_);
        if (!st.ok()) {
          DropStaging();
          return st;
        }
      }
    }
  }
  if (stage_ == Stage::kMemory && final_size > ctx_->mem_file_max)
    RETURN_IF_ERROR(SpillToScratch());
  return Status::Ok();
}

Status FileData::Write(uint64_t off, const char* data, size_t n, bool* stream_turn) {
  if (off > UINT64_MAX - n) return Status::Errno(EFBIG);
  std::lock_guard lock(mu_);
  RETURN_IF_ERROR(EnsureStaged(off + n));
  RETURN_IF_ERROR(UnpunchFor(off));
  NoteChange(off);
  if (off < stream_end_) StopStream(false);
  stream_low_ = std::min(stream_low_, off);
  if (stage_ == Stage::kMemory) {
    if (off + n > mem_.size()) {
      size_t before = mem_.capacity();
      mem_.resize(off + n);
      AccountMemory(static_cast<int64_t>(mem_.capacity()) - static_cast<int64_t>(before));
    }
    std::memcpy(mem_.data() + off, data, n);
  } else {
    RETURN_IF_ERROR(scratch_->pwrite(off, data, n));
  }
  size_ = std::max(size_, off + n);
  dirty_ = true;
  ++gen_;
  ctx_->stats->Add(Statistic::kBytesWritten, n);
  if (stream_turn) *stream_turn = TakeStreamTurnLocked();
  return Status::Ok();
}

Status FileData::Truncate(uint64_t new_size) {
  std::lock_guard lock(mu_);
  if (new_size == size_) return Status::Ok();
  if (new_size == 0) {
    // O_TRUNC: the common case, no copy-up needed.
    DropStaging();
    view_ = MakeView(FileContent{});
    size_ = 0;
    dirty_ = false;
    ++gen_;
    return Status::Ok();
  }
  RETURN_IF_ERROR(EnsureStaged(new_size));
  RETURN_IF_ERROR(UnpunchFor(std::min(new_size, size_)));
  NoteChange(std::min(new_size, size_));
  if (new_size < stream_end_) StopStream(false);
  stream_low_ = std::min(stream_low_, std::min(new_size, size_));
  if (stage_ == Stage::kMemory) {
    size_t before = mem_.capacity();
    mem_.resize(new_size);
    if (new_size < before / 2) mem_.shrink_to_fit();
    AccountMemory(static_cast<int64_t>(mem_.capacity()) - static_cast<int64_t>(before));
  } else {
    RETURN_IF_ERROR(scratch_->truncate(new_size));
  }
  size_ = new_size;
  dirty_ = true;
  ++gen_;
  return Status::Ok();
}

Status FileData::Extend(uint64_t end) {
  std::lock_guard lock(mu_);
  if (end <= size_) return Status::Ok();
  RETURN_IF_ERROR(EnsureStaged(end));
  RETURN_IF_ERROR(UnpunchFor(size_));
  NoteChange(size_);
  stream_low_ = std::min(stream_low_, size_);
  if (stage_ == Stage::kMemory) {
    size_t before = mem_.capacity();
    mem_.resize(end);
    AccountMemory(static_cast<int64_t>(mem_.capacity()) - static_cast<int64_t>(before));
  } else {
    RETURN_IF_ERROR(scratch_->truncate(end));
  }
  size_ = end;
  dirty_ = true;
  ++gen_;
  return Status::Ok();
}

void FileData::SetContent(const FileContent& content) {
  std::lock_guard lock(mu_);
  DropStaging();
  view_ = MakeView(content);
  size_ = content.size;
  dirty_ = false;
  ++gen_;
}

Result<FileContent> FileData::BuildContent(const std::string& mem, File* scratch, uint64_t size,
                                           std::shared_ptr<ContentBuilder> prefix,
                                           uint64_t prefix_end, uint64_t gen) {
  if (!prefix && size <= kInlineMax) {
    FileContent c;
    c.size = size;
    if (!scratch) {
      c.inline_data = mem;
    } else {
      c.inline_data.resize(size);
      RETURN_IF_ERROR(PreadAll(*scratch, 0, c.inline_data.data(), size));
    }
    return c;
  }
  // Chunks are stored in order of appearance; large ones are hashed and compressed on the store's
  // worker threads, a few at a time, while this thread reads and cuts the next. A streamed
  // prefix already holds the chunks of [0, prefix_end).
  std::shared_ptr<ContentBuilder> b = prefix ? prefix : std::make_shared<ContentBuilder>(ctx_);
  Status st;
  if (!scratch) {
    std::span<const uint8_t> all(reinterpret_cast<const uint8_t*>(mem.data()), mem.size());
    while (!all.empty() && st.ok()) {
      size_t len = NextChunkLength(all, ctx_->chunker);
      st = b->Add(all.first(len), false);  // small files: one chunk, not worth a thread hop
      all = all.subspan(len);
    }
  } else {
    // Walk the scratch file's data segments; holes become hole runs without being read.
    uint64_t pos = prefix_end;
    while (pos < size && st.ok()) {
      int64_t data = scratch->seek(pos, SEEK_DATA);
      uint64_t seg_start = data < 0 ? size : std::min<uint64_t>(static_cast<uint64_t>(data), size);
      if (seg_start > pos) {
        b->AddHole(seg_start - pos);
        pos = seg_start;
        continue;
      }
      int64_t hole = scratch->seek(pos, SEEK_HOLE);
      uint64_t seg_end = hole < 0 ? size : std::min<uint64_t>(static_cast<uint64_t>(hole), size);
      if (seg_end <= pos) seg_end = size;
      // Punching what is stored out of the scratch file as it goes, as the stream does: a big
      // file's flush then never holds the file twice on disk.
      st = ChunkScratch(*scratch, &pos, seg_end, /*whole_windows=*/false, /*parallel=*/true,
                        UINT64_MAX, nullptr, ctx_->chunker, b.get(), &ctx_->objects->buffers(),
                        ctx_->flush_punch_step, [&] { PunchFlushed(*b, gen); });
    }
  }
  if (!st.ok()) {
    (void)b->Drain();  // wait for every chunk in flight
    return st;
  }
  return b->Finish(size);
}

void FileData::NoteChange(uint64_t off) {
  if (!dirty_) {
    cycle_base_ = size_;
    cycle_low_ = off;
  } else {
    cycle_low_ = std::min(cycle_low_, off);
  }
}

bool FileData::GrowsOnly() const {
  return dirty_ && cycle_low_ >= cycle_base_;
}

Status FileData::UnpunchFor(uint64_t off) {
  // A live stream still covers the punched range, and the next flush starts from its end; a
  // write from the stream's end on changes nothing below it.
  if (punched_ == 0 || (stream_ && off >= stream_end_)) return Status::Ok();
  if (!stream_ && !dirty_ && off >= punched_) {
    // An append to a flushed file: a stream resumes after the punched prefix, whose chunks
    // the flushed content (in the tree) holds, instead of copying it all back and chunking
    // the file again from the start.
    stream_ = std::make_shared<ContentBuilder>(ctx_);
    stream_->Seed(punched_view_->content.chunks, punched_);
    stream_lease_.emplace(ctx_->objects->BeginLease());
    stream_end_ = punched_;
    stream_off_ = false;
    return Status::Ok();
  }
  return Unpunch();
}

Status FileData::Unpunch() {
  if (punched_ == 0) return Status::Ok();
  RETURN_IF_ERROR(CopyStoredToScratch(punched_view_, punched_));
  ctx_->stats->Add(Statistic::kScratchBytesCopiedBack, punched_);
  punched_ = 0;
  punched_view_.reset();
  return Status::Ok();
}

void FileData::StopStream(bool restart) {
  stream_.reset();
  stream_lease_.reset();
  stream_end_ = 0;
  stream_off_ = !restart;
}

bool FileData::TakeStreamTurn() {
  std::lock_guard lock(mu_);
  return TakeStreamTurnLocked();
}

bool FileData::TakeStreamTurnLocked() {
  if (stage_ != Stage::kScratch || stream_off_ || stream_queued_ || !dirty_) return false;
  // A few windows ahead, so each step has real work and a writer that goes back a little (to
  // patch a header, say) usually does so before the stream passes that point.
  if (size_ < stream_end_ + 4 * static_cast<uint64_t>(ctx_->chunker.max_size)) return false;
  stream_queued_ = true;
  return true;
}

uint64_t FileData::streamed_bytes() {
  std::lock_guard lock(mu_);
  return stream_end_;
}

Status FileData::StreamStep(uint64_t budget) {
  std::lock_guard flushing(flush_mu_);
  const uint64_t window = ctx_->chunker.max_size;
  std::shared_ptr<ContentBuilder> b;
  uint64_t start, limit;
  std::shared_ptr<File> scratch;  // kept open even if a truncate drops the file's copy meanwhile
  {
    std::lock_guard lock(mu_);
    stream_queued_ = false;
    if (stage_ != Stage::kScratch || stream_off_ || !dirty_) return Status::Ok();
    start = stream_end_;
    limit = size_;
    if (limit < start + window) return Status::Ok();
    // A new stream reads from the start of the file, which must not be punched (only a copy
    // back that failed leaves it so; retry it).
    if (!stream_) RETURN_IF_ERROR(Unpunch());
    scratch = scratch_;
    if (!stream_) {
      stream_ = std::make_shared<ContentBuilder>(ctx_);
      stream_lease_.emplace(ctx_->objects->BeginLease());
    }
    b = stream_;
    stream_low_ = UINT64_MAX;  // from here on, a write below our new end invalidates the step
  }
  // Only data the flush's segment walk would chunk the same way: [start, next hole). A stream
  // that starts in a hole is left to the flush.
  int64_t data = scratch->seek(start, SEEK_DATA);
  int64_t hole = scratch->seek(start, SEEK_HOLE);
  uint64_t data_end = data == static_cast<int64_t>(start) && hole > data
                          ? std::min<uint64_t>(static_cast<uint64_t>(hole), limit)
                          : start;
  // On this (low-priority streamer) thread, not the store's workers: the stream must only use
  // idle CPU. A flush waiting for the file takes over from where the step stops.
  uint64_t pos = start;
  Status st =
      ChunkScratch(*scratch, &pos, data_end, /*whole_windows=*/true, /*parallel=*/false, budget,
                   &flush_waiting_, ctx_->chunker, b.get(), &ctx_->objects->buffers());
  scratch.reset();
  if (ctx_->after_stream_read) ctx_->after_stream_read();
  // The builder is ours while flush_mu_ is held: settle it here, outside mu_, so every chunk
  // of [0, pos) is known before the range is punched.
  if (st.ok()) st = b->SettleAll();
  std::lock_guard lock(mu_);
  if (stream_ != b) return st;  // stopped meanwhile
  if (!st.ok() || stream_low_ < pos) {
    // A failed put, or bytes changed under the read: the flush will chunk the file itself, from
    // a whole scratch copy (copied back while the stream's lease still pins the chunks). Bytes
    // changed under the read are, early in a file, mostly the kernel's writeback sending a range
    // again or out of order, not a writer going back: a new stream may start from the beginning,
    // a few times a round (a step then stored nothing before the file's first flush, under load).
    Status un = Unpunch();
    bool again = st.ok() && un.ok() && stream_restarts_ < kStreamRestarts;
    if (again) ++stream_restarts_;
    StopStream(again);
    return st.ok() ? un : st;
  }
  ctx_->stats->Add(Statistic::kBytesStoredWhileWritten, pos - start);
  stream_end_ = pos;
  if (GrowsOnly()) PunchPrefix(b->settled_chunks(), pos);
  return Status::Ok();
}

void FileData::PunchFlushed(const ContentBuilder& b, uint64_t gen) {
  {
    std::lock_guard lock(mu_);
    // Written since the flush began: these chunks may hold older bytes than the scratch copy.
    if (gen_ != gen || stage_ != Stage::kScratch || !GrowsOnly()) return;
    PunchPrefix(b.settled_chunks(), b.settled_bytes());
  }
  if (ctx_->after_flush_punch) ctx_->after_flush_punch();
}

void FileData::PunchPrefix(const std::vector<ChunkRef>& chunks, uint64_t end) {
  if (end <= punched_ || ctx_->no_punch.load()) return;
  if (Status st = scratch_->punch_hole(punched_, end - punched_); !st.ok()) {
    // A filesystem without hole punching: scratch copies stay whole, as before.
    if (st.errno_value() == EOPNOTSUPP || st.errno_value() == ENOSYS) ctx_->no_punch = true;
    return;
  }
  if (!punched_view_) {
    punched_view_ = std::make_shared<ContentView>();
    punched_view_->resolved = true;
  }
  // The builder's list only grows, except that a run of holes at its end can grow in place.
  ContentView& v = *punched_view_;
  size_t have = v.content.chunks.size();
  if (have > 0 && v.content.chunks[have - 1].size != chunks[have - 1].size) {
    v.content.chunks[have - 1].size = chunks[have - 1].size;
    v.ends[have - 1] = (have > 1 ? v.ends[have - 2] : 0) + chunks[have - 1].size;
  }
  for (size_t i = have; i < chunks.size(); ++i) {
    v.content.chunks.push_back(chunks[i]);
    v.ends.push_back((v.ends.empty() ? 0 : v.ends.back()) + chunks[i].size);
  }
  v.content.size = v.ends.empty() ? 0 : v.ends.back();
  punched_ = end;
}

Result<bool> FileData::Flush(std::optional<ObjectStore::Lease>* stream_lease) {
  flush_waiting_++;
  std::unique_lock flushing(flush_mu_);
  flush_waiting_--;
  uint64_t gen, size;
  std::string mem;
  std::shared_ptr<File> scratch;  // kept open even if a truncate drops the copy meanwhile
  std::shared_ptr<ContentBuilder> prefix;
  uint64_t prefix_end = 0;
  {
    std::lock_guard lock(mu_);
    if (!dirty_) return false;
    gen = gen_;
    size = size_;
    // The streamed prefix is used once: by this flush, whose result stands unless the file is
    // written meanwhile (then the next flush chunks it whole).
    if (stream_ && stage_ == Stage::kScratch) {
      prefix = std::move(stream_);
      prefix_end = stream_end_;
      if (stream_lease && stream_lease_) stream_lease->emplace(std::move(*stream_lease_));
    } else {
      // Without the stream, the flush reads the scratch copy from the start: it must be whole
      // (a copy back that failed earlier is retried here, and its failure fails the flush).
      RETURN_IF_ERROR(Unpunch());
    }
    StopStream(true);
    stream_restarts_ = 0;
    if (stage_ == Stage::kMemory) {
      mem = mem_;
    } else {
      // A duplicate keeps the scratch readable even if a truncate drops it meanwhile; such a
      // truncate bumps gen_ and our result is then discarded below.
      scratch = scratch_;
    }
  }
  auto content = BuildContent(mem, scratch.get(), size, std::move(prefix), prefix_end, gen);
  scratch.reset();
  std::lock_guard lock(mu_);
  if (!content.ok()) {
    // The stream is gone, so the next flush reads the scratch copy from the start; copy the
    // punched prefix back while this flush's lease still pins its chunks. If that fails too,
    // that flush retries it first.
    (void)Unpunch();
    return content.status();
  }
  if (gen_ != gen) return false;  // written meanwhile: the next flush will pick it up
  view_ = MakeView(std::move(*content));
  dirty_ = false;
  if (stage_ == Stage::kMemory || size_ < ctx_->keep_scratch_min) DropStaging();
  return true;
}

}  // namespace stashfs::fs
