#!/usr/bin/env bash
# The two ways into stashfs on a fresh Debian machine (README.md):
#
#   packaging/setup.sh mount DIR [--volume NAME]   install, build, and mount a cache at DIR
#                                                  backed by the default local store
#   packaging/setup.sh test                        install, build, and run every test
#   packaging/setup.sh sanitize                    the unit tests and the FUSE end-to-end suites
#                                                  under ASan+UBSan, then under TSan
#
# Both install the Debian packages they need first (packaging/install-deps.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
jobs=$(nproc 2>/dev/null || echo 2)

build() {  # build DIR [extra cmake args...]
  local dir=$1; shift
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
}

usage() {
  echo "usage: packaging/setup.sh mount DIR [--volume NAME] | packaging/setup.sh test|sanitize" >&2
  exit 2
}

case "${1:-}" in
  mount)
    [ $# -ge 2 ] || usage
    dir=$2; shift 2
    volume=""
    if [ "${1:-}" = "--volume" ] && [ $# -ge 2 ]; then volume=$2; fi
    if [ -z "$volume" ]; then
      # Name the volume after the directory (~/.cache/pip -> pip). Volume names are
      # [A-Za-z0-9._+=:@-] and start with neither '.' nor '-', so other bytes become '-'
      # (in the C locale: byte ranges, whatever the user's locale collates).
      volume=$(printf %s "$(basename -- "$dir")" | LC_ALL=C tr -c 'A-Za-z0-9._+=:@-' '-' | LC_ALL=C sed 's/^[.-]*//' | cut -c1-128)
      [ -n "$volume" ] || volume=default
      if [ "$volume" != "$(basename -- "$dir")" ]; then
        echo "setup.sh: volume name '$volume' (from the directory's name); pick another with --volume NAME" >&2
      fi
    fi
    if ! [ -e /dev/fuse ]; then
      echo "setup.sh: cannot mount: /dev/fuse is missing; load the module (modprobe fuse) or, in a container, pass --device /dev/fuse" >&2
      exit 1
    fi
    if [ "$(id -u)" -ne 0 ] && { ! [ -r /dev/fuse ] || ! [ -w /dev/fuse ]; }; then
      echo "setup.sh: cannot mount: /dev/fuse is not readable and writable by $(id -un); run as root, or have root give you access to it (chmod 0666 /dev/fuse is Debian's default)" >&2
      exit 1
    fi
    bash packaging/install-deps.sh --build
    build build -DSTASHFS_BUILD_TESTS=OFF
    # Installed, so `stashfs umount DIR` and the rest work from any shell: root gets
    # /usr/local, a user ~/.local (on Debian's default PATH once ~/.local/bin exists).
    prefix=/usr/local
    [ "$(id -u)" -eq 0 ] || prefix=$HOME/.local
    cmake --install build --prefix "$prefix" >/dev/null
    case ":$PATH:" in
      *":$prefix/bin:"*) ;;
      *) echo "setup.sh: installed $prefix/bin/stashfs; add $prefix/bin to PATH to run it as stashfs" >&2 ;;
    esac
    mkdir -p -- "$dir"
    # An absolute path, so a directory named like an option (-x) stays a directory.
    dir=$(cd -- "$dir" && pwd)
    exec "$prefix/bin/stashfs" mount --volume "$volume" "$dir"
    ;;
  test)
    bash packaging/install-deps.sh --test
    build build
    # Unit tests and the real-mount end-to-end suites (pip, npm, apt, tar on FUSE), two at a time.
    ctest --test-dir build --output-on-failure -j "$jobs"
    ;;
  sanitize)
    bash packaging/install-deps.sh --test
    # The suites that drive the threaded FUSE paths hardest; the mounted daemon is the
    # sanitized binary. Reports go to files, because a daemon killed by a crash test or
    # detached from the terminal has no stderr anyone reads; any report fails the run.
    suites=(tests/e2e/test_posix.py tests/e2e/test_persistence.py tests/e2e/test_crash.py
            tests/e2e/test_ops.py)
    for kind in address,undefined thread; do
      dir=build-sanitize-${kind%%,*}
      build "$dir" -DSTASHFS_SANITIZE="$kind"
      reports=$(mktemp -d /tmp/stashfs-sanitize.XXXXXX)
      export ASAN_OPTIONS="log_path=$reports/asan:detect_leaks=1"
      export UBSAN_OPTIONS="log_path=$reports/ubsan:print_stacktrace=1"
      export TSAN_OPTIONS="log_path=$reports/tsan:second_deadlock_stack=1"
      echo "== $kind: unit tests" >&2
      "$dir/tests/stashfs_unit_tests" --gtest_brief=1
      echo "== $kind: end-to-end suites" >&2
      (cd tests/e2e && STASHFS_BIN="$here/$dir/tools/stashfs" /usr/bin/python3 -m pytest -q -rfE \
        --timeout=900 -p no:cacheprovider "${suites[@]/#tests\/e2e\//}")
      unset ASAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS
      if compgen -G "$reports/*" >/dev/null; then
        cat "$reports"/* >&2
        echo "sanitize: $kind reported problems (above; reports in $reports)" >&2
        exit 1
      fi
      rmdir "$reports"
    done
    echo "sanitize: no reports from address,undefined or thread" >&2
    ;;
  *)
    usage
    ;;
esac
