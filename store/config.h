// Store configuration: one table of keys (after ccache's config.cpp). Values come from, lowest
// first: built-in defaults, ~/.config/stashfs/config, STORE/config, STASHFS_<KEY> environment
// variables, and command-line overrides. Files hold `key = value` lines; `#` starts a comment.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "store/env.h"
#include "store/status.h"

namespace stashfs {

// "10G", "500MiB", "1.5GB", "4096" -> bytes. Units are powers of 1024, as in du and ccache.
Result<uint64_t> ParseSize(const std::string& s);
// "7d", "12h", "30m", "90s", "2w" -> seconds.
Result<int64_t> ParseAge(const std::string& s);

struct ConfigKey {
  const char* name;
  const char* default_value;
  const char* help;
};
// Every key stashfs understands.
const std::vector<ConfigKey>& ConfigKeys();

struct Config {
  uint64_t max_size = 0;  // 0: no limit
  int64_t max_age = 0;    // seconds; 0: no limit
  int compression_level = 3;
  uint64_t block_cache_size = 64ull << 20;
  uint64_t memory_staging_size = 64ull << 20;
  double commit_interval = 5.0;      // seconds
  double prune_low_watermark = 0.9;  // auto-prune down to this fraction of max_size

  // Where each value came from ("default", a file path, "environment", "command line").
  std::map<std::string, std::string> source;
  std::map<std::string, std::string> text;  // the value as written

  // Sets one key from text, validating it; Invalid says where the value came from (`origin`:
  // "FILE:LINE" or an environment variable), what is wrong and what is allowed.
  Status Set(const std::string& key, const std::string& value, const std::string& origin);

 private:
  Status SetValue(const std::string& key, const std::string& value);
};

struct ConfigLine {
  std::string key;
  std::string value;
  int line;
};

std::string UserConfigPath();
std::string StoreConfigPath(const std::string& store_dir);

// Loads the layered configuration for the store at `store_dir` (which may not exist yet).
Result<Config> LoadConfig(Env* env, const std::string& store_dir);
// Parses a config file's text into (key, value) pairs, rejecting unknown keys and bad lines.
Result<std::vector<ConfigLine>> ParseConfigText(const std::string& text, const std::string& origin);
// Sets or (value empty) removes `key` in the store's config file, atomically; validates first.
Status WriteStoreConfig(Env* env, const std::string& store_dir, const std::string& key,
                        const std::string& value);

}  // namespace stashfs
