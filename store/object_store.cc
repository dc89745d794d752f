#include "store/object_store.h"
#include "store/log.h"

#include <fcntl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <iterator>
#include <optional>

#include "store/catalog_objects.h"
#include "store/codec.h"

namespace stashfs {

ObjectStore::ObjectStore(Env* env, Catalog* catalog, std::string packs_dir, ObjectStoreOptions opts,
                         StatisticCounters* stats)
    : env_(env),
      catalog_(catalog),
      packs_dir_(std::move(packs_dir)),
      opts_(opts),
      packs_(env, packs_dir_),
      counters_(stats),
      builder_(NewBuilder()) {}

std::shared_ptr<ObjectStore::OpenBlock> ObjectStore::NewBuilder() {
  auto b = std::make_shared<OpenBlock>();
  // A shared block closes once it reaches block_target, and what joins it is smaller than
  // large_object: it never outgrows this.
  b->raw = buffers_->Take(opts_.block_target + opts_.large_object);
  return b;
}

ObjectStore::~ObjectStore() {
  if (mount_id_) {
    Status s = Close();
    if (!s.ok()) LogError("closing the object store: " + s.message());
  }
}

ObjectStore::Lease::~Lease() {
  if (!s_) return;
  std::lock_guard lock(s_->mu_);
  s_->leases_.erase(s_->leases_.find(gen_));
}

ObjectStore::Lease ObjectStore::BeginLease() {
  std::lock_guard lock(mu_);
  leases_.insert(gen_);
  return Lease(this, gen_);
}

uint64_t ObjectStore::CutGeneration() {
  std::lock_guard lock(mu_);
  uint64_t upto = leases_.empty() ? gen_ : *leases_.begin() - 1;
  ++gen_;
  return upto;
}

Status ObjectStore::ReleasePins(Db* w, uint64_t upto) {
  return catalog::ReleasePins(w, mount_id_, upto);
}

Status ObjectStore::PinForever(const ObjectKey& key) {
  // The object may still be staged; make sure it has a catalog row to pin.
  RETURN_IF_ERROR(Flush());
  ASSIGN_OR_RETURN(bool found, PinIfCatalogued(key, kPinForever));
  if (!found) return Status::NotFound("object " + key.hash.hex() + " is not in the store");
  return Status::Ok();
}

Status ObjectStore::Unpin(const ObjectKey& key) {
  auto w = catalog_->write();
  return catalog::UnpinObject(w.db(), mount_id_, kPinForever, key);
}

Result<bool> ObjectStore::PinIfCatalogued(const ObjectKey& key, uint64_t gen) {
  // One statement, hence one transaction: either gc deleted the object before (no row, we store
  // a fresh copy) or our pin exists before gc can look at the object again.
  auto w = catalog_->write();
  return catalog::PinIfStored(w.db(), mount_id_, gen, key);
}

Result<Hash> ObjectStore::Put(ObjectKind kind, std::span<const uint8_t> data) {
  Hash h = Hash::Of(data);
  RETURN_IF_ERROR(PutHashed(kind, h, data));
  return h;
}

std::future<Result<Hash>> ObjectStore::PutAsync(ObjectKind kind, std::vector<uint8_t> data) {
  auto task = std::make_shared<std::packaged_task<Result<Hash>()>>(
      [this, kind, d = std::move(data)]() mutable -> Result<Hash> {
        Hash h = Hash::Of(d);
        RETURN_IF_ERROR(PutImpl(kind, h, d, &d));
        return h;
      });
  auto fut = task->get_future();
  pool_.Submit([task] { (*task)(); });
  return fut;
}

Status ObjectStore::PutHashed(ObjectKind kind, const Hash& hash, std::span<const uint8_t> data) {
  return PutImpl(kind, hash, data, nullptr);
}

Status ObjectStore::PutImpl(ObjectKind kind, const Hash& hash, std::span<const uint8_t> data,
                            std::vector<uint8_t>* owned) {
  // Whatever path returns, an owned buffer not kept as the staged copy goes back for reuse.
  struct GiveBack {
    BufferPool* pool;
    std::vector<uint8_t>* buf;
    ~GiveBack() {
      if (buf) pool->Give(std::move(*buf));
    }
  } give_back{buffers_.get(), owned};
  if (!mount_id_) return Status::Unsupported("object store opened read-only");
  if (data.size() > kMaxBlockBytes) return Status::Invalid("object too large to store");
  counters_->Add(Statistic::kPuts);
  ObjectKey key{hash, kind};
  uint64_t gen;
  {
    std::lock_guard lock(mu_);
    gen = gen_;
    auto p = pending_.find(key);
    if (p != pending_.end()) {
      // Staged by us already; its pin (inserted at Flush) must cover this newer use too.
      p->second.gen = std::max(p->second.gen, gen);
      counters_->Add(Statistic::kDedupHits);
      return Status::Ok();
    }
    auto it = pinned_.find(key);
    if (it != pinned_.end() && it->second == gen) {
      counters_->Add(Statistic::kDedupHits);
      return Status::Ok();
    }
  }
  ASSIGN_OR_RETURN(bool found, PinIfCatalogued(key, gen));
  if (found) {
    std::lock_guard lock(mu_);
    pinned_[key] = gen;
    counters_->Add(Statistic::kDedupHits);
    return Status::Ok();
  }

  std::shared_ptr<OpenBlock> to_write;
  uint64_t seq = 0;
  bool flush_now = false;
  {
    std::lock_guard lock(mu_);
    if (pending_.count(key)) {
      counters_->Add(Statistic::kDedupHits);
      return Status::Ok();
    }
    BlockEntry ent{kind, 0, static_cast<uint32_t>(data.size()), hash};
    if (data.size() >= opts_.large_object) {
      to_write = std::make_shared<OpenBlock>();
      if (owned) {
        to_write->raw = std::move(*owned);
        give_back.buf = nullptr;
      } else {
        to_write->raw = buffers_->Take(data.size());
        to_write->raw.assign(data.begin(), data.end());
      }
      to_write->entries.push_back(ent);
      pending_[key] = Pending{to_write, {}, 0, ent.size, gen};
    } else {
      ent.offset = static_cast<uint32_t>(builder_->raw.size());
      builder_->raw.insert(builder_->raw.end(), data.begin(), data.end());
      builder_->entries.push_back(ent);
      pending_[key] = Pending{builder_, {}, ent.offset, ent.size, gen};
      if (builder_->raw.size() >= opts_.block_target) {
        to_write = std::move(builder_);
        builder_ = NewBuilder();
      }
    }
    if (to_write) {
      seq = next_seq_++;
      inflight_.insert(seq);
    }
    staged_bytes_ += data.size();
    flush_now = staged_bytes_ >= opts_.flush_bytes;
    counters_->Add(Statistic::kNewObjects);
    counters_->Add(Statistic::kNewRawBytes, data.size());
  }
  if (to_write) RETURN_IF_ERROR(WriteBlock(std::move(to_write), seq));
  if (flush_now) RETURN_IF_ERROR(Flush());
  return Status::Ok();
}

Status ObjectStore::EnsurePack() {
  if (pack_ && pack_size_ < opts_.pack_target) return Status::Ok();
  if (pack_) {
    // Synced by the next Flush, outside pack_mu_, before the row that seals it commits: a sync
    // here would stop every writer for the time it takes the disk to take 32 MiB.
    sealed_.emplace_back(pack_id_, pack_size_);
    unsynced_.push_back(std::move(pack_));
  }
  int64_t id;
  {
    auto w = catalog_->write();
    ASSIGN_OR_RETURN(id, catalog::InsertOpenPack(w.db(), mount_id_, env_->NowSeconds()));
  }
  std::string path = PackPath(packs_dir_, id);
  std::string dir = path.substr(0, path.find_last_of('/'));
  Status st = [&]() -> Status {
    RETURN_IF_ERROR(env_->MakeDirs(dir, 0700));
    // O_TRUNC, not O_EXCL: the id is ours (the catalog just handed it out), so a file already
    // there is an orphan no block refers to, e.g. of a pack whose catalog row a power loss
    // took (WAL commits are not synced). Refusing it would stop every write to the store.
    ASSIGN_OR_RETURN(auto f, env_->Open(path, O_RDWR | O_CREAT | O_TRUNC, 0600));
    auto header = EncodePackHeader();
    RETURN_IF_ERROR(f->pwrite(0, header.data(), header.size()));
    // The pack's name must survive a crash before any catalog row points into it.
    RETURN_IF_ERROR(f->sync(true));
    RETURN_IF_ERROR(env_->SyncDir(dir));
    pack_ = std::move(f);
    return Status::Ok();
  }();
  if (!st.ok()) {
    // Leave no catalogued pack without its header on disk (the disk may be full).
    env_->Remove(path);
    auto w = catalog_->write();
    (void)catalog::DeletePack(w.db(), id);  // best effort: st says what went wrong
    return st;
  }
  pack_id_ = id;
  pack_size_ = kPackHeaderSize;
  pack_written_back_ = 0;
  pack_dropped_ = 0;
  return Status::Ok();
}

Status ObjectStore::WriteBlock(std::shared_ptr<OpenBlock> blk, uint64_t seq) {
  // A chunk with a block of its own is part of a large file: mostly already-compressed archives
  // or bulk data, where a faster level costs little ratio (on base64 data here zstd -1 and -3
  // give the same 1.33x at 291 vs 207 MB/s). Small files share blocks and get the full level.
  int level = blk->entries.size() == 1 && blk->raw.size() >= opts_.large_object
                  ? std::max(1, opts_.compression_level - 2)
                  : opts_.compression_level;
  // Header and payload are assembled in one pooled buffer and written with one pwrite.
  BlockHeader h;
  h.entries = blk->entries;
  const size_t header_len = BlockHeaderLength(h.entries.size());
  std::vector<uint8_t> bytes = buffers_->TakeSized(header_len + CompressBound(blk->raw.size()),
                                                   header_len + blk->raw.size());
  EncodeBlock(blk->raw, level, &h, &bytes);

  BlockLocation loc;
  Status st;
  std::shared_ptr<File> writeback;
  uint64_t wb_from = 0, wb_len = 0, drop_from = 0, drop_len = 0;
  {
    std::lock_guard lock(pack_mu_);
    st = EnsurePack();
    if (st.ok()) {
      st = pack_->pwrite(pack_size_, bytes.data(), bytes.size());
      if (st.ok()) {
        loc = {pack_id_,     pack_size_, static_cast<uint32_t>(header_len),
               h.stored_len, h.raw_len,  h.codec};
        pack_size_ += bytes.size();
        // Packs are synced before their rows commit; writing them out as they fill keeps that
        // sync short and the disk busy while the CPU compresses the next blocks.
        constexpr uint64_t kWritebackStep = 4 << 20;
        if (pack_size_ - pack_written_back_ >= kWritebackStep) {
          writeback = pack_;
          wb_from = pack_written_back_;
          wb_len = pack_size_ - pack_written_back_;
          drop_from = pack_dropped_;
          drop_len = pack_written_back_ - pack_dropped_;
          pack_dropped_ = pack_written_back_;
          pack_written_back_ = pack_size_;
        }
      }
    }
  }
  // Outside pack_mu_: starting writeback can wait for the disk's request queue. The window
  // before this one, whose writeback had a whole window's time to finish, then leaves the page
  // cache: pack bytes are read rarely, and from the block cache while hot, and a page the
  // kernel has to allocate afresh costs more than the copy into it (on the CI VMs, writing a
  // GiB into new page-cache pages costs 0.9 s of CPU, into just-freed ones 0.16 s). A 1 GiB
  // write took 4.0-5.7 daemon core-seconds before this, 3.3-3.6 after. Waiting for the
  // previous window is also backpressure when the disk is slower than compression.
  if (writeback) {
    writeback->start_writeback(wb_from, wb_len);
    if (drop_len) writeback->drop_written(drop_from, drop_len);
  }
  std::lock_guard lock(mu_);
  inflight_.erase(seq);
  inflight_cv_.notify_all();
  if (!st.ok()) {
    // Keep the objects staged (earlier Put()s of them returned OK) and write the block again at
    // the next Flush, which fails until that succeeds.
    failed_.push_back(std::move(blk));
    return st;
  }
  for (const auto& e : blk->entries) {
    auto it = pending_.find(ObjectKey{e.hash, e.kind});
    if (it != pending_.end() && it->second.open == blk) {
      it->second.open.reset();
      it->second.loc = loc;
    }
  }
  written_.push_back({loc, std::move(blk->entries)});
  counters_->Add(Statistic::kBytesStoredNew, bytes.size());
  // Written and no longer staged: unless a reader still holds the block, its bytes are free.
  if (blk.use_count() == 1) buffers_->Give(std::move(blk->raw));
  buffers_->Give(std::move(bytes));
  return Status::Ok();
}

Status ObjectStore::Flush() {
  if (!mount_id_) return Status::Ok();
  std::lock_guard flush_lock(flush_mu_);
  std::vector<std::pair<std::shared_ptr<OpenBlock>, uint64_t>> to_write;
  uint64_t target;
  {
    std::lock_guard lock(mu_);
    for (auto& b : failed_)
      to_write.emplace_back(std::move(b), next_seq_++);
    failed_.clear();
    if (!builder_->entries.empty()) {
      to_write.emplace_back(std::move(builder_), next_seq_++);
      builder_ = NewBuilder();
    }
    for (const auto& tw : to_write)
      inflight_.insert(tw.second);
    target = next_seq_;
  }
  // Every block is attempted: each must leave inflight_, and a failed one is kept for later.
  Status write_status;
  for (auto& [blk, seq] : to_write) {
    Status st = WriteBlock(std::move(blk), seq);
    if (write_status.ok()) write_status = st;
  }
  RETURN_IF_ERROR(write_status);
  std::vector<WrittenBlock> blocks;
  std::vector<std::vector<uint64_t>> gens;  // pin generation of each entry of each block
  std::unordered_map<ObjectKey, uint64_t, ObjectKeyHasher> repins;
  {
    std::unique_lock lock(mu_);
    // Blocks other threads started before this Flush must be part of it.
    inflight_cv_.wait(lock, [&] { return inflight_.empty() || *inflight_.begin() >= target; });
    blocks.swap(written_);
    repins.swap(repin_);
    for (const auto& b : blocks) {
      auto& g = gens.emplace_back();
      for (const auto& e : b.entries) {
        auto it = pending_.find(ObjectKey{e.hash, e.kind});
        g.push_back(it != pending_.end() ? it->second.gen : gen_);
      }
    }
  }
  std::vector<std::pair<int64_t, uint64_t>> sealed;  // id, final size
  std::vector<std::shared_ptr<File>> sealed_files;
  std::shared_ptr<File> current;
  int64_t pack_id = 0;
  uint64_t pack_size = 0;
  Status st;
  {
    std::lock_guard lock(pack_mu_);
    sealed.swap(sealed_);
    sealed_files.swap(unsynced_);
    if (!blocks.empty()) current = pack_;
    pack_id = pack_id_;
    pack_size = pack_size_;
  }
  // Every block in `blocks` is in `current` or a pack sealed since the last Flush. fdatasync
  // without pack_mu_: other threads go on appending blocks (to be catalogued by a later Flush).
  for (const auto& f : sealed_files)
    if (st.ok()) st = f->sync(false);
  if (st.ok() && current) st = current->sync(false);
  if (!st.ok()) {
    std::lock_guard lock(pack_mu_);
    sealed_.insert(sealed_.begin(), sealed.begin(), sealed.end());
    unsynced_.insert(unsynced_.begin(), sealed_files.begin(), sealed_files.end());
    sealed.clear();
  }
  if (st.ok() && blocks.empty() && sealed.empty() && repins.empty()) return Status::Ok();

  if (st.ok())
    st = [&]() -> Status {
      auto w = catalog_->write();
      Txn txn(w.db());
      RETURN_IF_ERROR(txn.Begin());
      int64_t now = env_->NowSeconds();
      for (size_t bi = 0; bi < blocks.size(); ++bi) {
        const auto& b = blocks[bi];
        ASSIGN_OR_RETURN(int64_t block_id, catalog::InsertBlock(w.db(), b.loc));
        for (size_t i = 0; i < b.entries.size(); ++i) {
          const auto& e = b.entries[i];
          // A concurrent writer may have catalogued the same object first; then our copy is dead
          // weight for gc to compact, and the pin below attaches to theirs.
          RETURN_IF_ERROR(catalog::InsertObject(w.db(), e, block_id, now));
          RETURN_IF_ERROR(
              catalog::PinObject(w.db(), mount_id_, gens[bi][i], ObjectKey{e.hash, e.kind}));
        }
      }
      for (const auto& [key, gen] : repins)
        RETURN_IF_ERROR(catalog::PinObject(w.db(), mount_id_, gen, key));
      if (pack_id) RETURN_IF_ERROR(catalog::SetPackSize(w.db(), pack_id, pack_size));
      for (const auto& [id, size] : sealed)
        RETURN_IF_ERROR(catalog::SealPack(w.db(), id, size));
      return txn.Commit();
    }();
  if (!st.ok()) {
    // Nothing was catalogued: keep it all for the next Flush, so that no Put() that returned
    // OK is lost (the retry syncs the pack again and commits the same rows).
    {
      std::lock_guard lock(pack_mu_);
      sealed_.insert(sealed_.begin(), sealed.begin(), sealed.end());
    }
    std::lock_guard lock(mu_);
    written_.insert(written_.begin(), std::make_move_iterator(blocks.begin()),
                    std::make_move_iterator(blocks.end()));
    for (const auto& [key, gen] : repins)
      repin_[key] = std::max(repin_[key], gen);
    return st;
  }
  std::lock_guard lock(mu_);
  for (size_t bi = 0; bi < blocks.size(); ++bi) {
    const auto& b = blocks[bi];
    for (size_t i = 0; i < b.entries.size(); ++i) {
      ObjectKey k{b.entries[i].hash, b.entries[i].kind};
      auto it = pending_.find(k);
      if (it == pending_.end() || it->second.open || it->second.loc.pack_id != b.loc.pack_id ||
          it->second.loc.offset != b.loc.offset)
        continue;
      if (it->second.gen > gens[bi][i]) repin_[k] = it->second.gen;
      staged_bytes_ -= std::min<uint64_t>(staged_bytes_, it->second.size);
      pending_.erase(it);
      pinned_[k] = gens[bi][i];
    }
  }
  return Status::Ok();
}

Status ObjectStore::Close() {
  if (!mount_id_) return Status::Ok();
  RETURN_IF_ERROR(Flush());
  int64_t id = 0;
  uint64_t size = 0;
  {
    std::lock_guard lock(pack_mu_);
    if (pack_) {
      RETURN_IF_ERROR(pack_->sync(false));
      id = pack_id_;
      size = pack_size_;
      pack_.reset();
      pack_id_ = 0;
      pack_size_ = 0;
    }
  }
  if (!id) return Status::Ok();
  auto w = catalog_->write();
  return catalog::SealPack(w.db(), id, size);
}

void ObjectStore::CacheInsert(const CacheKey& k, std::shared_ptr<CachedBlock> b, bool alone) {
  std::vector<std::shared_ptr<CachedBlock>> evicted;  // released after the lock
  std::lock_guard lock(cache_mu_);
  if (cache_.count(k)) return;
  auto& lru = alone ? alone_lru_ : cache_lru_;
  lru.push_front(k);
  // Counted by capacity, which is what the block keeps mapped: a pooled buffer can be up to
  // four times the block it holds.
  const size_t cap = b->data->capacity();
  cache_[k] = {std::move(b), lru.begin(), alone};
  cache_bytes_ += cap;
  if (alone) alone_bytes_ += cap;
  const size_t alone_max = std::min(opts_.block_cache_bytes, kAloneCacheBytes);
  while (alone_bytes_ > alone_max && alone_lru_.size() > 1) {
    auto victim = cache_.find(alone_lru_.back());
    evicted.push_back(victim->second.block);
    CacheEraseLocked(victim);
  }
  while (cache_bytes_ > opts_.block_cache_bytes && cache_.size() > 1) {
    auto& from = cache_lru_.empty() ? alone_lru_ : cache_lru_;
    auto victim = cache_.find(from.back());
    evicted.push_back(victim->second.block);
    CacheEraseLocked(victim);
  }
}

void ObjectStore::CacheEraseLocked(CacheMap::iterator it) {
  const size_t cap = it->second.block->data->capacity();
  cache_bytes_ -= cap;
  if (it->second.alone) {
    alone_bytes_ -= cap;
    alone_lru_.erase(it->second.pos);
  } else {
    cache_lru_.erase(it->second.pos);
  }
  cache_.erase(it);
}

void ObjectStore::DropDeletedPacks() {
  for (int64_t id : packs_.Deleted())
    ForgetPack(id);
}

void ObjectStore::ForgetPack(int64_t pack_id) {
  packs_.Drop(pack_id);
  std::lock_guard lock(cache_mu_);
  for (auto it = cache_.begin(); it != cache_.end();) {
    auto next = std::next(it);
    if (it->first.pack_id == pack_id) CacheEraseLocked(it);
    it = next;
  }
}

Result<std::shared_ptr<ObjectStore::CachedBlock>> ObjectStore::LoadBlock(const BlockLocation& loc,
                                                                         bool alone) {
  CacheKey ck{loc.pack_id, loc.offset};
  {
    std::lock_guard lock(cache_mu_);
    auto it = cache_.find(ck);
    if (it != cache_.end()) {
      auto& lru = it->second.alone ? alone_lru_ : cache_lru_;
      lru.splice(lru.begin(), lru, it->second.pos);
      counters_->Add(Statistic::kBlockCacheHits);
      return it->second.block;
    }
  }
  // One load per block: a reader and a prefetch (or two FUSE threads serving adjacent reads)
  // asking for the same block wait for the one decompression.
  std::promise<Result<std::shared_ptr<CachedBlock>>> promise;
  {
    std::unique_lock lock(load_mu_);
    auto it = loading_.find(ck);
    if (it != loading_.end()) {
      auto fut = it->second;
      lock.unlock();
      return fut.get();
    }
    loading_.emplace(ck, promise.get_future().share());
  }
  auto result = [&]() -> Result<std::shared_ptr<CachedBlock>> {
    // Both buffers stay at their pooled capacity: shrinking them to the block and growing
    // them back on return zero-filled the difference on every block, 7-9 % of the daemon's CPU
    // on a cold 1 GiB read.
    std::vector<uint8_t> stored = buffers_->TakeFull(loc.stored_len);
    std::span<uint8_t> payload(stored.data(), loc.stored_len);
    Status st = packs_.ReadPayloadInto(loc, payload);
    std::vector<uint8_t> raw = buffers_->TakeFull(loc.raw_len);
    if (st.ok())
      st = DecompressInto(loc.codec, payload, std::span<uint8_t>(raw.data(), loc.raw_len));
    buffers_->Give(std::move(stored));
    if (!st.ok()) {
      buffers_->Give(std::move(raw));
      return st.context("block at offset " + std::to_string(loc.offset) + " of " +
                        PackPath(packs_dir_, loc.pack_id));
    }
    counters_->Add(Statistic::kBlocksRead);
    auto blk = std::make_shared<CachedBlock>();
    blk->data = ShareWithPool(std::move(raw), buffers_);
    blk->size = loc.raw_len;
    CacheInsert(ck, blk, alone);
    return blk;
  }();
  promise.set_value(result);
  std::lock_guard lock(load_mu_);
  loading_.erase(ck);
  return result;
}

void ObjectStore::Prefetch(ObjectKind kind, const Hash& hash, std::function<bool()> still_wanted) {
  // Optional work: dropped when the pool is busy, so it never delays demand reads for long.
  pool_.Submit(
      [this, kind, hash, wanted = std::move(still_wanted)] {
        if (!wanted || wanted()) (void)Get(kind, hash);
      },
      pool_.size() * 2);
}

size_t ObjectStore::block_cache_bytes() {
  std::lock_guard lock(cache_mu_);
  return cache_bytes_;
}

void ObjectStore::DropIfAlone(ObjectKind kind, const Hash& hash) {
  CacheKey ck{};
  {
    std::lock_guard lock(loc_mu_);
    auto it = locations_.find(ObjectKey{hash, kind});
    if (it == locations_.end()) return;  // not read through the catalog: nothing to drop
    ck = CacheKey{it->second.loc.pack_id, it->second.loc.offset};
  }
  std::shared_ptr<CachedBlock> victim;  // released after the lock: its buffer goes to the pool
  std::lock_guard lock(cache_mu_);
  auto it = cache_.find(ck);
  if (it == cache_.end() || !it->second.alone) return;  // shared blocks stay
  victim = it->second.block;
  CacheEraseLocked(it);
}

Result<ObjectData> ObjectStore::Extract(const std::shared_ptr<CachedBlock>& blk,
                                        const ObjectKey& key, uint32_t offset, uint32_t size,
                                        const BlockLocation& loc) {
  const auto& data = *blk->data;
  if (uint64_t{offset} + size > blk->size)
    return Status::Corruption("object " + key.hash.hex() + " lies outside its block");
  std::span<const uint8_t> bytes(data.data() + offset, size);
  {
    std::lock_guard lock(blk->mu);
    if (!blk->verified.count(offset)) {
      if (Hash::Of(bytes) != key.hash) {
        counters_->Add(Statistic::kCorruptObjects);
        std::string msg = std::string(KindName(key.kind)) + " " + key.hash.hex() + " (" +
                          std::to_string(size) + " bytes) in " + PackPath(packs_dir_, loc.pack_id) +
                          " is damaged: its bytes do not match their SHA-256; run `stashfs fsck "
                          "--repair`";
        LogError(msg);
        return Status::Corruption(msg);
      }
      blk->verified.insert(offset);
    }
  }
  return ObjectData{blk->data, bytes};
}

Result<ObjectData> ObjectStore::GetFromCatalog(const ObjectKey& key, bool retry, bool use_cache) {
  Location where;
  bool cached = false;
  if (use_cache) {
    std::lock_guard lock(loc_mu_);
    auto it = locations_.find(key);
    if (it != locations_.end()) {
      where = it->second;
      cached = true;
    }
  }
  if (!cached) {
    ASSIGN_OR_RETURN(auto r, catalog_->read());
    ASSIGN_OR_RETURN(auto row, catalog::FindObjectLocation(r.db(), key));
    if (!row) {
      return Status::NotFound(std::string(KindName(key.kind)) + " " + key.hash.hex() +
                              " is not in the store");
    }
    if (row->block_id == 0 || !row->has_block) {
      return Status::Corruption(std::string(KindName(key.kind)) + " " + key.hash.hex() +
                                " was lost (fsck found its stored data damaged); rewrite the files "
                                "that use it, and it is healed everywhere");
    }
    where.offset = row->offset;
    where.size = row->size;
    where.loc = row->loc;
  }
  auto blk = LoadBlock(where.loc, where.alone());
  auto data = blk.ok() ? Extract(*blk, key, where.offset, where.size, where.loc)
                       : Result<ObjectData>(blk.status());
  if (data.ok()) {
    // Only locations whose bytes verified are remembered: damage is re-checked at the source.
    if (!cached) RememberLocation(key, where);
    return data;
  }
  if (cached) {
    // A remembered location may be stale: gc moved the object, or fsck marked it lost and a
    // writer healed it elsewhere. The catalog decides.
    {
      std::lock_guard lock(loc_mu_);
      locations_.erase(key);
    }
    return GetFromCatalog(key, retry, false);
  }
  if (retry && !blk.ok() &&
      (blk.status().errno_value() == ENOENT || blk.status().code() == Code::kCorruption)) {
    // gc may have moved the object between our query and the read: ask once more.
    ForgetPack(where.loc.pack_id);
    return GetFromCatalog(key, false, false);
  }
  return data;
}

void ObjectStore::RememberLocation(const ObjectKey& key, const Location& where) {
  std::lock_guard lock(loc_mu_);
  // Bounded without bookkeeping: when full, start over (a lookup costs one indexed query).
  if (locations_.size() >= kLocationCacheEntries) locations_.clear();
  locations_[key] = where;
}

Result<ObjectData> ObjectStore::Get(ObjectKind kind, const Hash& hash) {
  counters_->Add(Statistic::kGets);
  ObjectKey key{hash, kind};
  std::optional<Location> staged;
  {
    std::lock_guard lock(mu_);
    auto it = pending_.find(key);
    if (it != pending_.end()) {
      const Pending& p = it->second;
      if (p.open) {
        // The open block keeps growing under mu_; hand out a copy.
        auto copy = std::make_shared<std::vector<uint8_t>>(p.open->raw.begin() + p.offset,
                                                           p.open->raw.begin() + p.offset + p.size);
        std::span<const uint8_t> bytes(copy->data(), copy->size());
        return ObjectData{std::move(copy), bytes};
      }
      staged = Location{p.loc, p.offset, p.size};
    }
  }
  if (staged) {
    ASSIGN_OR_RETURN(auto blk, LoadBlock(staged->loc, staged->alone()));
    return Extract(blk, key, staged->offset, staged->size, staged->loc);
  }
  return GetFromCatalog(key, true, true);
}

Result<bool> ObjectStore::Has(ObjectKind kind, const Hash& hash) {
  {
    std::lock_guard lock(mu_);
    if (pending_.count(ObjectKey{hash, kind})) return true;
  }
  ASSIGN_OR_RETURN(auto r, catalog_->read());
  return catalog::HasStoredObject(r.db(), ObjectKey{hash, kind});
}

ObjectStore::BlockCheck ObjectStore::VerifyBlock(const BlockLocation& loc,
                                                 const std::vector<BlockEntry>& entries) {
  BlockCheck out;
  std::vector<uint8_t> stored, raw;
  out.status = packs_.ReadPayload(loc, &stored);
  if (out.status.ok()) out.status = Decompress(loc.codec, stored, loc.raw_len, &raw);
  if (!out.status.ok()) {
    out.bad = entries;
    return out;
  }
  for (const auto& e : entries) {
    if (uint64_t{e.offset} + e.size > raw.size() ||
        Hash::Of(std::span<const uint8_t>(raw.data() + e.offset, e.size)) != e.hash)
      out.bad.push_back(e);
  }
  return out;
}

}  // namespace stashfs
