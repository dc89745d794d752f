// The adapter between libfuse's low-level API and Volume: decodes requests, calls Volume, and
// turns every Status into a reply (errno) in exactly one place.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <atomic>

#include "fs/kernel_io.h"
#include "fs/volume.h"

namespace stashfs::fs {

struct FuseConfig {
  // One writer per volume and no other way to change it, so the kernel may cache names,
  // attributes and even negative lookups for as long as it likes.
  double entry_timeout = 86400;
  double attr_timeout = 86400;
  double negative_timeout = 86400;
  bool writeback_cache = true;
};

// Requests served, by kind, with the time spent serving them (for `stashfs status`).
enum class FuseOp : int {
  kLookup,
  kForget,
  kGetattr,
  kSetattr,
  kReadlink,
  kMknod,
  kMkdir,
  kSymlink,
  kLink,
  kUnlink,
  kRmdir,
  kRename,
  kOpen,
  kCreate,
  kRelease,
  kRead,
  kWrite,
  kFlush,
  kFsync,
  kReaddir,
  kReaddirplus,
  kStatfs,
  kSetxattr,
  kGetxattr,
  kListxattr,
  kRemovexattr,
  kCopyFileRange,
  kFallocate,
  kCount
};
const char* FuseOpName(FuseOp op);

struct FuseOpStats {
  std::atomic<uint64_t> count{0};
  std::atomic<uint64_t> nanos{0};
};

struct FuseContext {
  Volume* volume;
  FuseConfig config;
  FuseOpStats ops[static_cast<int>(FuseOp::kCount)];
  KernelIo io;
};

// The operations table; the session's userdata must be a FuseContext*.
const fuse_lowlevel_ops& FuseOperations();

}  // namespace stashfs::fs
