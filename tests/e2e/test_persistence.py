"""Data and metadata persist across `stashfs umount` + remount; dedup and compression show in
`stashfs stats --json`. Needs real mounts: skipped with STASHFS_E2E_NATIVE=1.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import stat
import time
from pathlib import Path

import pytest

from conftest import native_mode, run_stashfs, stats
from helpers import (KiB, MiB, assert_bytes_equal, compare_meta, copy_real_tree, copy_text_tree,
                     det_bytes, diff_r, inode_groups, pread_all, read_file, regular_bytes,
                     tree_meta, write_file)

pytestmark = pytest.mark.skipif(native_mode(), reason="needs real stashfs mounts (remount, stats)")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (ownership of copied trees, chown)")


def remount(mount_factory, m):
    """umount m (waits for the commit) and mount the same volume at the same place again."""
    args = list(m.args)
    vol = args[args.index("--volume") + 1] if "--volume" in args else None
    rest = [a for i, a in enumerate(args)
            if not (a == "--volume" or (i > 0 and args[i - 1] == "--volume"))]
    m.umount()
    return mount_factory(volume=vol, args=rest, name=m.path.name)


def entry_meta(p: Path) -> dict:
    st = os.lstat(p)
    return dict(kind=stat.S_IFMT(st.st_mode), mode=oct(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                size=None if stat.S_ISDIR(st.st_mode) else st.st_size, mtime_ns=st.st_mtime_ns,
                extra=os.readlink(p) if stat.S_ISLNK(st.st_mode) else None)


def pairs_meta(pairs, base: Path, side: int) -> dict:
    """Metadata of copied entries keyed by their path under base (side 0: source, 1: copy)."""
    out = {}
    for pair in pairs:
        key = os.path.relpath(pair[1], base)
        p = pair[side]
        out[key] = entry_meta(p)
        if p.is_dir() and not p.is_symlink():
            for rel, v in tree_meta(p).items():
                out[os.path.join(key, rel)] = v
    return out


def check_logical(st: dict, expected_regular: int, what: str):
    """logical_bytes is the sum of regular file sizes (symlinks/dirs may add a little)."""
    lb = st["logical_bytes"]
    assert expected_regular <= lb <= expected_regular * 1.01 + 64 * KiB, (
        f"{what}: logical_bytes {lb}, expected the sum of file sizes {expected_regular}; stats {st}")


# ------------------------------------------------------------------------------------------------


@needs_root
def test_real_tree_survives_remounts(mount_factory):
    m = mount_factory()
    tree = m.path / "tree"
    pairs = copy_real_tree(tree)
    # Some links of our own, whatever the source tree has.
    extra = tree / "links"
    extra.mkdir()
    write_file(extra / "target", b"target")
    os.symlink("target", extra / "rel")
    os.symlink("/nonexistent/dangling", extra / "dangling")
    os.link(extra / "target", extra / "hard")
    expected = pairs_meta(pairs, tree, 0)
    compare_meta(pairs_meta(pairs, tree, 1), expected, "copy before umount")
    n_files = sum(1 for v in expected.values() if stat.S_ISREG(v["kind"]))
    n_links = sum(1 for v in expected.values() if stat.S_ISLNK(v["kind"]))
    assert n_files > 1000, f"the real tree has only {n_files} files"
    groups = inode_groups(tree)
    assert ["links/hard", "links/target"] in groups
    extra_meta = tree_meta(extra, with_hash=True)
    print(f"copied {n_files} files, {n_links} symlinks, {regular_bytes(tree) / MiB:.1f} MiB")
    for round_ in (1, 2):
        m = remount(mount_factory, m)
        for src, dst in pairs:
            diff_r(src, dst)
        compare_meta(pairs_meta(pairs, tree, 1), expected, f"after remount {round_}")
        compare_meta(tree_meta(extra, with_hash=True), extra_meta, f"links after remount {round_}")
        assert inode_groups(tree) == groups, f"hard-link groups changed after remount {round_}"


@needs_root
def test_metadata_survives_remount(mount_factory):
    m = mount_factory()
    r = m.path
    (r / "dir" / "sub").mkdir(parents=True)
    (r / "sticky").mkdir()
    write_file(r / "file", b"file content")
    os.setxattr(r / "file", "user.plain", b"value")
    os.setxattr(r / "file", "user.binary", bytes(range(256)) + b"\0\0")
    os.setxattr(r / "dir", "user.on-dir", b"dir value")
    os.chown(r / "file", 1234, 5678)
    os.chmod(r / "file", 0o640)
    write_file(r / "dir" / "h1", b"hard linked")
    os.link(r / "dir" / "h1", r / "h2")
    os.link(r / "dir" / "h1", r / "dir" / "sub" / "h3")
    write_file(r / "setuid", b"#!/bin/sh\n")
    os.chmod(r / "setuid", 0o4755)
    os.symlink("dir/h1", r / "link")
    os.symlink("../nowhere", r / "dangling")
    os.lchown(r / "link", 42, 43)
    os.mkfifo(r / "fifo", 0o600)
    write_file(r / "empty", b"")
    os.chmod(r / "sticky", 0o1777)
    os.chown(r / "dir", 7, 8)
    os.chmod(r / "dir", 0o2750)
    # Timestamps last (creating entries changes directory mtimes), deepest first.
    t = 1_234_567_890_123_456_789
    for i, p in enumerate(["file", "dir/h1", "setuid", "fifo", "empty", "dir/sub", "sticky", "dir"]):
        os.utime(r / p, ns=(t + i * 1_000_000_007, t + i * 1_000_000_011))
    os.utime(r / "link", ns=(t + 3, t + 5), follow_symlinks=False)
    os.utime(r / "dangling", ns=(t + 7, t + 9), follow_symlinks=False)

    def xattrs():
        out = {}
        for rel in ("file", "dir", "dir/h1", "sticky"):
            out[rel] = {n: os.getxattr(r / rel, n) for n in os.listxattr(r / rel) if n.startswith("user.")}
        return out

    before_meta, before_x = tree_meta(r, with_hash=True), xattrs()
    before_ino = os.lstat(r / "h2").st_ino
    assert before_x["file"] == {"user.plain": b"value", "user.binary": bytes(range(256)) + b"\0\0"}
    m = remount(mount_factory, m)
    compare_meta(tree_meta(r, with_hash=True), before_meta, "metadata after remount")
    assert xattrs() == before_x, "xattrs changed across remount"
    inos = {os.lstat(r / p).st_ino for p in ("dir/h1", "h2", "dir/sub/h3")}
    assert len(inos) == 1, f"hard links no longer share an inode after remount: {inos}"
    assert os.lstat(r / "h2").st_nlink == 3
    assert inode_groups(r) == [["dir/h1", "dir/sub/h3", "h2"]]
    # Still one file: a write through one name shows through the others.
    fd = os.open(r / "h2", os.O_WRONLY | os.O_APPEND)
    os.write(fd, b" + more")
    os.close(fd)
    assert read_file(r / "dir" / "sub" / "h3") == b"hard linked + more"
    assert stat.S_ISFIFO(os.lstat(r / "fifo").st_mode)
    assert os.readlink(r / "dangling") == "../nowhere"
    print(f"inode of the hard-linked file: {before_ino} before, {inos.pop()} after remount")


@needs_root
def test_same_tree_in_two_volumes_is_stored_once(store, mount_factory):
    a = mount_factory(volume="a", name="mnt_a")
    pairs = copy_real_tree(a.path / "tree", budget=30 * MiB)
    size = regular_bytes(a.path / "tree")
    rel = next(Path(dp, f).relative_to(a.path) for dp, _d, fs in os.walk(a.path / "tree") for f in fs
               if os.path.isfile(os.path.join(dp, f)) and not os.path.islink(os.path.join(dp, f)))
    a.umount()
    s1 = stats(store)
    check_logical(s1, size, "one volume")
    assert 0 < s1["stored_bytes"], s1
    assert s1["unique_bytes"] <= s1["logical_bytes"], s1

    b = mount_factory(volume="b", name="mnt_b")
    assert os.listdir(b.path) == [], "a new volume is not empty"
    copy_real_tree(b.path / "tree", budget=30 * MiB)
    assert regular_bytes(b.path / "tree") == size
    b.umount()
    s2 = stats(store)
    assert s2["logical_bytes"] == 2 * s1["logical_bytes"], (s1, s2)
    grown = s2["stored_bytes"] - s1["stored_bytes"]
    assert grown <= 0.03 * s1["stored_bytes"], (
        f"the second copy of a {size} byte tree added {grown} stored bytes "
        f"({100 * grown / s1['stored_bytes']:.1f}% of the first copy's {s1['stored_bytes']}); "
        f"before {s1}, after {s2}")
    assert s2["unique_bytes"] - s1["unique_bytes"] <= 0.03 * s1["unique_bytes"], (s1, s2)

    # The volumes are still independent trees: changing b leaves a alone.
    b = mount_factory(volume="b", name="mnt_b")
    write_file(b.path / rel, b"changed in b")
    b.umount()
    a = mount_factory(volume="a", name="mnt_a")
    for src, dst in pairs:
        diff_r(src, dst)


def test_text_is_stored_compressed(store, mount_factory):
    m = mount_factory()
    total = copy_text_tree(m.path / "src")
    m.umount()
    s = stats(store)
    check_logical(s, total, "text tree")
    assert s["stored_bytes"] < 0.5 * s["logical_bytes"], (
        f"{total} bytes of Python source stored as {s['stored_bytes']} bytes "
        f"({s['stored_bytes'] / s['logical_bytes']:.2f} of logical); stats {s}")
    assert s["stored_bytes"] < s["unique_bytes"], s


CHUNKISH = [("empty", 0, False), ("one", 1, False), ("k128-1", 128 * KiB - 1, False),
            ("k128", 128 * KiB, False), ("k128+1", 128 * KiB + 1, False),
            ("k512", 512 * KiB, False), ("m2", 2 * MiB, False), ("m2+1", 2 * MiB + 1, False),
            ("m2+1-text", 2 * MiB + 1, True), ("m9", 9 * MiB, False)]


def test_chunk_boundary_sizes_round_trip(mount_factory):
    m = mount_factory()
    expected = {}
    for name, size, text in CHUNKISH:
        data = det_bytes(f"size-{name}", size, compressible=text)
        write_file(m.path / name, data)
        expected[name] = data
    zeros = bytes(4 * MiB)
    write_file(m.path / "zeros", zeros)
    expected["zeros"] = zeros
    m = remount(mount_factory, m)
    assert sorted(os.listdir(m.path)) == sorted(expected)
    for name, data in expected.items():
        assert os.stat(m.path / name).st_size == len(data), name
        assert_bytes_equal(read_file(m.path / name), data, f"{name} ({len(data)} bytes)")
    # Partial reads that straddle likely chunk edges.
    fd = os.open(m.path / "m9", os.O_RDONLY)
    for off in (128 * KiB - 3, 512 * KiB - 1, 1 * MiB - 2, 2 * MiB - 5, 4 * MiB - 1, 9 * MiB - 7):
        assert os.pread(fd, 10, off) == expected["m9"][off:off + 10], f"pread at {off}"
    os.close(fd)


def test_rewrite_in_middle_persists(mount_factory):
    m = mount_factory()
    p = m.path / "f"
    data = bytearray(det_bytes("middle", 6 * MiB))
    write_file(p, bytes(data))
    m = remount(mount_factory, m)
    edits = [(3 * MiB + 17, b"X" * 100), (2 * MiB - 1000, det_bytes("edit", 5000)), (0, b"!")]
    fd = os.open(p, os.O_WRONLY)
    for off, b in edits:
        os.pwrite(fd, b, off)
        data[off:off + len(b)] = b
    os.close(fd)
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"appended!!")
    os.close(fd)
    data += b"appended!!"
    assert_bytes_equal(read_file(p), bytes(data), "before umount")
    m = remount(mount_factory, m)
    assert_bytes_equal(read_file(p), bytes(data), "after remount")
    # A second generation of edits on top of the remounted file.
    fd = os.open(p, os.O_WRONLY)
    os.pwrite(fd, b"second", 5 * MiB)
    os.close(fd)
    data[5 * MiB:5 * MiB + 6] = b"second"
    # And a truncated-then-extended file.
    q = m.path / "t"
    write_file(q, det_bytes("t", 1 * MiB))
    os.truncate(q, 1000)
    os.truncate(q, 5000)
    m = remount(mount_factory, m)
    assert_bytes_equal(read_file(p), bytes(data), "after second remount")
    assert_bytes_equal(read_file(q), det_bytes("t", 1 * MiB)[:1000] + bytes(4000), "truncated file")


def test_overwrite_with_o_trunc_persists(mount_factory):
    """open(O_TRUNC) of an existing file must truncate what is stored, not only the page cache:
    with OPEN answered ENOSYS the kernel must send the truncation as a setattr (regression)."""
    m = mount_factory()
    files = {"small": (70_000, b"short"), "big": (3 * MiB, det_bytes("new", 100_000)),
             "empty": (5000, b"")}
    for name, (old_size, _new) in files.items():
        write_file(m.path / name, det_bytes(name, old_size))
    m = remount(mount_factory, m)  # the old contents are stored
    for name, (_old, new) in files.items():
        with open(m.path / name, "wb") as f:  # O_WRONLY | O_CREAT | O_TRUNC
            f.write(new)
    m = remount(mount_factory, m)
    for name, (_old, new) in files.items():
        assert_bytes_equal(read_file(m.path / name), new, f"{name} after remount")


def test_deleted_and_renamed_entries_stay_gone(store, mount_factory):
    m = mount_factory()
    r = m.path
    for i in range(60):
        write_file(r / f"f{i:02d}", det_bytes(f"del-{i}", 10_000 + i))
    (r / "tree" / "a" / "b").mkdir(parents=True)
    for i in range(200):
        write_file(r / "tree" / ("a" if i % 2 else "a/b") / f"g{i}", det_bytes(f"g{i}", 3000))
    m = remount(mount_factory, m)
    for i in range(0, 60, 2):
        os.unlink(r / f"f{i:02d}")
    for i in range(1, 20, 2):
        os.rename(r / f"f{i:02d}", r / f"renamed{i:02d}")
    shutil.rmtree(r / "tree")
    write_file(r / "short-lived", det_bytes("short", 1 * MiB))  # created and deleted in one session
    os.unlink(r / "short-lived")
    expected = ({f"f{i:02d}" for i in range(21, 60, 2)} | {f"renamed{i:02d}" for i in range(1, 20, 2)})
    assert set(os.listdir(r)) == expected
    m = remount(mount_factory, m)
    assert set(os.listdir(r)) == expected, (
        f"after remount: extra {sorted(set(os.listdir(r)) - expected)}, "
        f"missing {sorted(expected - set(os.listdir(r)))}")
    for i in range(1, 20, 2):
        assert read_file(r / f"renamed{i:02d}") == det_bytes(f"del-{i}", 10_000 + i)
    size = regular_bytes(r)
    m.umount()
    check_logical(stats(store), size, "after deletes")


def test_open_unlinked_file_then_umount(store, mount_factory):
    m = mount_factory()
    r = m.path
    keep = det_bytes("keep", 1 * MiB)
    write_file(r / "keep", keep)
    orphan = det_bytes("orphan", 4 * MiB)
    fd = os.open(r / "orphan", os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, orphan[:2 * MiB])
    os.unlink(r / "orphan")
    os.write(fd, orphan[2 * MiB:])
    os.fsync(fd)
    assert_bytes_equal(pread_all(fd, len(orphan), 0), orphan, "open unlinked file via its fd")
    assert os.listdir(r) == ["keep"]
    os.close(fd)  # the release reaches the daemon asynchronously; umount right away
    m = remount(mount_factory, m)
    assert os.listdir(r) == ["keep"], f"after remount: {os.listdir(r)}"
    assert_bytes_equal(read_file(r / "keep"), keep, "keep")
    m.umount()
    check_logical(stats(store), len(keep), "the unlinked file must not count")
    m = mount_factory()
    assert os.listdir(m.path) == ["keep"]


def test_copy_file_range_shares_chunks(store, mount_factory):
    m = mount_factory()
    data = det_bytes("cfr-share", 8 * MiB)
    write_file(m.path / "orig", data)
    src = os.open(m.path / "orig", os.O_RDONLY)
    dst = os.open(m.path / "copy", os.O_WRONLY | os.O_CREAT, 0o644)
    done = 0
    while done < len(data):
        n = os.copy_file_range(src, dst, len(data) - done)
        assert n > 0, f"copy_file_range returned 0 at {done}"
        done += n
    os.close(src)
    os.close(dst)
    m = remount(mount_factory, m)
    assert_bytes_equal(read_file(m.path / "copy"), data, "copy after remount")
    m.umount()
    s = stats(store)
    check_logical(s, 2 * len(data), "two 8 MiB files")
    assert s["stored_bytes"] < 1.25 * len(data), f"8 MiB copied inside the mount stored twice? {s}"
    assert s["unique_bytes"] < 1.25 * len(data), s


def test_mount_names_its_store_so_commands_need_no_store_option(workdir, mount_factory):
    # A store path with a comma and a space: libfuse splits options at commas and the kernel
    # escapes spaces in /proc/self/mountinfo; both must survive the round trip.
    odd_store = workdir / "my,store dir"
    m = mount_factory(volume="odd", store_dir=odd_store)
    (m.path / "f").write_text("kept\n")
    source = next(line.split(" - ")[1].split()[1] for line in
                  Path("/proc/self/mountinfo").read_text().splitlines()
                  if line.split()[4] == str(m.path).replace(" ", "\\040"))
    assert source == str(odd_store).replace(" ", "\\040") + ":odd", source
    env = dict(os.environ, STASHFS_STORE=str(workdir / "some-other-store"))
    status = run_stashfs(None, "status", str(m.path), "--json", env=env)
    assert json.loads(status.stdout)["store"] == str(odd_store), status.stdout
    saved = run_stashfs(None, "save", str(m.path), "--key", "odd-1", env=env)
    assert saved.stdout.startswith("stashfs: saved key 'odd-1'"), saved.stdout
    res = run_stashfs(None, "umount", str(m.path), env=env)
    m.proc.wait(timeout=60)
    assert res.stdout.startswith(f"stashfs: unmounted {m.path}"), res.stdout
    assert m.proc.returncode == 0, m.stderr()
    assert not (workdir / "some-other-store").exists()
    m2 = mount_factory(volume="odd", store_dir=odd_store)
    assert (m2.path / "f").read_text() == "kept\n"
    # An explicit --store that is not the mount's still says which one to pass.
    wrong = run_stashfs(workdir / "wrong", "umount", str(m2.path), check=False)
    assert wrong.returncode != 0 and len(wrong.stderr.splitlines()) == 1, wrong


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_unmounts_and_commits(mount_factory, sig):
    # systemd stops a unit with SIGTERM, a terminal with Ctrl-C: both must end like `umount`.
    m = mount_factory(volume="sig")
    (m.path / "d").mkdir()
    (m.path / "d" / "f").write_bytes(b"x" * (3 * MiB + 17))
    os.kill(m.pid, getattr(signal, sig))
    m.proc.wait(timeout=60)
    assert m.proc.returncode == 0, m.stderr()
    assert not os.path.ismount(m.path)
    assert f"{sig[3:].lower()}" in m.stderr().lower() or "unmounting" in m.stderr(), m.stderr()
    m.check_clean()
    m2 = mount_factory(volume="sig")
    assert (m2.path / "d" / "f").read_bytes() == b"x" * (3 * MiB + 17)


def test_umount_of_a_dead_mount_frees_the_directory(mount_factory):
    m = mount_factory(volume="dead")
    (m.path / "f").write_text("committed\n")
    res = run_stashfs(m.store, "save", str(m.path), "--key", "dead-1")
    os.kill(m.pid, signal.SIGKILL)
    m.proc.wait(timeout=30)
    assert os.path.ismount(m.path)
    res = run_stashfs(None, "umount", str(m.path), check=False)
    assert res.returncode == 1, res
    assert res.stderr.startswith(f"stashfs: the daemon serving {m.path} had stopped; unmounted it."), res
    assert not os.path.ismount(m.path)
    m2 = mount_factory(volume="dead")
    assert (m2.path / "f").read_text() == "committed\n"


def test_umount_of_a_busy_mount_is_refused_in_one_line_and_changes_nothing(mount_factory):
    """A process with its working directory in the mount keeps it busy: `stashfs umount` says so
    in one line (the daemon's words, no strerror tacked on), exits 1, and the mount serves on;
    once the process is gone the same command unmounts and the data is there after a remount."""
    m = mount_factory(volume="busy")
    (m.path / "f").write_text("kept\n")
    holder = subprocess.Popen(["sleep", "600"], cwd=m.path)
    try:
        res = run_stashfs(None, "umount", str(m.path), check=False)
        assert res.returncode == 1, res
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"stashfs: {m.path} is busy"), res.stderr
        assert "Input/output error" not in res.stderr, res.stderr
        assert os.path.ismount(m.path) and (m.path / "f").read_text() == "kept\n"
    finally:
        holder.kill()
        holder.wait()
    m.umount()
    m2 = mount_factory(volume="busy")
    assert (m2.path / "f").read_text() == "kept\n"


def test_a_detached_mount_logs_to_the_store_with_time_pid_and_mountpoint(store, workdir):
    """README: a detached daemon writes its messages to STORE/stashfs.log, one line each with
    the time, its pid and its mountpoint (a SIGTERM is one such message)."""
    mnt = workdir / "mnt-log"
    mnt.mkdir()
    run_stashfs(store, "mount", "--volume", "logged", str(mnt))
    try:
        pid = json.loads(run_stashfs(None, "status", str(mnt), "--json").stdout)["pid"]
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while os.path.ismount(mnt) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.ismount(mnt)
    finally:
        if os.path.ismount(mnt):
            run_stashfs(None, "umount", str(mnt), check=False)
    log = (store / "stashfs.log").read_text()
    assert re.search(rf"^\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ stashfs\[{pid}\] {re.escape(str(mnt))}: "
                     rf"Terminated received, unmounting {re.escape(str(mnt))}$", log, re.M), log


def test_big_file_stored_while_written_then_patched_persists(mount_factory):
    """A large file written front to back is stored while it is written (the status counter
    shows it); patching its start afterwards, as archivers and linkers do, must still leave the
    patched bytes after a remount, as must a second file written plainly to the end."""
    m = mount_factory()
    p = m.path / "big.bin"
    data = bytearray(det_bytes("streamed", 40 * MiB))
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
    streamed = 0
    try:
        for off in range(0, len(data), MiB):
            os.pwrite(fd, data[off:off + MiB], off)
        # The stream runs at nice 10 with CPU the writer leaves idle, its first steps can lose
        # their window to the kernel's writeback (the stream then starts again), and a file idle
        # for a second is flushed whole instead: keep the writer going (appending, which leaves
        # the stream alone) until a step has stored something, so the counter is seen before
        # any flush.
        deadline = time.monotonic() + 20
        extra = 0
        while time.monotonic() < deadline:
            st = json.loads(run_stashfs(None, "status", str(m.path), "--json").stdout)
            streamed = st["bytes_stored_while_written"]
            if streamed > 0:
                break
            if extra < 160:
                more = det_bytes(f"more-{extra}", MiB)
                os.pwrite(fd, more, len(data))
                data += more
                extra += 1
            time.sleep(0.1)
        os.pwrite(fd, b"HEADER", 0)
        data[0:6] = b"HEADER"
    finally:
        os.close(fd)
    assert streamed > 0, ("nothing of a 40 MiB sequential write was stored while it was written: "
                          f"{st}")
    # The stored prefix had been punched out of the scratch file; the patch below it copied
    # that prefix back first (else the flush, chunking from the start, would store zeros).
    st = json.loads(run_stashfs(None, "status", str(m.path), "--json").stdout)
    assert st["scratch_bytes_copied_back"] >= streamed, st
    assert_bytes_equal(read_file(p), bytes(data), "patched streamed file before remount")
    q = m.path / "plain.bin"
    plain = det_bytes("plain", 24 * MiB + 12345)
    write_file(q, plain)
    m = remount(mount_factory, m)
    assert_bytes_equal(read_file(p), bytes(data), "patched streamed file after remount")
    assert_bytes_equal(read_file(q), plain, "streamed file after remount")
