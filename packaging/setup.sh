#!/usr/bin/env bash
# The two ways into stashfs on a fresh Debian machine (README.md):
#
#   packaging/setup.sh mount DIR [--volume NAME]   install, build, and mount a cache at DIR
#                                                  backed by the default local store
#   packaging/setup.sh test                        install, build, and run every test
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
  echo "usage: packaging/setup.sh mount DIR [--volume NAME] | packaging/setup.sh test" >&2
  exit 2
}

case "${1:-}" in
  mount)
    [ $# -ge 2 ] || usage
    dir=$2; shift 2
    volume=$(basename "$dir" | tr -c 'A-Za-z0-9._-\n' '-' | sed 's/^[.-]*//')
    [ -n "$volume" ] || volume=default
    if [ "${1:-}" = "--volume" ] && [ $# -ge 2 ]; then volume=$2; fi
    bash packaging/install-deps.sh --build
    build build -DSTASHFS_BUILD_TESTS=OFF
    bin=build/tools/stashfs
    if [ "$(id -u)" -eq 0 ]; then
      cmake --install build >/dev/null
      bin=stashfs
    fi
    mkdir -p "$dir"
    exec "$bin" mount --volume "$volume" "$dir"
    ;;
  test)
    bash packaging/install-deps.sh --test
    build build
    # Unit tests and the real-mount end-to-end suites (pip, npm, apt, tar on FUSE), two at a time.
    ctest --test-dir build --output-on-failure -j "$jobs"
    ;;
  *)
    usage
    ;;
esac
