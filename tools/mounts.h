// The mount table as the command line needs it: which mount is at a path, and whether a
// directory can be mounted on.
#pragma once

#include <optional>
#include <string>

#include "store/status.h"

namespace stashfs::cli {

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
