// Every statistic stashfs counts, in one list: its name (the key in `status --json`, `stats
// --json` and the store's counters table), what it means, and where it is reported. Status,
// stats, their JSON and the counters a mount adds to the store at unmount all iterate this list,
// so a new statistic is one line here and one increment where it happens.
//
// The list is append-only in spirit: names are persisted in stores (the counters table) and read
// by scripts (`--json`), so an entry may be added anywhere but never renamed; the enum's order
// only has to match the table's, which a static_assert checks.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace stashfs {

enum class Statistic : uint8_t {
  // The mount (fs/volume.cc).
  kMounts,
  kLookups,
  kNegativeLookups,
  kDirectoriesLoaded,
  kFilesCreated,
  kFilesReadFromStore,
  kCommits,
  kFileFlushes,
  // File data (fs/file_data.cc).
  kBytesWritten,
  kBytesReadFromStore,
  kCopyUps,
  kBytesStoredWhileWritten,
  kScratchBytesCopiedBack,
  // The object store (store/object_store.cc).
  kPuts,
  kDedupHits,
  kNewObjects,
  kNewRawBytes,
  kBytesStoredNew,
  kGets,
  kBlockCacheHits,
  kBlocksRead,
  kCorruptObjects,
  // Cache keys (tools/daemon.cc, at mount).
  kKeyHitsExact,
  kKeyHitsRestoreKey,
  kKeyMisses,
  kCount
};

struct StatisticInfo {
  Statistic id;
  std::string_view name;         // snake_case; stable
  std::string_view description;  // for people: what one unit of it is
  bool per_mount;                // shown by `stashfs status` for the mount that counted it
  bool persisted;                // added to the store's totals at unmount (`stashfs stats`)
};

// The whole list, in enum order.
std::span<const StatisticInfo> AllStatistics();
const StatisticInfo& Describe(Statistic s);
// The statistic with this name, if any (reading the counters table of a store).
std::optional<Statistic> StatisticNamed(std::string_view name);

// One process's counts, one relaxed atomic per statistic: counting costs an uncontended add on
// the hot paths (every lookup, read and put), and readers only ever want a recent total.
class StatisticCounters {
 public:
  void Add(Statistic s, uint64_t n = 1) {
    v_[static_cast<size_t>(s)].fetch_add(n, std::memory_order_relaxed);
  }
  uint64_t Get(Statistic s) const {
    return v_[static_cast<size_t>(s)].load(std::memory_order_relaxed);
  }

 private:
  std::array<std::atomic<uint64_t>, static_cast<size_t>(Statistic::kCount)> v_{};
};

}  // namespace stashfs
