// Where a command writes: commands take an Io so tests can run them in-process and read what
// they printed (after dwarfs' iolayer).
#pragma once

#include <iostream>
#include <ostream>

namespace stashfs::cli {

struct Io {
  std::ostream& out;
  std::ostream& err;
  bool err_is_tty = false;  // progress bars only on a terminal

  static Io Std();
};

// Exit codes, documented in README.md.
enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,     // the command failed; stderr says why and what to do
  kExitUsage = 2,     // bad command line
  kExitDamage = 3,    // fsck: damage found (and not repaired)
  kExitRepaired = 4,  // fsck --repair: damage found and isolated
};

}  // namespace stashfs::cli
