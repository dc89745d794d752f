// Small helpers for the command line: sizes and ages, the mount table, mountpoint checks.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "store/config.h"
#include "store/status.h"
#include "store/store.h"

namespace stashfs::cli {

std::string FormatSize(uint64_t bytes);
std::string FormatAge(int64_t seconds);
std::string FormatTime(int64_t unix_seconds);

struct MountEntry {
  std::string mountpoint;
  std::string fstype;
  std::string source;
};
// The mount of exactly `path` in /proc/self/mountinfo, if any.
std::optional<MountEntry> FindMount(const std::string& path);

// An absolute, normalised path (symlinks resolved when the path exists).
std::string AbsolutePath(const std::string& path);

// A directory stashfs may mount on: exists, is a directory, is empty and not a mountpoint.
Status CheckMountpoint(const std::string& dir);

}  // namespace stashfs::cli
