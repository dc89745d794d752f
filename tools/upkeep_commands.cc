// Commands that keep a store healthy: gc, prune, fsck, config (the store side is
// store/maintenance.cc).
#include <iomanip>

#include "store/config.h"
#include "store/maintenance.h"
#include "tools/commands.h"
#include "tools/control.h"
#include "tools/format.h"
#include "tools/progress.h"

namespace stashfs::cli {

namespace {

// A writer registration for the commands that write packs (gc compaction) and must never be
// mistaken for a dead one while they run.
Result<std::unique_ptr<Store>> OpenForMaintenance(const GlobalOptions& g, const std::string& what) {
  ASSIGN_OR_RETURN(auto store, OpenStore(g, false));
  ASSIGN_OR_RETURN(int64_t id, store->RegisterWriter(what));
  (void)id;
  return store;
}

Json GcJson(const GcReport& r) {
  return {{"objects_deleted", r.objects_deleted},
          {"object_bytes_deleted", r.object_bytes_deleted},
          {"packs_deleted", r.packs_deleted},
          {"packs_compacted", r.packs_compacted},
          {"orphan_files_removed", r.orphan_files_removed},
          {"disk_bytes_before", r.disk_bytes_before},
          {"disk_bytes_after", r.disk_bytes_after}};
}

}  // namespace

int CmdGc(const GlobalOptions& g, bool dry_run, bool json, Io& io) {
  ASSIGN_OR_RETURN_FAIL(auto store, OpenForMaintenance(g, "gc"), io);
  Progress progress(io, dry_run ? "gc (dry run): packs" : "gc: packs");
  GcOptions o;
  o.dry_run = dry_run;
  o.progress = [&](uint64_t d, uint64_t t) { progress.Update(d, t); };
  auto r = CollectGarbage(*store, o);
  progress.Done();
  if (!r.ok()) return Fail(io, r.status());
  if (json) {
    Json j = GcJson(*r);
    j["dry_run"] = dry_run;
    io.out << j.dump(2) << "\n";
    return kExitOk;
  }
  uint64_t freed =
      r->disk_bytes_before > r->disk_bytes_after ? r->disk_bytes_before - r->disk_bytes_after : 0;
  io.out << "stashfs: gc" << (dry_run ? " (dry run) would free " : " freed ") << FormatSize(freed)
         << ": " << r->objects_deleted << " unreferenced objects ("
         << FormatSize(r->object_bytes_deleted) << " uncompressed), " << r->packs_deleted
         << " packs deleted, " << r->packs_compacted << " compacted; store is "
         << FormatSize(r->disk_bytes_after) << (dry_run ? " after it" : " now") << "\n";
  return kExitOk;
}

// Prunes by the given limits, or by the store's configured ones.
int CmdPrune(const GlobalOptions& g, const std::string& max_size, const std::string& max_age,
             bool dry_run, bool json, Io& io) {
  PruneOptions o;
  o.dry_run = dry_run;
  if (!max_size.empty()) {
    ASSIGN_OR_RETURN_FAIL(o.max_size, ParseSize(max_size), io);
  }
  if (!max_age.empty()) {
    ASSIGN_OR_RETURN_FAIL(o.max_age, ParseAge(max_age), io);
  }
  ASSIGN_OR_RETURN_FAIL(auto store, OpenForMaintenance(g, "prune"), io);
  if (max_size.empty() && max_age.empty()) {
    ASSIGN_OR_RETURN_FAIL(Config c, LoadConfig(store->env(), store->dir()), io);
    o.max_size = c.max_size;
    o.max_age = c.max_age;
    if (!o.max_size && !o.max_age) {
      return Fail(io, Status::Invalid("nothing to prune by: give --max-size and/or --max-age, or "
                                      "set them with `stashfs config max_size 20G`"));
    }
  }
  Progress progress(io, "prune: packs");
  o.progress = [&](uint64_t d, uint64_t t) { progress.Update(d, t); };
  auto r = Prune(*store, o);
  progress.Done();
  if (!r.ok()) return Fail(io, r.status());
  if (json) {
    Json ev = Json::array();
    for (const auto& e : r->evicted)
      ev.push_back({{"kind", e.kind},
                    {"name", e.name},
                    {"last_used", e.last_used},
                    {"exclusive_bytes", e.exclusive_bytes},
                    {"reason", e.reason}});
    io.out << Json{{"dry_run", dry_run},
                   {"evicted", ev},
                   {"kept_in_use", r->kept_in_use},
                   {"disk_bytes_before", r->disk_bytes_before},
                   {"disk_bytes_after", r->disk_bytes_after},
                   {"gc", GcJson(r->gc)}}
                  .dump(2)
           << "\n";
    return kExitOk;
  }
  int64_t now = store->env()->NowSeconds();
  for (const auto& e : r->evicted) {
    io.out << (dry_run ? "would evict " : "evicted ") << e.kind << " '" << e.name << "' (last used "
           << FormatAge(now - e.last_used) << " ago, " << FormatSize(e.exclusive_bytes)
           << " only it held; " << (e.reason == "age" ? "older than --max-age" : "over --max-size")
           << ")\n";
  }
  for (const auto& k : r->kept_in_use)
    io.out << "kept " << k << "\n";
  io.out << "stashfs: prune" << (dry_run ? " (dry run)" : "") << ": " << r->evicted.size()
         << " evicted; store " << FormatSize(r->disk_bytes_before) << " -> "
         << FormatSize(r->disk_bytes_after) << (dry_run ? " (estimated)" : "") << "\n";
  if (!dry_run && o.max_size && r->disk_bytes_after > o.max_size) {
    io.err << "stashfs: the store is still over " << FormatSize(o.max_size)
           << ": what is left is in use by live mounts\n";
  }
  return kExitOk;
}

int CmdFsck(const GlobalOptions& g, bool repair, double sample, bool json, Io& io) {
  if (!(sample > 0 && sample <= 100))
    return Fail(io, Status::Invalid("--sample must be a percentage above 0 and at most 100"));
  ASSIGN_OR_RETURN_FAIL(auto store, OpenForMaintenance(g, "fsck"), io);
  Progress progress(io, "fsck: verifying");
  FsckOptions o;
  o.repair = repair;
  o.sample_percent = sample;
  o.progress = [&](uint64_t d, uint64_t t) { progress.Update(d, t); };
  auto r = Fsck(*store, o);
  progress.Done();
  if (!r.ok()) return Fail(io, r.status());
  int code = r->clean() ? kExitOk : r->repaired ? kExitRepaired : kExitDamage;
  if (json) {
    io.out << Json{{"clean", r->clean()},
                   {"repaired", r->repaired},
                   {"problems", r->problems},
                   {"blocks_checked", r->blocks_checked},
                   {"objects_checked", r->objects_checked},
                   {"bytes_checked", r->bytes_checked},
                   {"damaged_objects", r->damaged_objects},
                   {"refcount_errors", r->refcount_errors},
                   {"damaged_snapshots", r->damaged_snapshots},
                   {"damaged_volumes", r->damaged_volumes},
                   {"exit_code", code}}
                  .dump(2)
           << "\n";
    return code;
  }
  for (const auto& p : r->problems)
    io.out << "problem: " << p << "\n";
  io.out << "stashfs: fsck checked " << r->objects_checked << " objects in " << r->blocks_checked
         << " blocks (" << FormatSize(r->bytes_checked) << ")";
  if (r->clean()) {
    io.out << ": no problems\n";
  } else if (r->repaired) {
    io.out << ": " << r->problems.size() << " problems; repaired: " << r->damaged_objects
           << " damaged objects isolated (reads of them give EIO; writing the same data again "
              "heals them), "
           << r->refcount_errors << " reference counts corrected\n";
  } else {
    io.out << ": " << r->problems.size()
           << " problems; run `stashfs fsck --repair` to isolate them\n";
  }
  return code;
}

int CmdConfig(const GlobalOptions& g, const std::string& key, const std::string& value, bool unset,
              Io& io) {
  std::string dir = StoreDir(g);
  if (key.empty()) {
    ASSIGN_OR_RETURN_FAIL(Config c, LoadConfig(Env::Default(), dir), io);
    for (const auto& k : ConfigKeys()) {
      io.out << std::left << std::setw(22) << k.name << std::setw(10) << c.text[k.name] << "  ("
             << c.source[k.name] << ")  " << k.help << "\n";
    }
    return kExitOk;
  }
  if (value.empty() && !unset) {
    ASSIGN_OR_RETURN_FAIL(Config c, LoadConfig(Env::Default(), dir), io);
    if (!c.text.count(key)) return Fail(io, Config().Set(key, "", ""));
    io.out << c.text[key] << "\n";
    return kExitOk;
  }
  // Setting needs the store to exist: a typo in --store must not create one.
  ASSIGN_OR_RETURN_FAIL(auto store, OpenStore(g, false), io);
  if (Status s = WriteStoreConfig(store->env(), store->dir(), key, unset ? "" : value); !s.ok())
    return Fail(io, s);
  io.out << "stashfs: " << key << (unset ? " unset" : " = " + value) << " in "
         << StoreConfigPath(store->dir()) << "\n";
  return kExitOk;
}

}  // namespace stashfs::cli
