"""POSIX behaviour real tools need from a stashfs mount (see PRODUCT.md, "Filesystem behaviour real
tools need"). Each test checks one behaviour with exact expected results, so that it fails on a
filesystem that lacks it. With STASHFS_E2E_NATIVE=1 they run in a plain directory: they must pass
there too (that is how the tests themselves are checked).
"""
import collections
import errno
import fcntl
import json
import mmap
import os
import shutil
import socket
import stat
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import native_mode, run_stashfs
from helpers import (CHILD_PRELUDE, DT_DIR, DT_FIFO, DT_LNK, DT_REG, DT_UNKNOWN, GiB, KiB,
                     MiB, RENAME_EXCHANGE, RENAME_NOREPLACE, assert_bytes_equal, det_bytes,
                     expect_errno, getdents_batches, have_getdents, is_root, pread_all, read_file,
                     renameat2, run, run_python, write_file)

needs_root = pytest.mark.skipif(not is_root(), reason="needs root (chown, other uids)")
NOBODY = 65534


@contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(p) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


class FsDir:
    """A test directory that can be remounted: a stashfs mount, or a native dir (remount no-op)."""

    def __init__(self, workdir, mount_factory, args=None):
        self.mount_factory, self.args = mount_factory, list(args or [])
        if native_mode():
            self.mount = None
            self.path = workdir / "native"
            self.path.mkdir()
        else:
            self.mount = mount_factory(volume="v", name="mnt", args=self.args)
            self.path = self.mount.path

    def remount(self):
        if self.mount is None:
            return
        self.mount.umount()
        self.mount = self.mount_factory(volume="v", name="mnt", args=self.args)
        assert self.mount.path == self.path


@pytest.fixture
def fsdir(workdir, mount_factory):
    return FsDir(workdir, mount_factory)


@pytest.fixture
def shared_dir(workdir, mount_factory):
    """A directory other users can reach: a mount with --allow-other (or native), 0755 path."""
    d = FsDir(workdir, mount_factory, args=[] if native_mode() else ["--allow-other"])
    os.chmod(workdir, 0o755)
    os.chmod(d.path, 0o755)
    for anc in Path(workdir).resolve().parents:
        if not os.stat(anc).st_mode & stat.S_IXOTH:
            pytest.skip(f"{anc} is not searchable by other users; set STASHFS_E2E_TMP elsewhere")
    return d.path


# ------------------------------------------------------------------------------------------------
# Regular files


def test_create_read_write_overwrite(target):
    p = target / "file.txt"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    assert os.write(fd, b"hello world") == 11
    os.close(fd)
    assert read_file(p) == b"hello world"
    assert os.stat(p).st_size == 11
    # Overwrite in the middle, then past the end.
    fd = os.open(p, os.O_RDWR)
    assert os.pwrite(fd, b"WORLD", 6) == 5
    assert os.pwrite(fd, b"!!", 11) == 2
    os.close(fd)
    assert read_file(p) == b"hello WORLD!!"
    # Rewrite shorter with O_TRUNC: no stale tail.
    write_file(p, b"bye")
    assert read_file(p) == b"bye"
    assert os.stat(p).st_size == 3
    # Empty file.
    write_file(target / "empty", b"")
    assert read_file(target / "empty") == b""
    assert os.stat(target / "empty").st_size == 0
    # 1 MiB+ written in odd-sized pieces, read back whole and at odd offsets.
    data = det_bytes("rw", 1 * MiB + 12345)
    fd = os.open(target / "big", os.O_WRONLY | os.O_CREAT, 0o644)
    pos = 0
    for n in (1, 4095, 4097, 65536, 100_003, 7):
        pos += os.write(fd, data[pos:pos + n])
    while pos < len(data):
        pos += os.write(fd, data[pos:pos + 300_001])
    os.close(fd)
    assert_bytes_equal(read_file(target / "big"), data, "big file")
    fd = os.open(target / "big", os.O_RDONLY)
    for off, n in ((0, 1), (4095, 2), (65535, 70_000), (len(data) - 10, 100), (len(data), 10)):
        assert pread_all(fd, n, off) == data[off:off + n], f"pread({n}, {off})"
    os.close(fd)


def test_read_your_writes_across_fds(target):
    """A write through one fd is visible to another fd of the same file before any close."""
    p = target / "shared"
    w = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
    r = os.open(p, os.O_RDONLY)
    os.write(w, b"first")
    assert os.pread(r, 100, 0) == b"first"
    os.pwrite(w, b"SECOND", 2)
    assert os.pread(r, 100, 0) == b"fiSECOND"
    assert os.fstat(r).st_size == 8
    os.close(w)
    os.close(r)


def test_mkdir_rmdir(target):
    d = target / "dir"
    with umask(0):
        os.mkdir(d, 0o751)
    assert stat.S_ISDIR(os.lstat(d).st_mode)
    assert mode_of(d) == 0o751
    assert os.listdir(d) == []
    expect_errno(errno.EEXIST, os.mkdir, d)
    (d / "f").write_bytes(b"x")
    expect_errno({errno.ENOTEMPTY, errno.EEXIST}, os.rmdir, d)
    os.unlink(d / "f")
    os.mkdir(d / "sub")
    expect_errno({errno.ENOTEMPTY, errno.EEXIST}, os.rmdir, d)
    os.rmdir(d / "sub")
    (d / ".hidden").write_bytes(b"")
    expect_errno({errno.ENOTEMPTY, errno.EEXIST}, os.rmdir, d)
    os.unlink(d / ".hidden")
    os.rmdir(d)
    assert not os.path.lexists(d)
    assert os.listdir(target) == []
    expect_errno(errno.ENOENT, os.rmdir, d)
    # A directory can be recreated under the same name and is empty.
    os.mkdir(d)
    assert os.listdir(d) == []


# ------------------------------------------------------------------------------------------------
# readdir


def test_readdir_exact_names_many_entries(target):
    d = target / "many"
    d.mkdir()
    names = {f"{i:05d}-" + "x" * (i % 180) for i in range(5000)}
    for n in names:
        os.close(os.open(d / n, os.O_WRONLY | os.O_CREAT, 0o644))
    listed = os.listdir(d)
    assert len(listed) == 5000, f"listdir returned {len(listed)} entries for 5000 files"
    assert set(listed) == names, f"missing {sorted(names - set(listed))[:5]}, extra {sorted(set(listed) - names)[:5]}"
    with os.scandir(d) as it:
        entries = list(it)
    assert sorted(e.name for e in entries) == sorted(names)
    assert all(e.is_file(follow_symlinks=False) for e in entries)
    # Delete every other entry: the listing is exactly the rest.
    gone = {n for n in names if int(n[:5]) % 2}
    for n in gone:
        os.unlink(d / n)
    assert sorted(os.listdir(d)) == sorted(names - gone)


@pytest.mark.skipif(not have_getdents(), reason="getdents64 syscall number unknown here")
def test_readdir_types_and_inodes(target):
    d = target / "types"
    d.mkdir()
    (d / "file").write_bytes(b"x")
    (d / "dir").mkdir()
    os.symlink("file", d / "link")
    os.mkfifo(d / "fifo")
    expected_type = {"file": DT_REG, "dir": DT_DIR, "link": DT_LNK, "fifo": DT_FIFO}
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ents = [e for batch in getdents_batches(fd, 4096) for e in batch]
    finally:
        os.close(fd)
    names = collections.Counter(e[3].decode() for e in ents)
    assert names["."] <= 1 and names[".."] <= 1, f"dot entries repeated: {names}"
    assert {n for n in names if n not in (".", "..")} == set(expected_type)
    assert all(c == 1 for c in names.values()), f"duplicates: {names}"
    for d_ino, _off, d_type, name in ents:
        name = name.decode()
        if name in (".", ".."):
            continue
        assert d_type in (expected_type[name], DT_UNKNOWN), f"{name}: d_type {d_type}"
        assert d_ino == os.lstat(d / name).st_ino, f"{name}: d_ino {d_ino} != st_ino"


@pytest.mark.parametrize("method", ["scandir", "getdents-1k"])
def test_readdir_stable_while_directory_changes(target, method):
    """Entries that exist throughout an iteration are returned exactly once, while other entries
    are created, deleted and renamed between reads; no entry is ever returned twice."""
    if method.startswith("getdents") and not have_getdents():
        pytest.skip("getdents64 syscall number unknown here")
    d = target / "churn"
    d.mkdir()
    stable = {f"stable-{i:05d}" for i in range(3000)}
    doomed = [f"doomed-{i:05d}" for i in range(600)]
    for n in sorted(stable) + doomed:
        os.close(os.open(d / n, os.O_WRONLY | os.O_CREAT, 0o644))
    st = {"k": 0, "created": set(), "deleted": set()}

    def churn():
        k = st["k"]
        st["k"] += 1
        for j in range(8):
            n = f"new-{k:04d}-{j}"
            os.close(os.open(d / n, os.O_WRONLY | os.O_CREAT, 0o644))
            st["created"].add(n)
        for _ in range(8):
            if doomed:
                n = doomed.pop()
                os.unlink(d / n)
                st["deleted"].add(n)
        if k % 2:  # rename one of the new entries (a new name appears, an old one goes)
            src = f"new-{k:04d}-0"
            os.rename(d / src, d / f"moved-{k:04d}")
            st["created"].add(f"moved-{k:04d}")

    seen = collections.Counter()
    if method == "scandir":
        with os.scandir(d) as it:
            for i, e in enumerate(it):
                seen[e.name] += 1
                if i % 40 == 0:
                    churn()
    else:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for batch in getdents_batches(fd, 1024):
                for _ino, _off, _t, name in batch:
                    if name not in (b".", b".."):
                        seen[name.decode()] += 1
                churn()
        finally:
            os.close(fd)
    assert st["k"] > 20, f"only {st['k']} rounds of changes happened during the iteration"
    dups = sorted(n for n, c in seen.items() if c > 1)
    assert not dups, f"{len(dups)} entries returned more than once, e.g. {dups[:5]}"
    missing = sorted(stable - set(seen))
    assert not missing, f"{len(missing)} entries that existed throughout were not returned, e.g. {missing[:5]}"
    allowed = stable | set(st["created"]) | st["deleted"] | set(doomed)
    strange = sorted(set(seen) - allowed)
    assert not strange, f"names that never existed were returned: {strange[:5]}"
    # Afterwards the listing is exact.
    expected_now = stable | set(doomed) | {n for n in st["created"] if os.path.lexists(d / n)}
    assert set(os.listdir(d)) == expected_now


@pytest.mark.skipif(not have_getdents(), reason="getdents64 syscall number unknown here")
def test_readdir_delete_while_iterating(target):
    """The rm -rf pattern: read a batch, unlink it, read on. Every entry gets returned (each stayed
    in place until it was returned), so the directory ends empty after one pass."""
    d = target / "rmrf"
    d.mkdir()
    names = {f"entry-{i:05d}-{'y' * (i % 40)}" for i in range(2000)}
    for n in names:
        os.close(os.open(d / n, os.O_WRONLY | os.O_CREAT, 0o644))
    seen = collections.Counter()
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for batch in getdents_batches(fd, 1024):
            for _ino, _off, _t, name in batch:
                if name in (b".", b".."):
                    continue
                seen[name.decode()] += 1
                os.unlink(os.path.join(os.fsencode(d), name))
    finally:
        os.close(fd)
    dups = sorted(n for n, c in seen.items() if c > 1)
    assert not dups, f"returned twice: {dups[:5]}"
    left = os.listdir(d)
    assert not left, f"{len(left)} entries were never returned while deleting, e.g. {sorted(left)[:5]}"
    assert set(seen) == names
    os.rmdir(d)


# ------------------------------------------------------------------------------------------------
# Symlinks and hard links


def test_symlinks(target):
    (target / "dir").mkdir()
    (target / "dir" / "file").write_bytes(b"through the link")
    os.symlink("dir/file", target / "rel")
    os.symlink(str(target / "dir"), target / "abs")
    long_target = "/" + "/".join(["component"] * 100)  # 1000 bytes
    os.symlink(long_target, target / "long")
    os.symlink("héllo ✓ target", target / "uni")

    assert os.readlink(target / "rel") == "dir/file"
    assert os.readlink(target / "abs") == str(target / "dir")
    assert os.readlink(target / "long") == long_target
    assert os.readlink(target / "uni") == "héllo ✓ target"
    st = os.lstat(target / "rel")
    assert stat.S_ISLNK(st.st_mode)
    assert st.st_size == len(b"dir/file")
    assert os.lstat(target / "long").st_size == len(long_target)
    assert os.lstat(target / "uni").st_size == len("héllo ✓ target".encode())
    # Following.
    assert read_file(target / "rel") == b"through the link"
    assert os.stat(target / "rel").st_ino == os.stat(target / "dir" / "file").st_ino
    assert os.listdir(target / "abs") == ["file"]
    assert read_file(target / "abs" / "file") == b"through the link"
    # Writing through a symlink writes the target.
    write_file(target / "rel", b"changed")
    assert read_file(target / "dir" / "file") == b"changed"
    # O_NOFOLLOW refuses the link itself.
    expect_errno(errno.ELOOP, os.open, target / "rel", os.O_RDONLY | os.O_NOFOLLOW)
    # A symlink cannot be created over an existing name.
    expect_errno(errno.EEXIST, os.symlink, "x", target / "rel")
    # readlink of a non-symlink.
    expect_errno(errno.EINVAL, os.readlink, target / "dir" / "file")
    # Unlinking a link leaves the target.
    os.unlink(target / "rel")
    assert not os.path.lexists(target / "rel")
    assert read_file(target / "dir" / "file") == b"changed"


def test_symlink_dangling_and_loops(target):
    os.symlink("does-not-exist", target / "dangling")
    assert os.path.lexists(target / "dangling")
    assert not os.path.exists(target / "dangling")
    assert os.readlink(target / "dangling") == "does-not-exist"
    assert stat.S_ISLNK(os.lstat(target / "dangling").st_mode)
    expect_errno(errno.ENOENT, os.stat, target / "dangling")
    expect_errno(errno.ENOENT, os.open, target / "dangling", os.O_RDONLY)
    assert "dangling" in os.listdir(target)
    # O_CREAT through a dangling link creates the target.
    write_file(target / "dangling", b"now exists")
    assert read_file(target / "does-not-exist") == b"now exists"
    # Loops.
    os.symlink("loop-b", target / "loop-a")
    os.symlink("loop-a", target / "loop-b")
    expect_errno(errno.ELOOP, os.stat, target / "loop-a")


def test_hard_links(target):
    (target / "d1").mkdir()
    (target / "d2").mkdir()
    a, b, c = target / "d1" / "a", target / "d2" / "b", target / "d1" / "c"
    write_file(a, b"hello")
    os.link(a, b)
    os.link(a, c)
    ino = os.lstat(a).st_ino
    for p in (a, b, c):
        st = os.lstat(p)
        assert st.st_ino == ino, f"{p.name}: st_ino {st.st_ino} != {ino}"
        assert st.st_nlink == 3, f"{p.name}: st_nlink {st.st_nlink}, expected 3"
    fd = os.open(b, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b" world")
    os.close(fd)
    assert read_file(a) == b"hello world"
    assert read_file(c) == b"hello world"
    assert os.stat(c).st_size == 11
    # A change of metadata through one name shows through the others.
    os.chmod(b, 0o600)
    assert mode_of(a) == 0o600
    keep = os.open(b, os.O_RDONLY)
    os.unlink(a)
    assert not os.path.lexists(a)
    assert os.lstat(b).st_nlink == 2
    assert os.fstat(keep).st_nlink == 2
    assert read_file(b) == b"hello world"
    # Renaming one name keeps the inode.
    os.rename(c, target / "d2" / "c2")
    assert os.lstat(target / "d2" / "c2").st_ino == ino
    assert os.lstat(b).st_nlink == 2
    os.unlink(b)
    assert os.fstat(keep).st_nlink == 1
    assert read_file(target / "d2" / "c2") == b"hello world"
    os.close(keep)
    assert sorted(os.listdir(target / "d2")) == ["c2"]
    assert os.listdir(target / "d1") == []


def test_hard_link_errors(target):
    write_file(target / "f", b"x")
    write_file(target / "g", b"y")
    (target / "dir").mkdir()
    expect_errno(errno.EEXIST, os.link, target / "f", target / "g")
    expect_errno(errno.EPERM, os.link, target / "dir", target / "dirlink")
    expect_errno(errno.ENOENT, os.link, target / "missing", target / "h")
    assert read_file(target / "g") == b"y"
    assert os.lstat(target / "f").st_nlink == 1


# ------------------------------------------------------------------------------------------------
# rename


def test_rename_plain(target):
    write_file(target / "a", b"content")
    ino = os.lstat(target / "a").st_ino
    os.rename(target / "a", target / "b")
    assert not os.path.lexists(target / "a")
    assert read_file(target / "b") == b"content"
    assert os.lstat(target / "b").st_ino == ino
    assert os.listdir(target) == ["b"]
    # Renaming a name to itself is a successful no-op.
    os.rename(target / "b", target / "b")
    assert read_file(target / "b") == b"content"


def test_rename_over_existing_file(target):
    write_file(target / "new", b"new content")
    write_file(target / "old", b"old content")
    os.link(target / "old", target / "old-other-name")
    ino_new = os.lstat(target / "new").st_ino
    fd_old = os.open(target / "old", os.O_RDONLY)
    os.rename(target / "new", target / "old")
    assert sorted(os.listdir(target)) == ["old", "old-other-name"]
    assert read_file(target / "old") == b"new content"
    assert os.lstat(target / "old").st_ino == ino_new
    # The replaced inode lives on through its fd and its other name, with one link fewer.
    assert os.pread(fd_old, 100, 0) == b"old content"
    assert read_file(target / "old-other-name") == b"old content"
    assert os.lstat(target / "old-other-name").st_nlink == 1
    os.close(fd_old)


def test_rename_replace_is_atomic_for_readers(target):
    """write-temp-then-rename: a reader opening the name never sees ENOENT or a partial file."""
    final = target / "config.json"
    versions = [(f"version {i:04d} ".encode() * 500) for i in range(250)]
    write_file(final, versions[0])
    valid = set(versions)
    stop = threading.Event()
    problems, reads = [], [0]

    def reader():
        while not stop.is_set():
            try:
                with open(final, "rb") as f:
                    data = f.read()
            except OSError as e:
                problems.append(f"open/read failed: {e}")
                return
            reads[0] += 1
            if data not in valid:
                problems.append(f"read a partial or wrong version: {len(data)} bytes {data[:24]!r}")
                return

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i, v in enumerate(versions[1:], 1):
            tmp = target / f".config.json.tmp{i}"
            write_file(tmp, v)
            os.rename(tmp, final)
            if problems:
                break
    finally:
        stop.set()
        t.join(30)
    assert not problems, problems[0]
    assert reads[0] > 0
    assert read_file(final) == versions[-1]
    assert os.listdir(target) == ["config.json"]


def test_rename_directory_and_into_other_dir(target):
    src = target / "dir1"
    (src / "sub").mkdir(parents=True)
    write_file(src / "a", b"A")
    write_file(src / "sub" / "b", b"B")
    ino = os.lstat(src).st_ino
    os.rename(src, target / "dir2")
    assert not os.path.lexists(src)
    assert os.lstat(target / "dir2").st_ino == ino
    assert sorted(os.listdir(target / "dir2")) == ["a", "sub"]
    assert read_file(target / "dir2" / "sub" / "b") == b"B"
    # Into another directory.
    (target / "other").mkdir()
    os.rename(target / "dir2", target / "other" / "moved")
    moved = target / "other" / "moved"
    assert sorted(os.listdir(target)) == ["other"]
    assert read_file(moved / "a") == b"A"
    assert read_file(moved / "sub" / "b") == b"B"
    assert os.stat(moved / "sub" / "..").st_ino == os.stat(moved).st_ino
    assert os.stat(moved / "..").st_ino == os.stat(target / "other").st_ino
    # A file moves between directories too.
    os.rename(moved / "a", target / "a-moved")
    assert read_file(target / "a-moved") == b"A"
    assert os.listdir(moved) == ["sub"]
    # A directory may replace an empty directory.
    (target / "empty").mkdir()
    os.rename(moved, target / "empty")
    assert os.listdir(target / "empty") == ["sub"]
    assert os.listdir(target / "other") == []


def test_rename_errors(target):
    (target / "d" / "sub").mkdir(parents=True)
    (target / "full").mkdir()
    write_file(target / "full" / "x", b"x")
    write_file(target / "f", b"f")
    expect_errno(errno.ENOENT, os.rename, target / "missing", target / "m2")
    expect_errno({errno.ENOTEMPTY, errno.EEXIST}, os.rename, target / "d", target / "full")
    expect_errno(errno.EINVAL, os.rename, target / "d", target / "d" / "sub" / "inside")
    expect_errno(errno.EISDIR, os.rename, target / "f", target / "d")
    expect_errno(errno.ENOTDIR, os.rename, target / "d", target / "f")
    expect_errno(errno.ENOTDIR, os.rename, target / "f" / "x", target / "y")
    expect_errno(errno.ENOENT, os.rename, target / "f", target / "nodir" / "f")
    assert sorted(os.listdir(target)) == ["d", "f", "full"]
    assert read_file(target / "full" / "x") == b"x"


def test_rename_between_hard_links_of_same_inode_is_noop(target):
    """POSIX: if old and new are links to the same file, rename does nothing and succeeds."""
    write_file(target / "a", b"same")
    os.link(target / "a", target / "b")
    os.rename(target / "a", target / "b")
    assert sorted(os.listdir(target)) == ["a", "b"]
    assert os.lstat(target / "a").st_nlink == 2
    assert read_file(target / "b") == b"same"


def test_rename_noreplace(target):
    write_file(target / "a", b"A")
    write_file(target / "b", b"B")
    expect_errno(errno.EEXIST, renameat2, target / "a", target / "b", RENAME_NOREPLACE)
    assert read_file(target / "a") == b"A"
    assert read_file(target / "b") == b"B"
    renameat2(target / "a", target / "c", RENAME_NOREPLACE)
    assert sorted(os.listdir(target)) == ["b", "c"]
    assert read_file(target / "c") == b"A"
    (target / "d1").mkdir()
    (target / "d2").mkdir()
    expect_errno(errno.EEXIST, renameat2, target / "d1", target / "d2", RENAME_NOREPLACE)
    renameat2(target / "d1", target / "d2" / "d1", RENAME_NOREPLACE)
    assert os.listdir(target / "d2") == ["d1"]


def test_rename_exchange(target):
    write_file(target / "a", b"AAAA")
    write_file(target / "b", b"BB")
    ia, ib = os.lstat(target / "a").st_ino, os.lstat(target / "b").st_ino
    renameat2(target / "a", target / "b", RENAME_EXCHANGE)
    assert read_file(target / "a") == b"BB"
    assert read_file(target / "b") == b"AAAA"
    assert os.lstat(target / "a").st_ino == ib
    assert os.lstat(target / "b").st_ino == ia
    assert os.stat(target / "a").st_size == 2
    # A file and a directory, across directories.
    (target / "x").mkdir()
    (target / "x" / "dir").mkdir()
    write_file(target / "x" / "dir" / "inner", b"inner")
    renameat2(target / "a", target / "x" / "dir", RENAME_EXCHANGE)
    assert stat.S_ISDIR(os.lstat(target / "a").st_mode)
    assert read_file(target / "a" / "inner") == b"inner"
    assert stat.S_ISREG(os.lstat(target / "x" / "dir").st_mode)
    assert read_file(target / "x" / "dir") == b"BB"
    assert os.stat(target / "a" / "..").st_ino == os.stat(target).st_ino
    # Exchange needs both names to exist.
    expect_errno(errno.ENOENT, renameat2, target / "b", target / "missing", RENAME_EXCHANGE)
    assert read_file(target / "b") == b"AAAA"
    assert sorted(os.listdir(target)) == ["a", "b", "x"]


# ------------------------------------------------------------------------------------------------
# unlink of open files, truncate, sparse and big files


def test_unlink_open_file(target):
    d = target / "u"
    d.mkdir()
    p = d / "f"
    write_file(p, b"data")
    big = det_bytes("unlinked", 3 * MiB + 5)
    write_file(d / "big", big)
    fd = os.open(p, os.O_RDWR)
    fd_big = os.open(d / "big", os.O_RDONLY)
    os.unlink(p)
    os.unlink(d / "big")
    assert os.listdir(d) == []
    assert not os.path.lexists(p)
    assert os.fstat(fd).st_nlink == 0
    assert os.pread(fd, 100, 0) == b"data"
    assert os.pwrite(fd, b"more", 4) == 4
    assert os.pread(fd, 100, 0) == b"datamore"
    assert os.fstat(fd).st_size == 8
    assert_bytes_equal(pread_all(fd_big, len(big) + 10, 0), big, "unlinked big file via fd")
    # A new file under the same name is a different file.
    write_file(p, b"other")
    assert read_file(p) == b"other"
    assert os.pread(fd, 100, 0) == b"datamore"
    os.ftruncate(fd, 2)
    assert os.pread(fd, 100, 0) == b"da"
    os.close(fd)
    os.close(fd_big)
    assert os.listdir(d) == ["f"]
    assert read_file(p) == b"other"


def test_truncate(target):
    p = target / "t"
    data = det_bytes("trunc", 300_000)
    write_file(p, data)
    os.truncate(p, 100_000)
    assert os.stat(p).st_size == 100_000
    assert_bytes_equal(read_file(p), data[:100_000], "after shrink")
    # Extending again must show zeros, never the old bytes that were cut off.
    os.truncate(p, 250_000)
    assert os.stat(p).st_size == 250_000
    assert_bytes_equal(read_file(p), data[:100_000] + bytes(150_000), "after extend")
    # Unaligned shrink then extend within one block.
    write_file(p, b"x" * 10_000)
    os.truncate(p, 4097)
    os.truncate(p, 8192)
    assert_bytes_equal(read_file(p), b"x" * 4097 + bytes(8192 - 4097), "unaligned shrink+extend")
    os.truncate(p, 0)
    assert read_file(p) == b""
    os.truncate(p, 5 * MiB)
    assert os.stat(p).st_size == 5 * MiB
    assert read_file(p) == bytes(5 * MiB)
    expect_errno(errno.EINVAL, os.truncate, p, -1)
    expect_errno(errno.EISDIR, os.truncate, target, 0)


def test_ftruncate_and_o_trunc(target):
    p = target / "ft"
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"0123456789")
    os.ftruncate(fd, 4)
    assert os.fstat(fd).st_size == 4
    assert os.pread(fd, 100, 0) == b"0123"
    os.ftruncate(fd, 8)
    assert os.pread(fd, 100, 0) == b"0123\0\0\0\0"
    # The file position is unaffected; writing there (past the end) leaves a hole.
    assert os.lseek(fd, 0, os.SEEK_CUR) == 10
    os.write(fd, b"Z")
    assert os.pread(fd, 100, 0) == b"0123\0\0\0\0\0\0Z"
    os.close(fd)
    assert os.stat(p).st_size == 11
    fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
    assert os.fstat(fd).st_size == 0
    os.write(fd, b"new")
    os.close(fd)
    assert read_file(p) == b"new"
    ro = os.open(p, os.O_RDONLY)
    expect_errno({errno.EINVAL, errno.EBADF}, os.ftruncate, ro, 0)
    os.close(ro)
    assert read_file(p) == b"new"


def test_sparse_file(target):
    p = target / "sparse"
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, b"start", 0)
    os.pwrite(fd, b"end", 64 * MiB)
    os.pwrite(fd, b"middle", 10 * MiB + 7)
    assert os.fstat(fd).st_size == 64 * MiB + 3
    assert os.pread(fd, 5, 0) == b"start"
    assert pread_all(fd, 1 * MiB, 5) == bytes(1 * MiB)
    assert pread_all(fd, 1 * MiB, 32 * MiB) == bytes(1 * MiB)
    assert os.pread(fd, 20, 10 * MiB) == bytes(7) + b"middle" + bytes(7)
    assert os.pread(fd, 13, 64 * MiB - 10) == bytes(10) + b"end"
    assert os.pread(fd, 10, 64 * MiB + 3) == b""
    os.close(fd)
    assert os.stat(p).st_size == 64 * MiB + 3


def test_file_larger_than_4gib(target):
    p = target / "huge"
    off = 5 * GiB + 12345
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, b"head", 0)
    os.pwrite(fd, b"ACROSS4G", 4 * GiB - 4)
    os.pwrite(fd, b"tail-marker", off)
    size = off + len(b"tail-marker")
    assert os.fstat(fd).st_size == size
    assert os.stat(p).st_size == size
    assert os.lseek(fd, 0, os.SEEK_END) == size
    assert os.pread(fd, 4, 0) == b"head"
    assert os.pread(fd, 8, 4 * GiB - 4) == b"ACROSS4G"
    assert os.pread(fd, 16, 4 * GiB + 100) == bytes(16)
    assert os.pread(fd, 16, 2**32 + 2**29) == bytes(16)
    assert os.pread(fd, 11, off) == b"tail-marker"
    assert os.pread(fd, 20, off - 9) == bytes(9) + b"tail-marker"
    assert os.pread(fd, 5, size) == b""
    os.ftruncate(fd, 4 * GiB + 2)
    assert os.fstat(fd).st_size == 4 * GiB + 2
    assert os.pread(fd, 10, 4 * GiB - 4) == b"ACROSS"
    os.close(fd)
    assert os.stat(p).st_size == 4 * GiB + 2


def test_o_append_two_fds(target):
    p = target / "log"
    write_file(p, b"base\n")
    fd1 = os.open(p, os.O_WRONLY | os.O_APPEND)
    fd2 = os.open(p, os.O_WRONLY | os.O_APPEND)
    os.write(fd1, b"one\n")
    os.write(fd2, b"two\n")
    os.write(fd1, b"three\n")
    os.lseek(fd2, 0, os.SEEK_SET)  # O_APPEND ignores the position
    os.write(fd2, b"four\n")
    # A plain writer in between changes the end; appends follow it.
    w = os.open(p, os.O_WRONLY)
    os.pwrite(w, b"five\n", os.fstat(w).st_size)
    os.close(w)
    os.write(fd1, b"six\n")
    os.close(fd1)
    os.close(fd2)
    assert read_file(p) == b"base\none\ntwo\nthree\nfour\nfive\nsix\n"


def test_o_append_concurrent_writers(target):
    """Two threads appending whole records through their own O_APPEND fds never overwrite each
    other."""
    p = target / "concurrent.log"
    write_file(p, b"")
    per, rec = 400, 100

    def writer(tag):
        fd = os.open(p, os.O_WRONLY | os.O_APPEND)
        try:
            for i in range(per):
                line = f"{tag}{i:05d}".encode()
                os.write(fd, line + b"." * (rec - len(line) - 1) + b"\n")
        finally:
            os.close(fd)

    threads = [threading.Thread(target=writer, args=(t,)) for t in "AB"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    data = read_file(p)
    assert len(data) == 2 * per * rec, f"size {len(data)}, expected {2 * per * rec}"
    records = [data[i:i + rec] for i in range(0, len(data), rec)]
    for tag in "AB":
        mine = [r[:6].decode() for r in records if r[:1] == tag.encode()]
        assert mine == [f"{tag}{i:05d}" for i in range(per)], f"writer {tag} records lost or reordered"
    assert all(r.endswith(b".\n") for r in records), "a record was torn"


# ------------------------------------------------------------------------------------------------
# Permissions, ownership, timestamps


def test_chmod(target):
    p = target / "f"
    write_file(p, b"x")
    for mode in (0o000, 0o600, 0o644, 0o755, 0o4755, 0o2755, 0o1777, 0o7777, 0o640):
        os.chmod(p, mode)
        assert mode_of(p) == mode, f"chmod {oct(mode)} gave {oct(mode_of(p))}"
    fd = os.open(p, os.O_RDONLY)
    os.fchmod(fd, 0o604)
    assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o604
    os.close(fd)
    d = target / "d"
    d.mkdir()
    os.chmod(d, 0o1777)
    assert mode_of(d) == 0o1777
    assert stat.S_ISDIR(os.lstat(d).st_mode)
    os.symlink("f", target / "l")
    os.chmod(target / "l", 0o611)  # follows the link
    assert mode_of(p) == 0o611
    assert read_file(p) == b"x"


@needs_root
def test_chown(target):
    p = target / "f"
    write_file(p, b"x")
    os.chown(p, 1234, 5678)
    st = os.lstat(p)
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    os.chown(p, -1, 4321)
    st = os.lstat(p)
    assert (st.st_uid, st.st_gid) == (1234, 4321)
    fd = os.open(p, os.O_RDONLY)
    os.fchown(fd, 0, 0)
    assert (os.fstat(fd).st_uid, os.fstat(fd).st_gid) == (0, 0)
    os.close(fd)
    # lchown changes the link, not its target.
    os.symlink("f", target / "l")
    os.lchown(target / "l", 2222, 3333)
    assert (os.lstat(target / "l").st_uid, os.lstat(target / "l").st_gid) == (2222, 3333)
    assert (os.lstat(p).st_uid, os.lstat(p).st_gid) == (0, 0)
    d = target / "d"
    d.mkdir()
    os.chown(d, 77, 88)
    assert (os.lstat(d).st_uid, os.lstat(d).st_gid) == (77, 88)
    # Changing the owner of a regular file clears its set-user-ID bit.
    os.chmod(p, 0o4755)
    os.chown(p, 1000, -1)
    assert mode_of(p) == 0o755, f"setuid survived chown: {oct(mode_of(p))}"


def test_utimensat_nanoseconds(target):
    p = target / "f"
    write_file(p, b"x")
    for atime_ns, mtime_ns in ((1_600_000_000_123_456_789, 1_234_567_890_987_654_321),
                               (0, 0),                      # reproducible builds use epoch 0
                               (315_532_800_000_000_001, 315_532_800_999_999_999),  # 1980 (zip)
                               (4_102_444_800_000_000_007, 4_102_444_800_000_000_009)):  # 2100
        os.utime(p, ns=(atime_ns, mtime_ns))
        st = os.lstat(p)
        assert (st.st_atime_ns, st.st_mtime_ns) == (atime_ns, mtime_ns), \
            f"utime ns=({atime_ns}, {mtime_ns}) read back ({st.st_atime_ns}, {st.st_mtime_ns})"
    # futimens through an fd.
    fd = os.open(p, os.O_RDONLY)
    os.utime(fd, ns=(1_111_111_111_111_111_111, 1_222_222_222_222_222_222))
    assert os.fstat(fd).st_mtime_ns == 1_222_222_222_222_222_222
    os.close(fd)
    # On a symlink itself, and on a directory.
    os.symlink("f", target / "l")
    os.utime(target / "l", ns=(1_500_000_000_000_000_003, 1_500_000_000_000_000_005),
             follow_symlinks=False)
    assert os.lstat(target / "l").st_mtime_ns == 1_500_000_000_000_000_005
    assert os.lstat(p).st_mtime_ns == 1_222_222_222_222_222_222
    (target / "d").mkdir()
    os.utime(target / "d", ns=(1_400_000_000_000_000_011, 1_400_000_000_000_000_013))
    assert os.lstat(target / "d").st_mtime_ns == 1_400_000_000_000_000_013
    # utime(None) sets "now".
    before = time.time_ns() - 2_000_000_000
    os.utime(p, None)
    after = time.time_ns() + 2_000_000_000
    assert before <= os.lstat(p).st_mtime_ns <= after


def test_write_updates_mtime_and_ctime(target):
    p = target / "f"
    write_file(p, b"x")
    old = 1_000_000_000_000_000_000
    os.utime(p, ns=(old, old))
    ctime0 = os.lstat(p).st_ctime_ns
    time.sleep(0.05)
    fd = os.open(p, os.O_WRONLY)
    os.write(fd, b"y")
    os.close(fd)
    st = os.lstat(p)
    now = time.time_ns()
    assert st.st_mtime_ns > old, "write did not update mtime"
    assert abs(st.st_mtime_ns - now) < 10_000_000_000, f"mtime {st.st_mtime_ns} is not about now {now}"
    assert st.st_ctime_ns > ctime0, "write did not update ctime"
    ctime1 = st.st_ctime_ns
    time.sleep(0.05)
    os.chmod(p, 0o600)
    assert os.lstat(p).st_ctime_ns > ctime1, "chmod did not update ctime"
    # Creating an entry updates the directory's mtime.
    os.utime(target, ns=(old, old))
    write_file(target / "g", b"")
    assert os.lstat(target).st_mtime_ns > old, "create did not update the directory's mtime"
    # truncate updates mtime.
    os.utime(p, ns=(old, old))
    os.truncate(p, 0)
    assert os.lstat(p).st_mtime_ns > old, "truncate did not update mtime"


def test_umask_respected(target):
    with umask(0o027):
        fd = os.open(target / "f", os.O_WRONLY | os.O_CREAT, 0o666)
        os.close(fd)
        os.mkdir(target / "d", 0o777)
        os.mkfifo(target / "p", 0o666)
    with umask(0o077):
        os.close(os.open(target / "g", os.O_WRONLY | os.O_CREAT, 0o666))
    with umask(0):
        os.close(os.open(target / "h", os.O_WRONLY | os.O_CREAT, 0o666))
    assert mode_of(target / "f") == 0o640
    assert mode_of(target / "d") == 0o750
    assert mode_of(target / "p") == 0o640
    assert mode_of(target / "g") == 0o600
    assert mode_of(target / "h") == 0o666


PERM_CHILD = CHILD_PRELUDE + r'''
d = sys.argv[1]
p = lambda *n: os.path.join(d, *n)
def read(path):
    with open(path) as f:
        return f.read()
r = {
  "uid": os.getuid(),
  "read_secret": attempt(read, p("secret")),
  "write_secret": attempt(os.open, p("secret"), os.O_WRONLY),
  "read_public": attempt(read, p("public")),
  "write_public": attempt(os.open, p("public"), os.O_WRONLY),
  "list_private": attempt(os.listdir, p("private")),
  "stat_in_private": attempt(lambda: os.stat(p("private", "inner")) and None),
  "create_in_root_dir": attempt(os.open, p("rootdir", "new"), os.O_WRONLY | os.O_CREAT, 0o644),
  "unlink_public": attempt(os.unlink, p("public")),
  "chmod_secret": attempt(os.chmod, p("secret"), 0o666),
  "read_own": attempt(read, p("own")),
  "write_own": attempt(lambda: os.close(os.open(p("own"), os.O_WRONLY | os.O_APPEND))),
  "create_in_own_dir": attempt(lambda: os.close(os.open(p("owndir", "mine"), os.O_WRONLY | os.O_CREAT, 0o600))),
  "list_root": sorted(os.listdir(d)),
}
print(json.dumps(r))
'''


@needs_root
def test_permissions_enforced_for_other_user(shared_dir):
    d = shared_dir
    write_file(d / "secret", b"secret", 0o600)
    os.chmod(d / "secret", 0o600)
    write_file(d / "public", b"public")
    os.chmod(d / "public", 0o644)
    (d / "private").mkdir()
    os.chmod(d / "private", 0o700)
    write_file(d / "private" / "inner", b"inner")
    (d / "rootdir").mkdir()
    os.chmod(d / "rootdir", 0o755)
    write_file(d / "own", b"own")
    os.chmod(d / "own", 0o600)
    os.chown(d / "own", NOBODY, NOBODY)
    (d / "owndir").mkdir()
    os.chmod(d / "owndir", 0o700)
    os.chown(d / "owndir", NOBODY, NOBODY)
    r = run_python(PERM_CHILD, d, user=NOBODY, group=NOBODY)
    assert r["uid"] == NOBODY
    expected = {
        "read_secret": "EACCES", "write_secret": "EACCES", "read_public": "public",
        "write_public": "EACCES", "list_private": "EACCES", "stat_in_private": "EACCES",
        "create_in_root_dir": "EACCES", "unlink_public": "EACCES", "chmod_secret": "EPERM",
        "read_own": "own", "write_own": "ok", "create_in_own_dir": "ok",
        "list_root": sorted(["secret", "public", "private", "rootdir", "own", "owndir"]),
    }
    wrong = {k: (r[k], v) for k, v in expected.items() if r[k] != v}
    assert not wrong, "as uid 65534 (got, expected): " + repr(wrong)
    # Nothing the other user was refused changed anything.
    assert read_file(d / "secret") == b"secret"
    assert mode_of(d / "secret") == 0o600
    assert os.listdir(d / "rootdir") == []
    assert os.lstat(d / "owndir" / "mine").st_uid == NOBODY


PRIV_CHILD = CHILD_PRELUDE + r'''
d = sys.argv[1]
def append(name):
    with open(os.path.join(d, name), "a") as f:
        f.write("more")
def fallocate(name):
    fd = os.open(os.path.join(d, name), os.O_WRONLY)
    os.posix_fallocate(fd, 0, 65536)
    os.close(fd)
def copy(name):  # copy_file_range into the file
    src = os.open(os.path.join(d, "source"), os.O_RDONLY)
    dst = os.open(os.path.join(d, name), os.O_WRONLY)
    os.copy_file_range(src, dst, 100, 0, 0)
    os.close(src), os.close(dst)
# Arguments after the directory: "OP:NAME".
ops = {"write": append, "truncate": lambda name: os.truncate(os.path.join(d, name), 0),
       "opentrunc": lambda name: os.close(os.open(os.path.join(d, name), os.O_WRONLY | os.O_TRUNC)),
       "fallocate": fallocate, "copy": copy}
print(json.dumps({a: attempt(ops[a.split(":")[0]], a.split(":")[1]) for a in sys.argv[2:]}))
'''


@needs_root
def test_writes_chown_and_truncate_drop_privileges_as_the_kernel_does(workdir, mount_factory):
    # stashfs takes over clearing set-ID bits and file capabilities from the kernel
    # (FUSE_HANDLE_KILLPRIV_V2, fs/kernel_io.h); the outcome must be the VFS's, checked both
    # through the kernel's caches and, after a remount, in what the daemon stored.
    fs = FsDir(workdir, mount_factory, args=[] if native_mode() else ["--allow-other"])
    d = fs.path
    os.chmod(workdir, 0o755)
    os.chmod(d, 0o777)
    files = {"write_suid": 0o4777, "truncate_suid_sgid": 0o6777, "write_sgid_nogx": 0o2767,
             "member": 0o2767, "root_write": 0o4777, "root_truncate": 0o6777,
             "chown": 0o6755, "chgrp_sgid_nogx": 0o2745, "caps": 0o755, "source": 0o644,
             "opentrunc": 0o4777, "fallocate": 0o6777, "copy": 0o4777}
    for name, mode in files.items():
        write_file(d / name, b"data")
        os.chmod(d / name, mode)
    caps = bytes([1, 0, 0, 2, 0, 0x20]) + bytes(14)  # cap_net_bind_service, permitted
    os.setxattr(d / "caps", "security.capability", caps)
    # Another user: its writes and truncates drop what they must.
    r = run_python(PRIV_CHILD, d, "write:write_suid", "truncate:truncate_suid_sgid",
                   "write:write_sgid_nogx", "opentrunc:opentrunc", "fallocate:fallocate",
                   "copy:copy", user=NOBODY, group=NOBODY)
    assert set(r.values()) == {"ok"}, r
    # ...except that a member of the file's group keeps set-group-ID without group-execute.
    r = run_python(PRIV_CHILD, d, "write:member", user=NOBODY, group=NOBODY, extra_groups=[0])
    assert r == {"write:member": "ok"}, r
    # Root (CAP_FSETID) keeps its bits on write and truncate; chown drops them for everyone.
    with open(d / "root_write", "a") as f:
        f.write("more")
    os.truncate(d / "root_truncate", 1)
    os.chown(d / "chown", 1000, -1)
    os.chown(d / "chgrp_sgid_nogx", -1, 5)
    with open(d / "caps", "a") as f:
        f.write("more")
    expected = {"write_suid": 0o777, "truncate_suid_sgid": 0o777, "write_sgid_nogx": 0o767,
                "member": 0o2767, "root_write": 0o4777, "root_truncate": 0o6777,
                "chown": 0o755, "chgrp_sgid_nogx": 0o2745, "caps": 0o755, "opentrunc": 0o777,
                "fallocate": 0o777, "copy": 0o777}
    if not native_mode():
        # The point of doing this ourselves: the kernel took the flag (kernels since 5.11).
        st = json.loads(run_stashfs(None, "status", str(d), "--json").stdout)
        assert st["kernel_killpriv_v2"] is True, st
    for when in ("live", "after remount"):
        got = {name: mode_of(d / name) for name in expected}
        wrong = {k: (oct(got[k]), oct(v)) for k, v in expected.items() if got[k] != v}
        assert not wrong, f"{when}: (mode, expected): {wrong}"
        assert "security.capability" not in os.listxattr(d / "caps"), when
        fs.remount()


@needs_root
def test_setgid_directory_inheritance(target):
    d = target / "sg"
    d.mkdir()
    os.chown(d, -1, 4242)
    os.chmod(d, 0o2775)
    assert mode_of(d) == 0o2775
    write_file(d / "file", b"x")
    os.mkdir(d / "sub")
    assert os.lstat(d / "file").st_gid == 4242, "file in a setgid dir did not take the dir's group"
    assert os.lstat(d / "sub").st_gid == 4242, "dir in a setgid dir did not take the dir's group"
    assert os.lstat(d / "sub").st_mode & stat.S_ISGID, "subdirectory did not inherit setgid"
    os.symlink("file", d / "link")
    assert os.lstat(d / "link").st_gid == 4242
    # Control: outside the setgid dir a new file gets the creator's group.
    write_file(target / "plain", b"x")
    assert os.lstat(target / "plain").st_gid == os.getegid()


# ------------------------------------------------------------------------------------------------
# Extended attributes


def _user_xattrs(p, follow=True):
    return sorted(n for n in os.listxattr(p, follow_symlinks=follow) if n.startswith("user."))


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_xattrs(target, kind):
    p = target / kind
    if kind == "file":
        write_file(p, b"content")
    else:
        p.mkdir()
    binary = b"\x00\xff\x00abc\n" + bytes(range(256)) * 3
    long_name = "user." + "n" * 200
    os.setxattr(p, "user.a", b"1")
    os.setxattr(p, "user.bin", binary)
    os.setxattr(p, "user.empty", b"")
    os.setxattr(p, long_name, b"long")
    assert os.getxattr(p, "user.a") == b"1"
    assert os.getxattr(p, "user.bin") == binary
    assert os.getxattr(p, "user.empty") == b""
    assert os.getxattr(p, long_name) == b"long"
    assert _user_xattrs(p) == sorted(["user.a", "user.bin", "user.empty", long_name])
    # Overwrite with a shorter value: no stale tail.
    os.setxattr(p, "user.bin", b"short")
    assert os.getxattr(p, "user.bin") == b"short"
    expect_errno(errno.EEXIST, os.setxattr, p, "user.a", b"2", os.XATTR_CREATE)
    expect_errno(errno.ENODATA, os.setxattr, p, "user.nope", b"2", os.XATTR_REPLACE)
    os.setxattr(p, "user.a", b"replaced", os.XATTR_REPLACE)
    assert os.getxattr(p, "user.a") == b"replaced"
    expect_errno(errno.ENODATA, os.getxattr, p, "user.missing")
    os.removexattr(p, "user.a")
    expect_errno(errno.ENODATA, os.getxattr, p, "user.a")
    expect_errno(errno.ENODATA, os.removexattr, p, "user.a")
    assert _user_xattrs(p) == sorted(["user.bin", "user.empty", long_name])
    # Through an fd, and kept across rename.
    fd = os.open(p, os.O_RDONLY)
    os.setxattr(fd, "user.viafd", b"fd")
    os.close(fd)
    os.rename(p, target / "renamed")
    assert os.getxattr(target / "renamed", "user.viafd") == b"fd"
    assert os.getxattr(target / "renamed", "user.bin") == b"short"
    assert (target / "renamed").is_dir() == (kind == "dir")


def test_xattrs_shared_by_hard_links(target):
    write_file(target / "a", b"x")
    os.link(target / "a", target / "b")
    os.setxattr(target / "a", "user.k", b"v")
    assert os.getxattr(target / "b", "user.k") == b"v"
    os.removexattr(target / "b", "user.k")
    expect_errno(errno.ENODATA, os.getxattr, target / "a", "user.k")


# ------------------------------------------------------------------------------------------------
# fsync, locks, mmap, statfs, copy_file_range


def test_fsync_and_fdatasync(target):
    p = target / "synced"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"a" * 100_000)
    assert os.fsync(fd) is None
    os.write(fd, b"b" * 100)
    assert os.fdatasync(fd) is None
    os.close(fd)
    ro = os.open(p, os.O_RDONLY)
    os.fsync(ro)
    os.close(ro)
    dfd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dfd)
    os.close(dfd)
    assert read_file(p) == b"a" * 100_000 + b"b" * 100


FLOCK_CHILD = CHILD_PRELUDE + r'''
fd = os.open(sys.argv[1], os.O_RDONLY)
op = {"ex": fcntl.LOCK_EX, "sh": fcntl.LOCK_SH}[sys.argv[2]]
print(json.dumps(attempt(fcntl.flock, fd, op | fcntl.LOCK_NB)))
'''

BLOCKED = {"EWOULDBLOCK", "EAGAIN"}


def test_flock_across_processes(target):
    p = target / "lock"
    write_file(p, b"")
    fd = os.open(p, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    assert run_python(FLOCK_CHILD, p, "ex") in BLOCKED
    assert run_python(FLOCK_CHILD, p, "sh") in BLOCKED
    fcntl.flock(fd, fcntl.LOCK_SH)  # downgrade
    assert run_python(FLOCK_CHILD, p, "sh") == "ok"
    assert run_python(FLOCK_CHILD, p, "ex") in BLOCKED
    fcntl.flock(fd, fcntl.LOCK_UN)
    assert run_python(FLOCK_CHILD, p, "ex") == "ok"
    # A lock goes away with the last fd of its open file description.
    fcntl.flock(fd, fcntl.LOCK_EX)
    assert run_python(FLOCK_CHILD, p, "ex") in BLOCKED
    os.close(fd)
    assert run_python(FLOCK_CHILD, p, "ex") == "ok"


FCNTL_CHILD = CHILD_PRELUDE + r'''
import struct
path, kind, start, length = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
fd = os.open(path, os.O_RDWR)
op = {"ex": fcntl.LOCK_EX, "sh": fcntl.LOCK_SH}[kind]
got = attempt(fcntl.lockf, fd, op | fcntl.LOCK_NB, length, start)
ltype = fcntl.F_WRLCK if kind == "ex" else fcntl.F_RDLCK
res = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack("hhqqi4x", ltype, 0, start, length, 0))
l_type, _w, l_start, l_len, l_pid = struct.unpack("hhqqi4x", res)
holder = None if l_type == fcntl.F_UNLCK else {"type": "wr" if l_type == fcntl.F_WRLCK else "rd",
                                               "start": l_start, "len": l_len, "pid": l_pid}
print(json.dumps({"lock": got if got not in ("EACCES", "EAGAIN") else "BLOCKED", "holder": holder}))
'''


def test_fcntl_locks_across_processes(target):
    p = target / "lock"
    write_file(p, bytes(1000))
    fd = os.open(p, os.O_RDWR)
    me = os.getpid()
    fcntl.lockf(fd, fcntl.LOCK_EX, 100, 0)          # write lock on bytes [0, 100)
    fcntl.lockf(fd, fcntl.LOCK_SH, 100, 500)        # read lock on bytes [500, 600)
    r = run_python(FCNTL_CHILD, p, "ex", 50, 10)
    assert r["lock"] == "BLOCKED", r
    assert r["holder"] == {"type": "wr", "start": 0, "len": 100, "pid": me}, r
    r = run_python(FCNTL_CHILD, p, "ex", 200, 100)  # a free range
    assert r == {"lock": "ok", "holder": None}, r
    r = run_python(FCNTL_CHILD, p, "sh", 550, 10)   # read locks share
    assert r["lock"] == "ok", r
    r = run_python(FCNTL_CHILD, p, "ex", 550, 10)
    assert r["lock"] == "BLOCKED", r
    assert r["holder"] == {"type": "rd", "start": 500, "len": 100, "pid": me}, r
    fcntl.lockf(fd, fcntl.LOCK_UN, 100, 0)
    r = run_python(FCNTL_CHILD, p, "ex", 0, 100)
    assert r == {"lock": "ok", "holder": None}, r
    # POSIX locks go away when the process closes any fd of the file.
    fd2 = os.open(p, os.O_RDONLY)
    os.close(fd2)
    r = run_python(FCNTL_CHILD, p, "ex", 500, 100)
    assert r == {"lock": "ok", "holder": None}, r
    os.close(fd)


def test_shared_writable_mmap(fsdir):
    p = fsdir.path / "mapped"
    size = 256 * KiB + 123
    data = bytearray(det_bytes("mmap", size))
    write_file(p, bytes(data))
    fd = os.open(p, os.O_RDWR)
    mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    for off, b in ((0, b"HELLO"), (100_000, b"0123456789"), (size - 5, b"WORLD")):
        mm[off:off + len(b)] = b
        data[off:off + len(b)] = b
    mm.flush()  # msync(MS_SYNC)
    other = os.open(p, os.O_RDONLY)
    assert_bytes_equal(pread_all(other, size + 10, 0), bytes(data), "read() after msync")
    # write() shows through the mapping.
    os.pwrite(fd, b"VIA-WRITE", 50_000)
    data[50_000:50_009] = b"VIA-WRITE"
    assert mm[50_000:50_009] == b"VIA-WRITE"
    # A store into the mapping without msync, then unmap and close: still written.
    mm[200_000:200_006] = b"NOSYNC"
    data[200_000:200_006] = b"NOSYNC"
    mm.close()
    os.close(fd)
    os.close(other)
    assert_bytes_equal(read_file(p), bytes(data), "after munmap+close")
    fsdir.remount()
    assert_bytes_equal(read_file(p), bytes(data), "after remount")
    assert os.stat(p).st_size == size


def test_statfs(target):
    sv = os.statvfs(target)
    assert sv.f_bsize > 0 and sv.f_frsize > 0, sv
    assert sv.f_blocks > 0, sv
    assert sv.f_bfree <= sv.f_blocks and sv.f_bavail <= sv.f_blocks, sv
    assert sv.f_namemax >= 255, sv
    write_file(target / "f", b"x")
    assert os.statvfs(target / "f").f_bsize == sv.f_bsize
    out = run(["df", "-P", str(target)]).stdout.splitlines()
    assert len(out) == 2, out


def _cfr_loop(src, dst, count, off_src=None, off_dst=None) -> int:
    """copy_file_range may copy less than asked: loop like cp does, return the total."""
    total = 0
    while total < count:
        if off_src is None:
            n = os.copy_file_range(src, dst, count - total)
        else:
            n = os.copy_file_range(src, dst, count - total, off_src + total, off_dst + total)
        if n == 0:
            break
        total += n
    return total


def test_copy_file_range(target):
    src_data = det_bytes("cfr", 3 * MiB + 77)
    write_file(target / "src", src_data)
    src = os.open(target / "src", os.O_RDONLY)
    # Whole file, using and advancing the file positions.
    dst = os.open(target / "full", os.O_WRONLY | os.O_CREAT, 0o644)
    assert _cfr_loop(src, dst, len(src_data)) == len(src_data)
    assert os.lseek(src, 0, os.SEEK_CUR) == len(src_data)
    assert os.lseek(dst, 0, os.SEEK_CUR) == len(src_data)
    os.close(dst)
    assert_bytes_equal(read_file(target / "full"), src_data, "full copy")
    # A range from an offset into the middle of an existing file.
    base = b"D" * (1 * MiB)
    write_file(target / "part", base)
    dst = os.open(target / "part", os.O_WRONLY)
    assert _cfr_loop(src, dst, 100_000, 12_345, 777) == 100_000
    os.close(dst)
    expected = base[:777] + src_data[12_345:112_345] + base[100_777:]
    assert_bytes_equal(read_file(target / "part"), expected, "partial copy")
    # Past the destination's end leaves a hole; past the source's end copies only what is there.
    dst = os.open(target / "part", os.O_WRONLY)
    assert _cfr_loop(src, dst, 1000, len(src_data) - 10, len(expected) + 4096) == 10
    os.close(dst)
    expected += bytes(4096) + src_data[-10:]
    assert_bytes_equal(read_file(target / "part"), expected, "copy past EOF")
    # Within one file, non-overlapping ranges.
    rw = os.open(target / "full", os.O_RDWR)
    assert _cfr_loop(rw, rw, 65536, 0, 2 * MiB + 1) == 65536
    os.close(rw)
    expected_full = src_data[:2 * MiB + 1] + src_data[:65536] + src_data[2 * MiB + 1 + 65536:]
    assert_bytes_equal(read_file(target / "full"), expected_full, "same-file copy")
    os.close(src)
    # The source is unchanged.
    assert_bytes_equal(read_file(target / "src"), src_data, "source after copies")


# ------------------------------------------------------------------------------------------------
# Special files


def test_mkfifo(target):
    p = target / "fifo"
    with umask(0):
        os.mkfifo(p, 0o640)
    st = os.lstat(p)
    assert stat.S_ISFIFO(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert os.listdir(target) == ["fifo"]
    r = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(p, os.O_WRONLY)
    os.write(w, b"through the fifo")
    assert os.read(r, 100) == b"through the fifo"
    os.close(w)
    os.close(r)
    expect_errno(errno.EEXIST, os.mkfifo, p)
    os.unlink(p)
    assert os.listdir(target) == []


def test_unix_socket(target):
    p = str(target / "s.sock")
    if len(p.encode()) > 100:
        pytest.skip("mount path too long for a unix socket address")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        srv.bind(p)
        srv.listen(1)
        assert stat.S_ISSOCK(os.lstat(p).st_mode)
        cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        cli.connect(p)
        conn, _ = srv.accept()
        cli.sendall(b"ping")
        assert conn.recv(10) == b"ping"
        conn.close()
        cli.close()
    finally:
        srv.close()
    os.unlink(p)
    assert os.listdir(target) == []


# ------------------------------------------------------------------------------------------------
# Names


def test_names_unicode_spaces_and_specials(target):
    names = ["hello world.txt", " leading space", "trailing space ", "héllo wörld ✓",
             "日本語のファイル名", "emoji-🦀📦", "semi;colon&amp|pipe", "quote'\"double",
             "back\\slash", "tab\there", "new\nline", "dots...", "...", ".hidden", "-dash-first",
             "*?[glob]", "percent%20enc", "~tilde", "#hash", "x", "Case", "case",
             "caf\u00e9", "cafe\u0301"]  # NFC and NFD spellings are different names
    for n in names:
        write_file(target / n, n.encode())
    listed = os.listdir(target)
    assert len(listed) == len(names)
    assert sorted(listed) == sorted(names)
    for n in names:
        assert read_file(target / n) == n.encode(), f"content of {n!r}"
    (target / "dír ✓").mkdir()
    os.rename(target / "héllo wörld ✓", target / "dír ✓" / "日本")
    assert os.listdir(target / "dír ✓") == ["日本"]
    assert read_file(target / "dír ✓" / "日本") == "héllo wörld ✓".encode()


def test_name_length_limits(target):
    n255 = "a" * 255
    u255 = "é" * 127 + "a"  # 255 bytes of UTF-8
    assert len(u255.encode()) == 255
    write_file(target / n255, b"255")
    os.mkdir(target / u255)
    assert sorted(os.listdir(target)) == sorted([n255, u255])
    assert read_file(target / n255) == b"255"
    assert stat.S_ISDIR(os.lstat(target / u255).st_mode)
    n256 = "b" * 256
    expect_errno(errno.ENAMETOOLONG, os.open, target / n256, os.O_WRONLY | os.O_CREAT, 0o644)
    expect_errno(errno.ENAMETOOLONG, os.mkdir, target / n256)
    expect_errno(errno.ENAMETOOLONG, os.symlink, "x", target / n256)
    expect_errno(errno.ENAMETOOLONG, os.rename, target / n255, target / n256)
    expect_errno(errno.ENAMETOOLONG, os.link, target / n255, target / n256)
    expect_errno(errno.ENAMETOOLONG, os.stat, target / n256)
    expect_errno(errno.ENAMETOOLONG, os.open, target / ("é" * 128), os.O_WRONLY | os.O_CREAT, 0o644)
    assert sorted(os.listdir(target)) == sorted([n255, u255])


def test_non_utf8_names(target):
    """Linux names are bytes: any byte but '/' and NUL, valid UTF-8 or not."""
    t = os.fsencode(target)
    names = [b"caf\xe9-latin1", b"\xff\xfe\xfd", b"mixed-\xc3\xa9-\xc3"]
    for n in names:
        fd = os.open(t + b"/" + n, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, n)
        os.close(fd)
    assert sorted(os.listdir(t)) == sorted(names)
    for n in names:
        with open(t + b"/" + n, "rb") as f:
            assert f.read() == n
    os.rename(t + b"/" + names[0], t + b"/renamed-\x80")
    assert sorted(os.listdir(t)) == sorted(names[1:] + [b"renamed-\x80"])


# ------------------------------------------------------------------------------------------------
# Errors and deep trees


def test_posix_errors(target):
    f, d = target / "file", target / "dir"
    write_file(f, b"x")
    d.mkdir()
    (d / "child").mkdir()
    os.symlink("dir", target / "dirlink")
    os.symlink("nowhere", target / "dangling")
    E = expect_errno
    E(errno.ENOENT, os.open, target / "missing", os.O_RDONLY)
    E(errno.ENOENT, os.stat, target / "missing")
    E(errno.ENOENT, os.unlink, target / "missing")
    E(errno.ENOENT, os.mkdir, target / "missing" / "sub")
    E(errno.ENOENT, os.open, target / "missing" / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    E(errno.ENOENT, os.listdir, target / "missing")
    E(errno.EEXIST, os.open, f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    E(errno.EEXIST, os.open, target / "dangling", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    E(errno.EEXIST, os.mkdir, f)
    E(errno.EEXIST, os.mkdir, d)
    E(errno.EEXIST, os.mkdir, target / "dirlink")
    E(errno.ENOTDIR, os.open, f / "child", os.O_RDONLY)
    E(errno.ENOTDIR, os.stat, f / "child")
    E(errno.ENOTDIR, os.listdir, f)
    E(errno.ENOTDIR, os.rmdir, f)
    E(errno.ENOTDIR, os.rmdir, target / "dirlink")
    E(errno.ENOTDIR, os.open, f, os.O_RDONLY | os.O_DIRECTORY)
    E(errno.ENOTDIR, os.mkdir, f / "sub")
    E(errno.EISDIR, os.open, d, os.O_WRONLY)
    E(errno.EISDIR, os.open, d, os.O_RDWR)
    E(errno.EISDIR, os.open, d, os.O_WRONLY | os.O_CREAT, 0o644)
    E(errno.EISDIR, os.unlink, d)
    E({errno.ENOTEMPTY, errno.EEXIST}, os.rmdir, d)
    E(errno.EINVAL, os.rmdir, os.path.join(str(d), "child", "."))  # pathlib would drop the "."
    fd = os.open(f, os.O_RDONLY)
    E(errno.EBADF, os.write, fd, b"x")
    os.close(fd)
    fd = os.open(f, os.O_WRONLY)
    E(errno.EBADF, os.read, fd, 1)
    os.close(fd)
    # Reading a directory as a file.
    fd = os.open(d, os.O_RDONLY)
    E(errno.EISDIR, os.read, fd, 10)
    os.close(fd)
    # Nothing above changed the tree.
    assert sorted(os.listdir(target)) == ["dangling", "dir", "dirlink", "file"]
    assert read_file(f) == b"x"


def test_deep_directory_tree(target):
    depth = 50
    parts = [f"level-{i:02d}" for i in range(depth)]
    deep = target.joinpath(*parts)
    os.makedirs(deep)
    write_file(deep / "bottom.txt", b"deep")
    assert read_file(deep / "bottom.txt") == b"deep"
    seen_dirs = sum(len(dn) for _p, dn, _f in os.walk(target))
    assert seen_dirs == depth
    # Walk it by relative steps through dir fds too.
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    for p in parts:
        nfd = os.open(p, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    assert os.listdir(fd) == ["bottom.txt"]
    os.close(fd)
    # Rename near the top; the bottom follows.
    os.rename(target / parts[0], target / "renamed-top")
    moved = target.joinpath("renamed-top", *parts[1:])
    assert read_file(moved / "bottom.txt") == b"deep"
    shutil.rmtree(target / "renamed-top")
    assert os.listdir(target) == []
