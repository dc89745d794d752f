"""Helpers shared by the stashfs end-to-end tests (standard library only).

Also runnable as a script: `python3 helpers.py crash-writer ROOT LOG SEED SECONDS` is the writer
process that test_crash.py kills the daemon under.
"""
import ctypes
import errno
import hashlib
import json
import os
import platform
import random
import shutil
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# --------------------------------------------------------------------------------------------
# Errors and small utilities


def errname(code) -> str:
    return errno.errorcode.get(code, str(code)) if isinstance(code, int) else str(code)


def expect_errno(expected, fn, *args, **kwargs):
    """Call fn and assert it fails with OSError whose errno is `expected` (an int or a set)."""
    allowed = expected if isinstance(expected, (set, frozenset, tuple, list)) else {expected}
    what = f"{getattr(fn, '__name__', fn)}{args!r}"
    try:
        result = fn(*args, **kwargs)
    except OSError as e:
        assert e.errno in allowed, (f"{what} failed with {errname(e.errno)} ({e}), expected "
                                    f"{'/'.join(errname(a) for a in allowed)}")
        return e
    # Close fds an unexpectedly successful os.open returned, so the failure message is the story.
    if fn is os.open and isinstance(result, int):
        os.close(result)
    raise AssertionError(f"{what} succeeded (returned {result!r}), expected "
                         f"{'/'.join(errname(a) for a in allowed)}")


def det_bytes(seed, size: int, compressible: bool = False) -> bytes:
    """Deterministic content: seeded random bytes, or compressible text."""
    if size == 0:
        return b""
    if compressible:
        line = f"line of seed {seed}: the quick brown fox jumps over the lazy dog 0123456789\n"
        data = line.encode() * (size // len(line) + 1)
        return data[:size]
    return random.Random(f"stashfs-{seed}").randbytes(size)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 * MiB)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def write_file(path, data: bytes, mode: int = 0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)


def read_file(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def pread_all(fd, size: int, offset: int) -> bytes:
    """pread until `size` bytes or EOF (pread may return short counts)."""
    out = bytearray()
    while len(out) < size:
        b = os.pread(fd, size - len(out), offset + len(out))
        if not b:
            break
        out += b
    return bytes(out)


def first_difference(a: bytes, b: bytes) -> str:
    if a == b:
        return "identical"
    n = min(len(a), len(b))
    for i in range(0, n, 4096):
        if a[i:i + 4096] != b[i:i + 4096]:
            for j in range(i, min(i + 4096, n)):
                if a[j] != b[j]:
                    return (f"lengths {len(a)} vs {len(b)}; first difference at byte {j}: "
                            f"{a[j:j + 16]!r} vs {b[j:j + 16]!r}")
    return f"lengths {len(a)} vs {len(b)}; one is a prefix of the other"


def assert_bytes_equal(actual: bytes, expected: bytes, what: str = "content"):
    if actual != expected:
        raise AssertionError(f"{what} differs: {first_difference(actual, expected)}")


def is_root() -> bool:
    return os.geteuid() == 0


def run(cmd, check=True, timeout=300, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {res.returncode}:\n"
                             f"{res.stdout[-4000:]}{res.stderr[-4000:]}")
    return res


# --------------------------------------------------------------------------------------------
# Syscalls Python does not wrap

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def renameat2(old, new, flags: int):
    """renameat2(2) through glibc; raises OSError like os.rename."""
    fn = _libc.renameat2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"renameat2({old}, {new}, {flags}): {os.strerror(e)}")


_SYS_GETDENTS64 = {"x86_64": 217, "aarch64": 61, "riscv64": 61}.get(platform.machine())
DT_UNKNOWN, DT_FIFO, DT_DIR, DT_REG, DT_LNK, DT_SOCK = 0, 1, 4, 8, 10, 12


def getdents_batches(fd: int, bufsize: int = 1024):
    """Yield one list of (d_ino, d_off, d_type, name_bytes) per getdents64(2) call on fd."""
    if _SYS_GETDENTS64 is None:
        raise OSError(errno.ENOSYS, f"getdents64 number unknown on {platform.machine()}")
    buf = ctypes.create_string_buffer(bufsize)
    syscall = _libc.syscall
    syscall.restype = ctypes.c_long
    while True:
        n = syscall(ctypes.c_long(_SYS_GETDENTS64), ctypes.c_int(fd), buf, ctypes.c_size_t(bufsize))
        if n < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"getdents64: {os.strerror(e)}")
        if n == 0:
            return
        raw = buf.raw[:n]
        pos = 0
        batch = []
        while pos < n:
            d_ino, d_off, reclen, d_type = struct.unpack_from("<QqHB", raw, pos)
            name = raw[pos + 19:pos + reclen].split(b"\0", 1)[0]
            batch.append((d_ino, d_off, d_type, name))
            pos += reclen
        yield batch


def have_getdents() -> bool:
    return _SYS_GETDENTS64 is not None


# --------------------------------------------------------------------------------------------
# Running code in another process (as another user, or holding locks)


def run_python(code: str, *args, user=None, group=None, extra_groups=(), timeout=60):
    """Run `code` in a fresh /usr/bin/python3 (optionally as uid/gid, with only
    `extra_groups` as supplementary groups); it must print one JSON value as its last stdout
    line, which is returned."""
    kw = {}
    if user is not None:
        kw.update(user=user, group=group if group is not None else user,
                  extra_groups=list(extra_groups))
    res = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                         text=True, timeout=timeout, cwd="/", **kw)
    assert res.returncode == 0, f"child python exited {res.returncode}:\n{res.stdout}{res.stderr}"
    lines = res.stdout.strip().splitlines()
    assert lines, f"child python printed nothing:\n{res.stderr}"
    return json.loads(lines[-1])


# Prelude for child scripts: `attempt(fn, ...)` returns "ok", the result, or the errno name.
CHILD_PRELUDE = r'''
import errno, fcntl, json, os, sys
def attempt(fn, *a, **k):
    try:
        r = fn(*a, **k)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    return "ok" if r is None or isinstance(r, int) else r
'''


# --------------------------------------------------------------------------------------------
# Trees: copying real data in, and comparing trees

def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for n in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, n))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def real_tree_sources(budget: int = 48 * MiB):
    """Top-level entries of real trees on this machine to copy with `cp -a`, largest first:
    /usr/lib/python3.X without its static-library dir, then /usr/share/doc packages (many small
    files, symlinks), until `budget` bytes. Returns [(source_path, dest_subdir)]."""
    picked, total = [], 0
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = []
    for base, sub in ((Path("/usr/lib") / pyver, "pylib"), (Path("/usr/share/doc"), "doc"),
                      (Path("/usr/lib/python3/dist-packages"), "dist")):
        if base.is_dir():
            for entry in sorted(base.iterdir()):
                if entry.name.startswith("config-"):
                    continue  # static libpython: 25 MB of one file, not what caches look like
                candidates.append((entry, sub))
    for entry, sub in candidates:
        if entry.is_symlink() or not entry.is_dir():
            size = entry.lstat().st_size if not entry.is_symlink() else 0
        else:
            size = _tree_size(entry)
        if size > 8 * MiB:
            continue
        if total + size > budget:
            continue
        picked.append((entry, sub))
        total += size
    return picked


def copy_real_tree(dest: Path, budget: int = 48 * MiB):
    """cp -a a real tree into dest/<sub>/; returns the list of (source, copied) entry pairs."""
    sources = real_tree_sources(budget)
    assert sources, "no real tree found to copy (/usr/lib/python3.*, /usr/share/doc)"
    by_sub = {}
    for src, sub in sources:
        by_sub.setdefault(sub, []).append(src)
    pairs = []
    for sub, srcs in by_sub.items():
        (dest / sub).mkdir(parents=True, exist_ok=True)
        run(["cp", "-a", "-t", str(dest / sub), *map(str, srcs)])
        pairs += [(src, dest / sub / src.name) for src in srcs]
    return pairs


def copy_text_tree(dest: Path, limit: int = 16 * MiB) -> int:
    """Copy the .py files of the Python standard library (text) into dest; returns their bytes."""
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    roots = [Path("/usr/lib") / pyver, Path("/usr/lib/python3/dist-packages")]
    total = 0
    for root in roots:
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("config-"))
            for n in sorted(filenames):
                if not n.endswith(".py"):
                    continue
                src = Path(dirpath) / n
                if src.is_symlink() or not src.is_file():
                    continue
                size = src.stat().st_size
                if total + size > limit:
                    return total
                dst = dest / root.name / src.relative_to(root)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                total += size
    assert total > 1 * MiB, f"only {total} bytes of Python source found to copy"
    return total


def tree_meta(root: Path, with_hash: bool = False) -> dict:
    """relpath -> metadata tuple for every entry under root (not root itself)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for n in sorted(dirnames + filenames):
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            kind = stat.S_IFMT(st.st_mode)
            extra = None
            if stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            elif stat.S_ISREG(st.st_mode) and with_hash:
                extra = sha256_file(p)
            size = st.st_size if not stat.S_ISDIR(st.st_mode) else None  # dir sizes are fs-specific
            out[rel] = dict(kind=kind, mode=oct(st.st_mode), uid=st.st_uid, gid=st.st_gid, size=size,
                            mtime_ns=st.st_mtime_ns, extra=extra)
    return out


def compare_meta(actual: dict, expected: dict, what: str, max_report: int = 15):
    problems = []
    for rel in sorted(set(expected) - set(actual)):
        problems.append(f"missing: {rel}")
    for rel in sorted(set(actual) - set(expected)):
        problems.append(f"unexpected: {rel}")
    for rel in sorted(set(actual) & set(expected)):
        a, e = actual[rel], expected[rel]
        for k in e:
            if a[k] != e[k]:
                problems.append(f"{rel}: {k} is {a[k]!r}, expected {e[k]!r}")
    if problems:
        raise AssertionError(f"{what}: {len(problems)} differences, first ones:\n  " +
                             "\n  ".join(problems[:max_report]))


def diff_r(a, b):
    """`diff -r --no-dereference a b` must report no difference."""
    res = run(["diff", "-r", "--no-dereference", str(a), str(b)], check=False)
    assert res.returncode == 0, (f"diff -r {a} {b} exited {res.returncode}:\n"
                                 f"{res.stdout[:4000]}{res.stderr[:2000]}")


def inode_groups(root: Path) -> list:
    """Sorted groups (sorted relpaths) of regular-file names that share an inode, for nlink > 1."""
    groups = {}
    for dirpath, _dn, filenames in os.walk(root):
        for n in filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                groups.setdefault(st.st_ino, []).append(os.path.relpath(p, root))
    return sorted(sorted(g) for g in groups.values())


def regular_bytes(root: Path) -> int:
    return _tree_size(root)


# --------------------------------------------------------------------------------------------
# Crash-test writer: the content of file number i, and the writer process


def crash_content(seed: int, i: int) -> bytes:
    rng = random.Random(seed * 1000003 + i)
    size = rng.choice([0, 1, 17, 4096, 4096, 30_001, 65_543, 131_072, 200_003, 1 * MiB + 5])
    return det_bytes(f"crash-{seed}-{i}", size, compressible=rng.random() < 0.5)


def crash_writer(root: str, log_path: str, seed: int, seconds: float):
    """Write files under root until an error (the daemon died) or `seconds` pass.

    Log lines (appended to a file outside the mount, each only once the step is done):
      W i rel        about to create rel with crash_content(seed, i), no fsync
      R i rel        about to rename a fsynced tmp file to rel (with dir fsync after)
      S i rel sha    rel was fsynced (and for renames its directory too): must survive a crash
    """
    logfd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def log(line):
        os.write(logfd, (line + "\n").encode())

    ndirs = 8
    try:
        for d in range(ndirs):
            os.mkdir(os.path.join(root, f"d{d}"))
            dfd = os.open(os.path.join(root, f"d{d}"), os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(dfd)
            os.close(dfd)
        rfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(rfd)
        os.close(rfd)
        log("READY")
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline:
            data = crash_content(seed, i)
            d = f"d{i % ndirs}"
            kind = i % 5
            if kind in (0, 1, 2, 3):
                rel = f"{d}/f{i:06d}"
                log(f"W {i} {rel}")
                fd = os.open(os.path.join(root, rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                step = 64 * KiB if kind == 3 else max(1, len(data))
                for off in range(0, len(data), step):
                    os.write(fd, data[off:off + step])
                if kind == 2:
                    os.fsync(fd)
                    os.close(fd)
                    log(f"S {i} {rel} {sha256_bytes(data)}")
                else:
                    os.close(fd)
            else:
                tmp, rel = f"{d}/.tmp{i:06d}", f"{d}/r{i:06d}"
                log(f"W {i} {tmp}")
                fd = os.open(os.path.join(root, tmp), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(fd, data)
                os.fsync(fd)
                os.close(fd)
                log(f"R {i} {rel}")
                os.rename(os.path.join(root, tmp), os.path.join(root, rel))
                dfd = os.open(os.path.join(root, d), os.O_RDONLY | os.O_DIRECTORY)
                os.fsync(dfd)
                os.close(dfd)
                log(f"S {i} {rel} {sha256_bytes(data)}")
            i += 1
        log("TIMEOUT")
    except OSError as e:
        log(f"STOPPED {errname(e.errno)}")
    finally:
        os.close(logfd)


def parse_crash_log(log_path):
    """-> (names: rel -> i for every name the writer may have produced, synced: rel -> (i, sha),
    status lines)."""
    names, synced, status = {}, {}, []
    for line in Path(log_path).read_text().splitlines():
        parts = line.split()
        if parts[0] in ("W", "R"):
            names[parts[2]] = int(parts[1])
        elif parts[0] == "S":
            synced[parts[2]] = (int(parts[1]), parts[3])
            names[parts[2]] = int(parts[1])
        else:
            status.append(line)
    return names, synced, status


def check_unsynced_content(actual: bytes, intended: bytes) -> str:
    """Data not fsynced may be lost, never replaced by other bytes: the file is no longer than
    what was written, and each 4 KiB block holds either the written bytes or zeros (ext4-like
    'size committed before data' is tolerated; garbage is not). Returns '' or a problem."""
    if len(actual) > len(intended):
        return f"size {len(actual)} > the {len(intended)} bytes ever written"
    for off in range(0, len(actual), 4096):
        a = actual[off:off + 4096]
        if a != intended[off:off + len(a)] and a.count(0) != len(a):
            return f"block at {off} is neither the written data nor zeros: {a[:16]!r}..."
    return ""


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "crash-writer":
        crash_writer(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    else:
        sys.exit("usage: helpers.py crash-writer ROOT LOG SEED SECONDS")
