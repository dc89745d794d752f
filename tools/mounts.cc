#include "tools/mounts.h"

#include <dirent.h>
#include <sys/stat.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

namespace stashfs::cli {

namespace {
// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool ok = true;
      for (int k = 1; k <= 3; ++k) {
        char c = s[i + static_cast<size_t>(k)];
        if (c < '0' || c > '7') ok = false;
        v = v * 8 + (c - '0');
      }
      if (ok) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}
}  // namespace

std::optional<MountEntry> FindMount(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  std::optional<MountEntry> found;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::vector<std::string> f;
    for (std::string w; ls >> w;)
      f.push_back(w);
    if (f.size() < 10) continue;
    size_t dash = 6;
    while (dash < f.size() && f[dash] != "-")
      ++dash;
    if (dash + 2 >= f.size()) continue;
    if (Unescape(f[4]) != path) continue;
    // The last matching line is the mount on top.
    found = MountEntry{path, f[dash + 1], Unescape(f[dash + 2])};
  }
  return found;
}

std::string AbsolutePath(const std::string& path) {
  std::error_code ec;
  auto p = std::filesystem::weakly_canonical(std::filesystem::absolute(path, ec), ec);
  if (ec) p = std::filesystem::absolute(path).lexically_normal();
  std::string s = p.string();
  if (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

Status CheckMountpoint(const std::string& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    int err = errno;
    if (err == ENOENT)
      return Status::NotFound("mountpoint " + dir + " does not exist; create it with `mkdir -p " +
                              dir + "`");
    if (err == ENOTCONN)
      return Status::Busy(dir +
                          " is a stashfs mount whose daemon has stopped; run `stashfs umount " +
                          dir + "` first");
    return Status::IOError("mountpoint " + dir, err);
  }
  if (!S_ISDIR(st.st_mode)) return Status::Invalid("mountpoint " + dir + " is not a directory");
  if (auto m = FindMount(dir)) {
    return Status::Busy(dir + " is already a mountpoint (" + m->fstype + " from " + m->source +
                        "); unmount it first" +
                        (m->fstype == "fuse.stashfs" ? " with `stashfs umount " + dir + "`" : ""));
  }
  DIR* d = ::opendir(dir.c_str());
  if (!d) return Status::IOError("reading mountpoint " + dir, errno);
  bool empty = true;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") {
      empty = false;
      break;
    }
  }
  ::closedir(d);
  if (!empty) {
    return Status::Invalid("mountpoint " + dir +
                           " is not empty; stashfs mounts only on empty "
                           "directories so no files get hidden (move them away or pick another)");
  }
  return Status::Ok();
}

}  // namespace stashfs::cli
