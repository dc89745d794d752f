// A FUSE mount of one Volume: mounting, the request loop, and unmounting.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "fs/fuse_ops.h"
#include "fs/volume.h"
#include "store/status.h"

namespace stashfs::fs {

struct SessionOptions {
  std::string mountpoint;  // absolute
  std::string fsname = "stashfs";
  bool allow_other = false;
  bool read_only = false;
  std::vector<std::string> fuse_options;  // from -o, passed to the kernel mount
  int max_threads = 16;
  FuseConfig config;
};

class FuseSession {
 public:
  // Mounts `volume` at opts.mountpoint; the mount is visible when this returns.
  static Result<std::unique_ptr<FuseSession>> Mount(Volume* volume, const SessionOptions& opts);
  ~FuseSession();

  // Serves requests until the filesystem is unmounted (by Unmount, `umount`, or fusermount).
  Status Loop();
  // Pushes the kernel's dirty pages to the daemon (syncfs); call while Loop() runs.
  Status SyncKernelCache();
  // Unmounts, which makes Loop() return. Fails with Busy when files are still open, unless
  // `lazy` (then the mount disappears now and requests are served until the last file closes).
  Status Unmount(bool lazy);
  const std::string& mountpoint() const { return opts_.mountpoint; }
  const FuseContext& context() const { return ctx_; }

 private:
  FuseSession(Volume* v, SessionOptions o) : ctx_{v, o.config}, opts_(std::move(o)) {}
  FuseContext ctx_;
  SessionOptions opts_;
  fuse_session* se_ = nullptr;
  std::atomic<bool> mounted_{false};
};

// Unmounts `dir` without a daemon's help (root: umount2, others: fusermount3 -u).
Status UnmountPath(const std::string& dir, bool lazy);

}  // namespace stashfs::fs
