// Content-addressed object storage over pack files and the catalog.
//
// Writing: Put() hashes an object and either finds it in the catalog (then pins it for this
// writer, atomically with the lookup) or stages it in a block. Small objects share blocks of
// about `block_target` bytes; large ones get their own. Flush() seals the open block, fdatasyncs
// the pack and only then commits the catalog rows that point into it, so a crash leaves at worst
// unreferenced bytes at the end of a pack.
//
// Garbage collection and live writers: every object a writer puts is pinned (a `pins` row with
// the writer's generation) from the moment it is found or stored until the writer commits a root
// that references it. A writer cuts a generation when it snapshots its tree for a commit and
// releases pins up to that cut in the same transaction that moves its root. gc deletes only
// objects with no references and no pins, in one transaction, so a writer either pinned an
// object before gc looked (and gc keeps it) or finds it gone and stores a fresh copy.
//
// Reading: Get() returns verified bytes: every object is checked against its SHA-256 the first
// time it is taken from a decompressed block; a mismatch is Corruption, never wrong bytes.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <future>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "store/buffer_pool.h"
#include "store/catalog.h"
#include "store/env.h"
#include "store/hash.h"
#include "store/objects.h"
#include "store/pack.h"
#include "store/statistic.h"
#include "store/status.h"
#include "store/thread_pool.h"

namespace stashfs {

struct ObjectStoreOptions {
  int compression_level = 3;
  size_t block_target = 256 * 1024;    // small objects are gathered into blocks of about this size
  size_t large_object = 64 * 1024;     // objects at least this big get a block of their own
  uint64_t pack_target = 32ull << 20;  // a pack is sealed once it reaches this size
  size_t block_cache_bytes = 64ull << 20;  // memory held, counted by buffer capacity
  size_t flush_bytes = 64ull << 20;        // staged, uncatalogued bytes that trigger a Flush()
};

// An object's bytes, keeping the decompressed block they live in alive.
struct ObjectData {
  std::shared_ptr<const std::vector<uint8_t>> holder;
  std::span<const uint8_t> bytes;
};

struct ObjectKey {
  Hash hash;
  ObjectKind kind;
  bool operator==(const ObjectKey&) const = default;
};
struct ObjectKeyHasher {
  size_t operator()(const ObjectKey& k) const {
    return HashHasher()(k.hash) ^ static_cast<size_t>(k.kind);
  }
};

// Pin generation meaning "until explicitly released" (open files whose name is gone).
constexpr int64_t kPinForever = INT64_MAX;

class ObjectStore {
 public:
  // Counts into `stats`, the process's statistics (store/statistic.h), which must outlive it.
  ObjectStore(Env* env, Catalog* catalog, std::string packs_dir, ObjectStoreOptions opts,
              StatisticCounters* stats);
  ~ObjectStore();
  ObjectStore(const ObjectStore&) = delete;
  ObjectStore& operator=(const ObjectStore&) = delete;

  // Allows Put() for the writer registered as `mount_id` in the mounts table.
  void EnableWriting(int64_t mount_id) {
    std::lock_guard lock(mu_);
    mount_id_ = mount_id;
    // Pins belong to one writer: a new registration must take its own.
    pinned_.clear();
    repin_.clear();
  }
  int64_t writer_id() const { return mount_id_; }

  Result<Hash> Put(ObjectKind kind, std::span<const uint8_t> data);
  // Put on the store's worker threads, for ingesting one large file on several cores. `data`
  // is kept as the object's staged copy (no copy is made); take it from buffers().
  std::future<Result<Hash>> PutAsync(ObjectKind kind, std::vector<uint8_t> data);
  Status PutHashed(ObjectKind kind, const Hash& hash, std::span<const uint8_t> data);
  // Makes every Put() that returned before this call durable and catalogued (and pinned).
  Status Flush();
  // Flushes and marks this writer's open pack sealed; the ObjectStore stays usable.
  Status Close();

  // A lease marks a span of work whose puts are not yet referenced by the writer's tree; pins
  // made during a lease survive every cut taken while it is held.
  class Lease {
   public:
    Lease(ObjectStore* s, uint64_t gen) : s_(s), gen_(gen) {}
    Lease(Lease&& o) noexcept : s_(o.s_), gen_(o.gen_) { o.s_ = nullptr; }
    Lease(const Lease&) = delete;
    ~Lease();

   private:
    ObjectStore* s_;
    uint64_t gen_;
  };
  Lease BeginLease();
  // Called when the writer snapshots its tree for a commit: returns the highest generation whose
  // pins that commit may release, and starts a new generation.
  uint64_t CutGeneration();
  // Deletes this writer's pins up to `upto`, inside the caller's transaction on `w`.
  Status ReleasePins(Db* w, uint64_t upto);
  // Pins `key` until Unpin (used for files that are open but no longer named).
  Status PinForever(const ObjectKey& key);
  Status Unpin(const ObjectKey& key);

  Result<ObjectData> Get(ObjectKind kind, const Hash& hash);
  // Loads and verifies an object in the background so a later Get finds it in the block cache
  // (a sequential reader asks for the next chunks while it copies this one).
  // `still_wanted`, when given, is asked when the task runs: a reader may have passed the object.
  void Prefetch(ObjectKind kind, const Hash& hash, std::function<bool()> still_wanted = {});
  // Drops an object's block from the block cache if the block holds that object alone: a
  // sequential reader that has copied a large chunk to its end will not ask for it again (the
  // kernel's page cache has it), and a block cache full of such chunks only costs fresh memory.
  // Blocks shared by several small objects stay: other files read them.
  void DropIfAlone(ObjectKind kind, const Hash& hash);
  // Whether the catalog (or this writer's staging) has the object.
  Result<bool> Has(ObjectKind kind, const Hash& hash);

  // Reads and decompresses one block, verifying every object in it against its hash; returns
  // the objects that failed. For fsck.
  struct BlockCheck {
    Status status;                // reading or decompressing failed
    std::vector<BlockEntry> bad;  // objects whose bytes do not match their hash
  };
  BlockCheck VerifyBlock(const BlockLocation& loc, const std::vector<BlockEntry>& entries);

  PackFiles& packs() { return packs_; }
  const std::string& packs_dir() const { return packs_dir_; }
  const ObjectStoreOptions& options() const { return opts_; }
  StatisticCounters& counters() { return *counters_; }
  // Transient buffers shared by the store and its writers (chunk copies for PutAsync).
  BufferPool& buffers() { return *buffers_; }
  size_t block_cache_bytes();  // what the block cache holds, by buffer capacity
  // Forgets cached blocks of a pack (gc rewrote or removed it).
  void ForgetPack(int64_t pack_id);
  // Closes packs that gc deleted, so their disk space is really freed (mounts call this
  // periodically: an open file keeps its blocks allocated).
  void DropDeletedPacks();

 private:
  struct OpenBlock {
    std::vector<uint8_t> raw;
    std::vector<BlockEntry> entries;
  };
  struct Pending {
    std::shared_ptr<OpenBlock> open;  // set until the block is written to a pack
    BlockLocation loc;                // valid once written
    uint32_t offset = 0;
    uint32_t size = 0;
    uint64_t gen = 0;  // newest generation that put it: its pin must cover that use
  };
  struct WrittenBlock {
    BlockLocation loc;
    std::vector<BlockEntry> entries;
  };
  struct CachedBlock {
    // A pooled buffer, at its whole capacity: the block is its first `size` bytes.
    std::shared_ptr<const std::vector<uint8_t>> data;
    size_t size = 0;
    std::mutex mu;
    std::unordered_set<uint32_t> verified;  // offsets of objects already checked
  };
  struct CacheKey {
    int64_t pack_id;
    uint64_t offset;
    bool operator==(const CacheKey&) const = default;
  };
  struct CacheKeyHasher {
    size_t operator()(const CacheKey& k) const {
      return std::hash<uint64_t>()(k.offset * 1000003 + static_cast<uint64_t>(k.pack_id));
    }
  };

  Result<bool> PinIfCatalogued(const ObjectKey& key, uint64_t gen);
  // PutHashed; `owned`, when given, holds `data` and becomes the staged copy of a large object
  // instead of a copy of it (else it goes back to the pool).
  Status PutImpl(ObjectKind kind, const Hash& hash, std::span<const uint8_t> data,
                 std::vector<uint8_t>* owned);
  std::shared_ptr<OpenBlock> NewBuilder();
  Status WriteBlock(std::shared_ptr<OpenBlock> blk, uint64_t seq);
  Status EnsurePack();  // with pack_mu_ held
  // `alone`: the block holds one object only (a large file's chunk), see CacheInsert.
  Result<std::shared_ptr<CachedBlock>> LoadBlock(const BlockLocation& loc, bool alone);
  Result<ObjectData> Extract(const std::shared_ptr<CachedBlock>& blk, const ObjectKey& key,
                             uint32_t offset, uint32_t size, const BlockLocation& loc);
  struct Location {
    BlockLocation loc;
    uint32_t offset = 0;
    uint32_t size = 0;
    bool alone() const { return offset == 0 && size == loc.raw_len; }  // the block's only object
  };
  Result<ObjectData> GetFromCatalog(const ObjectKey& key, bool retry, bool use_cache);
  void RememberLocation(const ObjectKey& key, const Location& where);
  void CacheInsert(const CacheKey& k, std::shared_ptr<CachedBlock> b, bool alone);

  Env* env_;
  Catalog* catalog_;
  std::string packs_dir_;
  ObjectStoreOptions opts_;
  PackFiles packs_;
  int64_t mount_id_ = 0;
  StatisticCounters* counters_;
  // Shared: decompressed blocks handed to readers return to it when the last one lets go.
  std::shared_ptr<BufferPool> buffers_ = std::make_shared<BufferPool>();

  // Locks, outermost first; any nesting not listed here is a bug.
  //   flush_mu_  one Flush at a time. While holding it a Flush takes mu_, pack_mu_ and the
  //              catalog writer, one at a time, never two together.
  //   mu_        staging state and generations. Holding it, only leaves (the BufferPool's
  //              lock, to copy a staged object for a reader).
  //   pack_mu_   the open pack. Holding it, only leaves (PackFiles' lock). Never with mu_.
  //   catalog writer (Catalog::write()): never taken with mu_ or pack_mu_ held; Put pins an
  //              object between two mu_ sections, and commits release pins inside it.
  //   cache_mu_, load_mu_, loc_mu_, CachedBlock::mu, PackFiles' and BufferPool's locks:
  //              leaves. Each is taken alone, and a thread holding one takes nothing else
  //              (LoadBlock drops load_mu_ before it reads and before CacheInsert).
  std::mutex mu_;
  std::condition_variable inflight_cv_;
  std::unordered_map<ObjectKey, Pending, ObjectKeyHasher> pending_;
  std::unordered_map<ObjectKey, uint64_t, ObjectKeyHasher> pinned_;  // key -> gen pinned at
  // Objects put again while staged, after their Flush took the older generation: re-pinned at
  // the next Flush, which every commit performs before it releases pins.
  std::unordered_map<ObjectKey, uint64_t, ObjectKeyHasher> repin_;
  std::shared_ptr<OpenBlock> builder_;
  // Blocks whose write failed (e.g. ENOSPC); their objects stay staged and the next Flush
  // writes them again, so a Put() that returned OK is never silently dropped.
  std::vector<std::shared_ptr<OpenBlock>> failed_;
  std::vector<WrittenBlock> written_;
  std::set<uint64_t> inflight_;  // sequence numbers of blocks being compressed/written
  uint64_t next_seq_ = 1;
  uint64_t staged_bytes_ = 0;
  uint64_t gen_ = 1;
  std::multiset<uint64_t> leases_;

  std::mutex flush_mu_;

  std::mutex pack_mu_;
  std::shared_ptr<File> pack_;  // shared: a Flush syncs it without holding pack_mu_
  int64_t pack_id_ = 0;
  uint64_t pack_size_ = 0;
  uint64_t pack_written_back_ = 0;  // start_writeback issued up to here
  uint64_t pack_dropped_ = 0;       // drop_written issued up to here
  // Packs filled since the last Flush, with their final sizes, to mark sealed.
  std::vector<std::pair<int64_t, uint64_t>> sealed_;
  std::vector<std::shared_ptr<File>> unsynced_;  // the files of sealed_, not yet synced

  // The block cache: two LRU lists in one budget. Blocks that hold one object alone (large
  // files' chunks) have their own list and at most kAloneCacheBytes of the budget: the kernel's
  // page cache keeps what was read of a large file, so such a block is only wanted again while
  // the reads of its chunk last, and a budget full of them was 64 MiB of fresh memory mapped
  // (and faulted in page by page) on every cold read of a big file. Blocks of small objects,
  // which many files share, keep the rest.
  static constexpr size_t kAloneCacheBytes = 16 << 20;
  std::mutex cache_mu_;
  size_t cache_bytes_ = 0;
  size_t alone_bytes_ = 0;
  std::list<CacheKey> cache_lru_;
  std::list<CacheKey> alone_lru_;
  struct CacheSlot {
    std::shared_ptr<CachedBlock> block;
    std::list<CacheKey>::iterator pos;
    bool alone = false;
  };
  using CacheMap = std::unordered_map<CacheKey, CacheSlot, CacheKeyHasher>;
  CacheMap cache_;
  void CacheEraseLocked(CacheMap::iterator it);  // cache_mu_ held

  // Blocks being loaded, so concurrent readers of one block share one decompression.
  std::mutex load_mu_;
  std::unordered_map<CacheKey, std::shared_future<Result<std::shared_ptr<CachedBlock>>>,
                     CacheKeyHasher>
      loading_;

  // Where recently read objects are, saving a catalog query per FUSE read of a large file.
  static constexpr size_t kLocationCacheEntries = 1 << 16;
  std::mutex loc_mu_;
  std::unordered_map<ObjectKey, Location, ObjectKeyHasher> locations_;

  // Last member: its threads use everything above and stop first.
  ThreadPool pool_{2};
};

}  // namespace stashfs
