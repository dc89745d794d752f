// The bytes of one regular file in a mounted volume.
//
// A file is its stored content (chunks in the store) plus, while it is being written, a staged
// copy: in memory for small files, in a scratch file on local disk for large ones. Writes land in
// the staged copy at disk speed; a flusher thread later cuts it into chunks, stores them and
// installs the new content, so a tool writing a file never waits for hashing or compression.
// Large files keep a clean scratch copy after the flush, so the next write does not have to copy
// the file back out of the store and reads come straight from local disk.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "store/chunker.h"
#include "store/object_store.h"
#include "store/objects.h"
#include "store/status.h"

namespace stashfs::fs {

// Shared by every file of a volume.
struct DataContext {
  ObjectStore* objects = nullptr;
  std::string scratch_dir;              // created on first use
  size_t mem_file_max = 1 << 20;        // files up to this size are staged in memory
  int64_t mem_total_max = 256 << 20;    // memory staging budget for the whole volume
  uint64_t keep_scratch_min = 1 << 20;  // flushed files this large keep their scratch copy
  ChunkerParams chunker;
  std::atomic<int64_t> mem_used{0};
  std::atomic<uint64_t> next_scratch_id{1};
  std::atomic<uint64_t> bytes_read_store{0};  // bytes served from stored chunks
  std::atomic<uint64_t> bytes_written{0};
  std::atomic<uint64_t> copy_ups{0};  // stored files copied out to be modified
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
  Status Write(uint64_t off, const char* data, size_t n);
  Status Truncate(uint64_t new_size);
  // Extends the file with zeros to at least `end` (fallocate mode 0).
  Status Extend(uint64_t end);

  // Chunks and stores the staged bytes and installs them as the stored content, unless the file
  // was modified meanwhile. Returns whether the stored content changed. The caller holds an
  // ObjectStore lease until it has recorded the change in its tree.
  Result<bool> Flush();
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
  Status CreateScratch();                 // mu_ held
  void DropStaging();                     // mu_ held
  Status ReadStored(const std::shared_ptr<const ContentView>& view, uint64_t off, size_t n,
                    char* out);
  Result<std::shared_ptr<const ContentView>> Resolve(std::shared_ptr<const ContentView> view);
  Result<FileContent> BuildContent(const std::string& mem, int fd, uint64_t size);
  void AccountMemory(int64_t delta);

  DataContext* ctx_;
  std::mutex mu_;
  // Held for a whole Flush: a second flush of the same file (umount's, while a background one
  // runs) waits and then finds nothing left to do, instead of chunking the file twice.
  std::mutex flush_mu_;
  uint64_t size_ = 0;
  std::shared_ptr<const ContentView> view_;  // stored content
  Stage stage_ = Stage::kNone;
  bool dirty_ = false;  // staged bytes are newer than the stored content
  uint64_t gen_ = 0;    // bumped by every modification
  std::string mem_;     // Stage::kMemory: the whole file
  int fd_ = -1;         // Stage::kScratch: the whole file, sparse
  std::string scratch_path_;
  // Sequential-read detection for prefetching the next stored chunks.
  std::atomic<uint64_t> next_read_{0};
  std::atomic<uint64_t> prefetched_upto_{0};  // chunk index prefetched so far (exclusive)
};

std::shared_ptr<const ContentView> MakeView(FileContent content);

}  // namespace stashfs::fs
