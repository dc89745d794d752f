// The stashfs command line: parses arguments with CLI11 and calls the command functions.
#include <CLI/CLI.hpp>

#include "tools/commands.h"

using namespace stashfs::cli;

int main(int argc, char** argv) {
  CLI::App app{"stashfs: a deduplicated, compressed filesystem for build and package caches"};
  app.set_version_flag("--version", std::string("stashfs ") + STASHFS_VERSION);
  app.require_subcommand(1);
  // Global options may come after the subcommand too (`stashfs mount --store S ...`), as the
  // README promises: subcommands created below inherit this and hand options they do not know
  // to the app.
  app.fallthrough();
  GlobalOptions g;
  // $STASHFS_STORE is read by DefaultStoreDir(), not here, so that g.store is set only by an
  // explicit --store: umount/status/save of a mount otherwise use the mount's own store.
  app.add_option("--store", g.store,
                 "store directory (default: the mount's own store for umount/status/save, "
                 "else $STASHFS_STORE, /var/lib/stashfs for root, else $XDG_DATA_HOME/stashfs)");

  MountOptions m;
  auto* mount = app.add_subcommand("mount", "mount a volume or a cache key at DIR");
  auto* vol =
      mount->add_option("--volume", m.volume, "named, long-lived volume (default: 'default')");
  auto* key_opt =
      mount->add_option("--key", m.key, "cache key: restore it, save the tree under it at umount");
  key_opt->excludes(vol);
  mount
      ->add_option("--restore-key", m.restore_keys,
                   "prefix to restore from when KEY is missing (repeatable)")
      ->needs(key_opt);
  mount->add_flag("--foreground,-f", m.foreground, "do not daemonize");
  mount->add_flag("--allow-other", m.allow_other, "let other users (and Docker) use the mount");
  mount->add_flag("--read-only", m.read_only, "mount read-only");
  mount->add_flag("--no-save", m.no_save, "with --key: do not save the key at umount");
  mount->add_option("-o", m.fuse_options, "FUSE mount option (repeatable)")->delimiter(',');
  mount->add_option("--output", m.output, "how to report the outcome: text or json")
      ->check(CLI::IsMember({"text", "json"}));
  mount->add_option("DIR", m.dir, "empty directory to mount on")->required();

  std::string dir;
  auto* umount = app.add_subcommand("umount", "store everything, save the key if new, unmount");
  umount->add_option("DIR", dir, "mountpoint")->required();

  bool json = false;
  auto* stats = app.add_subcommand("stats", "sizes, dedup and compression of the store");
  stats->add_flag("--json", json, "machine-readable output");

  auto* status = app.add_subcommand("status", "what a mount is and what it did");
  status->add_option("DIR", dir, "mountpoint")->required();
  status->add_flag("--json", json, "machine-readable output");

  std::string key;
  bool update = false;
  auto* save = app.add_subcommand("save", "snapshot a live mount under a key without unmounting");
  save->add_option("DIR", dir, "mountpoint")->required();
  save->add_option("--key", key, "key to save under")->required();
  save->add_flag("--update", update, "move the key if it exists (keys are immutable otherwise)");

  auto* ls = app.add_subcommand("ls", "list snapshots and volumes");
  ls->add_flag("--json", json, "machine-readable output");

  std::string name, only;
  auto* rm = app.add_subcommand("rm", "forget a snapshot or volume (data goes at the next gc)");
  rm->add_option("NAME", name, "snapshot key or volume name")->required();
  auto* rm_snap = rm->add_flag_callback(
      "--snapshot", [&] { only = "snapshot"; }, "NAME is a key");
  rm->add_flag_callback(
        "--volume", [&] { only = "volume"; }, "NAME is a volume")
      ->excludes(rm_snap);

  std::string file;
  auto* exp = app.add_subcommand("export", "write a snapshot to one portable file");
  exp->add_option("KEY", key, "snapshot key")->required();
  exp->add_option("-o,--output", file, "file to write")->required();

  auto* imp = app.add_subcommand("import", "add a snapshot from an exported file");
  imp->add_option("FILE", file, "exported file")->required()->check(CLI::ExistingFile);
  imp->add_option("--key", key, "save under this key instead of the one in the file");

  bool dry_run = false;
  auto* gc = app.add_subcommand("gc", "delete data nothing references; safe while mounts are live");
  gc->add_flag("--dry-run", dry_run, "only report what would be freed");
  gc->add_flag("--json", json, "machine-readable output");

  std::string max_size, max_age;
  auto* prune = app.add_subcommand(
      "prune", "evict least-recently-used snapshots and volumes to a size and age");
  prune->add_option("--max-size", max_size, "store size to get under, e.g. 20G (default: config)");
  prune->add_option("--max-age", max_age, "evict what was unused for longer, e.g. 14d");
  prune->add_flag("--dry-run", dry_run, "only report what would be evicted");
  prune->add_flag("--json", json, "machine-readable output");

  bool repair = false;
  double sample = 100;
  auto* fsck = app.add_subcommand("fsck", "check the catalog and re-hash stored data");
  fsck->add_flag("--repair", repair, "isolate damage: mark damaged data lost, fix counts");
  fsck->add_option("--sample", sample,
                   "re-hash this percentage of data, least recently checked first");
  fsck->add_flag("--json", json, "machine-readable output");

  std::string value;
  bool unset = false;
  auto* config = app.add_subcommand("config", "show or set store configuration");
  config->add_option("KEY", name, "config key");
  config->add_option("VALUE", value, "new value (stored in STORE/config)");
  config->add_flag("--unset", unset, "remove KEY from STORE/config");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }
  Io io = Io::Std();
  stashfs::ScopedLogSink log(LogTo(io));
  m.key_given = key_opt->count() > 0;
  m.volume_given = vol->count() > 0;
  if (*mount) return CmdMount(g, m, io);
  if (*umount) return CmdUmount(g, dir, io);
  if (*stats) return CmdStats(g, json, io);
  if (*status) return CmdStatus(g, dir, json, io);
  if (*save) return CmdSave(g, dir, key, update, io);
  if (*ls) return CmdList(g, json, io);
  if (*rm) return CmdRemove(g, name, only, io);
  if (*exp) return CmdExport(g, key, file, io);
  if (*imp) return CmdImport(g, file, key, io);
  if (*gc) return CmdGc(g, dry_run, json, io);
  if (*prune) return CmdPrune(g, max_size, max_age, dry_run, json, io);
  if (*fsck) return CmdFsck(g, repair, sample, json, io);
  if (*config) return CmdConfig(g, name, value, unset, io);
  return kExitUsage;
}
