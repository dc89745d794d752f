// The kinds of stored objects and their canonical encodings (see store/FORMAT.md).
//
// A snapshot or volume is a ROOT object; a ROOT names the TREE of the top directory and the
// LINKS buckets that hold hard-linked files. A TREE lists one directory's entries, sorted by name.
// Regular files refer to CHUNKs directly (a few), through a LIST object (many), or hold tiny
// contents inline. Every object is named by the SHA-256 of its encoding, so equal directories,
// files and chunks are stored once and an unchanged subtree keeps its name across commits.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "store/hash.h"
#include "store/status.h"

namespace stashfs {

enum class ObjectKind : uint8_t { kChunk = 1, kList = 2, kTree = 3, kRoot = 4, kLinks = 5 };
const char* KindName(ObjectKind k);
bool KindHasChildren(ObjectKind k);

enum class EntryType : uint8_t {
  kFile = 1,
  kDir = 2,
  kSymlink = 3,
  kFifo = 4,
  kCharDev = 5,
  kBlockDev = 6,
  kSocket = 7,
};
EntryType TypeFromMode(mode_t mode);
mode_t ModeTypeBits(EntryType t);

struct Timespec {
  int64_t sec = 0;
  uint32_t nsec = 0;
  auto operator<=>(const Timespec&) const = default;
};

using Xattrs = std::vector<std::pair<std::string, std::string>>;  // sorted by name

// Metadata common to every entry. `mode` holds permission bits only (07777).
struct Attrs {
  uint32_t mode = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  Timespec mtime;
  Timespec ctime;
  uint64_t rdev = 0;
  Xattrs xattrs;
  bool operator==(const Attrs&) const = default;
};

// A run of file bytes: a stored chunk, or a hole (all-zero hash) that reads as zeros.
struct ChunkRef {
  Hash hash;
  uint64_t size = 0;
  bool is_hole() const { return hash.is_zero(); }
  bool operator==(const ChunkRef&) const = default;
};

// The bytes of a regular file.
struct FileContent {
  uint64_t size = 0;
  std::string inline_data;       // whole contents when tiny (then chunks and list are empty)
  std::vector<ChunkRef> chunks;  // when the chunk list is short enough to live in the entry
  std::optional<Hash> list;      // a LIST object with the chunk list, for long files
  bool operator==(const FileContent&) const = default;
};

// Files up to this size are stored inside their directory's TREE object.
constexpr size_t kInlineMax = 64;
// Longer chunk lists go to a LIST object, keeping TREE objects small for lazy loading.
constexpr size_t kDirectChunksMax = 16;
// Limits that reject hostile or corrupt input instead of allocating without bound.
constexpr size_t kNameMax = 255;
constexpr size_t kSymlinkMax = 4096;
constexpr size_t kXattrNameMax = 255;
constexpr size_t kXattrValueMax = 64 * 1024;

struct TreeEntry {
  std::string name;
  EntryType type = EntryType::kFile;
  uint64_t link_id = 0;  // nonzero: a hard-linked file whose data lives in the LINKS table
  Attrs attrs;
  FileContent content;  // kFile
  Hash tree;            // kDir
  // kDir: totals over the subdirectory's whole tree (files counted once per name) and its
  // number of direct subdirectories. Kept in the parent so a parent can be re-encoded, and a
  // directory's st_nlink reported, without loading every subdirectory; `ls` and stats get a
  // snapshot's size from its root without walking it.
  uint64_t dir_bytes = 0;
  uint64_t dir_files = 0;
  uint64_t dir_subdirs = 0;
  std::string target;  // kSymlink
  bool operator==(const TreeEntry&) const = default;
};

struct Tree {
  std::vector<TreeEntry> entries;  // strictly sorted by name, bytewise
  bool operator==(const Tree&) const = default;
};

// A hard-linked file's data, shared by every TREE entry with its link id.
struct LinkRecord {
  uint64_t link_id = 0;
  uint32_t nlink = 0;
  EntryType type = EntryType::kFile;
  Attrs attrs;
  FileContent content;
  std::string target;
  bool operator==(const LinkRecord&) const = default;
};

// Link records are spread over buckets by link id so that changing one hard-linked file rewrites
// one bucket, not a table of every link in the tree.
constexpr uint32_t kLinkBuckets = 256;
inline uint32_t LinkBucketOf(uint64_t link_id) {
  return static_cast<uint32_t>(link_id % kLinkBuckets);
}

struct RootRecord {
  Attrs attrs;  // of the top directory
  Hash tree;
  uint64_t total_bytes = 0;
  uint64_t total_files = 0;
  uint64_t subdirs = 0;
  std::vector<std::pair<uint32_t, Hash>> link_buckets;  // sorted by bucket, non-empty only
  bool operator==(const RootRecord&) const = default;
};

// A name that may appear in a TREE: not empty, ".", "..", no '/' or NUL, at most kNameMax bytes.
bool ValidEntryName(std::string_view name);

std::vector<uint8_t> EncodeTree(const Tree& t);
Result<Tree> DecodeTree(std::span<const uint8_t> data);
std::vector<uint8_t> EncodeList(const std::vector<ChunkRef>& chunks);
Result<std::vector<ChunkRef>> DecodeList(std::span<const uint8_t> data);
std::vector<uint8_t> EncodeLinks(const std::vector<LinkRecord>& links);
Result<std::vector<LinkRecord>> DecodeLinks(std::span<const uint8_t> data);
std::vector<uint8_t> EncodeRoot(const RootRecord& r);
Result<RootRecord> DecodeRoot(std::span<const uint8_t> data);

struct ChildRef {
  ObjectKind kind;
  Hash hash;
};
// The objects `data` (an object of `kind`) refers to, with repeats: each reference is counted.
Result<std::vector<ChildRef>> ChildrenOf(ObjectKind kind, std::span<const uint8_t> data);

}  // namespace stashfs
