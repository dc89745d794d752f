#include "store/statistic.h"

namespace stashfs {

namespace {

using S = Statistic;
constexpr bool kMount = true, kStore = true, kNo = false;

constexpr StatisticInfo kTable[] = {
    {S::kMounts, "mounts", "mounts of the store that ended", kNo, kStore},
    {S::kLookups, "lookups", "names looked up in directories", kMount, kStore},
    {S::kNegativeLookups, "negative_lookups",
     "names looked up that were not there (the kernel caches these answers)", kMount, kStore},
    {S::kDirectoriesLoaded, "directories_loaded", "stored directories read into the mount", kMount,
     kNo},
    {S::kFilesCreated, "files_created", "files created", kMount, kStore},
    {S::kFilesReadFromStore, "files_read_from_store", "distinct stored files read", kMount, kStore},
    {S::kCommits, "commits", "trees committed to the store", kMount, kNo},
    {S::kFileFlushes, "file_flushes", "written files chunked and stored", kMount, kNo},
    {S::kBytesWritten, "bytes_written", "bytes written into files", kMount, kStore},
    {S::kBytesReadFromStore, "bytes_read_from_store", "file bytes served from stored chunks",
     kMount, kStore},
    {S::kCopyUps, "copy_ups", "stored files copied out to be modified", kMount, kNo},
    {S::kBytesStoredWhileWritten, "bytes_stored_while_written",
     "bytes of large files stored while they were still being written", kMount, kNo},
    {S::kScratchBytesCopiedBack, "scratch_bytes_copied_back",
     "bytes punched from a scratch file and copied back for a rewrite", kMount, kNo},
    {S::kPuts, "puts", "objects handed to the store", kMount, kNo},
    {S::kDedupHits, "dedup_hits", "objects the store already had", kMount, kNo},
    {S::kNewObjects, "new_objects", "objects the store did not have", kMount, kNo},
    {S::kNewRawBytes, "new_raw_bytes", "uncompressed bytes of new objects", kMount, kNo},
    {S::kBytesStoredNew, "bytes_stored_new", "bytes written to packs (compressed)", kMount, kNo},
    {S::kGets, "gets", "objects read from the store", kMount, kNo},
    {S::kBlockCacheHits, "block_cache_hits", "reads served by the decompressed-block cache", kMount,
     kNo},
    {S::kBlocksRead, "blocks_read", "blocks read from packs and decompressed", kMount, kNo},
    {S::kCorruptObjects, "corrupt_objects", "reads that found bytes not matching their hash",
     kMount, kStore},
    {S::kKeyHitsExact, "key_hits_exact", "key mounts that found their key", kNo, kStore},
    {S::kKeyHitsRestoreKey, "key_hits_restore_key", "key mounts restored through a restore key",
     kNo, kStore},
    {S::kKeyMisses, "key_misses", "key mounts that started empty", kNo, kStore},
};

constexpr bool InEnumOrder() {
  if (std::size(kTable) != static_cast<size_t>(S::kCount)) return false;
  for (size_t i = 0; i < std::size(kTable); ++i)
    if (static_cast<size_t>(kTable[i].id) != i) return false;
  return true;
}
static_assert(InEnumOrder(), "kTable must list every Statistic once, in enum order");

}  // namespace

std::span<const StatisticInfo> AllStatistics() {
  return kTable;
}

const StatisticInfo& Describe(Statistic s) {
  return kTable[static_cast<size_t>(s)];
}

std::optional<Statistic> StatisticNamed(std::string_view name) {
  for (const auto& info : kTable)
    if (info.name == name) return info.id;
  return std::nullopt;
}

}  // namespace stashfs
