// The bytes of one regular file in a mounted volume.
//
// A file is its stored content (chunks in the store) plus, while it is being written, a staged
// copy: in memory for small files, in a scratch file on local disk for large ones. Writes land in
// the staged copy at disk speed; a flusher thread later cuts it into chunks, stores them and
// installs the new content, so a tool writing a file never waits for hashing or compression.
// Large files keep their scratch copy after the flush, so the next write does not have to copy
// the file back out of the store (see below for what of it stays on disk).
//
// A large file written front to back is also ingested while it is written (StreamStep, on a
// low-priority thread, so only with CPU the writer leaves idle): the chunks of its settled
// prefix are stored as they arrive, so the flush after close has less left and a big write is
// durable sooner after the writer finishes. A write below the streamed prefix drops the stream; the
// flush then chunks the whole file as before. A write into the window a step is reading drops
// the step and lets a new stream start from the beginning, up to three times a round: early in
// a file that is the kernel's writeback sending a range again, not a writer going back. The
// stream cuts only where a whole FastCDC window is present, so it yields exactly the chunks a
// flush of the finished file would.
//
// What the stream or a flush has stored of a file that only grew this round (a new file, an
// append) is punched out of the scratch file: writing a big file needs scratch space for its
// unstored part only, not a second copy of itself, and the page cache behind the scratch copy is
// recycled as the writer goes (a page the kernel allocates afresh costs several times a reused
// one on these VMs). Reads of the punched range come from the stored chunks; an append after the
// flush resumes a stream after them. Anything that needs the whole scratch copy again (a write
// below the stream or into the punched range, a failed flush) first copies the punched range
// back in. A file rewritten in place (a database) is not punched, so its rounds of writes and
// flushes never copy it back.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "store/chunker.h"
#include "store/env.h"
#include "store/object_store.h"
#include "store/objects.h"
#include "store/status.h"

namespace stashfs::fs {

// Shared by every file of a volume.
struct DataContext {
  ObjectStore* objects = nullptr;
  Env* env = Env::Default();             // scratch files go through it (tests inject faults)
  std::string scratch_dir;               // created on first use
  size_t mem_file_max = 1 << 20;         // files up to this size are staged in memory
  int64_t mem_total_max = 256 << 20;     // memory staging budget for the whole volume
  uint64_t keep_scratch_min = 1 << 20;   // flushed files this large keep their scratch copy
  uint64_t flush_punch_step = 16 << 20;  // a flush punches what it stored after this many bytes
  ChunkerParams chunker;
  std::atomic<int64_t> mem_used{0};
  std::atomic<uint64_t> next_scratch_id{1};
  StatisticCounters* stats = nullptr;  // counts bytes written, read, streamed (required)
  std::atomic<bool> no_punch{false};   // the scratch filesystem cannot punch holes
  // Tests only: runs inside a stream step after it read and stored its window, before it checks
  // whether the file changed under it (a write then lands exactly in that race).
  std::function<void()> after_stream_read;
  // Tests only: runs in a flush right after it punched what it had stored (a write then lands
  // while the flush still runs, behind its punched range).
  std::function<void()> after_flush_punch;
};

// A file's stored content resolved for reading: the chunk list (loaded from a LIST object if
// needed) with the end offset of each chunk.
struct ContentView {
  FileContent content;
  bool resolved = false;
  std::vector<ChunkRef> list_chunks;  // from the LIST object, when the content has one
  std::vector<uint64_t> ends;
  // Kept once: a loaded tree holds one of these per file.
  const std::vector<ChunkRef>& chunks() const {
    return content.list ? list_chunks : content.chunks;
  }
};

class ContentBuilder;

class FileData {
 public:
  FileData(DataContext* ctx, FileContent content);
  ~FileData();
  FileData(const FileData&) = delete;
  FileData& operator=(const FileData&) = delete;

  uint64_t size();
  bool dirty();
  // The stored content and its size as of the last flush: what a commit records.
  FileContent committed();

  Result<size_t> Read(uint64_t off, size_t n, char* out);
  // `stream_turn`, when given, is set as TakeStreamTurn() would answer right after the write
  // (under the same lock: one acquisition per FUSE write, not two).
  Status Write(uint64_t off, const char* data, size_t n, bool* stream_turn = nullptr);
  Status Truncate(uint64_t new_size);
  // Extends the file with zeros to at least `end` (fallocate mode 0).
  Status Extend(uint64_t end);

  // Chunks and stores the staged bytes and installs them as the stored content, unless the file
  // was modified meanwhile. Returns whether the stored content changed. The caller holds an
  // ObjectStore lease until it has recorded the change in its tree, and holds `stream_lease`
  // (the lease of a streamed prefix this flush used, if any) as long.
  Result<bool> Flush(std::optional<ObjectStore::Lease>* stream_lease);

  // Whether enough new bytes follow the streamed prefix to be worth a StreamStep; true at most
  // once until that step starts, so the caller queues one step at a time.
  bool TakeStreamTurn();
  // Stores up to `budget` more bytes of the streamed prefix, hashing and compressing on the
  // calling thread; stops early when a Flush is waiting. Never changes the file's content; a
  // failure just ends the stream.
  Status StreamStep(uint64_t budget);
  uint64_t streamed_bytes();
  // Replaces the whole file with stored `content` (a copy that shares chunks).
  void SetContent(const FileContent& content);
  // Drops a clean scratch copy (the stored content has the same bytes) to free disk space.
  void DropCleanScratch();
  bool has_clean_scratch();
  uint64_t scratch_bytes();

 private:
  enum class Stage { kNone, kMemory, kScratch };

  Status EnsureStaged(uint64_t new_end);  // mu_ held
  Status SpillToScratch();                // mu_ held
  // Writes the stored bytes [0, end) of `view` into the scratch file (mu_ held).
  Status CopyStoredToScratch(const std::shared_ptr<const ContentView>& view, uint64_t end);
  Status CreateScratch();  // mu_ held
  void DropStaging();      // mu_ held
  Status ReadStored(const std::shared_ptr<const ContentView>& view, uint64_t off, size_t n,
                    char* out);
  Result<std::shared_ptr<const ContentView>> Resolve(std::shared_ptr<const ContentView> view);
  // `gen`: the file's generation when the flush took its snapshot (punching stops once it moves).
  // `scratch` is null for a file staged in memory (`mem`).
  Result<FileContent> BuildContent(const std::string& mem, File* scratch, uint64_t size,
                                   std::shared_ptr<ContentBuilder> prefix, uint64_t prefix_end,
                                   uint64_t gen);
  // Drops the streamed prefix (mu_ held). `restart`: a new stream may begin (the file was
  // emptied); otherwise none does until the next flush (the writer is not front to back).
  void StopStream(bool restart);
  // Copies the punched prefix back into the scratch file (mu_ held): the scratch copy is whole
  // again. Done while the prefix's chunks are still pinned (before the stream's lease goes).
  Status Unpunch();
  // Unpunch, unless a write at `off` leaves the punched prefix and the live stream alone.
  Status UnpunchFor(uint64_t off);
  // Punches the stored stream prefix [punched_, end) out of the scratch file (mu_ held);
  // `chunks` is the stream's settled chunk list, covering [0, end).
  void PunchPrefix(const std::vector<ChunkRef>& chunks, uint64_t end);
  // A flush's PunchPrefix with what its builder has settled, unless the file changed since the
  // flush began (takes mu_; the caller holds flush_mu_, which makes the builder its own).
  void PunchFlushed(const ContentBuilder& b, uint64_t gen);
  // Records a modification at `off` (mu_ held, before dirty_ is set by it).
  void NoteChange(uint64_t off);
  // Whether this round of changes (since the file was last clean) only added bytes past the
  // old end: a new file, or an append. Only such a file is punched as it is stored; one that is
  // rewritten in place (a database, say) keeps a whole scratch copy between flushes, so the next
  // write does not have to copy it back out of the store.
  bool GrowsOnly() const;
  bool TakeStreamTurnLocked();  // with mu_ held
  void AccountMemory(int64_t delta);

  DataContext* ctx_;
  std::mutex mu_;
  // Held for a whole Flush: a second flush of the same file (umount's, while a background one
  // runs) waits and then finds nothing left to do, instead of chunking the file twice.
  std::mutex flush_mu_;
  // Flushes waiting for flush_mu_: a stream step (low priority) yields to them.
  std::atomic<int> flush_waiting_{0};
  uint64_t size_ = 0;
  std::shared_ptr<const ContentView> view_;  // stored content
  Stage stage_ = Stage::kNone;
  bool dirty_ = false;  // staged bytes are newer than the stored content
  uint64_t gen_ = 0;    // bumped by every modification
  std::string mem_;     // Stage::kMemory: the whole file
  // Stage::kScratch: the whole file, sparse. Shared: a stream step or flush reading it keeps
  // it open even if a truncate drops the file's staged copy meanwhile.
  std::shared_ptr<File> scratch_;
  std::string scratch_path_;
  // Streaming ingest (mu_ held, except that the builder itself is used under flush_mu_ only).
  std::shared_ptr<ContentBuilder> stream_;          // chunks of bytes [0, stream_end_)
  std::optional<ObjectStore::Lease> stream_lease_;  // keeps the prefix's objects pinned
  uint64_t stream_end_ = 0;
  uint64_t stream_low_ = UINT64_MAX;  // lowest offset modified while a step reads
  bool stream_off_ = false;
  int stream_restarts_ = 0;  // streams restarted after losing their window, since the last flush
  static constexpr int kStreamRestarts = 3;
  bool stream_queued_ = false;
  // Bytes [0, punched_) of the scratch file are holes; their content is punched_view_'s chunks
  // (mu_ held; the view grows in place, so it is read under mu_ only).
  uint64_t punched_ = 0;
  uint64_t cycle_base_ = 0;  // the size when the file was last clean (NoteChange)
  uint64_t cycle_low_ = 0;   // the lowest offset changed since
  std::shared_ptr<ContentView> punched_view_;
  // Sequential-read detection for prefetching the next stored chunks.
  // Shared with the prefetch tasks, which skip a chunk the reader has passed by the time they
  // run (a late task would load it again after the reader dropped it from the block cache).
  std::shared_ptr<std::atomic<uint64_t>> next_read_ = std::make_shared<std::atomic<uint64_t>>(0);
  std::atomic<uint64_t> prefetched_upto_{0};  // chunk index prefetched so far (exclusive)
};

std::shared_ptr<const ContentView> MakeView(FileContent content);

}  // namespace stashfs::fs
