// Volume's extended attributes, and the set-ID and file-capability clearing that
// FUSE_HANDLE_KILLPRIV_V2 leaves to us (see ARCHITECTURE.md, "Below libfuse").
#include <sys/xattr.h>

#include <algorithm>

#include "fs/volume.h"

namespace stashfs::fs {

namespace {
Status CheckXattrName(std::string_view name) {
  if (name.empty() || name.size() > kXattrNameMax) return Status::Errno(ERANGE);
  // POSIX ACLs would need the kernel's ACL support enabled; refuse rather than store them inert.
  if (name.rfind("user.", 0) == 0 || name.rfind("trusted.", 0) == 0 ||
      name.rfind("security.", 0) == 0)
    return Status::Ok();
  return Status::Errno(EOPNOTSUPP);
}
}  // namespace

Status Volume::SetXattr(uint64_t ino, std::string_view name, std::string_view value, int flags) {
  RETURN_IF_ERROR(CheckWritable());
  RETURN_IF_ERROR(CheckXattrName(name));
  if (value.size() > kXattrValueMax) return Status::Errno(E2BIG);
  std::unique_lock lock(ns_mu_);
  Inode* inode = Find(ino);
  if (!inode) return Status::Errno(ENOENT);
  if (name.rfind("user.", 0) == 0 && inode->type != EntryType::kFile &&
      inode->type != EntryType::kDir)
    return Status::Errno(EPERM);
  auto& xs = inode->attrs.xattrs;
  auto it = std::lower_bound(xs.begin(), xs.end(), name,
                             [](const auto& kv, std::string_view n) { return kv.first < n; });
  bool exists = it != xs.end() && it->first == name;
  if ((flags & XATTR_CREATE) && exists) return Status::Errno(EEXIST);
  if ((flags & XATTR_REPLACE) && !exists) return Status::Errno(ENODATA);
  if (exists) {
    it->second = std::string(value);
  } else {
    if (xs.size() >= 1024) return Status::Errno(ENOSPC);
    xs.insert(it, {std::string(name), std::string(value)});
  }
  inode->attrs.ctime = Now();
  MarkChanged(inode);
  return Status::Ok();
}

Result<std::string> Volume::GetXattr(uint64_t ino, std::string_view name) {
  std::unique_lock lock(ns_mu_);
  Inode* inode = Find(ino);
  if (!inode) return Status::Errno(ENOENT);
  for (const auto& [k, v] : inode->attrs.xattrs)
    if (k == name) return v;
  return Status::Errno(ENODATA);
}

Result<std::vector<std::string>> Volume::ListXattr(uint64_t ino) {
  std::unique_lock lock(ns_mu_);
  Inode* inode = Find(ino);
  if (!inode) return Status::Errno(ENOENT);
  std::vector<std::string> names;
  for (const auto& kv : inode->attrs.xattrs)
    names.push_back(kv.first);
  return names;
}

Status Volume::RemoveXattr(uint64_t ino, std::string_view name) {
  RETURN_IF_ERROR(CheckWritable());
  std::unique_lock lock(ns_mu_);
  Inode* inode = Find(ino);
  if (!inode) return Status::Errno(ENOENT);
  auto& xs = inode->attrs.xattrs;
  auto it = std::find_if(xs.begin(), xs.end(), [&](const auto& kv) { return kv.first == name; });
  if (it == xs.end()) return Status::Errno(ENODATA);
  xs.erase(it);
  inode->attrs.ctime = Now();
  MarkChanged(inode);
  return Status::Ok();
}

void Volume::DropPrivilegesLocked(Inode* inode,
                                  const std::function<bool(uint32_t gid)>& caller_in_group) {
  // The rules of the kernel's own setattr_should_drop_sgid and cap_inode_killpriv: set-user-ID
  // always goes; set-group-ID with group-execute, or without it when the caller is not in the
  // file's group; file capabilities always go.
  uint32_t& mode = inode->attrs.mode;
  mode &= ~static_cast<uint32_t>(S_ISUID);
  if ((mode & S_ISGID) &&
      ((mode & S_IXGRP) || !caller_in_group || !caller_in_group(inode->attrs.gid)))
    mode &= ~static_cast<uint32_t>(S_ISGID);
  auto& xs = inode->attrs.xattrs;
  std::erase_if(xs, [](const auto& kv) { return kv.first == "security.capability"; });
}

Status Volume::KillPrivileges(uint64_t ino,
                              const std::function<bool(uint32_t gid)>& caller_in_group) {
  RETURN_IF_ERROR(CheckWritable());
  std::unique_lock lock(ns_mu_);
  Inode* inode = Find(ino);
  if (!inode) return Status::Errno(ENOENT);
  if (inode->type != EntryType::kFile) return Status::Ok();
  uint32_t mode = inode->attrs.mode;
  size_t xattrs = inode->attrs.xattrs.size();
  DropPrivilegesLocked(inode, caller_in_group);
  if (inode->attrs.mode != mode || inode->attrs.xattrs.size() != xattrs) {
    inode->attrs.ctime = Now();
    MarkChanged(inode);
  }
  return Status::Ok();
}

}  // namespace stashfs::fs
