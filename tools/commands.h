// The stashfs commands. Each is a function of its options and an Io, so tests can run it
// in-process and check its output; main.cc only parses the command line.
#pragma once

#include <string>
#include <vector>

#include "store/log.h"
#include "store/store.h"
#include "tools/io.h"

namespace stashfs::cli {

struct GlobalOptions {
  std::string store;  // empty: DefaultStoreDir()
};

struct MountOptions {
  std::string dir;
  std::string volume;
  std::string key;
  std::vector<std::string> restore_keys;
  bool foreground = false;
  bool allow_other = false;
  bool read_only = false;
  bool no_save = false;
  std::vector<std::string> fuse_options;
  std::string output = "text";  // or "json"
  std::string github_output;    // append key=value lines here (GitHub's $GITHUB_OUTPUT)
  bool key_given = false;       // --key was on the command line (even if empty)
  bool volume_given = false;
};

int CmdMount(const GlobalOptions& g, const MountOptions& o, Io& io);
int CmdUmount(const GlobalOptions& g, const std::string& dir, Io& io);
int CmdStats(const GlobalOptions& g, bool json, Io& io);
int CmdStatus(const GlobalOptions& g, const std::string& dir, bool json, Io& io);
int CmdSave(const GlobalOptions& g, const std::string& dir, const std::string& key, bool update,
            Io& io);
int CmdList(const GlobalOptions& g, bool json, Io& io);
// `only`: "", "snapshot" or "volume".
int CmdRemove(const GlobalOptions& g, const std::string& name, const std::string& only, Io& io);
int CmdExport(const GlobalOptions& g, const std::string& key, const std::string& file, Io& io);
int CmdImport(const GlobalOptions& g, const std::string& file, const std::string& key, Io& io);
int CmdGc(const GlobalOptions& g, bool dry_run, bool json, Io& io);
int CmdPrune(const GlobalOptions& g, const std::string& max_size, const std::string& max_age,
             bool dry_run, bool json, Io& io);
int CmdFsck(const GlobalOptions& g, bool repair, double sample_percent, bool json, Io& io);
// No key: print every key; key only: print it; key and value: set it in the store's config.
int CmdConfig(const GlobalOptions& g, const std::string& key, const std::string& value, bool unset,
              Io& io);

// The options to reach the daemon serving `dir`: unless --store is given, the store the mount
// names as its source (STORE:VOLUME), whatever STASHFS_STORE or the default say.
GlobalOptions ForMount(const GlobalOptions& g, const std::string& dir);
// The live daemon serving `dir` in this store, or an error that says what to do.
Result<MountInfo> DaemonFor(Store& store, const std::string& dir);

// Opens the store named by the options (or the default), for commands other than mount.
Result<std::unique_ptr<Store>> OpenStore(const GlobalOptions& g, bool create);
std::string StoreDir(const GlobalOptions& g);
// Where the store's and the mount's own messages (store/log.h) go while a command runs: its
// stderr, in the same "stashfs: <message>" form as its error line.
LogSink LogTo(Io& io);
// Prints "stashfs: <message>" as the one error line and returns kExitError.
int Fail(Io& io, const Status& s);

#define ASSIGN_OR_RETURN_FAIL_IMPL(tmp, lhs, expr, io) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return Fail(io, tmp.status());        \
  lhs = std::move(tmp).value()
// `ASSIGN_OR_RETURN_FAIL(auto x, f(), io);` in a command: on error print it and exit 1.
#define ASSIGN_OR_RETURN_FAIL(lhs, expr, io) \
  ASSIGN_OR_RETURN_FAIL_IMPL(STASHFS_CONCAT(_res_, __LINE__), lhs, expr, io)

}  // namespace stashfs::cli
