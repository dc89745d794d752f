// Commands about keys and volumes: save, ls, rm, export, import.
#include <unistd.h>

#include <csignal>
#include <cstring>

#include <algorithm>
#include <iomanip>

#include "store/archive.h"
#include "tools/commands.h"
#include "tools/control.h"
#include "tools/format.h"
#include "tools/mounts.h"
#include "tools/progress.h"

namespace stashfs::cli {

int CmdSave(const GlobalOptions& g, const std::string& in_dir, const std::string& key, bool update,
            Io& io) {
  if (Status s = ValidateName("key", key, 512); !s.ok()) return Fail(io, s);
  std::string dir = AbsolutePath(in_dir);
  auto store = OpenStore(ForMount(g, dir), false);
  if (!store.ok()) return Fail(io, store.status());
  ASSIGN_OR_RETURN_FAIL(auto daemon, DaemonFor(**store, dir), io);
  auto reply = ControlRequest(static_cast<pid_t>(daemon.pid),
                              {{"cmd", "save"}, {"key", key}, {"update", update}});
  if (!reply.ok()) return Fail(io, reply.status());
  if (!reply->value("ok", false))
    return Fail(io, Status::Relayed(reply->value("error", "save failed")));
  io.out << "stashfs: " << reply->value("message", "saved") << "\n";
  return kExitOk;
}

int CmdList(const GlobalOptions& g, bool json, Io& io) {
  auto store = OpenStore(g, false);
  if (!store.ok()) return Fail(io, store.status());
  auto snaps = (*store)->ListSnapshots();
  if (!snaps.ok()) return Fail(io, snaps.status());
  auto vols = (*store)->ListVolumes();
  if (!vols.ok()) return Fail(io, vols.status());
  auto mounts = (*store)->LiveMounts();
  if (!mounts.ok()) return Fail(io, mounts.status());
  int64_t now = (*store)->env()->NowSeconds();
  Json out = {{"snapshots", Json::array()}, {"volumes", Json::array()}};
  for (const auto& s : *snaps) {
    auto only = (*store)->ExclusiveStoredBytes(s.root);
    if (!only.ok()) return Fail(io, only.status());
    out["snapshots"].push_back({{"key", s.key},
                                {"created", s.created},
                                {"last_used", s.last_used},
                                {"logical_bytes", s.logical_bytes},
                                {"files", s.files},
                                {"exclusive_stored_bytes", *only},
                                {"damaged", s.damaged}});
  }
  for (const auto& v : *vols) {
    if (v.ephemeral) continue;  // private volumes of key mounts are listed with their mount
    auto root = (*store)->ReadRoot(v.root);
    auto only = (*store)->ExclusiveStoredBytes(v.root);
    if (!only.ok()) return Fail(io, only.status());
    if (!root.ok()) root = RootRecord{};  // a damaged root: listed with size 0; fsck says more
    Json mounted = nullptr;
    for (const auto& m : *mounts)
      if (m.volume_id == v.id) mounted = m.mountpoint;
    out["volumes"].push_back({{"name", v.name},
                              {"created", v.created},
                              {"last_used", v.last_used},
                              {"logical_bytes", root->total_bytes},
                              {"files", root->total_files},
                              {"exclusive_stored_bytes", *only},
                              {"mounted_at", mounted}});
  }
  out["mounts"] = Json::array();
  for (const auto& m : *mounts) {
    out["mounts"].push_back({{"mountpoint", m.mountpoint}, {"pid", m.pid}, {"started", m.started}});
  }
  if (json) {
    io.out << out.dump(2) << "\n";
    return kExitOk;
  }
  auto row = [&](const std::string& kind, const Json& e, const std::string& name) {
    io.out << std::left << std::setw(9) << kind << std::setw(44) << name << std::right
           << std::setw(11) << FormatSize(e["logical_bytes"].get<uint64_t>()) << std::setw(11)
           << FormatSize(e["exclusive_stored_bytes"].get<uint64_t>()) << "  " << std::setw(6)
           << FormatAge(now - e["created"].get<int64_t>()) << std::setw(7)
           << FormatAge(now - e["last_used"].get<int64_t>());
    if (e.contains("mounted_at") && e["mounted_at"].is_string())
      io.out << "  mounted at " << e["mounted_at"].get<std::string>();
    if (e.value("damaged", false)) io.out << "  DAMAGED";
    io.out << "\n";
  };
  io.out << std::left << std::setw(9) << "TYPE" << std::setw(44) << "KEY / VOLUME" << std::right
         << std::setw(11) << "SIZE" << std::setw(11) << "ONLY-IT"
         << "  " << std::setw(6) << "AGE" << std::setw(7) << "USED"
         << "\n";
  for (const auto& e : out["snapshots"])
    row("snapshot", e, e["key"].get<std::string>());
  for (const auto& e : out["volumes"])
    row("volume", e, e["name"].get<std::string>());
  return kExitOk;
}

int CmdRemove(const GlobalOptions& g, const std::string& name, const std::string& only, Io& io) {
  auto store = OpenStore(g, false);
  if (!store.ok()) return Fail(io, store.status());
  auto snap = (*store)->FindSnapshot(name);
  auto vol = (*store)->FindVolume(name);
  if (!snap.ok()) return Fail(io, snap.status());
  if (!vol.ok()) return Fail(io, vol.status());
  bool s = *snap && only != "volume", v = *vol && !(*vol)->ephemeral && only != "snapshot";
  if (s && v) {
    return Fail(io, Status::Invalid("'" + name +
                                    "' is both a snapshot key and a volume; say which "
                                    "with --snapshot or --volume"));
  }
  if (s) {
    if (Status st = (*store)->DeleteSnapshot((*snap)->id); !st.ok()) return Fail(io, st);
    io.out << "stashfs: removed snapshot '" << name << "'; its data is freed by the next "
           << "`stashfs gc`\n";
    return kExitOk;
  }
  if (v) {
    auto lock = (*store)->LockVolume(**vol);
    if (!lock.ok()) return Fail(io, lock.status());
    if (Status st = (*store)->DeleteVolume((*vol)->id); !st.ok()) return Fail(io, st);
    io.out << "stashfs: removed volume '" << name << "'; its data is freed by the next "
           << "`stashfs gc`\n";
    return kExitOk;
  }
  return Fail(io,
              Status::NotFound("no snapshot or volume named '" + name + "' (see `stashfs ls`)"));
}

namespace {

// The export's temporary file, for the signal handler: fixed storage, because a handler may
// only make async-signal-safe calls (unlink, signal, raise).
char export_tmp[4096];

void RemoveExportTmp(int sig) {
  if (export_tmp[0]) ::unlink(export_tmp);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

}  // namespace

int CmdExport(const GlobalOptions& g, const std::string& key, const std::string& file, Io& io) {
  auto store = OpenStore(g, false);
  if (!store.ok()) return Fail(io, store.status());
  auto snap = (*store)->FindSnapshot(key);
  if (!snap.ok()) return Fail(io, snap.status());
  if (!*snap)
    return Fail(io, Status::NotFound("no snapshot with key '" + key + "' (see `stashfs ls`)"));
  // Ctrl-C (or a CI timeout's SIGTERM) must not leave a half-written FILE.tmp behind.
  std::string tmp = ExportTempPath(AbsolutePath(file));
  if (tmp.size() < sizeof export_tmp) {
    std::memcpy(export_tmp, tmp.c_str(), tmp.size() + 1);
    for (int sig : {SIGINT, SIGTERM, SIGHUP})
      ::signal(sig, RemoveExportTmp);
  }
  Progress progress(io, "exporting");
  auto info = ExportSnapshot(**store, **snap, AbsolutePath(file),
                             [&](uint64_t d, uint64_t t) { progress.Update(d, t); });
  progress.Done();
  if (!info.ok()) return Fail(io, info.status());
  io.out << "stashfs: exported '" << key << "' to " << file << " (" << info->files << " files, "
         << FormatSize(info->logical_bytes) << " in a " << FormatSize(info->file_bytes)
         << " file)\n";
  return kExitOk;
}

int CmdImport(const GlobalOptions& g, const std::string& file, const std::string& key, Io& io) {
  if (!key.empty())
    if (Status s = ValidateName("key", key, 512); !s.ok()) return Fail(io, s);
  auto store = OpenStore(g, true);
  if (!store.ok()) return Fail(io, store.status());
  auto writer = (*store)->RegisterWriter("import:" + AbsolutePath(file));
  if (!writer.ok()) return Fail(io, writer.status());
  Progress progress(io, "importing");
  auto info = ImportSnapshot(**store, AbsolutePath(file), key,
                             [&](uint64_t d, uint64_t t) { progress.Update(d, t); });
  progress.Done();
  if (!info.ok()) {
    if (info.status().code() == Code::kAlreadyExists) {
      io.out << "stashfs: " << info.status().message() << "; left unchanged\n";
      return kExitOk;
    }
    return Fail(io, info.status().context("importing " + file));
  }
  if (Status s = (*store)->UnregisterWriter(); !s.ok()) return Fail(io, s);
  io.out << "stashfs: imported '" << info->key << "' (" << info->files << " files, "
         << FormatSize(info->logical_bytes) << "; " << info->new_objects << " of " << info->objects
         << " objects were new)\n";
  return kExitOk;
}

}  // namespace stashfs::cli
