// Portable snapshot files: `stashfs export KEY -o FILE` and `stashfs import FILE`.
//
// One file per snapshot, for CI systems that can only cache files. It is a single zstd stream
// (with zstd's frame checksum) of: the magic "STASHFSX", u32 version, u32 length + JSON metadata
// (key, root, sizes), then every object reachable from the root as (u8 1, u8 kind, 32-byte hash,
// u32 size, bytes), then (u8 2, u64 object count, SHA-256 of everything before that trailer).
// Import reads the file twice: first it checks everything (checksum, every object against its
// hash, every tree's names, that every reference resolves in the file or the store), and only
// then stores anything, so a truncated, damaged or malicious file changes nothing.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "store/store.h"

namespace stashfs {

struct ArchiveInfo {
  std::string key;
  Hash root;
  uint64_t objects = 0;
  uint64_t logical_bytes = 0;
  uint64_t files = 0;
  uint64_t file_bytes = 0;   // size of the archive file
  uint64_t new_objects = 0;  // import: objects the store did not have
};

// Progress callback: units done and total (bytes of objects); total may be 0 if unknown.
using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;

// Export writes here first and renames to `path` when complete, so `path` never holds half an
// archive; the temporary file is removed if the export fails.
std::string ExportTempPath(const std::string& path);

Result<ArchiveInfo> ExportSnapshot(Store& store, const SnapshotInfo& snap, const std::string& path,
                                   const ProgressFn& progress);
// Imports `path` as a snapshot named `key_override` (or the key recorded in the file). The store
// must have a registered writer. AlreadyExists when the key is taken: then nothing is stored.
Result<ArchiveInfo> ImportSnapshot(Store& store, const std::string& path,
                                   const std::string& key_override, const ProgressFn& progress);

}  // namespace stashfs
