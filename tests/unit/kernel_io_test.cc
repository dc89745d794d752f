// The /dev/fuse layer under libfuse (fs/kernel_io.h), driven through a pipe with hand-built
// protocol messages: the INIT reply gains FUSE_HANDLE_KILLPRIV_V2 only when the kernel offered
// it, and a WRITE that carries FUSE_WRITE_KILL_SUIDGID reaches the kill callback.
#include "fs/kernel_io.h"

#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <unistd.h>

#include <cstring>
#include <vector>

namespace stashfs::fs {
namespace {

class Pipe {
 public:
  Pipe() { EXPECT_EQ(::pipe(fd_), 0); }
  ~Pipe() {
    ::close(fd_[0]);
    ::close(fd_[1]);
  }
  int r() const { return fd_[0]; }
  int w() const { return fd_[1]; }

 private:
  int fd_[2];
};

template <typename Arg>
std::vector<char> Request(uint32_t opcode, uint64_t unique, uint64_t nodeid, const Arg& arg) {
  fuse_in_header h{};
  h.len = sizeof h + sizeof arg;
  h.opcode = opcode;
  h.unique = unique;
  h.nodeid = nodeid;
  h.uid = 65534;
  h.gid = 65534;
  h.pid = 4242;
  std::vector<char> out(sizeof h + sizeof arg);
  std::memcpy(out.data(), &h, sizeof h);
  std::memcpy(out.data() + sizeof h, &arg, sizeof arg);
  return out;
}

// Feeds one request through KernelRead, as libfuse's receive loop would.
void Receive(KernelIo* io, const std::vector<char>& req) {
  Pipe p;
  ASSERT_EQ(::write(p.w(), req.data(), req.size()), static_cast<ssize_t>(req.size()));
  std::vector<char> buf(4096);
  ASSERT_EQ(KernelRead(io, p.r(), buf.data(), buf.size()), static_cast<ssize_t>(req.size()));
  EXPECT_EQ(std::memcmp(buf.data(), req.data(), req.size()), 0) << "the request was altered";
}

// Sends libfuse's INIT reply through KernelWritev and returns the flags the kernel would see.
uint32_t ReplyFlags(KernelIo* io, uint64_t unique, uint32_t flags) {
  fuse_out_header h{};
  fuse_init_out out{};
  out.major = 7;
  out.minor = 38;
  out.flags = flags;
  h.len = sizeof h + sizeof out;
  h.unique = unique;
  struct iovec iov[2] = {{&h, sizeof h}, {&out, sizeof out}};
  Pipe p;
  EXPECT_EQ(KernelWritev(io, p.w(), iov, 2), static_cast<ssize_t>(h.len));
  EXPECT_EQ(out.flags, flags) << "libfuse's own reply struct must not be modified";
  std::vector<char> got(h.len);
  EXPECT_EQ(::read(p.r(), got.data(), got.size()), static_cast<ssize_t>(got.size()));
  fuse_init_out sent;
  std::memcpy(&sent, got.data() + sizeof h, sizeof sent);
  return sent.flags;
}

fuse_init_in Init(uint32_t minor, uint32_t flags) {
  fuse_init_in in{};
  in.major = 7;
  in.minor = minor;
  in.flags = flags;
  return in;
}

TEST(KernelIoTest, InitReplyAsksForKillprivV2WhenTheKernelOffersIt) {
  KernelIo io;
  Receive(&io, Request(FUSE_INIT, 1, 0, Init(38, FUSE_HANDLE_KILLPRIV_V2 | FUSE_WRITEBACK_CACHE)));
  EXPECT_EQ(ReplyFlags(&io, 1, FUSE_WRITEBACK_CACHE),
            FUSE_WRITEBACK_CACHE | FUSE_HANDLE_KILLPRIV_V2);
  EXPECT_TRUE(io.killpriv_v2);
  // Only that one reply is touched.
  EXPECT_EQ(ReplyFlags(&io, 2, FUSE_WRITEBACK_CACHE), FUSE_WRITEBACK_CACHE);
}

TEST(KernelIoTest, InitReplyUnchangedWhenNotOfferedOrNotWanted) {
  KernelIo old_kernel;
  Receive(&old_kernel, Request(FUSE_INIT, 1, 0, Init(31, FUSE_WRITEBACK_CACHE)));
  EXPECT_EQ(ReplyFlags(&old_kernel, 1, FUSE_WRITEBACK_CACHE), FUSE_WRITEBACK_CACHE);
  EXPECT_FALSE(old_kernel.killpriv_v2);

  KernelIo off;
  off.want_killpriv_v2 = false;
  Receive(&off, Request(FUSE_INIT, 1, 0, Init(38, FUSE_HANDLE_KILLPRIV_V2)));
  EXPECT_EQ(ReplyFlags(&off, 1, 0), 0u);
  EXPECT_FALSE(off.killpriv_v2);
}

TEST(KernelIoTest, WriteWithKillFlagReachesTheCallbackWithItsCaller) {
  KernelIo io;
  std::vector<uint64_t> killed;
  io.kill_privileges = [&](uint64_t ino, uint32_t uid, uint32_t gid, uint32_t pid) {
    killed.push_back(ino);
    EXPECT_EQ(uid, 65534u);
    EXPECT_EQ(gid, 65534u);
    EXPECT_EQ(pid, 4242u);
  };
  fuse_write_in w{};
  w.write_flags = FUSE_WRITE_KILL_SUIDGID;
  Receive(&io, Request(FUSE_WRITE, 5, 17, w));
  EXPECT_TRUE(killed.empty()) << "before INIT negotiated the flag, nothing is killed";

  Receive(&io, Request(FUSE_INIT, 1, 0, Init(38, FUSE_HANDLE_KILLPRIV_V2)));
  ReplyFlags(&io, 1, 0);
  Receive(&io, Request(FUSE_WRITE, 6, 17, w));
  w.write_flags = FUSE_WRITE_CACHE;  // the writeback cache's own writes carry no kill request
  Receive(&io, Request(FUSE_WRITE, 7, 18, w));
  EXPECT_EQ(killed, std::vector<uint64_t>{17});
}

TEST(KernelIoTest, CallerInGroup) {
  EXPECT_TRUE(CallerInGroup(0, 0, 1, 12345));    // root may keep it
  EXPECT_TRUE(CallerInGroup(1000, 77, 1, 77));   // primary group
  EXPECT_FALSE(CallerInGroup(1000, 77, 0, 78));  // no such process: not a member
  // Supplementary groups come from /proc: ours.
  gid_t groups[64];
  int n = ::getgroups(64, groups);
  ASSERT_GE(n, 0);
  for (int i = 0; i < n; ++i)
    EXPECT_TRUE(CallerInGroup(1000, 4000000, static_cast<uint32_t>(::getpid()), groups[i]));
  EXPECT_FALSE(CallerInGroup(1000, 4000000, static_cast<uint32_t>(::getpid()), 3999999));
}

}  // namespace
}  // namespace stashfs::fs
