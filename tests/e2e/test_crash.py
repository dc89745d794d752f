"""Crash consistency: SIGKILL the daemon (Mount.kill()) and remount. A crash may lose data that was
not fsynced, nothing else: fsynced files survive byte-exact, nothing unreadable or foreign appears,
and the store mounts cleanly and keeps working. Needs real mounts: skipped with
STASHFS_E2E_NATIVE=1.
"""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import helpers
from conftest import native_mode, stats
from helpers import (MiB, assert_bytes_equal, check_unsynced_content, crash_content, det_bytes,
                     parse_crash_log, read_file, regular_bytes, sha256_bytes, sha256_file,
                     write_file)

pytestmark = pytest.mark.skipif(native_mode(), reason="needs real stashfs mounts (SIGKILL, remount)")

SEED = 20240611


def fsync_path(p):
    fd = os.open(p, os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(p) else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def report(problems, what):
    if problems:
        raise AssertionError(f"{what}: {len(problems)} problems, first ones:\n  " +
                             "\n  ".join(problems[:15]))


def check_store_still_works(store, mount_factory, m):
    """After the crash and the checks: the remounted volume takes writes, umounts cleanly, and
    comes back with them."""
    write_file(m.path / "after-crash", b"written after the crash")
    m.umount()
    stats(store)
    m2 = mount_factory()
    assert read_file(m2.path / "after-crash") == b"written after the crash"
    if (m2.path / "d0").is_dir():
        shutil.rmtree(m2.path / "d0")
    m2.umount()
    return stats(store)


def test_kill_during_heavy_write(store, workdir, mount_factory):
    m = mount_factory()
    log = workdir / "writer.log"
    out = open(workdir / "writer.out", "w")
    writer = subprocess.Popen([sys.executable, helpers.__file__, "crash-writer", str(m.path),
                               str(log), str(SEED), "90"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            text = log.read_text() if log.exists() else ""
            synced = text.count("\nS ")
            if synced >= 40 and text.count("\nW ") >= 100:
                break
            assert writer.poll() is None, (f"writer exited {writer.returncode} before the kill:\n"
                                           f"{(workdir / 'writer.out').read_text()}{text[-2000:]}")
            assert time.monotonic() < deadline, f"writer too slow: {synced} fsynced files in 60 s"
            time.sleep(0.02)
        assert writer.poll() is None, "writer finished before the kill"
        m.kill()
        try:
            writer.wait(timeout=60)
        except subprocess.TimeoutExpired:
            writer.kill()
            raise AssertionError("the writer hung after the daemon was killed (requests not aborted)")
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        out.close()
    names, synced, status = parse_crash_log(log)
    print(f"writer: {len(names)} names, {len(synced)} fsynced, status {status}")
    assert any(s.startswith("STOPPED") for s in status), f"writer did not stop on an error: {status}"

    stats(store)  # the crashed store can be inspected before any remount
    m = mount_factory()
    problems = []
    for d in range(8):
        if not (m.path / f"d{d}").is_dir():
            problems.append(f"directory d{d} (created, fsynced, parent fsynced) is missing")
    for dirpath, _dn, filenames in os.walk(m.path):
        for n in filenames:
            rel = os.path.relpath(os.path.join(dirpath, n), m.path)
            if rel not in names:
                problems.append(f"{rel}: a file the writer never created")
                continue
            try:
                data = read_file(m.path / rel)
            except OSError as e:
                problems.append(f"{rel}: read failed: {e}")
                continue
            why = check_unsynced_content(data, crash_content(SEED, names[rel]))
            if why:
                problems.append(f"{rel}: {why}")
    for rel, (i, sha) in sorted(synced.items()):
        p = m.path / rel
        if not os.path.lexists(p):
            problems.append(f"{rel}: fsynced before the kill, missing after remount")
            continue
        want = crash_content(SEED, i)
        assert sha == sha256_bytes(want), "writer log and crash_content disagree"
        got = sha256_file(p)
        if got != sha:
            problems.append(f"{rel}: fsynced content differs: {len(read_file(p))} bytes, "
                            f"expected {len(want)} (sha {got[:12]} != {sha[:12]})")
    report(problems, f"after SIGKILL during writes ({len(synced)} fsynced files)")
    check_store_still_works(store, mount_factory, m)


def tree_content(d: int, f: int) -> bytes:
    return det_bytes(f"tree-{d}-{f}", (f * 7919) % 70_000, compressible=bool(f % 2))


def test_kill_after_unsynced_tree_and_directory_fsync(store, mount_factory):
    """A whole tree written with no fsync of any file, then fsync of its directories, then the
    kill. The fsynced directories keep their entries; file data may be lost, but what is there is
    the written data (or zeros/absent), never other bytes; the store stays usable."""
    m = mount_factory()
    top = m.path / "tree"
    top.mkdir()
    for d in range(6):
        (top / f"d{d}").mkdir()
        for f in range(40):
            write_file(top / f"d{d}" / f"f{f:02d}", tree_content(d, f))
    write_file(top / "README", b"top-level file\n" * 100)
    fsync_path(top)
    fsync_path(m.path)
    m.kill()

    stats(store)
    m = mount_factory()
    problems = []
    if not top.is_dir():
        problems.append("the fsynced directory is gone")
    else:
        got = sorted(os.listdir(top))
        want = sorted([f"d{d}" for d in range(6)] + ["README"])
        if got != want:
            problems.append(f"entries of the fsynced directory: {got}, expected {want}")
        for dirpath, dirnames, filenames in os.walk(top):
            for n in filenames:
                p = Path(dirpath) / n
                rel = p.relative_to(top)
                if rel.parts == ("README",):
                    intended = b"top-level file\n" * 100
                elif len(rel.parts) == 2 and rel.parts[0][1:].isdigit() and n[1:].isdigit():
                    intended = tree_content(int(rel.parts[0][1:]), int(n[1:]))
                else:
                    problems.append(f"{rel}: never created")
                    continue
                try:
                    why = check_unsynced_content(read_file(p), intended)
                except OSError as e:
                    why = f"read failed: {e}"
                if why:
                    problems.append(f"{rel}: {why}")
    report(problems, "after SIGKILL following a directory fsync")
    # The tree can be removed and rewritten.
    shutil.rmtree(top)
    write_file(m.path / "again", b"again")
    m.umount()
    m = mount_factory()
    assert os.listdir(m.path) == ["again"]


@pytest.mark.parametrize("idle", [0.0, 1.5])
def test_kill_when_idle_after_fsync_of_big_file(store, mount_factory, idle):
    """fsync of a big file, no umount, an idle moment (background work may be running), SIGKILL:
    the file comes back whole."""
    m = mount_factory()
    write_file(m.path / "unsynced-before", det_bytes("before", 300_000))
    big = det_bytes("big-random", 24 * MiB) + det_bytes("big-text", 8 * MiB, compressible=True)
    fd = os.open(m.path / "big.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    view = memoryview(big)
    while view:
        view = view[os.write(fd, view[:4 * MiB]):]
    os.fsync(fd)
    os.close(fd)
    small = b"small and fsynced\n"
    fd = os.open(m.path / "small", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, small)
    os.fdatasync(fd)
    os.fsync(fd)
    os.close(fd)
    time.sleep(idle)
    m.kill()

    stats(store)
    m = mount_factory()
    names = set(os.listdir(m.path))
    assert {"big.bin", "small"} <= names <= {"big.bin", "small", "unsynced-before"}, names
    assert os.stat(m.path / "big.bin").st_size == len(big)
    assert sha256_file(m.path / "big.bin") == sha256_bytes(big), "fsynced big file differs"
    assert read_file(m.path / "small") == small
    if "unsynced-before" in names:
        why = check_unsynced_content(read_file(m.path / "unsynced-before"),
                                     det_bytes("before", 300_000))
        assert not why, f"unsynced-before: {why}"
    s = check_store_still_works(store, mount_factory, m)
    assert s["logical_bytes"] >= len(big), s


def test_kill_with_open_unlinked_file(store, mount_factory):
    """An open, unlinked, fsynced file at the crash: after remount it is gone for good (no hidden
    leftovers, not counted in logical_bytes), and the rest is intact."""
    m = mount_factory()
    keep = det_bytes("keep", 1 * MiB)
    write_file(m.path / "keep", keep)
    fsync_path(m.path / "keep")
    fd = os.open(m.path / "orphan", os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, det_bytes("orphan", 4 * MiB))
    os.fsync(fd)
    os.unlink(m.path / "orphan")
    fsync_path(m.path)
    os.pwrite(fd, b"written after unlink", 0)
    os.fsync(fd)
    m.kill()
    try:
        os.close(fd)
    except OSError:
        pass  # the connection is gone; the fd is released anyway
    m = mount_factory()
    assert os.listdir(m.path) == ["keep"], f"after remount: {os.listdir(m.path)}"
    assert_bytes_equal(read_file(m.path / "keep"), keep, "keep")
    m.umount()
    s = stats(store)
    assert len(keep) <= s["logical_bytes"] <= len(keep) * 1.01 + 65536, (
        f"logical_bytes {s['logical_bytes']} should count only 'keep' ({len(keep)}): {s}")
    m = mount_factory()
    assert os.listdir(m.path) == ["keep"]
    assert regular_bytes(m.path) == len(keep)
