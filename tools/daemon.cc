// `stashfs mount`: the mount daemon's life from start-up to the final commit.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <thread>

#include "fs/session.h"
#include "fs/volume.h"
#include "tools/commands.h"
#include "tools/control.h"
#include "tools/util.h"

namespace stashfs::cli {

namespace {

// Reports the start-up outcome to whoever waits for it: the parent over a pipe when the daemon
// runs in the background, or the terminal in the foreground.
class Ready {
 public:
  Ready(int fd, Io& io) : fd_(fd), io_(io) {}
  void Ok(const Json& info) { Send("OK " + info.dump()); }
  void Error(const Status& s) { Send("ERR " + s.message()); }
  bool reported() const { return reported_; }

 private:
  void Send(const std::string& line) {
    if (reported_) return;
    reported_ = true;
    if (fd_ < 0) {
      if (line.rfind("ERR ", 0) == 0) {
        io_.err << "stashfs: " << line.substr(4) << "\n";
      } else {
        io_.out << "stashfs: " << Json::parse(line.substr(3)).value("message", "") << "\n";
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
  Io& io_;
  bool reported_ = false;
};

struct Daemon {
  MountOptions opts;
  std::unique_ptr<Store> store;
  VolumeInfo volume_info;
  std::unique_ptr<FileLock> volume_lock;
  std::unique_ptr<fs::Volume> volume;
  std::unique_ptr<fs::FuseSession> session;
  std::unique_ptr<ControlServer> control;
  std::mutex mu;
  std::vector<std::shared_ptr<ControlConnection>> umount_waiters;

  Json StatusJson() {
    auto& c = volume->counters();
    auto& d = volume->data();
    return {{"ok", true},
            {"final", true},
            {"pid", getpid()},
            {"mountpoint", opts.dir},
            {"store", store->dir()},
            {"volume", volume_info.name},
            {"read_only", opts.read_only},
            {"committed_root", volume->committed_root().hex()},
            {"bytes_written", d.bytes_written.load()},
            {"bytes_read_from_store", d.bytes_read_store.load()},
            {"files_read_from_store", c.files_read_from_base.load()},
            {"files_created", c.files_created.load()},
            {"lookups", c.lookups.load()},
            {"negative_lookups", c.negative_lookups.load()},
            {"directories_loaded", c.dirs_loaded.load()},
            {"commits", c.commits.load()}};
  }

  void HandleControl(const Json& req, std::shared_ptr<ControlConnection> conn) {
    std::string cmd = req.value("cmd", "");
    if (cmd == "status") {
      conn->Send(StatusJson());
    } else if (cmd == "sync") {
      Status s = session->SyncKernelCache();
      if (s.ok()) s = volume->Sync();
      conn->Send({{"ok", s.ok()}, {"final", true}, {"error", s.message()}});
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
    std::fprintf(stderr, "stashfs: %s received, unmounting %s\n", strsignal(sig),
                 d->opts.dir.c_str());
    (void)d->session->SyncKernelCache();
    Status s = d->session->Unmount(true);
    if (!s.ok()) std::fprintf(stderr, "stashfs: %s\n", s.message().c_str());
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

int RunDaemon(const GlobalOptions& g, const MountOptions& opts, int ready_fd, Io& io) {
  Ready ready(ready_fd, io);
  auto fail = [&](const Status& s) {
    ready.Error(s);
    return kExitError;
  };
  Daemon d;
  d.opts = opts;
  StoreOptions so;
  so.dir = StoreDir(g);
  auto store = Store::Open(so);
  if (!store.ok()) return fail(store.status().context("opening store " + so.dir));
  d.store = std::move(*store);
  if (ready_fd >= 0) {
    // From here on the daemon's own messages go to the store's log.
    int log = ::open((d.store->dir() + "/stashfs.log").c_str(),
                     O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log >= 0) {
      ::dup2(log, 2);
      ::close(log);
    }
  }
  auto writer = d.store->RegisterWriter(opts.dir);
  if (!writer.ok()) return fail(writer.status());
  std::string name = opts.volume.empty() ? "default" : opts.volume;
  auto vol = ResolveVolume(*d.store, name);
  if (!vol.ok()) return fail(vol.status());
  d.volume_info = *vol;
  auto lock = d.store->LockVolume(d.volume_info);
  if (!lock.ok()) return fail(lock.status());
  d.volume_lock = std::move(*lock);
  if (Status s = d.store->SetMountVolume(d.volume_info.id); !s.ok()) return fail(s);

  fs::VolumeOptions vo;
  vo.read_only = opts.read_only;
  auto volume = fs::Volume::Open(d.store.get(), d.volume_info, vo);
  if (!volume.ok()) return fail(volume.status());
  d.volume = std::move(*volume);

  // Block the signals before any thread starts, so only SignalThread sees them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  d.volume->Start();
  fs::SessionOptions sess;
  sess.mountpoint = opts.dir;
  sess.fsname = "stashfs:" + name;
  sess.allow_other = opts.allow_other;
  sess.read_only = opts.read_only;
  sess.fuse_options = opts.fuse_options;
  auto session = fs::FuseSession::Mount(d.volume.get(), sess);
  if (!session.ok()) return fail(session.status());
  d.session = std::move(*session);
  auto control = ControlServer::Start(
      [&d](const Json& req, std::shared_ptr<ControlConnection> c) { d.HandleControl(req, c); });
  if (!control.ok()) return fail(control.status());
  d.control = std::move(*control);
  std::thread(SignalThread, &d, set).detach();

  std::string message = "mounted volume '" + name + "' at " + opts.dir;
  ready.Ok({{"message", message},
            {"volume", name},
            {"mountpoint", opts.dir},
            {"store", d.store->dir()},
            {"pid", getpid()}});
  if (ready_fd < 0) io.out.flush();

  Status st = d.session->Loop();
  Status shut = d.volume->Shutdown();
  if (st.ok()) st = shut;
  Json result = {{"final", true},
                 {"ok", st.ok()},
                 {"volume", name},
                 {"root", d.volume->committed_root().hex()}};
  d.session.reset();
  d.volume.reset();
  Status unreg = d.store->UnregisterWriter();
  if (st.ok()) st = unreg;
  if (!st.ok()) {
    result["ok"] = false;
    result["error"] = st.message();
    std::fprintf(stderr, "stashfs: unmounting %s: %s\n", opts.dir.c_str(), st.message().c_str());
  }
  result["message"] =
      st.ok() ? "unmounted " + opts.dir + "; volume '" + name + "' committed" : st.message();
  d.Finish(result);
  d.control.reset();
  return st.ok() ? kExitOk : kExitError;
}

}  // namespace

int CmdMount(const GlobalOptions& g, const MountOptions& in, Io& io) {
  MountOptions opts = in;
  opts.dir = AbsolutePath(in.dir);
  if (!opts.volume.empty()) {
    if (Status s = ValidateName("volume name", opts.volume, 128); !s.ok()) return Fail(io, s);
  }
  if (Status s = CheckMountpoint(opts.dir); !s.ok()) return Fail(io, s);
  if (opts.foreground) return RunDaemon(g, opts, -1, io);

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
    _exit(RunDaemon(g, opts, pipefd[1], io));
  }
  ::close(pipefd[1]);
  std::string line;
  char c;
  while (::read(pipefd[0], &c, 1) == 1 && c != '\n')
    line.push_back(c);
  ::close(pipefd[0]);
  if (line.rfind("OK ", 0) == 0) {
    Json info = Json::parse(line.substr(3), nullptr, false);
    if (opts.output == "json") {
      io.out << info.dump() << "\n";
    } else {
      io.out << "stashfs: " << info.value("message", "mounted") << "\n";
    }
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
