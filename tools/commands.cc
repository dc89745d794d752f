#include "tools/commands.h"

#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <iomanip>
#include <sstream>

#include "fs/session.h"
#include "store/maintenance.h"
#include "tools/control.h"
#include "tools/format.h"
#include "tools/mounts.h"

namespace stashfs::cli {

LogSink LogTo(Io& io) {
  return [&io](LogLevel, std::string_view message) { io.err << "stashfs: " << message << "\n"; };
}

Io Io::Std() {
  return Io{std::cout, std::cerr, static_cast<bool>(isatty(2))};
}

int Fail(Io& io, const Status& s) {
  io.err << "stashfs: " << (s.message().empty() ? std::strerror(s.errno_value()) : s.message())
         << "\n";
  return kExitError;
}

std::string StoreDir(const GlobalOptions& g) {
  return AbsolutePath(g.store.empty() ? DefaultStoreDir() : g.store);
}

Result<std::unique_ptr<Store>> OpenStore(const GlobalOptions& g, bool create) {
  StoreOptions so;
  so.dir = StoreDir(g);
  so.create = create;
  return Store::Open(so);
}

GlobalOptions ForMount(const GlobalOptions& g, const std::string& dir) {
  if (!g.store.empty()) return g;
  auto m = FindMount(dir);
  if (!m || m->fstype != "fuse.stashfs") return g;
  size_t colon = m->source.rfind(':');
  if (colon == std::string::npos || colon == 0 || m->source[0] != '/') return g;
  GlobalOptions out = g;
  out.store = m->source.substr(0, colon);
  return out;
}

Result<MountInfo> DaemonFor(Store& store, const std::string& dir) {
  ASSIGN_OR_RETURN(auto mounts, store.LiveMounts());
  for (const auto& m : mounts)
    if (m.mountpoint == dir) return m;
  return Status::NotFound(dir + " is not mounted from store " + store.dir() +
                          "; pass the --store it was mounted with");
}

int CmdUmount(const GlobalOptions& g, const std::string& in_dir, Io& io) {
  std::string dir = AbsolutePath(in_dir);
  auto m = FindMount(dir);
  if (!m) return Fail(io, Status::NotFound(dir + " is not mounted"));
  if (m->fstype != "fuse.stashfs") {
    return Fail(
        io, Status::Invalid(dir + " is not a stashfs mount (it is " + m->fstype + "); use umount"));
  }
  // statfs always reaches the daemon (stat may be answered from the kernel's attribute cache),
  // so ENOTCONN here means nobody serves the mount any more.
  struct statfs sfs;
  bool dead = ::statfs(dir.c_str(), &sfs) != 0 && errno == ENOTCONN;
  auto store = OpenStore(ForMount(g, dir), false);
  if (!store.ok() && !dead) return Fail(io, store.status());
  Result<MountInfo> daemon =
      store.ok() ? DaemonFor(**store, dir) : Result<MountInfo>(store.status());
  if (!daemon.ok()) {
    if (!dead) return Fail(io, daemon.status());
    // The daemon died (crash, SIGKILL, OOM): the kernel mount is an empty shell. Remove it so
    // the directory is usable again; the volume keeps its last commit.
    Status s = fs::UnmountPath(dir, true);
    if (!s.ok()) return Fail(io, s);
    io.err << "stashfs: the daemon serving " << dir
           << " had stopped; unmounted it. Data written after its last commit is lost; the "
              "volume is intact at that commit\n";
    return kExitError;
  }
  auto reply = ControlRequest(static_cast<pid_t>(daemon->pid), {{"cmd", "umount"}}, true);
  if (!reply.ok()) return Fail(io, reply.status());
  if (!reply->value("ok", false))
    return Fail(io, Status::Relayed(reply->value("error", "unmount failed")));
  io.out << "stashfs: " << reply->value("message", "unmounted " + dir) << "\n";
  return kExitOk;
}

int CmdStatus(const GlobalOptions& g, const std::string& in_dir, bool json, Io& io) {
  std::string dir = AbsolutePath(in_dir);
  auto store = OpenStore(ForMount(g, dir), false);
  if (!store.ok()) return Fail(io, store.status());
  auto daemon = DaemonFor(**store, dir);
  if (!daemon.ok()) return Fail(io, daemon.status());
  auto reply = ControlRequest(static_cast<pid_t>(daemon->pid), {{"cmd", "status"}});
  if (!reply.ok()) return Fail(io, reply.status());
  Json r = *reply;
  r.erase("final");
  r.erase("ok");
  if (json) {
    io.out << r.dump(2) << "\n";
    return kExitOk;
  }
  auto str = [&](const char* k) {
    return r.contains(k) && r[k].is_string() ? r[k].get<std::string>() : "";
  };
  io.out << "mountpoint:        " << str("mountpoint") << "\n"
         << "store:             " << str("store") << "\n";
  if (!str("key").empty()) {
    std::string result = str("result");
    io.out << "key:               " << str("key") << "\n"
           << "restored:          "
           << (result == "exact"     ? "exact hit"
               : result == "partial" ? "from restore key '" + str("matched_key") + "'"
                                     : std::string("miss (started empty)"))
           << "\n";
  } else {
    io.out << "volume:            " << str("volume") << "\n";
  }
  io.out << "mode:              " << (r.value("read_only", false) ? "read-only" : "read-write")
         << "\n"
         << "daemon pid:        " << r.value("pid", 0) << "\n"
         << "read from store:   " << FormatSize(r.value("bytes_read_from_store", 0ull)) << " in "
         << r.value("files_read_from_store", 0ull) << " files\n"
         << "written:           " << FormatSize(r.value("bytes_written", 0ull)) << " ("
         << FormatSize(r.value("bytes_stored_new", 0ull)) << " new to the store), "
         << r.value("files_created", 0ull) << " files created\n"
         << "lookups:           " << r.value("lookups", 0ull) << " ("
         << r.value("negative_lookups", 0ull) << " for names that were not there)\n"
         << "commits:           " << r.value("commits", 0ull) << "\n";
  return kExitOk;
}

int CmdStats(const GlobalOptions& g, bool json, Io& io) {
  auto store = OpenStore(g, false);
  if (!store.ok()) return Fail(io, store.status());
  auto st = (*store)->Stats();
  if (!st.ok()) return Fail(io, st.status());
  const StoreStats& s = *st;
  double dedup = s.unique_bytes
                     ? static_cast<double>(s.logical_bytes) / static_cast<double>(s.unique_bytes)
                     : 0;
  double compression =
      s.stored_bytes ? static_cast<double>(s.object_bytes) / static_cast<double>(s.stored_bytes)
                     : 0;
  double overall = s.stored_bytes
                       ? static_cast<double>(s.logical_bytes) / static_cast<double>(s.stored_bytes)
                       : 0;
  if (json) {
    Json j = {{"store", (*store)->dir()},
              {"logical_bytes", s.logical_bytes},
              {"files", s.logical_files},
              {"unique_bytes", s.unique_bytes},
              {"object_bytes", s.object_bytes},
              {"stored_bytes", s.stored_bytes},
              {"catalog_bytes", s.catalog_bytes},
              {"dedup_ratio", dedup},
              {"compression_ratio", compression},
              {"space_saving_ratio", overall},
              {"objects", s.objects},
              {"chunks", s.chunks},
              {"blocks", s.blocks},
              {"packs", s.packs},
              {"unreferenced_objects", s.unreferenced_objects},
              {"volumes", s.volumes},
              {"snapshots", s.snapshots}};
    auto garbage = EstimateGarbage(**store);
    j["reclaimable_bytes"] =
        garbage.ok() ? Json(garbage->disk_bytes_before - garbage->disk_bytes_after) : Json(nullptr);
    auto counters = (*store)->Counters();
    if (counters.ok()) {
      // Every statistic the store keeps a total of, 0 until a mount counted one; and any name a
      // newer stashfs wrote, so nothing in the table is hidden.
      Json c = Json::object();
      for (const auto& info : AllStatistics())
        if (info.persisted) c[std::string(info.name)] = 0;
      for (const auto& [k, v] : *counters)
        c[k] = v;
      j["counters"] = c;
    }
    io.out << j.dump(2) << "\n";
    return kExitOk;
  }
  auto ratio = [](double r) {
    std::ostringstream o;
    o << std::fixed << std::setprecision(2) << r << "x";
    return o.str();
  };
  io.out << "store:              " << (*store)->dir() << "\n"
         << "volumes/snapshots:  " << s.volumes << " / " << s.snapshots << "\n"
         << "logical data:       " << FormatSize(s.logical_bytes) << " in " << s.logical_files
         << " files\n"
         << "unique data:        " << FormatSize(s.unique_bytes) << " (dedup " << ratio(dedup)
         << ")\n"
         << "stored on disk:     " << FormatSize(s.stored_bytes) << " in " << s.packs
         << " packs (compression " << ratio(compression) << ", overall " << ratio(overall) << ")\n"
         << "catalog:            " << FormatSize(s.catalog_bytes) << "\n"
         << "reclaimable by gc:  " <<
      [&] {
        auto garbage = EstimateGarbage(**store);
        return garbage.ok() ? FormatSize(garbage->disk_bytes_before - garbage->disk_bytes_after)
                            : std::string("unknown (") + garbage.status().message() + ")";
      }() << "\n"
         << "objects:            " << s.objects << " (" << s.chunks << " chunks, " << s.blocks
         << " blocks, " << s.unreferenced_objects << " unreferenced)\n";
  // The totals mounts added at unmount, described by the statistics table.
  auto counters = (*store)->Counters();
  if (counters.ok() && !counters->empty()) {
    io.out << "since the store was created:\n";
    for (const auto& [name, v] : *counters) {
      auto id = StatisticNamed(name);
      io.out << "  " << std::left << std::setw(22) << name << " " << std::setw(12) << v << " "
             << (id ? Describe(*id).description : std::string_view("")) << "\n";
    }
  }
  return kExitOk;
}

}  // namespace stashfs::cli
