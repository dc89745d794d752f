#!/usr/bin/python3
"""Figures issue 2 asks for, beside bench/run: `npm ci` cold (empty cache, from the registry) and
warm on a stashfs mount vs a native directory, and stored vs logical bytes of a node_modules tree
and of a venv, each in a store of its own.

    sudo bench/tools_figures.py [--stashfs build/tools/stashfs] [--workdir /var/tmp/stashfs-tools] npm|venv

npm needs registry.npmjs.org (the median of 3 rounds is printed); venv uses the tests' local
wheels served on 127.0.0.1. Everything it mounts is unmounted; the workdir is left for a look.
"""
import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "e2e"))
import tools_fixtures as tf  # noqa: E402

# The tests' small pinned set plus three common, larger packages.
NPM_PACKAGES = dict(tf.NPM_PACKAGES, typescript="5.4.5", lodash="4.17.21", express="4.19.2")


def sh(*args) -> str:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True,
                          text=True).stdout


@contextmanager
def mounted(binary: str, store: Path, volume: str, path: Path):
    path.mkdir(parents=True, exist_ok=True)
    sh(binary, "--store", store, "mount", "--volume", volume, path)
    try:
        yield path
    finally:
        sh(binary, "umount", path)


@contextmanager
def native_dir(path: Path):
    path.mkdir(parents=True, exist_ok=True)
    yield path


def stored_vs_logical(binary: str, store: Path, what: str):
    st = json.loads(sh(binary, "--store", store, "stats", "--json"))
    print(f"{what}: logical {st['logical_bytes']:,} B, stored {st['stored_bytes']:,} B "
          f"({st['logical_bytes'] / max(st['stored_bytes'], 1):.2f}x smaller; dedup "
          f"{st['dedup_ratio']:.2f}, compression {st['compression_ratio']:.2f})")


def npm_figures(binary: str, wd: Path):
    env = tf.npm_env()
    lock = tf.generate_npm_lockfile(wd / "lock", packages=NPM_PACKAGES)
    times = {"native": {"cold": [], "warm": []}, "stashfs": {"cold": [], "warm": []}}
    for rnd in range(3):
        for col in ("native", "stashfs"):
            base = wd / f"{col}-{rnd}"
            with (mounted(binary, wd / "npm-store", f"npm{rnd}", base) if col == "stashfs"
                  else native_dir(base)):
                proj = tf.write_npm_project(base / "proj", lockfile=lock, packages=NPM_PACKAGES)
                cache = base / "npm-cache"
                t = time.monotonic()
                tf.npm(proj, "ci", "--ignore-scripts", cache=cache, env=env)
                cold = time.monotonic() - t
                shutil.rmtree(proj / "node_modules")
                t = time.monotonic()
                tf.npm(proj, "ci", "--offline", "--ignore-scripts", cache=cache, env=env)
                warm = time.monotonic() - t
            times[col]["cold"].append(cold)
            times[col]["warm"].append(warm)
            print(f"round {rnd + 1}/3 {col}: cold {cold:.2f}s warm {warm:.2f}s", flush=True)
    for k in ("cold", "warm"):
        n, s = statistics.median(times["native"][k]), statistics.median(times["stashfs"][k])
        print(f"npm ci, {k}: native {n:.2f}s stashfs {s:.2f}s ratio {s / n:.2f}")
    with mounted(binary, wd / "nm-store", "nm", wd / "nm") as d:
        sh("cp", "-a", wd / "native-0" / "proj" / "node_modules", d / "node_modules")
    stored_vs_logical(binary, wd / "nm-store", "node_modules")


def venv_figures(binary: str, wd: Path):
    idx = tf.build_local_index(wd / "index")
    with mounted(binary, wd / "venv-store", "venv", wd / "venv") as d:
        with tf.serve_index(idx.root) as srv:
            env = tf.pip_env(srv.index_url, d / "pip-cache")
            tf.make_venv(d / "venv")
            tf.pip_install(d / "venv", list(tf.PY_REQUIREMENTS), env)
    stored_vs_logical(binary, wd / "venv-store", "venv + pip cache")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stashfs", default=str(REPO / "build" / "tools" / "stashfs"))
    ap.add_argument("--workdir", default="/var/tmp/stashfs-tools")
    ap.add_argument("what", choices=["npm", "venv"])
    a = ap.parse_args()
    wd = Path(a.workdir) / f"{a.what}-{time.strftime('%Y%m%d-%H%M%S')}"
    wd.mkdir(parents=True)
    (npm_figures if a.what == "npm" else venv_figures)(a.stashfs, wd)


if __name__ == "__main__":
    main()
