#include "store/config.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace stashfs {

namespace {

// "12.5G" -> 12.5 and "G". Only plain non-negative decimals: no sign, exponent, hex or inf
// (std::stod alone would take " 1e3", "-0" or "0x10").
bool SplitNumber(const std::string& s, double* v, std::string* unit) {
  size_t digits = 0;
  while (digits < s.size() &&
         (std::isdigit(static_cast<unsigned char>(s[digits])) || s[digits] == '.'))
    ++digits;
  if (digits == 0) return false;
  size_t pos = 0;
  try {
    *v = std::stod(s.substr(0, digits), &pos);
  } catch (...) {
    return false;
  }
  if (pos != digits || !(*v >= 0) || std::isinf(*v)) return false;
  *unit = s.substr(digits);
  return true;
}

}  // namespace

Result<uint64_t> ParseSize(const std::string& s) {
  auto bad = [&] {
    return Status::Invalid("bad size '" + s +
                           "': use a number with an optional unit, like 500M, "
                           "10G or 2TiB");
  };
  double v;
  std::string unit;
  if (!SplitNumber(s, &v, &unit)) return bad();
  for (auto& c : unit)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (unit.size() > 1 && unit.back() == 'B') unit.pop_back();
  if (unit.size() > 1 && unit.back() == 'I') unit.pop_back();
  double mult;
  if (unit.empty() || unit == "B")
    mult = 1;
  else if (unit == "K")
    mult = 1024.0;
  else if (unit == "M")
    mult = 1024.0 * 1024;
  else if (unit == "G")
    mult = 1024.0 * 1024 * 1024;
  else if (unit == "T")
    mult = 1024.0 * 1024 * 1024 * 1024;
  else
    return bad();
  double bytes = v * mult;
  if (bytes > 9.0e18) return bad();
  return static_cast<uint64_t>(bytes);
}

Result<int64_t> ParseAge(const std::string& s) {
  auto bad = [&] {
    return Status::Invalid("bad age '" + s +
                           "': use a number with a unit, like 90s, 30m, 12h, "
                           "7d or 2w");
  };
  double v;
  std::string unit;
  if (!SplitNumber(s, &v, &unit)) return bad();
  if (unit.empty() && v == 0) return int64_t{0};  // "0": no limit
  double mult;
  if (unit == "s")
    mult = 1;
  else if (unit == "m" || unit == "min")
    mult = 60;
  else if (unit == "h")
    mult = 3600;
  else if (unit == "d")
    mult = 86400;
  else if (unit == "w")
    mult = 7 * 86400;
  else
    return bad();
  if (v * mult > 1e15) return bad();
  return static_cast<int64_t>(v * mult);
}

const std::vector<ConfigKey>& ConfigKeys() {
  static const std::vector<ConfigKey> keys = {
      {"max_size", "0",
       "store size limit (e.g. 20G); unmount and save prune to stay under it; 0 = none"},
      {"max_age", "0", "snapshots and volumes unused for longer are pruned (e.g. 14d); 0 = none"},
      {"compression_level", "3", "zstd level for new data, 1 (fastest) to 19 (smallest)"},
      {"block_cache_size", "64M", "decompressed data a mount keeps in memory"},
      {"memory_staging_size", "64M", "small written files a mount keeps in memory before storing"},
      {"commit_interval", "5s", "how often a mount commits changed files (1s to 1h)"},
      {"prune_low_watermark", "0.9", "auto-prune stops below this fraction of max_size (0.5 to 1)"},
  };
  return keys;
}

Status Config::Set(const std::string& key, const std::string& value, const std::string& origin) {
  Status st = SetValue(key, value);
  if (!st.ok()) return origin.empty() ? st : Status::Invalid(origin + ": " + st.message());
  source[key] = origin.empty() ? "default" : origin;
  text[key] = value;
  return Status::Ok();
}

Status Config::SetValue(const std::string& key, const std::string& value) {
  if (key == "max_size") {
    ASSIGN_OR_RETURN(max_size, ParseSize(value));
  } else if (key == "max_age") {
    ASSIGN_OR_RETURN(max_age, ParseAge(value));
  } else if (key == "compression_level") {
    char* end = nullptr;
    long v = std::strtol(value.c_str(), &end, 10);
    if (value.empty() || *end || v < 1 || v > 19) {
      return Status::Invalid("bad compression_level '" + value + "'" +
                             ": use a whole number from 1 to 19");
    }
    compression_level = static_cast<int>(v);
  } else if (key == "block_cache_size") {
    ASSIGN_OR_RETURN(block_cache_size, ParseSize(value));
    if (block_cache_size < (4u << 20))
      return Status::Invalid("block_cache_size must be at least 4M");
  } else if (key == "memory_staging_size") {
    ASSIGN_OR_RETURN(memory_staging_size, ParseSize(value));
  } else if (key == "commit_interval") {
    ASSIGN_OR_RETURN(int64_t s, ParseAge(value));
    if (s < 1 || s > 3600) return Status::Invalid("commit_interval must be between 1s and 1h");
    commit_interval = static_cast<double>(s);
  } else if (key == "prune_low_watermark") {
    char* end = nullptr;
    double v = std::strtod(value.c_str(), &end);
    if (value.empty() || *end || !(v >= 0.5 && v <= 1.0)) {
      return Status::Invalid("bad prune_low_watermark '" + value + "'" +
                             ": use a fraction from 0.5 to 1");
    }
    prune_low_watermark = v;
  } else {
    std::string names;
    for (const auto& k : ConfigKeys())
      names += (names.empty() ? "" : ", ") + std::string(k.name);
    return Status::Invalid("unknown config key '" + key + "'; known keys: " + names);
  }
  return Status::Ok();
}

std::string UserConfigPath() {
  if (const char* x = std::getenv("XDG_CONFIG_HOME"); x && *x)
    return std::string(x) + "/stashfs/config";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.config/stashfs/config";
}

std::string StoreConfigPath(const std::string& store_dir) {
  return store_dir + "/config";
}

Result<std::vector<ConfigLine>> ParseConfigText(const std::string& text,
                                                const std::string& origin) {
  std::vector<ConfigLine> out;
  std::istringstream in(text);
  std::string line;
  int n = 0;
  auto trim = [](std::string s) {
    size_t a = s.find_first_not_of(" \t\r"), b = s.find_last_not_of(" \t\r");
    return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
  };
  while (std::getline(in, line)) {
    ++n;
    auto hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    line = trim(line);
    if (line.empty()) continue;
    auto eq = line.find('=');
    if (eq == std::string::npos) {
      return Status::Invalid(origin + ":" + std::to_string(n) + ": expected `key = value`, got '" +
                             line + "'");
    }
    out.push_back({trim(line.substr(0, eq)), trim(line.substr(eq + 1)), n});
  }
  return out;
}

Result<Config> LoadConfig(Env* env, const std::string& store_dir) {
  Config c;
  for (const auto& k : ConfigKeys())
    RETURN_IF_ERROR(c.Set(k.name, k.default_value, ""));
  for (const std::string& path : {UserConfigPath(), StoreConfigPath(store_dir)}) {
    if (!env->Exists(path)) continue;
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(env, path));
    ASSIGN_OR_RETURN(auto lines, ParseConfigText(text, path));
    for (const auto& l : lines)
      RETURN_IF_ERROR(c.Set(l.key, l.value, path + ":" + std::to_string(l.line)));
  }
  for (const auto& k : ConfigKeys()) {
    std::string var = "STASHFS_" + std::string(k.name);
    for (auto& ch : var)
      ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    if (const char* v = std::getenv(var.c_str()); v && *v) RETURN_IF_ERROR(c.Set(k.name, v, var));
  }
  return c;
}

Status WriteStoreConfig(Env* env, const std::string& store_dir, const std::string& key,
                        const std::string& value) {
  Config check;
  if (!value.empty()) RETURN_IF_ERROR(check.Set(key, value, ""));
  bool known = false;
  for (const auto& k : ConfigKeys())
    known |= key == k.name;
  if (!known) return check.Set(key, "x", "");  // produces the unknown-key message
  std::string path = StoreConfigPath(store_dir);
  std::vector<ConfigLine> lines;
  if (env->Exists(path)) {
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(env, path));
    ASSIGN_OR_RETURN(lines, ParseConfigText(text, path));
  }
  std::erase_if(lines, [&](const auto& l) { return l.key == key; });
  if (!value.empty()) lines.push_back({key, value, 0});
  std::string out = "# stashfs store configuration: `stashfs config` shows every key\n";
  for (const auto& l : lines)
    out += l.key + " = " + l.value + "\n";
  return WriteFileAtomic(env, path, out, 0600);
}

}  // namespace stashfs
