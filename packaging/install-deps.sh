#!/usr/bin/env bash
# Installs the Debian packages stashfs needs to build, run and test.
# Usage: packaging/install-deps.sh [--runtime|--build|--test]   (default: --test, everything)
set -euo pipefail
what=${1:---test}
runtime=(fuse3 zstd sqlite3)
build=(cmake ninja-build g++ pkg-config libfuse3-dev libzstd-dev libsqlite3-dev libssl-dev
       libcli11-dev nlohmann-json3-dev libgtest-dev libgmock-dev clang-format)
test=(python3 python3-pytest python3-pytest-timeout python3-venv python3-pip python3-setuptools python3-wheel
      nodejs npm attr psmisc util-linux rsync)
case "$what" in
  --runtime) pkgs=("${runtime[@]}") ;;
  --build) pkgs=("${runtime[@]}" "${build[@]}") ;;
  --test) pkgs=("${runtime[@]}" "${build[@]}" "${test[@]}") ;;
  *) echo "install-deps.sh: unknown option '$what': use --runtime, --build or --test" >&2; exit 2 ;;
esac
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# node and npm may come from outside Debian (nodesource); do not fight an existing install.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<<"${missing[*]}"
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo "install-deps.sh: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
