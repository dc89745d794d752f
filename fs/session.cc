#include "fs/session.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

namespace stashfs::fs {

Status UnmountPath(const std::string& dir, bool lazy) {
  if (geteuid() == 0) {
    if (::umount2(dir.c_str(), lazy ? MNT_DETACH : 0) == 0) return Status::Ok();
    int err = errno;
    if (err == EBUSY) {
      return Status::Busy(dir +
                          " is busy: a process still has files open or its working "
                          "directory there (see `fuser -vm " +
                          dir + "`)");
    }
    return Status::IOError("unmounting " + dir, err);
  }
  // Unprivileged FUSE mounts are removed by the setuid fusermount3 helper.
  pid_t pid = fork();
  if (pid < 0) return Status::IOError("fork", errno);
  if (pid == 0) {
    int null = ::open("/dev/null", O_WRONLY);
    if (null >= 0) dup2(null, 2);
    if (lazy) {
      execlp("fusermount3", "fusermount3", "-u", "-z", "--", dir.c_str(), nullptr);
    } else {
      execlp("fusermount3", "fusermount3", "-u", "--", dir.c_str(), nullptr);
    }
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return Status::Ok();
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
    return Status::IOError("running fusermount3 (is the fuse3 package installed?)", ENOENT);
  return Status::Busy(dir + " could not be unmounted: it is probably busy (see `fuser -vm " + dir +
                      "`)");
}

Result<std::unique_ptr<FuseSession>> FuseSession::Mount(Volume* volume,
                                                        const SessionOptions& opts) {
  std::unique_ptr<FuseSession> s(new FuseSession(volume, opts));
  // libfuse splits -o at commas and takes a backslash as an escape: a store path may have both.
  std::string fsname;
  for (char c : opts.fsname) {
    if (c == ',' || c == '\\') fsname += '\\';
    fsname += c;
  }
  std::string o = "default_permissions,fsname=" + fsname + ",subtype=stashfs";
  if (opts.allow_other) o += ",allow_other";
  if (opts.read_only) o += ",ro";
  for (const auto& extra : opts.fuse_options)
    o += "," + extra;
  std::vector<std::string> argv_s = {"stashfs", "-o", o};
  std::vector<char*> argv;
  for (auto& a : argv_s)
    argv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  const fuse_lowlevel_ops& ops = FuseOperations();
  s->se_ = fuse_session_new(&args, &ops, sizeof ops, &s->ctx_);
  fuse_opt_free_args(&args);  // the session keeps its own copies
  if (!s->se_) {
    return Status::Invalid("FUSE rejected the mount options '" + o +
                           "' (libfuse printed why above); check -o");
  }
  if (fuse_session_mount(s->se_, opts.mountpoint.c_str()) != 0) {
    return Status::IOError("mounting " + opts.mountpoint +
                               " (libfuse printed why above; is /dev/fuse available and, with "
                               "--allow-other, user_allow_other set in /etc/fuse.conf?)",
                           EIO);
  }
  s->mounted_ = true;
  // Our own /dev/fuse reads and writes (fs/kernel_io.h) on the descriptor libfuse opened.
  s->ctx_.io.want_killpriv_v2 = !opts.read_only;  // a read-only mount has nothing to clear
  s->ctx_.io.kill_privileges = [v = volume](uint64_t ino, uint32_t uid, uint32_t gid,
                                            uint32_t pid) {
    (void)v->KillPrivileges(ino, CallerGroupCheck(uid, gid, pid));
  };
  fuse_custom_io io{};
  io.read = [](int fd, void* buf, size_t len, void* ud) {
    return KernelRead(&static_cast<FuseContext*>(ud)->io, fd, buf, len);
  };
  io.writev = [](int fd, struct iovec* iov, int count, void* ud) {
    return KernelWritev(&static_cast<FuseContext*>(ud)->io, fd, iov, count);
  };
  if (int r = fuse_session_custom_io(s->se_, &io, fuse_session_fd(s->se_)); r != 0)
    return Status::IOError(
        "libfuse refused stashfs's /dev/fuse I/O hooks (libfuse printed why "
        "above); this is a bug, please report it with that line",
        -r);
  return s;
}

FuseSession::~FuseSession() {
  if (!se_) return;
  if (mounted_) fuse_session_unmount(se_);
  fuse_session_destroy(se_);
}

Status FuseSession::Loop() {
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(cfg, static_cast<unsigned>(opts_.max_threads));
  fuse_loop_cfg_set_idle_threads(cfg, 4);
  int r = fuse_session_loop_mt(se_, cfg);
  fuse_loop_cfg_destroy(cfg);
  // The kernel side is gone once the loop ends on unmount; make libfuse agree.
  if (mounted_.exchange(false)) fuse_session_unmount(se_);
  if (r != 0 && r != -ENODEV) return Status::IOError("FUSE request loop", r < 0 ? -r : EIO);
  return Status::Ok();
}

Status FuseSession::SyncKernelCache() {
  int fd = ::open(opts_.mountpoint.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::IOError("opening " + opts_.mountpoint, errno);
  int r = ::syncfs(fd);
  int err = errno;
  ::close(fd);
  if (r != 0) return Status::IOError("syncfs " + opts_.mountpoint, err);
  return Status::Ok();
}

Status FuseSession::Unmount(bool lazy) {
  return UnmountPath(opts_.mountpoint, lazy);
}

}  // namespace stashfs::fs
