#include "fs/fuse_ops.h"
#include "store/log.h"

#include <sys/xattr.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

namespace stashfs::fs {

namespace {

FuseContext* Ctx(fuse_req_t req) {
  return static_cast<FuseContext*>(fuse_req_userdata(req));
}

// Counts one request and the time until its reply was handed back to the kernel.
class OpTimer {
 public:
  OpTimer(fuse_req_t req, FuseOp op)
      : stats_(Ctx(req)->ops[static_cast<int>(op)]), start_(std::chrono::steady_clock::now()) {}
  ~OpTimer() {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::chrono::steady_clock::now() - start_);
    stats_.count.fetch_add(1, std::memory_order_relaxed);
    stats_.nanos.fetch_add(static_cast<uint64_t>(ns.count()), std::memory_order_relaxed);
  }

 private:
  FuseOpStats& stats_;
  std::chrono::steady_clock::time_point start_;
};
Volume& Vol(fuse_req_t req) {
  return *Ctx(req)->volume;
}

// The single Status -> errno conversion. Errors that carry a message (a damaged chunk, a failed
// store write) are logged once here; plain errnos are ordinary answers (ENOENT) and are not.
void ReplyError(fuse_req_t req, const Status& s) {
  if (s.ok()) {
    fuse_reply_err(req, 0);
    return;
  }
  int err = s.errno_value();
  if (s.code() == Code::kCorruption) err = EIO;
  if (err == 0) err = EIO;
  if (!s.message().empty()) LogError(s.message());
  fuse_reply_err(req, err);
}

fuse_entry_param Entry(fuse_req_t req, const struct stat& st) {
  fuse_entry_param e{};
  e.ino = st.st_ino;
  e.attr = st;
  e.attr_timeout = Ctx(req)->config.attr_timeout;
  e.entry_timeout = Ctx(req)->config.entry_timeout;
  return e;
}

void ReplyEntry(fuse_req_t req, const Result<struct stat>& r) {
  if (!r.ok()) return ReplyError(req, r.status());
  fuse_entry_param e = Entry(req, *r);
  fuse_reply_entry(req, &e);
}

Caller CallerOf(fuse_req_t req) {
  const fuse_ctx* c = fuse_req_ctx(req);
  return {static_cast<uint32_t>(c->uid), static_cast<uint32_t>(c->gid)};
}

Timespec ToTs(const struct timespec& t) {
  return {t.tv_sec, static_cast<uint32_t>(t.tv_nsec)};
}

Timespec NowTs() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ToTs(ts);
}

void OpInit(void* userdata, fuse_conn_info* conn) {
  auto* ctx = static_cast<FuseContext*>(userdata);
  auto want = [&](unsigned cap) {
    if (conn->capable & cap) conn->want |= cap;
  };
  // The kernel keeps written pages and sends them in large batches; it also owns size and
  // mtime while pages are dirty (ARCHITECTURE.md, "What FUSE costs").
  if (ctx->config.writeback_cache) want(FUSE_CAP_WRITEBACK_CACHE);
  want(FUSE_CAP_PARALLEL_DIROPS);
  want(FUSE_CAP_CACHE_SYMLINKS);
  want(FUSE_CAP_ASYNC_READ);
  // Locks are left to the kernel: one host, one daemon per volume, so local locks are exact.
  conn->want &= ~(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
  // Nobody else changes our files, so a getattr must not drop the page cache.
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  // Not the first version of kill-privileges: with the writeback cache its writes arrive without
  // their writer, so the kernel must not leave set-ID bits to us. Version 2, which says who
  // asked, is negotiated below libfuse (fs/kernel_io.h).
  conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
  // libfuse asks for atomic O_TRUNC by default: the kernel then leaves truncation to OPEN. We
  // answer OPEN with ENOSYS, so it must send open(O_TRUNC) to us as a setattr instead.
  conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
  conn->max_write = 1 << 20;
  conn->max_readahead = 1 << 20;
  conn->max_background = 64;
  conn->congestion_threshold = 48;
  conn->time_gran = 1;
}

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  OpTimer timer(req, FuseOp::kLookup);
  auto r = Vol(req).Lookup(parent, name);
  if (!r.ok() && r.status().errno_value() == ENOENT && r.status().message().empty()) {
    // Cache the miss in the kernel: package managers probe many names that are not there.
    fuse_entry_param e{};
    e.ino = 0;
    e.entry_timeout = Ctx(req)->config.negative_timeout;
    fuse_reply_entry(req, &e);
    return;
  }
  ReplyEntry(req, r);
}

void OpForget(fuse_req_t req, fuse_ino_t ino, uint64_t n) {
  OpTimer timer(req, FuseOp::kForget);
  Vol(req).Forget(ino, n);
  fuse_reply_none(req);
}

void OpForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  OpTimer timer(req, FuseOp::kForget);
  for (size_t i = 0; i < count; ++i)
    Vol(req).Forget(forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

void OpGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  OpTimer timer(req, FuseOp::kGetattr);
  auto r = Vol(req).GetAttr(ino);
  if (!r.ok()) return ReplyError(req, r.status());
  fuse_reply_attr(req, &*r, Ctx(req)->config.attr_timeout);
}

void OpSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*) {
  OpTimer timer(req, FuseOp::kSetattr);
  SetAttrRequest s;
  if (to_set & FUSE_SET_ATTR_MODE) s.mode = attr->st_mode;
  if (to_set & FUSE_SET_ATTR_UID) s.uid = attr->st_uid;
  if (to_set & FUSE_SET_ATTR_GID) s.gid = attr->st_gid;
  if (to_set & FUSE_SET_ATTR_SIZE) s.size = static_cast<uint64_t>(attr->st_size);
  if (to_set & FUSE_SET_ATTR_ATIME_NOW)
    s.atime = NowTs();
  else if (to_set & FUSE_SET_ATTR_ATIME)
    s.atime = ToTs(attr->st_atim);
  if (to_set & FUSE_SET_ATTR_MTIME_NOW)
    s.mtime = NowTs();
  else if (to_set & FUSE_SET_ATTR_MTIME)
    s.mtime = ToTs(attr->st_mtim);
  if (to_set & FUSE_SET_ATTR_CTIME) s.ctime = ToTs(attr->st_ctim);
  // libfuse 3.14 hands the kernel's FATTR_KILL_SUIDGID (bit 11) through under this older name.
  // An empty setattr is the kernel's file_remove_privs (fallocate, and writes it does not send
  // with FUSE_WRITE_KILL_SUIDGID): its caller lacks CAP_FSETID unless it is root, whose request
  // only ever concerns capabilities, which the kernel removes itself with REMOVEXATTR.
  bool remove_privs = to_set == 0 && Ctx(req)->io.killpriv_v2 && fuse_req_ctx(req)->uid != 0;
  if ((to_set & FUSE_SET_ATTR_KILL_SUID) || remove_privs) {
    s.kill_suidgid = true;
    const fuse_ctx* c = fuse_req_ctx(req);
    s.caller_in_group = CallerGroupCheck(c->uid, c->gid, static_cast<uint32_t>(c->pid));
  }
  auto r = Vol(req).SetAttr(ino, s);
  if (!r.ok()) return ReplyError(req, r.status());
  fuse_reply_attr(req, &*r, Ctx(req)->config.attr_timeout);
}

void OpReadlink(fuse_req_t req, fuse_ino_t ino) {
  OpTimer timer(req, FuseOp::kReadlink);
  auto r = Vol(req).ReadLink(ino);
  if (!r.ok()) return ReplyError(req, r.status());
  fuse_reply_readlink(req, r->c_str());
}

void OpMknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  OpTimer timer(req, FuseOp::kMknod);
  ReplyEntry(req, Vol(req).MakeNode(parent, name, mode, rdev, CallerOf(req)));
}

void OpMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  OpTimer timer(req, FuseOp::kMkdir);
  ReplyEntry(req, Vol(req).MakeDir(parent, name, mode, CallerOf(req)));
}

void OpSymlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  OpTimer timer(req, FuseOp::kSymlink);
  ReplyEntry(req, Vol(req).MakeSymlink(parent, name, target, CallerOf(req)));
}

void OpLink(fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent, const char* new_name) {
  OpTimer timer(req, FuseOp::kLink);
  ReplyEntry(req, Vol(req).Link(ino, new_parent, new_name));
}

void OpUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  OpTimer timer(req, FuseOp::kUnlink);
  ReplyError(req, Vol(req).Unlink(parent, name));
}

void OpRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  OpTimer timer(req, FuseOp::kRmdir);
  ReplyError(req, Vol(req).RemoveDir(parent, name));
}

void OpRename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t new_parent,
              const char* new_name, unsigned int flags) {
  OpTimer timer(req, FuseOp::kRename);
  ReplyError(req, Vol(req).Rename(parent, name, new_parent, new_name, flags));
}

// Answering OPEN with ENOSYS makes the kernel skip OPEN and RELEASE for every later open and
// keep the page cache across opens: warm small-file reads cost no round trip
// (ARCHITECTURE.md, "What FUSE costs").
void OpOpen(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
  OpTimer timer(req, FuseOp::kOpen);
  fuse_reply_err(req, ENOSYS);
}
void OpOpendir(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
  OpTimer timer(req, FuseOp::kOpen);
  fuse_reply_err(req, ENOSYS);
}
// Likewise FLUSH: without this the kernel sends one on every close().
void OpFlush(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
  OpTimer timer(req, FuseOp::kFlush);
  fuse_reply_err(req, ENOSYS);
}

void OpCreate(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
              fuse_file_info* fi) {
  OpTimer timer(req, FuseOp::kCreate);
  auto r = Vol(req).MakeNode(parent, name, S_IFREG | (mode & 07777), 0, CallerOf(req));
  if (!r.ok()) return ReplyError(req, r.status());
  fuse_entry_param e = Entry(req, *r);
  fi->fh = 0;
  fi->keep_cache = 1;
  fuse_reply_create(req, &e, fi);
}

void OpRelease(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  OpTimer timer(req, FuseOp::kRelease);
  Vol(req).Release(ino);
  fuse_reply_err(req, 0);
}

void OpRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  OpTimer timer(req, FuseOp::kRead);
  thread_local std::vector<char> buf;
  if (buf.size() < size) buf.resize(size);
  auto r = Vol(req).Read(ino, static_cast<uint64_t>(off), size, buf.data());
  if (!r.ok()) return ReplyError(req, r.status());
  fuse_reply_buf(req, buf.data(), *r);
}

void OpWrite(fuse_req_t req, fuse_ino_t ino, const char* data, size_t size, off_t off,
             fuse_file_info*) {
  OpTimer timer(req, FuseOp::kWrite);
  auto r = Vol(req).Write(ino, static_cast<uint64_t>(off), data, size);
  if (!r.ok()) return ReplyError(req, r.status());
  fuse_reply_write(req, *r);
}

void OpFsync(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info*) {
  OpTimer timer(req, FuseOp::kFsync);
  ReplyError(req, Vol(req).Fsync(ino));
}

void OpFsyncdir(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) {
  OpTimer timer(req, FuseOp::kFsync);
  ReplyError(req, Vol(req).Commit(true));
}

void ReadDirCommon(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
  std::vector<char> buf(size);
  size_t used = 0;
  Status st = Vol(req).ReadDir(ino, static_cast<uint64_t>(off), plus, [&](const DirEntryOut& e) {
    std::string name(e.name);
    size_t need;
    if (plus) {
      fuse_entry_param p = Entry(req, e.attr);
      need = fuse_add_direntry_plus(req, buf.data() + used, size - used, name.c_str(), &p,
                                    static_cast<off_t>(e.cookie));
    } else {
      need = fuse_add_direntry(req, buf.data() + used, size - used, name.c_str(), &e.attr,
                               static_cast<off_t>(e.cookie));
    }
    if (need > size - used) return false;
    used += need;
    return true;
  });
  if (!st.ok()) return ReplyError(req, st);
  fuse_reply_buf(req, buf.data(), used);
}

void OpReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  OpTimer timer(req, FuseOp::kReaddir);
  ReadDirCommon(req, ino, size, off, false);
}

void OpReaddirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  OpTimer timer(req, FuseOp::kReaddirplus);
  ReadDirCommon(req, ino, size, off, true);
}

void OpStatfs(fuse_req_t req, fuse_ino_t) {
  OpTimer timer(req, FuseOp::kStatfs);
  auto r = Vol(req).StatFs();
  if (!r.ok()) return ReplyError(req, r.status());
  fuse_reply_statfs(req, &*r);
}

void OpSetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags) {
  OpTimer timer(req, FuseOp::kSetxattr);
  ReplyError(req, Vol(req).SetXattr(ino, name, std::string_view(value, size), flags));
}

void OpGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  OpTimer timer(req, FuseOp::kGetxattr);
  auto r = Vol(req).GetXattr(ino, name);
  if (!r.ok()) return ReplyError(req, r.status());
  if (size == 0) return (void)fuse_reply_xattr(req, r->size());
  if (size < r->size()) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, r->data(), r->size());
}

void OpListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  OpTimer timer(req, FuseOp::kListxattr);
  auto r = Vol(req).ListXattr(ino);
  if (!r.ok()) return ReplyError(req, r.status());
  std::string all;
  for (const auto& n : *r) {
    all += n;
    all.push_back('\0');
  }
  if (size == 0) return (void)fuse_reply_xattr(req, all.size());
  if (size < all.size()) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, all.data(), all.size());
}

void OpRemovexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  OpTimer timer(req, FuseOp::kRemovexattr);
  ReplyError(req, Vol(req).RemoveXattr(ino, name));
}

void OpCopyFileRange(fuse_req_t req, fuse_ino_t in, off_t off_in, fuse_file_info*, fuse_ino_t out,
                     off_t off_out, fuse_file_info*, size_t len, int) {
  OpTimer timer(req, FuseOp::kCopyFileRange);
  auto r = Vol(req).CopyFileRange(in, static_cast<uint64_t>(off_in), out,
                                  static_cast<uint64_t>(off_out), len);
  if (!r.ok()) return ReplyError(req, r.status());
  fuse_reply_write(req, *r);
}

void OpFallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, fuse_file_info*) {
  OpTimer timer(req, FuseOp::kFallocate);
  ReplyError(req,
             Vol(req).Fallocate(ino, mode, static_cast<uint64_t>(off), static_cast<uint64_t>(len)));
}

fuse_lowlevel_ops MakeOps() {
  fuse_lowlevel_ops ops{};
  ops.init = OpInit;
  ops.lookup = OpLookup;
  ops.forget = OpForget;
  ops.forget_multi = OpForgetMulti;
  ops.getattr = OpGetattr;
  ops.setattr = OpSetattr;
  ops.readlink = OpReadlink;
  ops.mknod = OpMknod;
  ops.mkdir = OpMkdir;
  ops.symlink = OpSymlink;
  ops.link = OpLink;
  ops.unlink = OpUnlink;
  ops.rmdir = OpRmdir;
  ops.rename = OpRename;
  ops.open = OpOpen;
  ops.opendir = OpOpendir;
  ops.flush = OpFlush;
  ops.create = OpCreate;
  ops.release = OpRelease;
  ops.read = OpRead;
  ops.write = OpWrite;
  ops.fsync = OpFsync;
  ops.fsyncdir = OpFsyncdir;
  ops.readdir = OpReaddir;
  ops.readdirplus = OpReaddirplus;
  ops.statfs = OpStatfs;
  ops.setxattr = OpSetxattr;
  ops.getxattr = OpGetxattr;
  ops.listxattr = OpListxattr;
  ops.removexattr = OpRemovexattr;
  ops.copy_file_range = OpCopyFileRange;
  ops.fallocate = OpFallocate;
  return ops;
}

}  // namespace

const char* FuseOpName(FuseOp op) {
  static const char* names[] = {"lookup",      "forget",      "getattr",         "setattr",
                                "readlink",    "mknod",       "mkdir",           "symlink",
                                "link",        "unlink",      "rmdir",           "rename",
                                "open",        "create",      "release",         "read",
                                "write",       "flush",       "fsync",           "readdir",
                                "readdirplus", "statfs",      "setxattr",        "getxattr",
                                "listxattr",   "removexattr", "copy_file_range", "fallocate"};
  return names[static_cast<int>(op)];
}

const fuse_lowlevel_ops& FuseOperations() {
  static const fuse_lowlevel_ops ops = MakeOps();
  return ops;
}

}  // namespace stashfs::fs
