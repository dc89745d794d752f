// Pack files: append-only files of compressed blocks (see store/FORMAT.md).
//
// A block holds one large object or many small ones compressed together, which keeps a tree of
// 100,000 small files to a few hundred disk files and lets zstd see across small files. Each block
// header lists its objects (kind, hash, offset, size) so the catalog can be rebuilt from packs.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "store/codec.h"
#include "store/env.h"
#include "store/hash.h"
#include "store/objects.h"
#include "store/status.h"

namespace stashfs {

constexpr char kPackMagic[8] = {'S', 'T', 'A', 'S', 'H', 'P', 'K', '\0'};
constexpr uint32_t kPackVersion = 1;
constexpr size_t kPackHeaderSize = 16;
constexpr uint32_t kBlockMagic = 0x4B4C4253;  // "SBLK" little-endian
constexpr size_t kBlockEntrySize = 44;
constexpr size_t kBlockFixedHeader = 20;
constexpr size_t kBlockCheckSize = 8;
// A corrupt header must not make a scan allocate without bound.
constexpr uint32_t kMaxBlockObjects = 1 << 20;
constexpr uint32_t kMaxBlockBytes = 1u << 30;

struct BlockEntry {
  ObjectKind kind;
  uint32_t offset;  // within the block's raw (uncompressed) bytes
  uint32_t size;
  Hash hash;
};

struct BlockHeader {
  Codec codec = Codec::kRaw;
  uint32_t raw_len = 0;
  uint32_t stored_len = 0;
  std::vector<BlockEntry> entries;
};

// Where a block sits: the payload starts at offset + header_len.
struct BlockLocation {
  int64_t pack_id = 0;
  uint64_t offset = 0;
  uint32_t header_len = 0;
  uint32_t stored_len = 0;
  uint32_t raw_len = 0;
  Codec codec = Codec::kRaw;
};

std::vector<uint8_t> EncodeBlockHeader(const BlockHeader& h);
size_t BlockHeaderLength(size_t n_entries);
// A whole block as it goes into a pack, header then payload: `raw` compressed at `level`, or
// stored as it is when that is not smaller. Fills in h->codec, raw_len and stored_len (the
// entries are the caller's) and returns the header's length. `out`'s capacity is reused: a
// caller that hands in a buffer already sized header + CompressBound(raw) has nothing zeroed.
size_t EncodeBlock(std::span<const uint8_t> raw, int level, BlockHeader* h,
                   std::vector<uint8_t>* out);
// Decodes and checks a header at the start of `data`, which must hold at least the fixed part;
// returns NotFound("need more") style errors as Corruption when the bytes are not a header.
Result<BlockHeader> DecodeBlockHeader(std::span<const uint8_t> data, size_t* header_len);
std::vector<uint8_t> EncodePackHeader();
Status CheckPackHeader(std::span<const uint8_t> data);

std::string PackPath(const std::string& packs_dir, int64_t pack_id);

// Open pack files for reading, shared by all threads, at most `capacity` fds at once: the hard
// RLIMIT_NOFILE here is 20,000 and FUSE needs fds for itself.
class PackFiles {
 public:
  PackFiles(Env* env, std::string packs_dir, size_t capacity = 64)
      : env_(env), dir_(std::move(packs_dir)), capacity_(capacity) {}
  Result<std::shared_ptr<File>> Get(int64_t pack_id);
  // Forgets an open pack (after gc deleted or rewrote it).
  void Drop(int64_t pack_id);
  // Open packs whose file has been deleted (link count 0).
  std::vector<int64_t> Deleted();
  // Reads the stored payload of a block.
  Status ReadPayload(const BlockLocation& loc, std::vector<uint8_t>* out);
  // The same into `out`, exactly loc.stored_len bytes of a caller's buffer.
  Status ReadPayloadInto(const BlockLocation& loc, std::span<uint8_t> out);

 private:
  Env* env_;
  std::string dir_;
  size_t capacity_;
  std::mutex mu_;
  std::list<int64_t> lru_;  // front = most recent
  struct Slot {
    std::shared_ptr<File> file;
    std::list<int64_t>::iterator pos;
  };
  std::unordered_map<int64_t, Slot> open_;
};

}  // namespace stashfs
