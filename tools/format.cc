#include "tools/format.h"

#include <cmath>
#include <cstdio>
#include <ctime>
#include <sstream>

namespace stashfs::cli {

std::string FormatSize(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  else
    std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  return buf;
}

std::string FormatAge(int64_t seconds) {
  char buf[32];
  if (seconds < 0) seconds = 0;
  if (seconds < 120)
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(seconds));
  else if (seconds < 7200)
    std::snprintf(buf, sizeof buf, "%lldm", static_cast<long long>(seconds / 60));
  else if (seconds < 172800)
    std::snprintf(buf, sizeof buf, "%lldh", static_cast<long long>(seconds / 3600));
  else
    std::snprintf(buf, sizeof buf, "%lldd", static_cast<long long>(seconds / 86400));
  return buf;
}

std::string FormatTime(int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm;
  localtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

}  // namespace stashfs::cli
