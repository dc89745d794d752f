// The daemon's reads from and writes to /dev/fuse, with a look at the raw protocol that libfuse
// 3.14 does not give us.
//
// Why: with the writeback cache, every write(2) to a FUSE file first asks the daemon for the
// file's security.capability xattr (the VFS's file_remove_privs), because FUSE superblocks are
// not SB_NOSEC. tar writes a file in 10 KiB records, so an extraction spent about a third of its
// requests on that GETXATTR, plus a GETATTR per chown. A filesystem that answers INIT with
// FUSE_HANDLE_KILLPRIV_V2 takes over clearing set-ID bits and capabilities, and the kernel then
// marks the superblock SB_NOSEC: one check per inode instead of one per write. libfuse 3.14 (the
// Debian bookworm version) predates that flag and does not pass through the request fields that
// carry the kill requests, so this layer adds the flag to libfuse's INIT reply and reads the
// write flag itself. Setattr's FATTR_KILL_SUIDGID does reach the handler (see OpSetattr).
//
// Kept apart from the libfuse headers: it speaks the kernel's <linux/fuse.h>.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <functional>

namespace stashfs::fs {

struct KernelIo {
  bool want_killpriv_v2 = true;  // ask for FUSE_HANDLE_KILLPRIV_V2 when the kernel offers it
  // Called (on the thread that will serve the request, before libfuse sees it) for a WRITE that
  // carries FUSE_WRITE_KILL_SUIDGID: the writer lacks CAP_FSETID and the file's set-ID bits must
  // go.
  std::function<void(uint64_t ino, uint32_t uid, uint32_t gid, uint32_t pid)> kill_privileges;

  std::atomic<uint64_t> init_unique{0};  // the INIT request whose reply gets the flag
  std::atomic<bool> killpriv_v2{false};  // negotiated
};

// Whether a request's caller may keep a file's set-group-ID bit when group-execute is off: the
// kernel's in_group_or_capable (root, or a member of `group`, also through its supplementary
// groups, read from /proc/PID/status; an unreadable one counts as not a member).
bool CallerInGroup(uint32_t uid, uint32_t gid, uint32_t pid, uint32_t group);
// The same question bound to one caller, as Volume asks it.
std::function<bool(uint32_t group)> CallerGroupCheck(uint32_t uid, uint32_t gid, uint32_t pid);

// read(2) of one request; same contract as libfuse's own read (errno on -1).
ssize_t KernelRead(KernelIo* io, int fd, void* buf, size_t len);
// writev(2) of one reply; same contract as libfuse's own writev.
ssize_t KernelWritev(KernelIo* io, int fd, const struct iovec* iov, int count);

}  // namespace stashfs::fs
