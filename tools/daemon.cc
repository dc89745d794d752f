// `stashfs mount`: the mount daemon's life from start-up to the final commit.
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <optional>
#include <thread>

#include "fs/session.h"
#include "fs/volume.h"
#include "store/config.h"
#include "store/log.h"
#include "store/maintenance.h"
#include "tools/commands.h"
#include "tools/control.h"
#include "tools/format.h"
#include "tools/mounts.h"

namespace stashfs::cli {

namespace {

// Reports the start-up outcome to whoever waits for it: the parent over a pipe when the daemon
// runs in the background, or the terminal in the foreground.
void ReportMounted(const MountOptions& opts, const Json& info, Io& io);

class Ready {
 public:
  Ready(int fd, const MountOptions& opts, Io& io) : fd_(fd), opts_(opts), io_(io) {}
  void Ok(const Json& info) { Send("OK " + info.dump()); }
  void Error(const Status& s) { Send("ERR " + s.message()); }

 private:
  void Send(const std::string& line) {
    if (reported_) return;
    reported_ = true;
    if (fd_ < 0) {
      if (line.rfind("ERR ", 0) == 0) {
        io_.err << "stashfs: " << line.substr(4) << "\n";
      } else {
        ReportMounted(opts_, Json::parse(line.substr(3)), io_);
      }
      io_.out.flush();
      io_.err.flush();
      return;
    }
    std::string l = line + "\n";
    (void)!::write(fd_, l.data(), l.size());
    ::close(fd_);
    fd_ = -1;
  }
  int fd_;
  const MountOptions& opts_;
  Io& io_;
  bool reported_ = false;
};

// How a --key mount was restored.
struct KeyState {
  bool enabled = false;
  std::string key;
  std::string result;       // "exact", "partial" or "miss"
  std::string matched_key;  // the snapshot restored, if any
  bool damaged = false;     // fsck found data of it lost
  uint64_t files = 0;
  uint64_t bytes = 0;
};

struct Daemon {
  MountOptions opts;
  Config config;
  KeyState key;
  std::unique_ptr<Store> store;
  VolumeInfo volume_info;
  std::unique_ptr<FileLock> volume_lock;
  std::unique_ptr<fs::Volume> volume;
  std::unique_ptr<fs::FuseSession> session;
  std::unique_ptr<ControlServer> control;
  std::mutex mu;
  std::vector<std::shared_ptr<ControlConnection>> umount_waiters;  // guarded by mu
  std::optional<Json> final_result;                                // guarded by mu
  // Held while a control request or a signal uses the session or the volume. The main thread
  // takes it to set `closing` once the request loop ends, so neither is used while it tears
  // them down.
  std::mutex use_mu;
  bool closing = false;  // guarded by use_mu

  Json StatusJson() {
    auto opt = [](bool has, const std::string& v) { return has ? Json(v) : Json(nullptr); };
    Json j = {{"ok", true},
              {"final", true},
              {"pid", getpid()},
              {"mountpoint", opts.dir},
              {"store", store->dir()},
              {"volume", opt(!key.enabled, volume_info.name)},
              {"key", opt(key.enabled, key.key)},
              {"result", opt(key.enabled, key.result)},
              {"matched_key", opt(!key.matched_key.empty(), key.matched_key)},
              {"read_only", opts.read_only},
              {"committed_root", volume->committed_root().hex()},
              // Whether the kernel took FUSE_HANDLE_KILLPRIV_V2 (fs/kernel_io.h): without it every
              // write(2) costs a GETXATTR round trip.
              {"kernel_killpriv_v2", session->context().io.killpriv_v2.load()},
              {"requests", Requests()}};
    // What this mount counted: every per-mount entry of the statistics table, by its name, at
    // the top level where scripts have read them since before the table existed.
    for (const auto& s : AllStatistics())
      if (s.per_mount) j[std::string(s.name)] = store->statistics().Get(s.id);
    return j;
  }

  // FUSE requests served so far, by kind: count and mean latency in microseconds.
  Json Requests() {
    Json out = Json::object();
    const auto& ctx = session->context();
    for (int i = 0; i < static_cast<int>(fs::FuseOp::kCount); ++i) {
      uint64_t n = ctx.ops[i].count.load();
      if (!n) continue;
      out[fs::FuseOpName(static_cast<fs::FuseOp>(i))] = {
          {"count", n},
          {"mean_us",
           static_cast<double>(ctx.ops[i].nanos.load()) / 1000.0 / static_cast<double>(n)}};
    }
    return out;
  }

  // Snapshots the live tree under `k` (stashfs save).
  Json Save(const std::string& k, bool update) {
    Status s = ValidateName("key", k, 512);
    if (s.ok() && opts.read_only) s = Status::Invalid("a read-only mount cannot be saved");
    if (s.ok()) s = session->SyncKernelCache();
    if (s.ok()) s = volume->Sync();
    if (!s.ok()) return {{"ok", false}, {"final", true}, {"error", s.message()}};
    auto snap = store->CreateSnapshot(k, volume->committed_root(), update);
    if (!snap.ok() && snap.status().code() == Code::kAlreadyExists) {
      return {{"ok", true},
              {"final", true},
              {"saved", false},
              {"message", "key '" + k + "' already exists; left unchanged (--update moves it)"}};
    }
    if (!snap.ok()) return {{"ok", false}, {"final", true}, {"error", snap.status().message()}};
    return {{"ok", true},
            {"final", true},
            {"saved", true},
            {"message", std::string(update ? "saved (updated) key '" : "saved key '") + k + "' (" +
                            std::to_string(snap->files) + " files, " +
                            FormatSize(snap->logical_bytes) + ")"}};
  }

  // At unmount the key of a --key mount is saved if it is new; an existing key is never an error.
  Result<std::string> SaveKeyAtExit() {
    if (opts.read_only) return "read-only mount: key '" + key.key + "' not saved";
    if (opts.no_save) return "--no-save: key '" + key.key + "' not saved";
    if (key.result == "exact") return "key '" + key.key + "' was restored exactly; left unchanged";
    auto snap = store->CreateSnapshot(key.key, volume->committed_root(), false);
    if (!snap.ok() && snap.status().code() == Code::kAlreadyExists)
      return "key '" + key.key + "' was saved by another job meanwhile; left unchanged";
    if (!snap.ok()) return snap.status();
    return "saved key '" + key.key + "' (" + std::to_string(snap->files) + " files, " +
           FormatSize(snap->logical_bytes) + "; " +
           FormatSize(store->statistics().Get(Statistic::kBytesStoredNew)) + " of new data stored)";
  }

  // ccache-style automatic cleanup: once the store is over max_size, prune it down to the low
  // watermark, so the next saves do not each have to prune again.
  // `keep`: the key this job just saved, which pruning it away again would make pointless.
  std::string AutoPrune(const std::string& keep) {
    if (!config.max_size) return "";
    auto usage = DiskUsage(*store);
    if (!usage.ok() || *usage <= config.max_size) return "";
    PruneOptions po;
    po.max_size =
        static_cast<uint64_t>(static_cast<double>(config.max_size) * config.prune_low_watermark);
    po.max_age = config.max_age;
    if (!keep.empty()) po.keep.insert(keep);
    auto r = Prune(*store, po);
    if (!r.ok()) {
      LogWarning("automatic prune: " + r.status().message());
      return r.status().code() == Code::kBusy ? ""
                                              : "automatic prune failed: " + r.status().message();
    }
    return "pruned " + std::to_string(r->evicted.size()) +
           " least recently used snapshots/volumes (store " + FormatSize(r->disk_bytes_before) +
           " -> " + FormatSize(r->disk_bytes_after) + ", max_size " + FormatSize(config.max_size) +
           ")";
  }

  // Adds what this mount counted to the store's totals (`stashfs stats`): every persisted entry
  // of the statistics table. Key hits and misses were added when the key was restored, so that
  // a mount that crashes still counts.
  void RecordCounters() {
    store->statistics().Add(Statistic::kMounts);
    for (const auto& s : AllStatistics()) {
      uint64_t v = store->statistics().Get(s.id);
      if (!s.persisted || v == 0) continue;
      Status st = store->AddCounter(std::string(s.name), static_cast<int64_t>(v));
      if (!st.ok()) LogWarning(st.message());
    }
  }

  void HandleControl(const Json& req, std::shared_ptr<ControlConnection> conn) {
    std::string cmd = req.value("cmd", "");
    std::lock_guard use(use_mu);
    if (closing) {
      // The mount is going away: an unmount request hears how that ended, others are refused.
      std::lock_guard lock(mu);
      if (cmd != "umount") {
        conn->Send({{"ok", false},
                    {"final", true},
                    {"error", "the mount at " + opts.dir +
                                  " is being unmounted; try again "
                                  "after it is gone"}});
      } else if (final_result) {
        conn->Send(*final_result);
      } else {
        umount_waiters.push_back(conn);
      }
      return;
    }
    if (cmd == "status") {
      conn->Send(StatusJson());
    } else if (cmd == "sync") {
      Status s = session->SyncKernelCache();
      if (s.ok()) s = volume->Sync();
      conn->Send({{"ok", s.ok()}, {"final", true}, {"error", s.message()}});
    } else if (cmd == "save") {
      Json reply = Save(req.value("key", ""), req.value("update", false));
      if (reply.value("saved", false)) {
        std::string pruned = AutoPrune(req.value("key", ""));
        if (!pruned.empty()) reply["message"] = reply.value("message", "") + "; " + pruned;
      }
      conn->Send(reply);
    } else if (cmd == "umount") {
      // Make the data safe while still mounted, so a busy mount fails without losing anything;
      // the final commit after the loop ends covers what is written in between.
      Status s = session->SyncKernelCache();
      if (s.ok()) s = volume->Sync();
      if (s.ok()) {
        std::lock_guard lock(mu);
        umount_waiters.push_back(conn);
      }
      if (s.ok()) s = session->Unmount(false);
      if (!s.ok()) {
        std::lock_guard lock(mu);
        std::erase(umount_waiters, conn);
        conn->Send({{"ok", false}, {"final", true}, {"error", s.message()}});
      }
    } else {
      conn->Send(
          {{"ok", false}, {"final", true}, {"error", "unknown control command '" + cmd + "'"}});
    }
  }

  void Finish(const Json& result) {
    std::lock_guard lock(mu);
    final_result = result;
    for (auto& c : umount_waiters)
      c->Send(result);
    umount_waiters.clear();
  }
};

// SIGTERM/SIGINT/SIGHUP unmount lazily after pushing the kernel's dirty pages to us, so the
// request loop ends only once nothing uses the mount and every write has reached the volume.
void SignalThread(Daemon* d, sigset_t set) {
  int sig;
  while (sigwait(&set, &sig) == 0) {
    std::lock_guard use(d->use_mu);
    if (d->closing) continue;  // already unmounting; the session may be gone
    LogInfo(std::string(strsignal(sig)) + " received, unmounting " + d->opts.dir);
    (void)d->session->SyncKernelCache();
    Status s = d->session->Unmount(true);
    if (!s.ok()) LogError(s.message());
  }
}

Result<VolumeInfo> ResolveVolume(Store& store, const std::string& name) {
  ASSIGN_OR_RETURN(auto found, store.FindVolume(name));
  if (found) return *found;
  ASSIGN_OR_RETURN(Hash root, store.PutEmptyRoot(getuid(), getgid(), 0755));
  auto created = store.CreateVolume(name, root, false, "");
  if (created.ok() || created.status().code() != Code::kAlreadyExists) return created;
  ASSIGN_OR_RETURN(found, store.FindVolume(name));  // lost a creation race: use theirs
  if (!found) return Status::Corruption("volume '" + name + "' vanished");
  return *found;
}

// Restores a cache key as actions/cache does: the exact key, else the newest snapshot whose key
// starts with each restore key in turn, else an empty tree; into a private volume.
Result<VolumeInfo> RestoreKey(Store& store, const MountOptions& opts, KeyState* ks) {
  ks->enabled = true;
  ks->key = opts.key;
  std::optional<SnapshotInfo> snap;
  ASSIGN_OR_RETURN(snap, store.FindSnapshot(opts.key));
  if (snap) {
    ks->result = "exact";
  } else {
    for (const auto& prefix : opts.restore_keys) {
      ASSIGN_OR_RETURN(snap, store.NewestSnapshotWithPrefix(prefix));
      if (snap) break;
    }
    ks->result = snap ? "partial" : "miss";
  }
  Hash root;
  if (snap) {
    if (snap->damaged) {
      LogWarning("snapshot '" + snap->key +
                 "' is marked damaged by fsck; files that lost data read as EIO");
    }
    ks->matched_key = snap->key;
    ks->damaged = snap->damaged;
    ks->files = snap->files;
    ks->bytes = snap->logical_bytes;
    root = snap->root;
    RETURN_IF_ERROR(store.TouchSnapshot(snap->id));
  } else {
    ASSIGN_OR_RETURN(root, store.PutEmptyRoot(getuid(), getgid(), 0755));
  }
  Statistic counter = ks->result == "exact"     ? Statistic::kKeyHitsExact
                      : ks->result == "partial" ? Statistic::kKeyHitsRestoreKey
                                                : Statistic::kKeyMisses;
  RETURN_IF_ERROR(store.AddCounter(std::string(Describe(counter).name), 1));
  return store.CreateVolume(Store::EphemeralVolumeName(store.writer_id()), root, true,
                            ks->matched_key);
}

std::string KeyMessage(const KeyState& ks, const MountOptions& opts) {
  std::string size = " (" + std::to_string(ks.files) + " files, " + FormatSize(ks.bytes) + ")";
  std::string save =
      opts.read_only || opts.no_save ? "" : "; '" + ks.key + "' will be saved at umount";
  std::string damage = ks.damaged ? "; WARNING: fsck found some of its data damaged: those "
                                    "files read as I/O errors (see `stashfs fsck`)"
                                  : "";
  if (ks.result == "exact")
    return "cache hit: restored key '" + ks.key + "'" + size + " at " + opts.dir + damage;
  if (ks.result == "partial") {
    return "cache hit on a restore key: restored '" + ks.matched_key + "'" + size + " at " +
           opts.dir + save + damage;
  }
  return "cache miss: no snapshot for '" + ks.key + "'" +
         (opts.restore_keys.empty() ? "" : " or its restore keys") + "; " + opts.dir +
         " starts empty" + save;
}

// Blocks the signals that stop a mount before any thread starts (opening the store starts its
// worker pool), so only SignalThread sees them; one that arrives while starting up is handled
// once it runs.
sigset_t BlockStopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return set;
}

// A detached daemon's messages go to the store's log, which every mount of the store shares:
// each line says when, which daemon and which mount, as syslog would.
void LogToStore(const std::string& store_dir, const std::string& mountpoint) {
  int log =
      ::open((store_dir + "/stashfs.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log >= 0) {
    ::dup2(log, 2);
    ::close(log);
  }
  std::string who = "stashfs[" + std::to_string(::getpid()) + "] " + mountpoint + ": ";
  SetLogSink([who](LogLevel level, std::string_view message) {
    char when[32];
    std::time_t now = std::time(nullptr);
    struct tm tm;
    ::gmtime_r(&now, &tm);
    std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ ", &tm);
    std::string line = when + who;
    if (level == LogLevel::kError) line += "error: ";
    if (level == LogLevel::kWarning) line += "warning: ";
    line.append(message);
    line.push_back('\n');
    (void)!::write(2, line.data(), line.size());
  });
}

// Opens the store, finds or restores the volume, locks it and mounts it; on success *info is
// what the mount reports to the user (the start-up line, and --output json).
Status StartMount(Daemon& d, const GlobalOptions& g, bool detached, sigset_t signals, Json* info) {
  const MountOptions& opts = d.opts;
  StoreOptions so;
  so.dir = StoreDir(g);
  ASSIGN_OR_RETURN(d.config, LoadConfig(Env::Default(), so.dir));
  so.objects.compression_level = d.config.compression_level;
  so.objects.block_cache_bytes = d.config.block_cache_size;
  auto store = Store::Open(so);
  if (!store.ok()) return store.status().context("opening store " + so.dir);
  d.store = std::move(*store);
  if (detached) LogToStore(d.store->dir(), opts.dir);
  RETURN_IF_ERROR(d.store->RegisterWriter(opts.dir).status());
  std::string name = opts.volume.empty() ? "default" : opts.volume;
  std::string message;
  if (!opts.key.empty()) {
    ASSIGN_OR_RETURN(d.volume_info, RestoreKey(*d.store, opts, &d.key));
    message = KeyMessage(d.key, opts);
  } else {
    ASSIGN_OR_RETURN(d.volume_info, ResolveVolume(*d.store, name));
    message = "mounted volume '" + name + "' at " + opts.dir;
  }
  ASSIGN_OR_RETURN(d.volume_lock, d.store->LockVolume(d.volume_info));
  RETURN_IF_ERROR(d.store->SetMountVolume(d.volume_info.id));

  fs::VolumeOptions vo;
  vo.read_only = opts.read_only;
  vo.commit_interval_s = d.config.commit_interval;
  vo.kernel_owns_write_times = true;  // the session enables FUSE's writeback cache
  vo.mem_total_max = static_cast<int64_t>(d.config.memory_staging_size);
  ASSIGN_OR_RETURN(d.volume, fs::Volume::Open(d.store.get(), d.volume_info, vo));
  d.volume->Start();

  fs::SessionOptions sess;
  sess.mountpoint = opts.dir;
  // STORE:VOLUME (STORE:key for a key mount), as NFS shows SERVER:PATH: `df` and `mount` show
  // where the data lives, and umount/status/save find the store without --store.
  sess.fsname = d.store->dir() + ":" + (d.key.enabled ? std::string("key") : name);
  sess.allow_other = opts.allow_other;
  sess.read_only = opts.read_only;
  sess.fuse_options = opts.fuse_options;
  ASSIGN_OR_RETURN(d.session, fs::FuseSession::Mount(d.volume.get(), sess));
  ASSIGN_OR_RETURN(
      d.control, ControlServer::Start([&d](const Json& req, std::shared_ptr<ControlConnection> c) {
        d.HandleControl(req, c);
      }));
  std::thread(SignalThread, &d, signals).detach();

  *info = {
      {"message", message}, {"mountpoint", opts.dir}, {"store", d.store->dir()}, {"pid", getpid()}};
  if (d.key.enabled) {
    (*info)["key"] = d.key.key;
    (*info)["result"] = d.key.result;
    (*info)["cache_hit"] = d.key.result == "exact";
    (*info)["damaged"] = d.key.damaged;
    (*info)["matched_key"] = d.key.matched_key.empty() ? Json(nullptr) : Json(d.key.matched_key);
    (*info)["files"] = d.key.files;
    (*info)["logical_bytes"] = d.key.bytes;
  } else {
    (*info)["volume"] = name;
  }
  return Status::Ok();
}

// After the request loop ended (umount, signal, or the kernel's unmount): stores everything,
// saves the key, prunes if the store is over its size, and tells whoever waits how it went.
int FinishMount(Daemon& d, Status st) {
  const MountOptions& opts = d.opts;
  {
    std::lock_guard use(d.use_mu);  // waits for a control request or signal in progress
    d.closing = true;
  }
  Status shut = d.volume->Shutdown();
  if (st.ok()) st = shut;
  std::string done = "unmounted " + opts.dir;
  if (!d.key.enabled) done += "; volume '" + d.volume_info.name + "' committed";
  if (d.key.enabled && st.ok()) {
    auto saved = d.SaveKeyAtExit();
    if (saved.ok()) {
      done += "; " + *saved;
    } else {
      st = saved.status();
    }
  }
  d.RecordCounters();
  Json result = {{"final", true}, {"root", d.volume->committed_root().hex()}};
  d.session.reset();
  d.volume.reset();
  if (d.key.enabled) {
    // The private volume of a key mount is never needed again: the key holds what to keep.
    Status del = d.store->DeleteVolume(d.volume_info.id);
    if (st.ok()) st = del;
  }
  if (st.ok() && !opts.read_only) {
    std::string pruned = d.AutoPrune(d.key.enabled ? d.key.key : "");
    if (!pruned.empty()) done += "; " + pruned;
  }
  Status unreg = d.store->UnregisterWriter();
  if (st.ok()) st = unreg;
  if (!st.ok()) LogError("unmounting " + opts.dir + ": " + st.message());
  d.volume_lock.reset();  // before anyone hears we are done: the volume is free from now on
  result["ok"] = st.ok();
  result["message"] = st.ok() ? done : st.message();
  if (!st.ok()) result["error"] = st.message();
  d.Finish(result);
  d.control.reset();
  return st.ok() ? kExitOk : kExitError;
}

int RunDaemon(const GlobalOptions& g, const MountOptions& opts, int ready_fd, Io& io) {
  // Decompressed blocks (256 KiB to 2 MiB) are allocated and freed by many threads. A fixed
  // mmap threshold returns them to the system when freed, and fewer arenas keep the rest from
  // fragmenting across twenty threads; without this the daemon's RSS drifts upward.
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  mallopt(M_ARENA_MAX, 4);
  sigset_t signals = BlockStopSignals();
  Ready ready(ready_fd, opts, io);
  Daemon d;
  d.opts = opts;
  Json info;
  if (Status s = StartMount(d, g, ready_fd >= 0, signals, &info); !s.ok()) {
    ready.Error(s);
    return kExitError;
  }
  ready.Ok(info);
  return FinishMount(d, d.session->Loop());
}

// GitHub Actions reads step outputs from the file named by $GITHUB_OUTPUT; the names follow
// actions/cache so workflows can switch without renaming.
void WriteGithubOutput(const MountOptions& opts, const Json& info, Io& io) {
  if (opts.key.empty()) return;
  std::string path = opts.github_output;
  if (path.empty()) {
    const char* env = std::getenv("GITHUB_OUTPUT");
    if (!env || !*env) return;
    path = env;
  }
  std::ofstream out(path, std::ios::app);
  if (!out) {
    io.err << "stashfs: warning: cannot append to the GitHub output file " << path << "\n";
    return;
  }
  std::string matched = info.contains("matched_key") && info["matched_key"].is_string()
                            ? info["matched_key"].get<std::string>()
                            : "";
  out << "cache-hit=" << (info.value("result", "") == "exact" ? "true" : "false") << "\n"
      << "cache-result=" << info.value("result", "") << "\n"
      << "cache-primary-key=" << opts.key << "\n"
      << "cache-matched-key=" << matched << "\n";
}

// What `mount` prints once the mount is up (text or JSON) and the GitHub step outputs.
void ReportMounted(const MountOptions& opts, const Json& info, Io& io) {
  WriteGithubOutput(opts, info, io);
  if (opts.output == "json") {
    io.out << info.dump() << "\n";
  } else {
    io.out << "stashfs: " << info.value("message", "mounted") << "\n";
  }
  io.out.flush();
}

}  // namespace

int CmdMount(const GlobalOptions& g, const MountOptions& in, Io& io) {
  MountOptions opts = in;
  opts.dir = AbsolutePath(in.dir);
  if (opts.volume_given || !opts.volume.empty()) {
    Status s = ValidateName("volume name", opts.volume, kMaxVolumeNameLength);
    if (!s.ok()) return Fail(io, s);
  }
  if (opts.key_given || !opts.key.empty()) {
    // An unset CI variable makes an empty key: refuse it rather than mount a shared volume.
    if (Status s = ValidateName("key", opts.key, kMaxKeyLength); !s.ok()) return Fail(io, s);
    for (const auto& p : opts.restore_keys)
      if (Status s = ValidateName("restore key", p, 512); !s.ok()) return Fail(io, s);
  } else if (!opts.restore_keys.empty() || opts.no_save) {
    return Fail(io, Status::Invalid("--restore-key and --no-save need --key"));
  }
  if (Status s = CheckMountpoint(opts.dir); !s.ok()) return Fail(io, s);
  // The daemon changes directory to "/": resolve a relative --store against ours first.
  GlobalOptions ga = g;
  ga.store = StoreDir(g);
  if (opts.foreground) return RunDaemon(ga, opts, -1, io);

  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return Fail(io, Status::IOError("pipe", errno));
  io.out.flush();
  io.err.flush();
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) return Fail(io, Status::IOError("fork", errno));
  if (pid == 0) {
    ::close(pipefd[0]);
    ::setsid();
    if (::chdir("/") != 0) _exit(kExitError);
    int null = ::open("/dev/null", O_RDWR);
    if (null >= 0) {
      ::dup2(null, 0);
      ::dup2(null, 1);
      ::close(null);
    }
    _exit(RunDaemon(ga, opts, pipefd[1], io));
  }
  ::close(pipefd[1]);
  std::string line;
  char c;
  while (::read(pipefd[0], &c, 1) == 1 && c != '\n')
    line.push_back(c);
  ::close(pipefd[0]);
  if (line.rfind("OK ", 0) == 0) {
    ReportMounted(opts, Json::parse(line.substr(3), nullptr, false), io);
    return kExitOk;
  }
  if (line.rfind("ERR ", 0) == 0) {
    io.err << "stashfs: " << line.substr(4) << "\n";
    return kExitError;
  }
  io.err << "stashfs: the mount daemon exited during start-up; see " << StoreDir(g)
         << "/stashfs.log\n";
  return kExitError;
}

}  // namespace stashfs::cli
