#include "fs/kernel_io.h"

#include <linux/fuse.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace stashfs::fs {

namespace {

// FUSE_HANDLE_KILLPRIV_V2 and FUSE_WRITE_KILL_SUIDGID arrived in protocol 7.33.
constexpr uint32_t kKillprivMinor = 33;

}  // namespace

bool CallerInGroup(uint32_t uid, uint32_t gid, uint32_t pid, uint32_t group) {
  if (uid == 0 || gid == group) return true;
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Groups:", 0) != 0) continue;
    std::istringstream groups(line.substr(7));
    uint32_t g;
    while (groups >> g)
      if (g == group) return true;
    return false;
  }
  return false;
}

std::function<bool(uint32_t group)> CallerGroupCheck(uint32_t uid, uint32_t gid, uint32_t pid) {
  return [=](uint32_t group) { return CallerInGroup(uid, gid, pid, group); };
}

ssize_t KernelRead(KernelIo* io, int fd, void* buf, size_t len) {
  ssize_t n = ::read(fd, buf, len);
  if (n < static_cast<ssize_t>(sizeof(fuse_in_header))) return n;
  int saved = errno;
  fuse_in_header hdr;
  std::memcpy(&hdr, buf, sizeof hdr);
  const char* arg = static_cast<const char*>(buf) + sizeof hdr;
  size_t arg_len = static_cast<size_t>(n) - sizeof hdr;
  if (hdr.opcode == FUSE_INIT && arg_len >= offsetof(fuse_init_in, flags) + sizeof(uint32_t)) {
    fuse_init_in in{};
    std::memcpy(&in, arg, std::min(arg_len, sizeof in));
    if (io->want_killpriv_v2 && in.major == 7 && in.minor >= kKillprivMinor &&
        (in.flags & FUSE_HANDLE_KILLPRIV_V2))
      io->init_unique = hdr.unique;
  } else if (hdr.opcode == FUSE_WRITE && io->killpriv_v2 &&
             arg_len >= offsetof(fuse_write_in, write_flags) + sizeof(uint32_t)) {
    uint32_t write_flags;
    std::memcpy(&write_flags, arg + offsetof(fuse_write_in, write_flags), sizeof write_flags);
    if ((write_flags & FUSE_WRITE_KILL_SUIDGID) && io->kill_privileges)
      io->kill_privileges(hdr.nodeid, hdr.uid, hdr.gid, hdr.pid);
  }
  errno = saved;
  return n;
}

ssize_t KernelWritev(KernelIo* io, int fd, const struct iovec* iov, int count) {
  uint64_t init = io->init_unique.load(std::memory_order_relaxed);
  if (init != 0 && count == 2 && iov[0].iov_len == sizeof(fuse_out_header) &&
      iov[1].iov_len >= offsetof(fuse_init_out, flags) + sizeof(uint32_t)) {
    fuse_out_header out;
    std::memcpy(&out, iov[0].iov_base, sizeof out);
    if (out.unique == init && out.error == 0) {
      io->init_unique = 0;
      // libfuse's reply, with the one flag it does not know about added.
      std::vector<char> reply(static_cast<const char*>(iov[1].iov_base),
                              static_cast<const char*>(iov[1].iov_base) + iov[1].iov_len);
      uint32_t flags;
      std::memcpy(&flags, reply.data() + offsetof(fuse_init_out, flags), sizeof flags);
      flags |= FUSE_HANDLE_KILLPRIV_V2;
      std::memcpy(reply.data() + offsetof(fuse_init_out, flags), &flags, sizeof flags);
      struct iovec patched[2] = {iov[0], {reply.data(), reply.size()}};
      // Set first: once the kernel has the reply, a write may already carry the kill flag.
      io->killpriv_v2 = true;
      return ::writev(fd, patched, 2);
    }
  }
  return ::writev(fd, iov, count);
}

}  // namespace stashfs::fs
