#include "store/maintenance.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "store/catalog_maintenance.h"
#include "store/catalog_objects.h"
#include "store/codec.h"
#include "store/pack.h"
#include "store/sqlite.h"

namespace stashfs {

namespace {

Result<std::unique_ptr<FileLock>> LockMaintenance(Store& store) {
  auto lock = FileLock::TryExclusive(store.run_dir() + "/maintenance.lock");
  if (!lock.ok() && lock.status().code() == Code::kBusy) {
    return Status::Busy("another gc, prune or fsck is running on store " + store.dir() +
                        "; wait for it to finish");
  }
  return lock;
}

uint64_t FileSizeOr0(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

// The pack files on disk, by id.
std::map<int64_t, std::string> PackFilesOnDisk(Store& store) {
  std::map<int64_t, std::string> out;
  std::error_code ec;
  for (auto& sub : std::filesystem::directory_iterator(store.objects().packs_dir(), ec)) {
    if (!sub.is_directory()) continue;
    for (auto& f : std::filesystem::directory_iterator(sub.path(), ec)) {
      std::string name = f.path().filename().string();
      if (name.size() != 21 || name.substr(16) != ".pack") continue;
      std::string digits = name.substr(0, 16);  // strtoll's end pointer points into it
      char* end = nullptr;
      long long id = std::strtoll(digits.c_str(), &end, 16);
      if (*end == '\0') out[id] = f.path().string();
    }
  }
  return out;
}

struct PackUse {
  int64_t id;
  int state;
  uint64_t live;  // bytes of blocks that keep at least one live object
  uint64_t file;  // bytes of the file on disk
};

// Live bytes per pack, counting only blocks with an object that is referenced or pinned.
Result<std::vector<PackUse>> PackUsage(Store& store) {
  ASSIGN_OR_RETURN(auto r, store.catalog().read());
  ASSIGN_OR_RETURN(auto rows, catalog::PackLiveBytes(r.db()));
  std::vector<PackUse> out;
  for (const auto& p : rows)
    out.push_back(
        {p.id, p.state, p.live, FileSizeOr0(PackPath(store.objects().packs_dir(), p.id))});
  return out;
}

// Writes blocks into new packs owned by this process (gc's compaction output).
class PackAppender {
 public:
  explicit PackAppender(Store& store) : store_(store) {}
  // `block` is header then payload, `header_len` long and described by `h`.
  Result<BlockLocation> Append(std::span<const uint8_t> block, size_t header_len,
                               const BlockHeader& h) {
    if (!file_ || size_ >= store_.objects().options().pack_target) RETURN_IF_ERROR(Roll());
    RETURN_IF_ERROR(file_->pwrite(size_, block.data(), block.size()));
    BlockLocation loc{id_,          size_,     static_cast<uint32_t>(header_len),
                      h.stored_len, h.raw_len, h.codec};
    size_ += block.size();
    return loc;
  }
  Status Sync() { return file_ ? file_->sync(false) : Status::Ok(); }
  int64_t id() const { return id_; }
  uint64_t size() const { return size_; }
  // Marks every pack written sealed.
  Status Seal() {
    RETURN_IF_ERROR(Sync());
    auto w = store_.catalog().write();
    for (auto& [id, size] : sizes_) {
      if (id == id_) size = size_;
      RETURN_IF_ERROR(catalog::SealPack(w.db(), id, size));
    }
    return Status::Ok();
  }

 private:
  Status Roll() {
    if (file_) {
      RETURN_IF_ERROR(file_->sync(false));
      sizes_[id_] = size_;
    }
    {
      auto w = store_.catalog().write();
      ASSIGN_OR_RETURN(
          id_, catalog::InsertOpenPack(w.db(), store_.writer_id(), store_.env()->NowSeconds()));
    }
    std::string path = PackPath(store_.objects().packs_dir(), id_);
    std::string dir = path.substr(0, path.find_last_of('/'));
    RETURN_IF_ERROR(store_.env()->MakeDirs(dir, 0700));
    ASSIGN_OR_RETURN(file_, store_.env()->Open(path, O_RDWR | O_CREAT | O_EXCL, 0600));
    auto header = EncodePackHeader();
    RETURN_IF_ERROR(file_->pwrite(0, header.data(), header.size()));
    RETURN_IF_ERROR(file_->sync(true));
    RETURN_IF_ERROR(store_.env()->SyncDir(dir));
    size_ = kPackHeaderSize;
    sizes_[id_] = size_;
    return Status::Ok();
  }
  Store& store_;
  std::unique_ptr<File> file_;
  int64_t id_ = 0;
  uint64_t size_ = 0;
  std::map<int64_t, uint64_t> sizes_;
};

using ObjRow = catalog::BlockObject;

// Rewrites the live blocks of pack `pack_id` into `out` and drops the old pack.
Status CompactPack(Store& store, int64_t pack_id, PackAppender& out) {
  struct Block {
    int64_t id;
    BlockLocation loc;
    std::vector<ObjRow> objs;
  };
  std::vector<Block> blocks;
  {
    ASSIGN_OR_RETURN(auto r, store.catalog().read());
    ASSIGN_OR_RETURN(auto rows, catalog::BlocksOfPack(r.db(), pack_id));
    for (const auto& b : rows)
      blocks.push_back({b.id, b.loc, {}});
    for (auto& b : blocks) {
      ASSIGN_OR_RETURN(b.objs, catalog::ObjectsOfBlock(r.db(), b.id));
    }
  }
  ASSIGN_OR_RETURN(auto file, store.objects().packs().Get(pack_id));
  struct Moved {
    BlockLocation loc;
    std::vector<std::pair<int64_t, uint32_t>> objects;  // object id -> new offset
  };
  std::vector<Moved> moved;
  for (const auto& b : blocks) {
    if (b.objs.empty()) continue;
    std::vector<uint8_t> bytes(b.loc.header_len + b.loc.stored_len);
    size_t got = 0;
    RETURN_IF_ERROR(file->pread(b.loc.offset, bytes.data(), bytes.size(), &got));
    if (got != bytes.size())
      return Status::Corruption("pack " + std::to_string(pack_id) + " is short");
    size_t hlen = 0;
    ASSIGN_OR_RETURN(BlockHeader h, DecodeBlockHeader(bytes, &hlen));
    Moved m;
    if (h.entries.size() == b.objs.size()) {
      // Fully live: copy the block as it is.
      ASSIGN_OR_RETURN(m.loc, out.Append(bytes, hlen, h));
      for (const auto& o : b.objs)
        m.objects.emplace_back(o.id, o.offset);
    } else {
      // Partly dead: keep only the live objects, re-verified on the way.
      std::vector<uint8_t> raw;
      RETURN_IF_ERROR(Decompress(b.loc.codec,
                                 std::span<const uint8_t>(bytes.data() + hlen, b.loc.stored_len),
                                 b.loc.raw_len, &raw));
      BlockHeader nh;
      std::vector<uint8_t> live;
      for (const auto& o : b.objs) {
        std::span<const uint8_t> data(raw.data() + o.offset, o.size);
        if (uint64_t{o.offset} + o.size > raw.size() || Hash::Of(data) != o.hash)
          return Status::Corruption("object " + o.hash.hex() +
                                    " is damaged; run `stashfs fsck --repair`");
        nh.entries.push_back({o.kind, static_cast<uint32_t>(live.size()), o.size, o.hash});
        m.objects.emplace_back(o.id, static_cast<uint32_t>(live.size()));
        live.insert(live.end(), data.begin(), data.end());
      }
      std::vector<uint8_t> block;
      size_t block_hlen =
          EncodeBlock(live, store.objects().options().compression_level, &nh, &block);
      ASSIGN_OR_RETURN(m.loc, out.Append(block, block_hlen, nh));
    }
    moved.push_back(std::move(m));
  }
  RETURN_IF_ERROR(out.Sync());
  {
    auto w = store.catalog().write();
    Txn txn(w.db());
    RETURN_IF_ERROR(txn.Begin());
    for (const auto& m : moved) {
      ASSIGN_OR_RETURN(int64_t block, catalog::InsertBlock(w.db(), m.loc));
      for (const auto& [id, off] : m.objects)
        RETURN_IF_ERROR(catalog::MoveObject(w.db(), id, block, off));
    }
    RETURN_IF_ERROR(catalog::DeleteBlocksOfPack(w.db(), pack_id));
    RETURN_IF_ERROR(catalog::DeletePack(w.db(), pack_id));
    RETURN_IF_ERROR(catalog::SetPackSize(w.db(), out.id(), out.size()));
    RETURN_IF_ERROR(txn.Commit());
  }
  // Readers that looked the old location up before the commit retry on ENOENT.
  store.objects().ForgetPack(pack_id);
  return store.env()->Remove(PackPath(store.objects().packs_dir(), pack_id));
}

Result<GcReport> CollectGarbageLocked(Store& store, const GcOptions& o) {
  GcReport r;
  RETURN_IF_ERROR(store.ReapDeadWriters());
  ASSIGN_OR_RETURN(r.disk_bytes_before, DiskUsage(store));
  auto& cat = store.catalog();
  // 1. Objects nothing references and no writer pins. Their children were released when their
  // own count reached zero, so deleting them needs no walk.
  if (o.dry_run) {
    ASSIGN_OR_RETURN(auto rd, cat.read());
    ASSIGN_OR_RETURN(auto g, catalog::CountGarbage(rd.db()));
    r.objects_deleted = g.objects;
    r.object_bytes_deleted = g.bytes;
  } else {
    for (;;) {
      auto w = cat.write();
      Txn txn(w.db());
      RETURN_IF_ERROR(txn.Begin());
      // Small transactions: mounts committing meanwhile wait at most one batch.
      ASSIGN_OR_RETURN(auto g, catalog::DeleteGarbageBatch(w.db()));
      uint64_t n = g.objects;
      r.object_bytes_deleted += g.bytes;
      RETURN_IF_ERROR(txn.Commit());
      r.objects_deleted += n;
      if (n == 0) break;
    }
    auto w = cat.write();
    RETURN_IF_ERROR(catalog::DeleteEmptyBlocks(w.db()));
  }
  // 2. Packs: delete the empty, rewrite the mostly dead. Open packs belong to live writers.
  ASSIGN_OR_RETURN(auto usage, PackUsage(store));
  uint64_t freed = 0;
  std::unique_ptr<PackAppender> out;
  size_t done = 0;
  for (const auto& p : usage) {
    if (o.progress) o.progress(++done, usage.size());
    if (p.state != 1) continue;
    if (p.live == 0) {
      r.packs_deleted++;
      freed += p.file;
      if (o.dry_run) continue;
      {
        auto w = cat.write();
        Txn txn(w.db());
        RETURN_IF_ERROR(txn.Begin());
        RETURN_IF_ERROR(catalog::DeleteBlocksOfPack(w.db(), p.id));
        RETURN_IF_ERROR(catalog::DeletePack(w.db(), p.id));
        RETURN_IF_ERROR(txn.Commit());
      }
      store.objects().ForgetPack(p.id);
      RETURN_IF_ERROR(store.env()->Remove(PackPath(store.objects().packs_dir(), p.id)));
      continue;
    }
    uint64_t waste = p.file > p.live + kPackHeaderSize ? p.file - p.live - kPackHeaderSize : 0;
    if (waste < o.compact_min_bytes ||
        static_cast<double>(p.live) >= o.compact_below * static_cast<double>(p.file))
      continue;
    r.packs_compacted++;
    freed += waste;
    if (o.dry_run) continue;
    if (!out) out = std::make_unique<PackAppender>(store);
    RETURN_IF_ERROR(CompactPack(store, p.id, *out));
  }
  if (out) RETURN_IF_ERROR(out->Seal());
  // 3. Pack files no catalog row names (left by a crash between creating a pack's row and its
  // file, or after deleting the row). The directory is listed before the rows are read, so a
  // pack created meanwhile always has its row already.
  auto files = PackFilesOnDisk(store);
  std::set<int64_t> rows;
  {
    ASSIGN_OR_RETURN(auto rd, cat.read());
    ASSIGN_OR_RETURN(auto ids, catalog::ListPackIds(rd.db()));
    rows.insert(ids.begin(), ids.end());
  }
  for (const auto& [id, path] : files) {
    if (rows.count(id)) continue;
    r.orphan_files_removed++;
    freed += FileSizeOr0(path);
    if (!o.dry_run) RETURN_IF_ERROR(store.env()->Remove(path));
  }
  if (o.dry_run) {
    r.disk_bytes_after = r.disk_bytes_before > freed ? r.disk_bytes_before - freed : 0;
  } else {
    RETURN_IF_ERROR(cat.Checkpoint());
    ASSIGN_OR_RETURN(r.disk_bytes_after, DiskUsage(store));
  }
  return r;
}

}  // namespace

Result<uint64_t> DiskUsage(Store& store) {
  uint64_t total = 0;
  for (const auto& [id, path] : PackFilesOnDisk(store))
    total += FileSizeOr0(path);
  for (const char* suffix : {"", "-wal"})
    total += FileSizeOr0(store.catalog().path() + suffix);
  return total;
}

Result<GcReport> EstimateGarbage(Store& store) {
  GcOptions o;
  o.dry_run = true;
  return CollectGarbageLocked(store, o);
}

Result<GcReport> CollectGarbage(Store& store, const GcOptions& o) {
  ASSIGN_OR_RETURN(auto lock, LockMaintenance(store));
  return CollectGarbageLocked(store, o);
}

Result<PruneReport> Prune(Store& store, const PruneOptions& o) {
  ASSIGN_OR_RETURN(auto lock, LockMaintenance(store));
  PruneReport rep;
  RETURN_IF_ERROR(store.ReapDeadWriters());
  ASSIGN_OR_RETURN(rep.disk_bytes_before, DiskUsage(store));
  uint64_t size = rep.disk_bytes_before;
  int64_t now = store.env()->NowSeconds();
  for (int round = 0; round < 8; ++round) {
    // What live mounts use: their volumes, and the snapshots they were restored from.
    std::set<std::string> restored;
    std::set<int64_t> mounted;
    ASSIGN_OR_RETURN(auto vols, store.ListVolumes());
    ASSIGN_OR_RETURN(auto mounts, store.LiveMounts());
    for (const auto& m : mounts)
      mounted.insert(m.volume_id);
    for (const auto& v : vols)
      if (v.ephemeral && !v.source.empty()) restored.insert(v.source);
    struct Candidate {
      std::string kind, name;
      int64_t id, last_used;
      Hash root;
    };
    std::vector<Candidate> cands;
    ASSIGN_OR_RETURN(auto snaps, store.ListSnapshots());
    for (const auto& s : snaps) {
      if (o.keep.count(s.key)) continue;
      if (restored.count(s.key)) {
        if ((o.max_age && s.last_used < now - o.max_age) || (o.max_size && size > o.max_size))
          rep.kept_in_use.push_back("snapshot '" + s.key + "' (a live mount restored it)");
        continue;
      }
      cands.push_back({"snapshot", s.key, s.id, s.last_used, s.root});
    }
    for (const auto& v : vols) {
      if (v.ephemeral) continue;
      if (mounted.count(v.id)) {
        if ((o.max_age && v.last_used < now - o.max_age) || (o.max_size && size > o.max_size))
          rep.kept_in_use.push_back("volume '" + v.name + "' (mounted)");
        continue;
      }
      cands.push_back({"volume", v.name, v.id, v.last_used, v.root});
    }
    std::sort(cands.begin(), cands.end(), [](const Candidate& a, const Candidate& b) {
      return a.last_used != b.last_used ? a.last_used < b.last_used : a.id < b.id;
    });
    std::vector<std::pair<Candidate, Evicted>> chosen;
    uint64_t projected = size;
    ReleaseEstimator sim(store);
    for (const auto& c : cands) {
      bool old = o.max_age && c.last_used < now - o.max_age;
      bool big = o.max_size && projected > o.max_size;
      if (!old && !big) {
        if (!o.max_age) break;  // LRU order: nothing later is older either
        continue;
      }
      ASSIGN_OR_RETURN(uint64_t excl, sim.Drop(c.root));
      projected = projected > excl ? projected - excl : 0;
      chosen.push_back({c, {c.kind, c.name, c.last_used, excl, old ? "age" : "size"}});
    }
    if (chosen.empty()) break;
    for (auto& [c, e] : chosen) {
      if (!o.dry_run) {
        if (c.kind == "snapshot") {
          RETURN_IF_ERROR(store.DeleteSnapshot(c.id));
        } else {
          ASSIGN_OR_RETURN(auto v, store.FindVolumeById(c.id));
          auto vlock = store.LockVolume(v);
          if (!vlock.ok()) continue;  // mounted meanwhile: keep it
          RETURN_IF_ERROR(store.DeleteVolume(c.id));
        }
      }
      rep.evicted.push_back(e);
    }
    if (o.dry_run) {
      size = projected;
      break;
    }
    GcOptions go;
    go.progress = o.progress;
    ASSIGN_OR_RETURN(GcReport g, CollectGarbageLocked(store, go));
    rep.gc.objects_deleted += g.objects_deleted;
    rep.gc.object_bytes_deleted += g.object_bytes_deleted;
    rep.gc.packs_deleted += g.packs_deleted;
    rep.gc.packs_compacted += g.packs_compacted;
    size = g.disk_bytes_after;
    // Evicting one snapshot can make data another held in common its own, so the estimate
    // undercounts; go round again until under the limit or out of candidates.
    if (!o.max_size || size <= o.max_size) break;
  }
  rep.disk_bytes_after = size;
  return rep;
}

// ---- fsck --------------------------------------------------------------------------------

namespace {

struct ObjectInfo {
  int64_t id;
  int64_t refs;
  int64_t block_id;
  int64_t expected = 0;
  bool damaged = false;
};

}  // namespace

Result<FsckReport> Fsck(Store& store, const FsckOptions& o) {
  ASSIGN_OR_RETURN(auto lock, LockMaintenance(store));
  FsckReport rep;
  RETURN_IF_ERROR(store.ReapDeadWriters());
  auto& cat = store.catalog();
  auto problem = [&](const std::string& s) {
    if (rep.problems.size() < 1000) rep.problems.push_back(s);
  };

  // 1. SQLite's own check of the catalog file.
  {
    ASSIGN_OR_RETURN(auto r, cat.read());
    RETURN_IF_ERROR(
        catalog::IntegrityCheck(r.db(), [&](const std::string& m) { problem("catalog: " + m); }));
  }

  // 2. Every object and its location, read in one transaction (a consistent snapshot while
  // mounts keep committing).
  std::unordered_map<ObjectKey, ObjectInfo, ObjectKeyHasher> objects;
  struct BlockRow {
    BlockLocation loc;
    std::vector<BlockEntry> entries;
    std::vector<ObjectKey> keys;
    int64_t verified;
  };
  std::map<int64_t, BlockRow> blocks;
  std::vector<std::pair<std::string, Hash>> roots;  // "snapshot 'k'" / "volume 'v'", root
  std::map<int64_t, uint64_t> pack_sizes;
  {
    ASSIGN_OR_RETURN(auto r, cat.read());
    ReadTxn snapshot(r.db());
    RETURN_IF_ERROR(snapshot.Begin());
    RETURN_IF_ERROR(
        catalog::ForEachPack(r.db(), [&](int64_t id, uint64_t size) { pack_sizes[id] = size; }));
    RETURN_IF_ERROR(catalog::ForEachBlock(r.db(), [&](int64_t id, const BlockLocation& loc) {
      BlockRow b;
      b.loc = loc;
      b.verified = INT64_MAX;
      blocks[id] = std::move(b);
    }));
    RETURN_IF_ERROR(catalog::ForEachObject(r.db(), [&](const catalog::ObjectRow& row) {
      const ObjectKey& k = row.key;
      objects[k] = {row.id, row.refs, row.block_id};
      if (row.block_id == 0) return;  // already known lost
      auto b = blocks.find(row.block_id);
      if (b == blocks.end()) {
        problem(std::string(KindName(k.kind)) + " " + k.hash.hex() +
                ": its block is missing from the catalog");
        objects[k].damaged = true;
        return;
      }
      b->second.entries.push_back({k.kind, row.offset, row.size, k.hash});
      b->second.keys.push_back(k);
      b->second.verified = std::min(b->second.verified, row.verified);
    }));
    RETURN_IF_ERROR(
        catalog::ForEachSnapshotRoot(r.db(), [&](const std::string& key, const Hash& h) {
          roots.emplace_back("snapshot '" + key + "'", h);
        }));
    RETURN_IF_ERROR(catalog::ForEachVolumeRoot(r.db(), [&](const std::string& name, const Hash& h) {
      roots.emplace_back("volume '" + name + "'", h);
    }));
  }

  // 3. Packs present and long enough; then re-hash stored data (all, or a sample of the
  // least recently verified blocks).
  std::set<int64_t> bad_blocks;
  for (auto& [id, b] : blocks) {
    std::string path = PackPath(store.objects().packs_dir(), b.loc.pack_id);
    if (!pack_sizes.count(b.loc.pack_id)) {
      problem("block " + std::to_string(id) + ": its pack is missing from the catalog");
      bad_blocks.insert(id);
      continue;
    }
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      problem("pack " + path + " is missing (" + std::to_string(b.keys.size()) + " objects lost)");
      bad_blocks.insert(id);
      continue;
    }
    if (static_cast<uint64_t>(st.st_size) < b.loc.offset + b.loc.header_len + b.loc.stored_len) {
      problem("pack " + path + " is shorter than its catalogued blocks");
      bad_blocks.insert(id);
    }
  }
  std::vector<int64_t> order;
  for (const auto& [id, b] : blocks)
    if (!bad_blocks.count(id) && !b.keys.empty()) order.push_back(id);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return blocks[a].verified < blocks[b].verified; });
  size_t n_check = static_cast<size_t>(std::ceil(static_cast<double>(order.size()) *
                                                 std::clamp(o.sample_percent, 0.0, 100.0) / 100));
  order.resize(std::min(order.size(), n_check));
  uint64_t total_bytes = 0;
  for (int64_t id : order)
    total_bytes += blocks[id].loc.raw_len;
  std::vector<int64_t> verified_ok;
  for (int64_t id : order) {
    auto& b = blocks[id];
    auto check = store.objects().VerifyBlock(b.loc, b.entries);
    rep.blocks_checked++;
    rep.objects_checked += b.entries.size();
    rep.bytes_checked += b.loc.raw_len;
    if (o.progress) o.progress(rep.bytes_checked, total_bytes);
    if (!check.status.ok()) {
      problem("block at offset " + std::to_string(b.loc.offset) + " of " +
              PackPath(store.objects().packs_dir(), b.loc.pack_id) + ": " + check.status.message());
    }
    for (const auto& e : check.bad) {
      objects[ObjectKey{e.hash, e.kind}].damaged = true;
      if (check.status.ok())
        problem(std::string(KindName(e.kind)) + " " + e.hash.hex() + " in " +
                PackPath(store.objects().packs_dir(), b.loc.pack_id) +
                " does not match its SHA-256");
    }
    if (check.bad.empty()) verified_ok.push_back(id);
  }
  for (int64_t id : bad_blocks)
    for (const auto& k : blocks[id].keys)
      objects[k].damaged = true;

  // 4. Reference counts, recomputed from the roots; and which roots reach damaged data.
  std::unordered_map<ObjectKey, bool, ObjectKeyHasher> reaches_damage;
  std::vector<ObjectKey> missing;
  std::function<Result<bool>(const ObjectKey&)> walk = [&](const ObjectKey& k) -> Result<bool> {
    auto memo = reaches_damage.find(k);
    if (memo != reaches_damage.end()) return memo->second;
    auto it = objects.find(k);
    if (it == objects.end()) {
      missing.push_back(k);
      return reaches_damage[k] = true;
    }
    bool damaged = it->second.damaged || it->second.block_id == 0;
    reaches_damage[k] = damaged;  // provisional, also breaks any cycle a corrupt store might have
    if (!KindHasChildren(k.kind) || damaged) return damaged;
    auto data = store.objects().Get(k.kind, k.hash);
    if (!data.ok()) {
      it->second.damaged = true;
      problem(std::string(KindName(k.kind)) + " " + k.hash.hex() + ": " + data.status().message());
      return reaches_damage[k] = true;
    }
    auto children = ChildrenOf(k.kind, data->bytes);
    if (!children.ok()) {
      it->second.damaged = true;
      problem(std::string(KindName(k.kind)) + " " + k.hash.hex() + ": " +
              children.status().message());
      return reaches_damage[k] = true;
    }
    bool any = false;
    for (const auto& c : *children) {
      ObjectKey ck{c.hash, c.kind};
      auto child = objects.find(ck);
      if (child != objects.end()) child->second.expected++;
      // A child's own children are counted once, when it is first reached.
      if (child == objects.end() || child->second.expected == 1 || reaches_damage.count(ck)) {
        ASSIGN_OR_RETURN(bool d, walk(ck));
        any |= d;
      }
    }
    return reaches_damage[k] = any;
  };
  for (const auto& [name, root] : roots) {
    ObjectKey k{root, ObjectKind::kRoot};
    auto it = objects.find(k);
    if (it != objects.end()) it->second.expected++;
    auto d = walk(k);
    if (!d.ok()) return d.status();
    if (*d) {
      if (name.rfind("snapshot ", 0) == 0)
        rep.damaged_snapshots.push_back(name);
      else
        rep.damaged_volumes.push_back(name);
    }
  }
  for (const auto& k : missing)
    problem(std::string(KindName(k.kind)) + " " + k.hash.hex() +
            " is referenced but not in the store");
  std::vector<std::pair<int64_t, int64_t>> ref_fixes;  // object id, delta
  for (const auto& [k, info] : objects) {
    if (info.refs != info.expected) {
      rep.refcount_errors++;
      ref_fixes.emplace_back(info.id, info.expected - info.refs);
      if (rep.refcount_errors <= 5)
        problem(std::string(KindName(k.kind)) + " " + k.hash.hex() + " has reference count " +
                std::to_string(info.refs) + ", expected " + std::to_string(info.expected));
    }
  }
  if (rep.refcount_errors > 5)
    problem(std::to_string(rep.refcount_errors) + " objects have wrong reference counts in all");
  std::vector<int64_t> newly_damaged;
  for (const auto& [k, info] : objects)
    if (info.damaged && info.block_id != 0) newly_damaged.push_back(info.id);
  rep.damaged_objects = newly_damaged.size();
  for (const auto& s : rep.damaged_snapshots)
    problem(s + " refers to damaged or lost data");
  for (const auto& v : rep.damaged_volumes)
    problem(v + " refers to damaged or lost data");

  // 5. Record verification times; with --repair, isolate the damage.
  {
    auto w = cat.write();
    Txn txn(w.db());
    RETURN_IF_ERROR(txn.Begin());
    int64_t now = store.env()->NowSeconds();
    for (int64_t id : verified_ok)
      RETURN_IF_ERROR(catalog::SetBlockVerified(w.db(), id, now));
    if (o.repair && rep.problems.size() > 0) {
      for (int64_t id : newly_damaged)
        RETURN_IF_ERROR(catalog::MarkObjectLost(w.db(), id));
      // Deltas, not absolute values: commits since our snapshot applied their own changes.
      for (const auto& [id, delta] : ref_fixes)
        RETURN_IF_ERROR(catalog::FixObjectRefs(w.db(), id, delta));
      for (int64_t id : bad_blocks)
        RETURN_IF_ERROR(catalog::DeleteBlock(w.db(), id));
      rep.repaired = true;
    }
    RETURN_IF_ERROR(txn.Commit());
  }
  if (o.repair) {
    // The damaged marks follow what the data is now: set where damage is reachable, cleared
    // where it was healed (a writer stored the lost bytes again). Without --repair, fsck only
    // reports.
    auto w = cat.write();
    Txn txn(w.db());
    RETURN_IF_ERROR(txn.Begin());
    RETURN_IF_ERROR(catalog::ClearDamagedMarks(w.db()));
    for (const auto& s : rep.damaged_snapshots)
      RETURN_IF_ERROR(catalog::MarkSnapshotDamaged(w.db(), s.substr(10, s.size() - 11)));
    for (const auto& v : rep.damaged_volumes)
      RETURN_IF_ERROR(catalog::MarkVolumeDamaged(w.db(), v.substr(8, v.size() - 9)));
    RETURN_IF_ERROR(txn.Commit());
  }
  return rep;
}

}  // namespace stashfs
