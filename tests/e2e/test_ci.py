"""CI cache keys end to end: `mount --key/--restore-key`, save at umount, `save [--update]`, `ls`,
`rm`, `status`, `export`/`import`, on real mounts of the real binary (issue 3, and the workflow in
PRODUCT.md "The workflow it must make boring"):

    stashfs mount --key "pip-$(sha256sum requirements.txt | cut -c1-16)" --restore-key pip- DIR
    pip install -r requirements.txt
    stashfs umount DIR          # saves the key if it is new; exit 0 either way

Most mounts here are started the way a CI job starts them: daemonized (`stashfs mount` returns once
the mount is up and prints its outcome), tracked by the `ci` fixture and always unmounted. Some use
conftest's `mount_factory` (foreground daemons). Import-refusal tests write export files by hand
(store/archive.h, store/FORMAT.md) so that exactly one thing is wrong with each.

Needs real mounts: skipped with STASHFS_E2E_NATIVE=1.
"""
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import BAD_MARKERS, is_mounted, native_mode, run_stashfs, stashfs_bin, stats
from helpers import (KiB, MiB, compare_meta, det_bytes, diff_r, expect_errno, inode_groups,
                     is_root, read_file, regular_bytes, run, tree_meta, write_file)

pytestmark = pytest.mark.skipif(native_mode(), reason="needs real stashfs mounts")

# created/last_used in the catalog have a resolution of one second.
CLOCK_TICK = 1.1


def clean_env(**extra) -> dict:
    """The environment for stashfs commands: never the real $GITHUB_OUTPUT of a CI job running
    these tests (mounts append to it)."""
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_OUTPUT"}
    env.update(extra)
    return env


# ------------------------------------------------------------------------------------------------
# Daemonized key mounts, as a CI job runs them


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is as good as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def is_stashfs_process(pid: int) -> bool:
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    return os.path.basename(exe).startswith("stashfs")


class BgMount:
    def __init__(self, path: Path, res: subprocess.CompletedProcess, info: dict):
        self.path = path
        self.res = res
        self.info = info  # the --output json object (None in text mode)
        self.pid = info["pid"] if info else None

    @property
    def line(self) -> str:
        return self.res.stdout.strip()


class Ci:
    """Runs stashfs against one store like a CI job: `stashfs mount` daemonizes; every mount
    started here is unmounted by cleanup(), and only daemons it started are ever signalled."""

    def __init__(self, store: Path, workdir: Path, env: dict = None):
        self.store = store
        self.workdir = workdir
        self.env = env or clean_env()
        self.mounts = []

    def cmd(self, *args, check=True, env=None, timeout=300):
        return run_stashfs(self.store, *args, check=check, env=env or self.env, timeout=timeout)

    def mount(self, name, key, restore=(), extra=(), output="json", env=None, check=True):
        """`stashfs mount --key KEY [--restore-key R]... DIR` (daemonized). Returns a BgMount, or
        the CompletedProcess if check=False and the mount failed."""
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        args = ["mount", "--key", key]
        for r in restore:
            args += ["--restore-key", r]
        args += list(extra) + ["--output", output, str(path)]
        res = self.cmd(*args, check=False, env=env)
        info = None
        if res.returncode == 0:
            if output == "json":
                lines = res.stdout.strip().splitlines()
                assert len(lines) == 1, f"--output json printed {len(lines)} lines:\n{res.stdout}"
                info = json.loads(lines[0])
            m = BgMount(path, res, info)
            self.mounts.append(m)
            assert is_mounted(path), f"mount exited 0 but {path} is not mounted: {res.stdout}"
            if m.pid is None:  # text output: ask the daemon, so umount can wait for its exit
                m.pid = self.status(path)["pid"]
            return m
        if check:
            raise AssertionError(f"mount --key {key} exited {res.returncode}: {res.stderr}")
        return res

    def umount(self, m: BgMount, check=True) -> subprocess.CompletedProcess:
        res = self.cmd("umount", str(m.path), check=False)
        if check:
            assert res.returncode == 0, f"umount {m.path} exited {res.returncode}: {res.stderr}"
            assert not is_mounted(m.path), f"{m.path} still mounted after umount"
            assert res.stderr == "", f"umount wrote to stderr: {res.stderr}"
        self.wait_gone(m)
        return res

    def wait_gone(self, m: BgMount, timeout=60):
        """Waits for the daemon to exit. `stashfs umount` returns before the daemon has closed
        the catalog, and a command started meanwhile may fail with "database is locked" (see
        test_commands_right_after_umount): the other tests wait so they test what they say."""
        deadline = time.monotonic() + timeout
        while pid_alive(m.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not pid_alive(m.pid), f"daemon {m.pid} of {m.path} still running after umount"

    def cleanup(self):
        for m in self.mounts:
            if is_mounted(m.path):
                self.cmd("umount", str(m.path), check=False)
            if m.pid and pid_alive(m.pid) and is_stashfs_process(m.pid):
                deadline = time.monotonic() + 30
                while pid_alive(m.pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if pid_alive(m.pid) and is_stashfs_process(m.pid):
                    os.kill(m.pid, 9)
            if is_mounted(m.path):
                subprocess.run(["umount", "-l", str(m.path)], capture_output=True)
        self.check_log()

    def check_log(self):
        log = self.store / "stashfs.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        for marker in BAD_MARKERS:
            assert marker not in text, f"daemon log has '{marker}':\n{text[-4000:]}"

    # -- store inspection ------------------------------------------------------------------

    def ls(self) -> dict:
        return json.loads(self.cmd("ls", "--json").stdout)

    def snapshots(self) -> dict:
        return {s["key"]: s for s in self.ls()["snapshots"]}

    def status(self, m) -> dict:
        path = m.path if hasattr(m, "path") else m
        return json.loads(self.cmd("status", str(path), "--json").stdout)

    def stats(self) -> dict:
        return stats(self.store)

    def save_tree(self, key: str, src: Path, name="mnt_save"):
        """Saves a copy of the native tree `src` under a new `key` (mount: miss; cp -a; umount)."""
        m = self.mount(name, key)
        assert m.info["result"] == "miss", m.info
        cp_a(src, m.path)
        res = self.umount(m)
        assert f"saved key '{key}'" in res.stdout, res.stdout
        return res

    def check_key(self, key: str, expected_fp: dict, name="mnt_check", what=None):
        """Mounts `key` read-only (an exact hit) and compares its tree with expected_fp."""
        m = self.mount(name, key, extra=["--read-only"])
        assert m.info["result"] == "exact", m.info
        try:
            assert_fp(fingerprint(m.path), expected_fp, what or f"snapshot '{key}'")
        finally:
            res = self.umount(m)
        assert "not saved" in res.stdout, res.stdout


@pytest.fixture
def ci(store, workdir):
    c = Ci(store, workdir)
    yield c
    c.cleanup()


def catalog(store: Path) -> sqlite3.Connection:
    """A private copy of the store's SQLite catalog (store/FORMAT.md), read without touching the
    store. Call only while no daemon is writing."""
    d = Path(tempfile.mkdtemp(prefix="catalog-copy-", dir=store.parent))
    for suffix in ("", "-wal"):
        src = store / f"catalog.db{suffix}"
        if src.exists():
            shutil.copyfile(src, d / src.name)
    return sqlite3.connect(str(d / "catalog.db"))


def snapshot_root(store: Path, key: str) -> str:
    con = catalog(store)
    try:
        row = con.execute("SELECT hex(root) FROM snapshots WHERE key=?", (key,)).fetchone()
    finally:
        con.close()
    assert row, f"no snapshot '{key}' in the catalog"
    return row[0].lower()


# ------------------------------------------------------------------------------------------------
# Trees


def cp_a(src: Path, dst: Path):
    run(["cp", "-a", f"{src}/.", str(dst)])


def make_tree(root: Path, seed: str, nsub: int = 12):
    """A small tree of what caches hold: nested dirs, an empty dir, empty / inline / chunked /
    multi-chunk files, symlinks (one dangling), a hard link across dirs, xattrs, odd modes and
    owners, nanosecond mtimes."""
    (root / "pkgs" / "sub").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    for i, size in enumerate([0, 1, 63, 65, 4096, 70_000, 300_001]):
        write_file(root / "pkgs" / f"f{i}", det_bytes(f"{seed}-{i}", size, compressible=i % 2 == 0))
    for i in range(nsub):
        write_file(root / "pkgs" / "sub" / f"s{i:02d}.txt",
                   det_bytes(f"{seed}-s{i}", 1000 + 37 * i, compressible=True))
    os.symlink("f1", root / "pkgs" / "link")
    os.symlink(f"/nonexistent/{seed}", root / "dangling")
    os.link(root / "pkgs" / "f4", root / "hard")
    os.setxattr(root / "pkgs" / "f5", "user.seed", seed.encode())
    os.setxattr(root / "pkgs", "user.dir", b"\0binary\xff")
    os.chmod(root / "pkgs" / "f3", 0o600)
    os.chmod(root / "pkgs" / "f6", 0o755)
    if is_root():
        os.chown(root / "pkgs" / "f2", 1234, 5678)
    t = 1_600_000_000_123_456_789
    for i, rel in enumerate(["pkgs/f0", "pkgs/f5", "hard", "pkgs/sub", "pkgs", "empty-dir"]):
        os.utime(root / rel, ns=(t + i * 1_000_000_001, t + i * 1_000_000_003))


def mutate_tree(root: Path, seed: str):
    """Every kind of change a job makes to a restored cache."""
    fd = os.open(root / "pkgs" / "f5", os.O_WRONLY)
    os.pwrite(fd, b"MODIFIED " + seed.encode(), 1000)
    os.close(fd)
    with open(root / "pkgs" / "f6", "ab") as f:
        f.write(b"appended by " + seed.encode())
    os.truncate(root / "hard", 10)  # hard-linked with pkgs/f4
    os.unlink(root / "pkgs" / "f1")
    shutil.rmtree(root / "pkgs" / "sub")
    os.rename(root / "pkgs" / "f0", root / "renamed")
    write_file(root / f"added-{seed}", det_bytes(f"added-{seed}", 50_000))
    (root / "new-dir").mkdir()
    write_file(root / "new-dir" / "x", det_bytes(f"x-{seed}", 200_000))
    os.chmod(root / "pkgs" / "f3", 0o644)
    if is_root():
        os.chown(root / "pkgs" / "f6", 42, 43)
    os.setxattr(root / "pkgs" / "f5", "user.seed", b"changed")
    os.removexattr(root / "pkgs", "user.dir")
    os.unlink(root / "pkgs" / "link")
    os.symlink("elsewhere", root / "pkgs" / "link")
    os.utime(root / "empty-dir", ns=(1_000_000_007, 2_000_000_009))


def fingerprint(root: Path, with_hash: bool = True) -> dict:
    """Everything a restore must reproduce: per entry type, mode, owner, size, mtime (ns),
    content hash or symlink target; user xattrs; hard-link groups."""
    meta = tree_meta(root, with_hash=with_hash)
    xattrs = {}
    for rel, m in meta.items():
        if stat.S_ISLNK(m["kind"]):
            continue
        p = root / rel
        names = sorted(n for n in os.listxattr(p) if n.startswith("user."))
        if names:
            xattrs[rel] = {n: os.getxattr(p, n) for n in names}
    return {"meta": meta, "xattrs": xattrs, "links": inode_groups(root)}


def assert_fp(actual: dict, expected: dict, what: str):
    compare_meta(actual["meta"], expected["meta"], what)
    assert actual["xattrs"] == expected["xattrs"], f"{what}: xattrs differ"
    assert actual["links"] == expected["links"], f"{what}: hard-link groups differ"


def one_line(res, what: str) -> str:
    """The one error line a failing command must print on stderr."""
    err = res.stderr
    if isinstance(err, bytes):
        try:
            err = err.decode("utf-8")
        except UnicodeDecodeError:
            raise AssertionError(f"{what}: the error is not valid UTF-8: {err!r}")
    lines = err.rstrip("\n").split("\n")
    assert err.endswith("\n") and len(lines) == 1 and lines[0].strip(), (
        f"{what}: expected exactly one line on stderr, got {len(lines)}:\n{err!r}")
    assert lines[0].startswith("stashfs: "), f"{what}: {lines[0]!r}"
    return lines[0]


def run_concurrently(cmds, env, timeout=120):
    """Starts every command before waiting for any; returns [(rc, stdout, stderr)]."""
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for c in cmds]
    out = []
    for p in procs:
        o, e = p.communicate(timeout=timeout)
        out.append((p.returncode, o, e))
    return out


def zstd_size(data: bytes) -> int:
    return len(subprocess.run(["zstd", "-3", "-q", "-c"], input=data, capture_output=True,
                              check=True).stdout)


# ------------------------------------------------------------------------------------------------
# The miss → save → hit cycle, and what the mount reports


def test_miss_then_save_reports_outcome(ci, workdir, store):
    key = "pip-0123456789abcdef"  # as in the workflow: pip-$(sha256sum ... | cut -c1-16)
    src = workdir / "src"
    make_tree(src, "miss")
    gh = workdir / "github_output"
    gh.write_text("earlier-step=1\n")
    env = clean_env(GITHUB_OUTPUT=str(gh))
    t0 = int(time.time())

    m = ci.mount("mnt", key, restore=["pip-"], env=env)
    assert m.res.stderr == "", m.res.stderr
    info = m.info
    assert info["result"] == "miss" and info["cache_hit"] is False, info
    assert info["key"] == key and info["matched_key"] is None, info
    assert info["files"] == 0 and info["logical_bytes"] == 0, info
    assert info["mountpoint"] == str(m.path) and info["store"] == str(store), info
    assert pid_alive(info["pid"]) and is_stashfs_process(info["pid"]), info
    assert gh.read_text() == ("earlier-step=1\n"
                              "cache-hit=false\n"
                              "cache-result=miss\n"
                              f"cache-primary-key={key}\n"
                              "cache-matched-key=\n"), gh.read_text()
    assert os.listdir(m.path) == [], "a miss must start empty"
    st = ci.status(m)
    assert (st["key"], st["result"], st["matched_key"]) == (key, "miss", None), st
    assert st["read_only"] is False and st["volume"] is None and st["pid"] == info["pid"], st
    assert ci.snapshots() == {}, "nothing is saved before umount"

    cp_a(src, m.path)
    expected = fingerprint(src)
    size = regular_bytes(src)
    res = ci.umount(m)
    files = sum(1 for v in expected["meta"].values() if not stat.S_ISDIR(v["kind"]))  # names
    assert re.fullmatch(rf"stashfs: unmounted {re.escape(str(m.path))}; saved key "
                        rf"'{key}' \({files} files, [^;]+; .+ of new data stored\)\n",
                        res.stdout), res.stdout
    snaps = ci.snapshots()
    assert list(snaps) == [key], snaps
    s = snaps[key]
    assert s["files"] == files and s["logical_bytes"] == size, (s, files, size)
    assert t0 <= s["created"] <= time.time() + 1 and s["damaged"] is False, s
    assert ci.stats()["snapshots"] == 1

    # The next job: an exact hit, reported in text and to $GITHUB_OUTPUT.
    before = gh.read_text()
    m = ci.mount("mnt", key, restore=["pip-"], env=env, output="text")
    assert m.line.startswith(f"stashfs: cache hit: restored key '{key}' ({files} "
                             f"files, {fmt_size(size)})") and "\n" not in m.line, m.line
    assert m.res.stderr == "", m.res.stderr
    assert gh.read_text() == before + ("cache-hit=true\ncache-result=exact\n"
                                       f"cache-primary-key={key}\n"
                                       f"cache-matched-key={key}\n")
    assert_fp(fingerprint(m.path), expected, "exact hit")
    res = ci.umount(m)
    assert f"key '{key}' was restored exactly; left unchanged" in res.stdout, res.stdout


def fmt_size(n: int) -> str:
    """tools/util.cc FormatSize."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    v, u = float(n), 0
    while v >= 1024 and u < 5:
        v /= 1024
        u += 1
    return f"{n} B" if u == 0 else f"{v:.1f} {units[u]}"


def test_exact_hit_restores_identical_tree_and_keeps_key(ci, workdir, store):
    src = workdir / "src"
    make_tree(src, "exact")
    expected = fingerprint(src)
    ci.save_tree("deps-v1", src)
    before = ci.snapshots()["deps-v1"]
    root = snapshot_root(store, "deps-v1")
    time.sleep(CLOCK_TICK)  # a wrongful re-save would show in `created`

    m = ci.mount("mnt", "deps-v1", restore=["deps-"])
    info = m.info
    assert info["result"] == "exact" and info["cache_hit"] is True, info
    assert info["matched_key"] == "deps-v1", info
    assert info["files"] == before["files"], info
    assert info["logical_bytes"] == before["logical_bytes"], info
    diff_r(src, m.path)
    assert_fp(fingerprint(m.path), expected, "exact hit")
    assert ci.status(m)["result"] == "exact"
    # The job changes its copy; the key must not move.
    write_file(m.path / "new-file", b"written after an exact hit")
    os.unlink(m.path / "pkgs" / "f6")
    res = ci.umount(m)
    assert "key 'deps-v1' was restored exactly; left unchanged" in res.stdout, res.stdout
    after = ci.snapshots()
    assert list(after) == ["deps-v1"], after
    for k in ("created", "logical_bytes", "files", "damaged"):
        assert after["deps-v1"][k] == before[k], (k, before, after["deps-v1"])
    assert snapshot_root(store, "deps-v1") == root, "the snapshot's root moved"
    ci.check_key("deps-v1", expected)


def test_restore_key_picks_newest_match_in_order(ci, workdir, store, mount_factory):
    # Three snapshots with one prefix, created one second apart: pip-a, then pip-b, then pip-0
    # (newest, and lowest by name: newest must win, not the highest name).
    vol = mount_factory(volume="builder", name="mnt_builder", env=clean_env())
    for key in ("pip-a", "pip-b", "pip-0"):
        write_file(vol.path / "which", key.encode())
        res = ci.cmd("save", str(vol.path), "--key", key)
        assert f"saved key '{key}'" in res.stdout, res.stdout
        if key != "pip-0":
            time.sleep(CLOCK_TICK)
    write_file(vol.path / "which", b"npm_x")
    ci.cmd("save", str(vol.path), "--key", "npm_x")
    vol.umount()
    snaps = ci.snapshots()
    assert snaps["pip-a"]["created"] < snaps["pip-b"]["created"] < snaps["pip-0"]["created"], snaps

    gh = workdir / "gh"
    cases = [
        # (restore keys, expected result, expected matched key)
        (["pip-"], "partial", "pip-0"),
        (["pip-b"], "partial", "pip-b"),
        (["npm-", "pip-"], "partial", "pip-0"),            # first prefix matches nothing
        (["npm-", "pip-a", "pip-"], "partial", "pip-a"),   # in the order given, not the newest
        (["pip-b", "pip-a"], "partial", "pip-b"),
        (["npm_"], "partial", "npm_x"),
        (["pip_"], "miss", None),   # '_' is a plain character, not a LIKE wildcard
        (["PIP-"], "miss", None),   # case-sensitive
        (["pip-c", "npm-"], "miss", None),
        ([], "miss", None),
    ]
    for restore, result, matched in cases:
        gh.write_text("")
        m = ci.mount("mnt", "pip-new", restore=restore, extra=["--no-save"],
                     env=clean_env(GITHUB_OUTPUT=str(gh)))
        what = f"--restore-key {restore}"
        assert (m.info["result"], m.info["matched_key"]) == (result, matched), (what, m.info)
        assert m.info["cache_hit"] is False, (what, m.info)
        which = read_file(m.path / "which").decode() if matched else None
        assert which == matched, f"{what}: restored the tree of '{which}', expected '{matched}'"
        st = ci.status(m)
        assert (st["result"], st["matched_key"]) == (result, matched), (what, st)
        assert gh.read_text() == (f"cache-hit=false\ncache-result={result}\n"
                                  f"cache-primary-key=pip-new\ncache-matched-key={matched or ''}\n")
        res = ci.umount(m)
        assert "not saved" in res.stdout, res.stdout
    # The exact key wins over any restore key.
    m = ci.mount("mnt", "pip-a", restore=["pip-"], extra=["--no-save"])
    assert (m.info["result"], m.info["matched_key"]) == ("exact", "pip-a"), m.info
    assert read_file(m.path / "which") == b"pip-a"
    ci.umount(m)

    # A fallback restore is saved under the new key at umount; the restored key stays as it was.
    m = ci.mount("mnt", "pip-new", restore=["pip-"], output="text")
    assert m.line.startswith("stashfs: cache hit on a restore key: restored 'pip-0' (1 files, 5 B)"
                             ) and "\n" not in m.line, m.line
    write_file(m.path / "added", b"by the job")
    res = ci.umount(m)
    assert "saved key 'pip-new'" in res.stdout, res.stdout
    m = ci.mount("mnt", "pip-new", extra=["--read-only"])
    assert sorted(os.listdir(m.path)) == ["added", "which"]
    assert read_file(m.path / "which") == b"pip-0"
    ci.umount(m)
    m = ci.mount("mnt", "pip-0", extra=["--read-only"])
    assert os.listdir(m.path) == ["which"], "the restored snapshot changed"
    ci.umount(m)
    # Now pip-new is the newest pip- snapshot.
    m = ci.mount("mnt", "pip-next", restore=["pip-"], extra=["--no-save"])
    assert m.info["matched_key"] == "pip-new", m.info
    ci.umount(m)


def test_restored_mount_writes_do_not_change_snapshot(ci, workdir, store):
    src = workdir / "src"
    make_tree(src, "cow")
    base = fingerprint(src)
    ci.save_tree("cow-1", src)
    root = snapshot_root(store, "cow-1")

    # A writer restored from cow-1 (fallback) and a reader of cow-1 at the same time.
    w = ci.mount("mnt_w", "cow-2", restore=["cow-"])
    assert (w.info["result"], w.info["matched_key"]) == ("partial", "cow-1"), w.info
    r = ci.mount("mnt_r", "cow-1", extra=["--read-only"])
    assert_fp(fingerprint(w.path), base, "the writer's restored tree")
    mutate_tree(w.path, "w")
    os.sync()
    changed = fingerprint(w.path)
    assert changed != base
    assert_fp(fingerprint(r.path), base, "cow-1 read while a restored copy is being changed")
    # A second writable exact mount of cow-1 changes its own copy too.
    x = ci.mount("mnt_x", "cow-1")
    mutate_tree(x.path, "x")
    assert_fp(fingerprint(w.path), changed, "writer w after another mount changed its copy")
    assert_fp(fingerprint(r.path), base, "cow-1 reader after two writers")
    assert "left unchanged" in ci.umount(x).stdout
    assert "saved key 'cow-2'" in ci.umount(w).stdout
    assert "not saved" in ci.umount(r).stdout

    assert snapshot_root(store, "cow-1") == root, "cow-1's root moved"
    ci.check_key("cow-1", base)
    ci.check_key("cow-2", changed)


def test_restored_file_rewritten_with_o_trunc_is_saved(ci, workdir, store):
    # BUG (found by this test): a file opened with O_TRUNC and rewritten shorter (`> file`,
    # Python open(..., "w"), what pip and npm do to their caches) reads back correctly while
    # mounted, but what is committed and saved is the old content with the new bytes written over
    # its start, at the old size. The truncation never reaches the daemon: fs/fuse_ops.cc answers
    # OPEN with ENOSYS (no_open) while FUSE_CAP_ATOMIC_O_TRUNC stays enabled (libfuse's default),
    # so the kernel truncates only its page cache and sends no SETATTR. Volumes lose it too.
    src = workdir / "src"
    make_tree(src, "trunc")
    ci.save_tree("tr-1", src)
    m = ci.mount("mnt", "tr-2", restore=["tr-"])
    write_file(m.path / "pkgs" / "f6", b"short")  # was 300,001 bytes
    with open(m.path / "pkgs" / "f5", "w") as f:  # was 70,000 bytes
        f.write("text")
    # The same within one mount: written, made durable, then rewritten.
    write_file(m.path / "own", det_bytes("own", 100_000))
    fd = os.open(m.path / "own", os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    write_file(m.path / "own", b"own, rewritten")
    assert read_file(m.path / "pkgs" / "f6") == b"short"
    expected = fingerprint(m.path)
    assert "saved key 'tr-2'" in ci.umount(m).stdout
    ci.check_key("tr-2", expected, what="tr-2 (files rewritten with O_TRUNC)")
    ci.check_key("tr-1", fingerprint(src))


def test_save_existing_key_is_unchanged_and_update_moves_it(ci, workdir, store, mount_factory):
    vol = mount_factory(volume="work", name="mnt_vol", env=clean_env())
    make_tree(vol.path / "t", "v1")
    tree1 = fingerprint(vol.path)
    res = ci.cmd("save", str(vol.path), "--key", "snap-1")
    assert res.stdout.startswith("stashfs: saved key 'snap-1' (") and res.stderr == "", res
    before = ci.snapshots()["snap-1"]
    root1 = snapshot_root(store, "snap-1")
    time.sleep(CLOCK_TICK)

    mutate_tree(vol.path / "t", "v2")
    tree2 = fingerprint(vol.path)
    res = ci.cmd("save", str(vol.path), "--key", "snap-1")
    assert res.returncode == 0 and res.stderr == "", res
    assert res.stdout == ("stashfs: key 'snap-1' already exists; left unchanged "
                          "(--update moves it)\n"), res.stdout
    same = ci.snapshots()["snap-1"]
    for k in ("created", "logical_bytes", "files", "damaged"):
        assert same[k] == before[k], (k, before, same)
    assert snapshot_root(store, "snap-1") == root1
    ci.check_key("snap-1", tree1, what="snap-1 after a save of an existing key")

    reader = ci.mount("mnt_reader", "snap-1", extra=["--no-save"])  # a job restored it earlier
    res = ci.cmd("save", str(vol.path), "--key", "snap-1", "--update")
    assert res.stdout.startswith("stashfs: saved (updated) key 'snap-1' ("), res.stdout
    assert_fp(fingerprint(reader.path), tree1, "a mount of snap-1 made before --update")
    ci.umount(reader)
    after = ci.snapshots()["snap-1"]
    assert after["created"] > before["created"], (before, after)
    assert after["logical_bytes"] == regular_bytes(vol.path), after
    assert snapshot_root(store, "snap-1") != root1
    ci.check_key("snap-1", tree2, what="snap-1 after --update")
    # --update of a key that does not exist yet just creates it.
    res = ci.cmd("save", str(vol.path), "--key", "snap-2", "--update")
    assert "key 'snap-2'" in res.stdout, res.stdout
    ci.check_key("snap-2", tree2)
    assert sorted(ci.snapshots()) == ["snap-1", "snap-2"]
    vol.umount()


def test_save_live_mount_then_keep_writing(ci, workdir, store, mount_factory):
    m = mount_factory(volume=None, args=["--key", "live-final"], name="mnt_live", env=clean_env())
    assert "cache miss" in m.stdout(), m.stdout()
    make_tree(m.path / "a", "live1")
    # A file still open for writing when the snapshot is taken: what was written is in it.
    fd = os.open(m.path / "a" / "growing", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, det_bytes("growing-1", 200_000))
    tree1 = fingerprint(m.path)
    res = ci.cmd("save", str(m.path), "--key", "live-1")
    assert res.stdout.startswith("stashfs: saved key 'live-1' ("), res.stdout

    os.write(fd, det_bytes("growing-2", 100_000))
    os.close(fd)
    mutate_tree(m.path / "a", "live2")
    write_file(m.path / "b", det_bytes("b", 3 * MiB))
    tree2 = fingerprint(m.path)
    res = ci.cmd("save", str(m.path), "--key", "live-2")
    assert res.stdout.startswith("stashfs: saved key 'live-2' ("), res.stdout
    assert ci.status(m.path)["key"] == "live-final", "save must not change what the mount is"

    shutil.rmtree(m.path / "a")
    write_file(m.path / "c", b"after the last save")
    tree3 = fingerprint(m.path)
    ci.check_key("live-1", tree1)
    ci.check_key("live-2", tree2)
    res = m.umount()
    assert "saved key 'live-final'" in res.stdout, res.stdout
    ci.check_key("live-final", tree3)
    ci.check_key("live-1", tree1, what="live-1 after the mount went on writing and saved")


def test_commands_right_after_umount(ci, workdir, store):
    # BUG (found by this test): the next command after `stashfs umount` returns often fails with
    # "stashfs: [opening store S: ]database is locked: catalog statement failed (S/catalog.db):
    # database is locked; another stashfs process holds the catalog, try again" (exit 1): about
    # 4 in 10 times for `stashfs ls` or `stashfs mount` run right after umount in a shell script.
    # umount replies before the daemon has closed its catalog connections (closing the last one
    # checkpoints the WAL), and Catalog::Init runs "PRAGMA journal_mode=WAL" before it sets
    # busy_timeout, so the newcomer fails at once instead of waiting. It breaks the documented
    # workflow (umount, then the next job's mount) and any two stashfs commands that meet.
    path = workdir / "mnt"
    path.mkdir()
    log, pids = workdir / "failures.log", workdir / "pids"
    rounds = 60
    # A CI script: each job mounts its key, writes, unmounts; `ls` and the next mount follow at
    # once. Failures are logged (and the step retried) instead of stopping the script.
    script = f"""
        B={stashfs_bin()}; S={store}; D={path}
        for i in $(seq 0 {rounds - 1}); do
          if ! $B --store $S mount --key seq-$i --restore-key seq- $D >/dev/null 2>err; then
            echo "round $i: mount: $(cat err)" >> {log}; sleep 1
            $B --store $S mount --key seq-$i --restore-key seq- $D >/dev/null || exit 3
          fi
          $B --store $S status --json $D | sed -n 's/^ *"pid": \\([0-9]*\\).*/\\1/p' >> {pids}
          mkdir $D/n$i; for j in $(seq 100); do echo "$i $j" > $D/n$i/f$j; done
          $B --store $S umount $D >/dev/null || exit 4
          $B --store $S ls --json >/dev/null 2>err || echo "round $i: ls: $(cat err)" >> {log}
        done
    """
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=ci.env,
                         cwd=workdir, timeout=240)
    for pid in map(int, pids.read_text().split()) if pids.exists() else []:
        m = BgMount(path, res, {"pid": pid})
        ci.mounts.append(m)
        ci.wait_gone(m)
    assert res.returncode == 0, f"the script failed ({res.returncode}): {res.stderr}"
    assert sorted(ci.snapshots()) == sorted(f"seq-{i}" for i in range(rounds))
    failures = log.read_text() if log.exists() else ""
    assert not failures, f"commands failed right after umount:\n{failures}"


# ------------------------------------------------------------------------------------------------
# Concurrency


def test_concurrent_mounts_of_one_key(ci, workdir, store, mount_factory):
    src = workdir / "src"
    make_tree(src, "conc")
    base = fingerprint(src)
    ci.save_tree("cc-base", src)
    env = clean_env()
    a = mount_factory(volume=None, args=["--key", "cc-new", "--restore-key", "cc-"],
                      name="mnt_a", env=env)
    b = mount_factory(volume=None, args=["--key", "cc-new", "--restore-key", "cc-"],
                      name="mnt_b", env=env)
    for m in (a, b):
        assert "cache hit on a restore key: restored 'cc-base'" in m.stdout(), m.stdout()
        assert_fp(fingerprint(m.path), base, f"{m.path.name} restored")
    mutate_tree(a.path, "a")
    write_file(a.path / "only-a", det_bytes("only-a", 100_000))
    fd = os.open(b.path / "pkgs" / "f5", os.O_WRONLY)
    os.pwrite(fd, b"b rewrote this file", 0)
    os.close(fd)
    write_file(b.path / "only-b", det_bytes("only-b", 100_000))
    assert not (a.path / "only-b").exists() and not (b.path / "only-a").exists(), "mounts share"
    assert not read_file(a.path / "pkgs" / "f5").startswith(b"b rewrote this file")
    tree_a, tree_b = fingerprint(a.path), fingerprint(b.path)

    results = run_concurrently([[stashfs_bin(), "--store", str(store), "umount", str(m.path)]
                                for m in (a, b)], env)
    for m in (a, b):
        m.proc.wait(timeout=60)
        assert m.proc.returncode == 0, m.stderr()
        m.check_clean()
    for rc, out, err in results:
        assert rc == 0 and err == "", (rc, out, err)
    saved = [i for i, (_rc, out, _e) in enumerate(results) if "saved key 'cc-new' (" in out]
    other = [i for i, (_rc, out, _e) in enumerate(results)
             if "key 'cc-new' was saved by another job meanwhile; left unchanged" in out]
    assert len(saved) == 1 and len(other) == 1, results
    winner = (tree_a, tree_b)[saved[0]]
    ci.check_key("cc-new", winner, what=f"cc-new saved by mount {'ab'[saved[0]]}")
    ci.check_key("cc-base", base)

    # Two exact hits at once: each gets its own copy, neither moves the key.
    a = ci.mount("mnt_a", "cc-new")
    b = ci.mount("mnt_b", "cc-new")
    write_file(a.path / "x", b"a")
    write_file(b.path / "x", b"b")
    assert read_file(a.path / "x") == b"a" and read_file(b.path / "x") == b"b"
    for m in (a, b):
        assert "was restored exactly; left unchanged" in ci.umount(m).stdout
    ci.check_key("cc-new", winner)
    assert sorted(ci.snapshots()) == ["cc-base", "cc-new"]


def race_files(side: str, rnd: int) -> dict:
    return {f"r{rnd}/f{i:02d}": det_bytes(f"race-{side}-{rnd}-{i}", 4000 + 97 * i)
            for i in range(24)}


def test_concurrent_saves_of_one_new_key(ci, workdir, store, mount_factory):
    env = clean_env()
    a = mount_factory(volume="race-a", name="mnt_a", env=env)
    b = mount_factory(volume="race-b", name="mnt_b", env=env)
    rounds = 5
    winners = []
    for rnd in range(rounds):
        trees = []
        for side, m in (("a", a), ("b", b)):
            if rnd:
                shutil.rmtree(m.path / f"r{rnd - 1}")
            (m.path / f"r{rnd}").mkdir()
            for rel, data in race_files(side, rnd).items():
                write_file(m.path / rel, data)
            trees.append(fingerprint(m.path))
        key = f"race-{rnd}"
        order = (a, b) if rnd % 2 == 0 else (b, a)  # who starts first alternates
        results = run_concurrently(
            [[stashfs_bin(), "--store", str(store), "save", str(m.path), "--key", key]
             for m in order], env)
        if rnd % 2:
            results.reverse()
        for rc, out, err in results:
            assert rc == 0 and err == "", (key, rc, out, err)
        saved = [i for i, (_rc, out, _e) in enumerate(results) if f"saved key '{key}' (" in out]
        lost = [i for i, (_rc, out, _e) in enumerate(results)
                if f"key '{key}' already exists; left unchanged" in out]
        assert len(saved) == 1 and len(lost) == 1, (key, results)
        winners.append(saved[0])
        ci.check_key(key, trees[saved[0]], name="mnt_check",
                     what=f"{key}, saved by mount {'ab'[saved[0]]}")
    print(f"winners by round: {''.join('ab'[w] for w in winners)}")
    st = ci.stats()
    assert st["snapshots"] == rounds, st
    a.umount()
    b.umount()
    snaps = ci.snapshots()
    assert sorted(snaps) == [f"race-{r}" for r in range(rounds)], snaps
    assert not any(s["damaged"] for s in snaps.values()), snaps
    for name in ("race-a", "race-b"):
        ci.cmd("rm", name, "--volume")
    ci.stats()  # still consistent enough to report

    # Each round's losing files are referenced by nothing; the winner's by exactly its snapshot.
    con = catalog(store)
    try:
        def refs(data: bytes):
            row = con.execute("SELECT refs FROM objects WHERE kind=1 AND hash=?",
                              (hashlib.sha256(data).digest(),)).fetchone()
            return row[0] if row else None
        for rnd, w in enumerate(winners):
            for side in "ab":
                for rel, data in race_files(side, rnd).items():
                    got = refs(data)
                    want = 1 if side == "ab"[w] else 0
                    assert got == want or (want == 0 and got is None), (
                        f"round {rnd}: chunk of {side}:{rel} has refs={got}, expected {want} "
                        f"(winner {'ab'[w]})")
        bad = con.execute("SELECT count(*) FROM objects WHERE refs < 0").fetchone()[0]
        assert bad == 0, f"{bad} objects with negative reference counts"
    finally:
        con.close()


def test_volume_mounted_twice_is_refused(ci, workdir, store, mount_factory):
    env = clean_env()
    first = mount_factory(volume="shared", name="mnt1", env=env)
    write_file(first.path / "data", b"first mount")
    for extra in ([], ["--foreground"]):
        second = workdir / "mnt2"
        second.mkdir(exist_ok=True)
        res = ci.cmd("mount", "--volume", "shared", *extra, "--output", "json", str(second),
                     check=False, timeout=60)
        if res.returncode == 0 and is_mounted(second):  # the bug case: do not leak the mount
            ci.cmd("umount", str(second), check=False)
        assert res.returncode == 1, f"second mount of a volume exited {res.returncode}: {res}"
        line = one_line(res, "second mount of a mounted volume")
        assert str(first.path) in line and "shared" in line, line
        assert not is_mounted(second)
    # The first mount is unaffected.
    assert first.alive() and is_mounted(first.path)
    assert read_file(first.path / "data") == b"first mount"
    write_file(first.path / "more", b"still writable")
    assert ci.status(first.path)["volume"] == "shared"
    vols = {v["name"]: v for v in ci.ls()["volumes"]}
    assert vols["shared"]["mounted_at"] == str(first.path), vols
    first.umount()
    again = mount_factory(volume="shared", name="mnt2", env=env)
    assert sorted(os.listdir(again.path)) == ["data", "more"]


def test_read_only_key_mount_and_no_save(ci, workdir, store):
    src = workdir / "src"
    make_tree(src, "ro")
    base = fingerprint(src)
    ci.save_tree("ro-1", src)
    before = ci.snapshots()

    m = ci.mount("mnt", "ro-1", extra=["--read-only"], output="text")
    assert "will be saved" not in m.line, m.line
    r = m.path
    assert_fp(fingerprint(r), base, "read-only exact hit")
    assert ci.status(m)["read_only"] is True
    expect_errno(errno.EROFS, os.open, r / "new", os.O_WRONLY | os.O_CREAT, 0o644)
    expect_errno(errno.EROFS, os.open, r / "pkgs" / "f5", os.O_WRONLY)
    expect_errno(errno.EROFS, os.open, r / "pkgs" / "f5", os.O_RDWR | os.O_TRUNC)
    expect_errno(errno.EROFS, os.unlink, r / "pkgs" / "f5")
    expect_errno(errno.EROFS, os.mkdir, r / "d")
    expect_errno(errno.EROFS, os.rmdir, r / "empty-dir")
    expect_errno(errno.EROFS, os.rename, r / "pkgs" / "f5", r / "moved")
    expect_errno(errno.EROFS, os.symlink, "x", r / "sym")
    expect_errno(errno.EROFS, os.link, r / "pkgs" / "f5", r / "hl")
    expect_errno(errno.EROFS, os.chmod, r / "pkgs" / "f5", 0o777)
    expect_errno(errno.EROFS, os.truncate, r / "pkgs" / "f5", 0)
    expect_errno(errno.EROFS, os.setxattr, r / "pkgs" / "f5", "user.x", b"y")
    expect_errno(errno.EROFS, os.utime, r / "pkgs" / "f5", (1, 1))
    res = ci.cmd("save", str(r), "--key", "ro-copy", check=False)
    assert res.returncode == 1, res
    one_line(res, "save of a read-only mount")
    res = ci.umount(m)
    assert "read-only mount: key 'ro-1' not saved" in res.stdout, res.stdout

    # Read-only mount of a key that does not exist: empty, unwritable, not saved.
    m = ci.mount("mnt", "ro-missing", extra=["--read-only"])
    assert m.info["result"] == "miss" and os.listdir(m.path) == []
    expect_errno(errno.EROFS, os.open, m.path / "new", os.O_WRONLY | os.O_CREAT, 0o644)
    assert "not saved" in ci.umount(m).stdout
    # --no-save: writable, but nothing is saved.
    m = ci.mount("mnt", "ns-1", restore=["ro-"], extra=["--no-save"], output="text")
    assert "will be saved" not in m.line, m.line
    mutate_tree(m.path, "ns")
    res = ci.umount(m)
    assert "--no-save: key 'ns-1' not saved" in res.stdout, res.stdout
    after = ci.snapshots()
    assert sorted(after) == ["ro-1"], after
    for k in ("created", "logical_bytes", "files"):
        assert after["ro-1"][k] == before["ro-1"][k]
    ci.check_key("ro-1", base)


# ------------------------------------------------------------------------------------------------
# Keys, rm, status, ls


BAD_KEYS = {
    "empty": "",
    "dot": ".hidden",
    "dash": "-rf",
    "slash": "/abs",
    "space": "pip key",
    "star": "pip-*",
    "dollar": "pip-$HOME",
    "backslash": "a\\b",
    "newline": "pip\nkey",
    "tab": "pip\tkey",
    "non-ascii": "pip-ключ",
    "too-long": "k" * 513,
}


@pytest.mark.parametrize("case", sorted(BAD_KEYS))
def test_invalid_key_is_rejected(case, ci, workdir, store):
    # BUG (case "empty", found by this test): `stashfs mount --key "" DIR` mounts the volume
    # 'default' and exits 0 instead of rejecting the key: a CI job with an unset variable in its
    # key silently gets a shared long-lived volume. (Minor, same function tools/util.cc
    # ValidateName: case "newline" quotes the key and the character verbatim, so the one error
    # line becomes three; "non-ascii" prints a lone, invalid byte of the UTF-8 character.)
    key = BAD_KEYS[case]
    d = workdir / "mnt"
    d.mkdir()
    cmd = [stashfs_bin(), "--store", str(store), "mount", "--key", key, "--output", "json", str(d)]
    res = subprocess.run(cmd, capture_output=True, env=ci.env, timeout=60)
    if res.returncode == 0 and is_mounted(d):  # do not leak the mount
        info = json.loads(res.stdout)
        ci.mounts.append(BgMount(d, res, info))
    assert res.returncode == 1, f"mount --key {key!r} exited {res.returncode}: {res.stdout!r}"
    line = one_line(res, f"mount --key {key!r}")
    assert "key" in line, line
    assert not is_mounted(d), f"mount --key {key!r} mounted {d}"
    assert not (store / "catalog.db").exists() or ci.ls() == {"mounts": [], "snapshots": [],
                                                             "volumes": []}


def test_invalid_restore_and_save_keys_are_rejected(ci, workdir, store, mount_factory):
    vol = mount_factory(volume="v", name="mnt_vol", env=clean_env())
    write_file(vol.path / "f", b"x")
    for key in ("", ".x", "-x", "a b", "a\nb", "a*b", "k" * 513):
        res = ci.mount("mnt", "good-key", restore=["ok-", key], check=False)
        assert isinstance(res, subprocess.CompletedProcess), f"--restore-key {key!r} was accepted"
        assert res.returncode == 1, res
        if "\n" not in key:  # (see the bug note in test_invalid_key_is_rejected)
            assert "restore key" in one_line(res, f"--restore-key {key!r}")
        assert not is_mounted(workdir / "mnt")
        res = ci.cmd("save", str(vol.path), "--key", key, check=False)
        assert res.returncode == 1, res
        if "\n" not in key:
            assert "key" in one_line(res, f"save --key {key!r}")
    assert ci.snapshots() == {}
    # The edges of what is allowed.
    for key in ("k" * 512, "A-Za-z0-9._+=:@/-", "refs/heads/main:linux@x86_64"):
        res = ci.cmd("save", str(vol.path), "--key", key)
        assert f"saved key '{key}'" in res.stdout, res.stdout
        m = ci.mount("mnt", key, extra=["--no-save"])
        assert m.info["result"] == "exact" and read_file(m.path / "f") == b"x", m.info
        ci.umount(m)
    vol.umount()


def test_rm_key_then_mount_is_a_miss(ci, workdir, store):
    src = workdir / "src"
    make_tree(src, "rm")
    ci.save_tree("rm-old", src)
    time.sleep(CLOCK_TICK)
    ci.save_tree("rm-new", src)
    res = ci.cmd("rm", "rm-new")
    assert res.stdout.startswith("stashfs: removed snapshot 'rm-new'"), res.stdout
    assert sorted(ci.snapshots()) == ["rm-old"]
    m = ci.mount("mnt", "rm-new", output="text")
    assert m.line.startswith("stashfs: cache miss: no snapshot for 'rm-new'") and \
        "\n" not in m.line, m.line
    assert os.listdir(m.path) == []
    assert ci.status(m)["result"] == "miss"
    write_file(m.path / "fresh", b"fresh")
    assert "saved key 'rm-new'" in ci.umount(m).stdout
    m = ci.mount("mnt", "rm-new", extra=["--read-only"])
    assert os.listdir(m.path) == ["fresh"], "an old tree came back under a removed key"
    ci.umount(m)
    # A removed key no longer matches a restore key; the older one does.
    ci.cmd("rm", "rm-new", "--snapshot")
    m = ci.mount("mnt", "rm-next", restore=["rm-"], extra=["--no-save"])
    assert m.info["matched_key"] == "rm-old", m.info
    ci.umount(m)
    for args in (["rm-new"], ["rm-old", "--volume"], ["nope", "--snapshot"]):
        res = ci.cmd("rm", *args, check=False)
        assert res.returncode == 1, res
        assert args[0] in one_line(res, f"rm {args}")
    assert sorted(ci.snapshots()) == ["rm-old"]


def test_status_reports_key_and_counts(ci, workdir, store):
    src = workdir / "src"
    make_tree(src, "status")
    ci.save_tree("st-base", src)
    m = ci.mount("mnt", "st-job", restore=["nothing-", "st-"])
    st0 = ci.status(m)
    assert (st0["key"], st0["result"], st0["matched_key"]) == ("st-job", "partial", "st-base"), st0
    assert st0["volume"] is None and st0["read_only"] is False and st0["pid"] == m.pid, st0
    text = ci.cmd("status", str(m.path)).stdout
    assert "key:               st-job" in text and "from restore key 'st-base'" in text, text

    # Reads of restored files come from the store.
    size = 0
    for rel in ("pkgs/f5", "pkgs/f6"):
        size += len(read_file(m.path / rel))
    st1 = ci.status(m)
    assert st1["files_read_from_store"] - st0["files_read_from_store"] >= 2, (st0, st1)
    assert st1["bytes_read_from_store"] - st0["bytes_read_from_store"] >= size, (st0, st1)

    # Writes are counted once per byte (page rounding allowed).
    sizes = [10_000, 20_001, 300_003]
    for i, n in enumerate(sizes):
        write_file(m.path / f"w{i}", det_bytes(f"w{i}", n))
    os.sync()
    st2 = ci.status(m)
    written = st2["bytes_written"] - st1["bytes_written"]
    assert sum(sizes) <= written <= sum(sizes) + 4096 * len(sizes), (written, st1, st2)
    assert st2["files_created"] - st1["files_created"] == len(sizes), (st1, st2)
    assert st2["bytes_stored_new"] >= st1["bytes_stored_new"]

    # Negative lookups: names asked for that were not there.
    for i in range(25):
        assert not os.path.exists(m.path / f"missing-{i}")
        assert not os.path.exists(m.path / "pkgs" / f"missing-{i}.whl")
    st3 = ci.status(m)
    neg = st3["negative_lookups"] - st2["negative_lookups"]
    assert neg >= 50, (neg, st2, st3)
    assert st3["lookups"] - st2["lookups"] >= 50, (st2, st3)
    # Lookups of names that exist are not negative.
    for i in range(12):
        assert (m.path / "pkgs" / "sub" / f"s{i:02d}.txt").exists()
    st4 = ci.status(m)
    assert st4["negative_lookups"] == st3["negative_lookups"], (st3, st4)
    assert st4["lookups"] > st3["lookups"], (st3, st4)
    ci.umount(m)
    res = ci.cmd("status", str(m.path), check=False)
    assert res.returncode == 1 and str(m.path) in one_line(res, "status of a non-mount"), res


def test_ls_sizes_and_cost_of_adding_one_file(ci, workdir, store):
    # A "large" cache: 48 dirs x 30 files of incompressible data, about 16 MiB.
    m = ci.mount("mnt", "big-1")
    expected_bytes = files = 0
    for d in range(48):
        (m.path / f"pkg{d:02d}").mkdir()
        for f in range(30):
            n = 8000 + 311 * ((d * 30 + f) % 37)
            write_file(m.path / f"pkg{d:02d}" / f"file{f:02d}.bin", det_bytes(f"big-{d}-{f}", n))
            expected_bytes += n
            files += 1
    res = ci.umount(m)
    assert f"saved key 'big-1' ({files} files" in res.stdout, res.stdout
    s1 = ci.snapshots()["big-1"]
    assert s1["logical_bytes"] == expected_bytes and s1["files"] == files, (s1, expected_bytes)
    st1 = ci.stats()
    assert st1["logical_bytes"] == expected_bytes, st1
    assert 0.9 * expected_bytes <= s1["exclusive_stored_bytes"] <= st1["stored_bytes"], (s1, st1)

    # Restore it, add one file, save under a new key: only that file's data is new.
    new = det_bytes("the-one-new-file", 1 * MiB + 123)
    compressed = zstd_size(new)
    m = ci.mount("mnt", "big-2", restore=["big-"])
    assert m.info["matched_key"] == "big-1", m.info
    write_file(m.path / "pkg07" / "new.bin", new)
    res = ci.umount(m)
    assert "saved key 'big-2'" in res.stdout, res.stdout
    st2 = ci.stats()
    grown = st2["stored_bytes"] - st1["stored_bytes"]
    print(f"adding a {len(new)} byte file ({compressed} compressed) to a {expected_bytes} byte "
          f"snapshot stored {grown} new bytes")
    assert 0.9 * compressed <= grown < 2 * compressed + 64 * KiB, (grown, compressed, st1, st2)
    snaps = ci.snapshots()
    s2 = snaps["big-2"]
    assert s2["logical_bytes"] == expected_bytes + len(new) and s2["files"] == files + 1, s2
    assert snaps["big-1"]["logical_bytes"] == expected_bytes
    assert 0.9 * compressed <= s2["exclusive_stored_bytes"] < 2 * compressed + 64 * KiB, s2
    assert st2["logical_bytes"] == 2 * expected_bytes + len(new), st2

    # Restoring and saving an unchanged tree costs almost nothing.
    m = ci.mount("mnt", "big-3", restore=["big-2"])
    res = ci.umount(m)
    assert "saved key 'big-3'" in res.stdout, res.stdout
    grown = ci.stats()["stored_bytes"] - st2["stored_bytes"]
    assert grown < 16 * KiB, f"saving an unchanged restored tree stored {grown} bytes"


# ------------------------------------------------------------------------------------------------
# Export / import


def dist_packages_subset(dest: Path, budget: int = 20 * MiB):
    """cp -a of /usr/lib/python3/dist-packages entries (in name order) up to `budget` bytes, plus
    symlinks, hard links and xattrs of our own."""
    base = Path("/usr/lib/python3/dist-packages")
    if not base.is_dir():
        pytest.skip("no /usr/lib/python3/dist-packages to copy")
    dest.mkdir(parents=True)
    picked, total = [], 0
    for entry in sorted(base.iterdir()):
        size = regular_bytes(entry) if entry.is_dir() and not entry.is_symlink() else \
            entry.lstat().st_size
        if total + size > budget:
            continue
        picked.append(str(entry))
        total += size
    run(["cp", "-a", "-t", str(dest), *picked])
    extra = dest / "zz-extra"
    extra.mkdir()
    write_file(extra / "target", det_bytes("target", 5000))
    os.symlink("target", extra / "rel-link")
    os.symlink("/usr/lib/python3/dist-packages", extra / "abs-link")
    os.symlink("../nowhere", extra / "dangling")
    os.link(extra / "target", extra / "hard1")
    os.link(extra / "target", dest / "hard2")
    os.setxattr(extra / "target", "user.mime_type", b"application/octet-stream")
    os.setxattr(extra, "user.dir", bytes(range(256)))
    return total


def test_export_import_round_trip_real_tree(ci, workdir, store):
    src = workdir / "src"
    size = dist_packages_subset(src)
    expected = fingerprint(src, with_hash=False)
    nfiles = sum(1 for v in expected["meta"].values() if stat.S_ISREG(v["kind"]))
    assert nfiles > 500 and size > 10 * MiB, (nfiles, size)
    assert any(stat.S_ISLNK(v["kind"]) for v in expected["meta"].values())
    ci.save_tree("py-real", src)
    snap = ci.snapshots()["py-real"]

    out = workdir / "py-real.stashfs"
    res = ci.cmd("export", "py-real", "-o", str(out))
    assert res.stdout.startswith(f"stashfs: exported 'py-real' to {out}"), res.stdout
    assert out.stat().st_size < 0.8 * snap["logical_bytes"], (out.stat().st_size, snap)
    assert not Path(str(out) + ".tmp").exists()
    # One zstd frame with zstd's checksum, holding the documented header.
    listing = run(["zstd", "-lv", str(out)]).stdout
    assert "Zstandard Frames: 1" in listing and "XXH64" in listing, listing
    plain = run_bytes(["zstd", "-dc", str(out)])
    meta, records, count, digest = parse_plain(plain)
    assert meta["key"] == "py-real" and meta["files"] == snap["files"], meta
    assert meta["logical_bytes"] == snap["logical_bytes"], meta
    assert count == len(records) and digest == hashlib.sha256(plain[:-41]).digest()
    for kind, h, data in records:
        assert hashlib.sha256(data).digest() == h
    assert bytes.fromhex(meta["root"]) in {h for k, h, _d in records if k == 4}
    assert meta["root"] == snapshot_root(store, "py-real"), meta

    # Into a fresh store, then mounted: the same tree.
    ci2 = Ci(workdir / "store2", workdir)
    try:
        res = ci2.cmd("import", str(out))
        assert res.stdout.startswith("stashfs: imported 'py-real' ("), res.stdout
        snap2 = ci2.snapshots()["py-real"]
        assert (snap2["files"], snap2["logical_bytes"]) == (snap["files"], snap["logical_bytes"])
        # Content-addressed and canonical: the same tree has the same root in both stores.
        assert snapshot_root(ci2.store, "py-real") == meta["root"]
        m = ci2.mount("mnt_imported", "py-real")
        assert m.info["result"] == "exact", m.info
        diff_r(src, m.path)
        assert_fp(fingerprint(m.path, with_hash=False), expected, "imported snapshot")
        ci2.umount(m)
        # Importing it again: exit 0, the key is left as it is.
        st = ci2.stats()
        res = ci2.cmd("import", str(out))
        assert res.stdout == "stashfs: key 'py-real' already exists; left unchanged\n", res.stdout
        assert ci2.snapshots()["py-real"]["created"] == snap2["created"]
        assert snapshot_root(ci2.store, "py-real") == meta["root"]
        # Under another key: shares everything with the first import.
        res = ci2.cmd("import", str(out), "--key", "py-copy")
        assert res.stdout.startswith("stashfs: imported 'py-copy' ("), res.stdout
        grown = ci2.stats()["stored_bytes"] - st["stored_bytes"]
        assert grown < 64 * KiB, f"a second import of the same snapshot stored {grown} bytes"
        m = ci2.mount("mnt_imported", "py-copy", extra=["--read-only"])
        diff_r(src, m.path)
        ci2.umount(m)
    finally:
        ci2.cleanup()


def run_bytes(cmd, input=None) -> bytes:
    return subprocess.run(cmd, input=input, capture_output=True, check=True).stdout


def zstd_compress(plain: bytes) -> bytes:
    return run_bytes(["zstd", "-3", "-q", "-c", "--check"], input=plain)


# Export files by hand (store/archive.h, store/archive.cc, store/FORMAT.md).

def parse_plain(plain: bytes):
    """-> (meta dict, [(kind, hash, bytes)], object count, digest) of a decompressed export."""
    assert plain[:8] == b"STASHFSX", plain[:16]
    version, mlen = struct.unpack_from("<II", plain, 8)
    assert version == 1
    meta = json.loads(plain[16:16 + mlen])
    pos = 16 + mlen
    records = []
    while plain[pos] == 1:
        kind, h = plain[pos + 1], plain[pos + 2:pos + 34]
        (size,) = struct.unpack_from("<I", plain, pos + 34)
        records.append((kind, h, plain[pos + 38:pos + 38 + size]))
        pos += 38 + size
    assert plain[pos] == 2 and pos + 41 == len(plain), (pos, len(plain))
    (count,) = struct.unpack_from("<Q", plain, pos + 1)
    return meta, records, count, plain[pos + 9:pos + 41]


def build_plain(meta, records, count=None, digest=None, version=1) -> bytes:
    meta_bytes = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    body = b"STASHFSX" + struct.pack("<II", version, len(meta_bytes)) + meta_bytes
    for kind, h, data in records:
        body += bytes([1, kind]) + h + struct.pack("<I", len(data)) + data
    count = len(records) if count is None else count
    digest = hashlib.sha256(body).digest() if digest is None else digest
    return body + bytes([2]) + struct.pack("<Q", count) + digest


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def zigzag(n: int) -> bytes:
    return varint((n << 1) ^ (n >> 63))


def bstr(b: bytes) -> bytes:
    return varint(len(b)) + b


def enc_attrs(mode: int, mtime=(1_700_000_000, 5), xattrs=()) -> bytes:
    out = varint(mode) + varint(0) + varint(0) + zigzag(mtime[0]) + varint(mtime[1])
    out += zigzag(mtime[0]) + varint(mtime[1]) + varint(len(xattrs))
    for name, value in sorted(xattrs):
        out += bstr(name) + bstr(value)
    return out


def enc_file(name: bytes, data: bytes = None, chunks=None) -> bytes:
    """A tree entry for a regular file: inline data (<= 64 bytes) or a direct chunk list."""
    out = bstr(name) + bytes([1]) + varint(0) + enc_attrs(0o644)
    if chunks is None:
        return out + varint(len(data)) + bytes([0]) + bstr(data)
    size = sum(n for _h, n in chunks)
    return out + varint(size) + bytes([1]) + varint(len(chunks)) + b"".join(
        h + varint(n) for h, n in chunks)


def enc_dir(name: bytes, tree_hash: bytes, nbytes: int, files: int, subdirs: int) -> bytes:
    return (bstr(name) + bytes([2]) + varint(0) + enc_attrs(0o755) + tree_hash + varint(nbytes)
            + varint(files) + varint(subdirs))


def enc_tree(entries) -> bytes:
    """entries: [(name, encoded entry)], sorted bytewise here."""
    entries = sorted(entries)
    return b"STT1" + varint(len(entries)) + b"".join(e for _n, e in entries)


def enc_root(tree_hash: bytes, nbytes: int, files: int, subdirs: int) -> bytes:
    return (b"STR1" + enc_attrs(0o755) + tree_hash + varint(nbytes) + varint(files)
            + varint(subdirs) + varint(0))


def sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def crafted_archive(name: bytes, key: str = "crafted", nested: bool = False,
                    missing_chunk: bool = False) -> bytes:
    """A complete, self-consistent export (compressed) of a tree with one file called `name`
    (in the top directory, or in sub/ with `nested`) next to ok.txt. With missing_chunk, the file
    is 100 bytes in one chunk that the archive does not carry."""
    content = b"crafted content\n"
    objects = []
    if missing_chunk:
        data = det_bytes("never stored anywhere", 100)
        entry = enc_file(name, chunks=[(sha(data), len(data))])
        size = len(data)
    else:
        entry = enc_file(name, content)
        size = len(content)
    ok = b"ok.txt"
    if nested:
        sub = enc_tree([(name, entry)])
        objects.append((3, sub))
        top = enc_tree([(ok, enc_file(ok, content)),
                        (b"sub", enc_dir(b"sub", sha(sub), size, 1, 0))])
        subdirs = 1
    else:
        top = enc_tree([(ok, enc_file(ok, content)), (name, entry)])
        subdirs = 0
    objects.append((3, top))
    root = enc_root(sha(top), size + len(content), 2, subdirs)
    objects.insert(0, (4, root))
    meta = {"key": key, "root": sha(root).hex(), "logical_bytes": size + len(content), "files": 2,
            "format": 1, "created": 1_700_000_000, "stashfs": "0.1.0"}
    return zstd_compress(build_plain(meta, [(k, sha(d), d) for k, d in objects]))


def test_crafted_archive_is_valid(ci, workdir, store):
    """The hand-made export the refusal tests start from imports and reads back: when they are
    refused, it is for the one thing wrong with them."""
    for nested in (False, True):
        f = workdir / f"crafted-{nested}.stashfs"
        f.write_bytes(crafted_archive(b"x", key=f"crafted-{nested}", nested=nested))
        res = ci.cmd("import", str(f))
        assert res.stdout.startswith(f"stashfs: imported 'crafted-{nested}' (2 files"), res.stdout
        m = ci.mount("mnt", f"crafted-{nested}", extra=["--read-only"])
        x = m.path / ("sub/x" if nested else "x")
        assert read_file(x) == b"crafted content\n" and read_file(m.path / "ok.txt") == \
            b"crafted content\n"
        assert os.stat(x).st_mtime_ns == 1_700_000_000_000_000_005
        ci.umount(m)


@pytest.fixture(scope="module")
def exports():
    """A store with one small snapshot exported to good.stashfs (a multi-chunk file, a subdir),
    and other.stashfs, a second snapshot to seed target stores with."""
    base = Path(os.environ.get("STASHFS_E2E_TMP", tempfile.gettempdir()))
    d = Path(tempfile.mkdtemp(prefix="stashfs-e2e-exports-", dir=base))
    c = Ci(d / "store", d)
    try:
        src = d / "src"
        make_tree(src, "export")
        c.save_tree("exp-1", src, name="mnt")
        other = d / "other-src"
        other.mkdir()
        write_file(other / "other", det_bytes("other", 150_000))
        c.save_tree("other", other, name="mnt")
        c.cmd("export", "exp-1", "-o", str(d / "good.stashfs"))
        c.cmd("export", "other", "-o", str(d / "other.stashfs"))
    finally:
        c.cleanup()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def pack_files(store: Path) -> dict:
    """relpath -> size of every file under STORE/packs (data appended but never catalogued
    would not show in `stats`)."""
    packs = store / "packs"
    return {str(p.relative_to(packs)): p.stat().st_size for p in packs.rglob("*") if p.is_file()}


def flip(data: bytes, pos: int) -> bytes:
    b = bytearray(data)
    b[pos] ^= 0x5A
    return bytes(b)


def bad_exports(good: bytes):
    """name -> function(good compressed bytes) -> list of bad files (bytes)."""
    plain = run_bytes(["zstd", "-dc"], input=good)
    meta, records, count, digest = parse_plain(plain)
    mlen = struct.unpack_from("<I", plain, 12)[0]
    raw_meta = plain[16:16 + mlen]
    chunk_i = next(i for i, r in enumerate(records) if r[0] == 1)
    obj_i = next(i for i, r in enumerate(records) if r[0] == 3)
    edited = bytearray(records[obj_i][2])
    edited[-1] ^= 1
    return {
        "truncated": [good[:n] for n in (0, 7, 20, len(good) // 2, len(good) - 5, len(good) - 1)],
        "flipped-byte": [flip(good, p) for p in (9, 30, len(good) // 2, len(good) - 10,
                                                 len(good) - 2)],
        "trailing-data": [good + b"\0", good + good],
        "not-zstd": [det_bytes("noise", 5000), plain],
        # The zstd frame is intact; what is inside is not.
        "inner-checksum": [zstd_compress(plain[:-32] + flip(plain[-32:], 5))],
        "inner-meta-edited": [zstd_compress(build_plain(
            raw_meta.replace(b'"files":', b'"files":9', 1), records, count, digest))],
        "object-count": [zstd_compress(plain[:-40] + struct.pack("<Q", count + 1) + digest)],
        "object-bytes": [zstd_compress(build_plain(raw_meta, records[:obj_i] + [
            (3, records[obj_i][1], bytes(edited))] + records[obj_i + 1:]))],
        "wrong-magic": [zstd_compress(b"STASHFSY" + plain[8:])],
        "future-version": [zstd_compress(build_plain(raw_meta, records, version=2))],
        "missing-object": [zstd_compress(build_plain(raw_meta, records[:chunk_i]
                                                     + records[chunk_i + 1:]))],
        "missing-root": [zstd_compress(build_plain(raw_meta, [r for r in records if r[0] != 4]))],
        "duplicate-object": [zstd_compress(build_plain(raw_meta, records + [records[chunk_i]]))],
        "crafted-missing-chunk": [crafted_archive(b"x", missing_chunk=True)],
        "name-dotdot-x": [crafted_archive(b"../x")],
        "name-slash": [crafted_archive(b"a/b")],
        "name-dotdot": [crafted_archive(b"..")],
        "name-dot": [crafted_archive(b".")],
        "name-nul": [crafted_archive(b"x\0y")],
        "nested-dotdot-x": [crafted_archive(b"../x", nested=True)],
        "nested-absolute": [crafted_archive(b"/etc/passwd", nested=True)],
    }


BAD_EXPORT_CASES = ["truncated", "flipped-byte", "trailing-data", "not-zstd", "inner-checksum",
                    "inner-meta-edited", "object-count", "object-bytes", "wrong-magic",
                    "future-version", "missing-object", "missing-root", "duplicate-object",
                    "crafted-missing-chunk", "name-dotdot-x", "name-slash", "name-dotdot",
                    "name-dot", "name-nul", "nested-dotdot-x", "nested-absolute"]


@pytest.mark.parametrize("case", BAD_EXPORT_CASES)
def test_import_refuses_bad_file(case, exports, ci, workdir, store):
    good = (exports / "good.stashfs").read_bytes()
    variants = bad_exports(good)[case]
    # The target store already holds a snapshot (not the one in the file, so objects the bad
    # file lacks are not in the store either).
    ci.cmd("import", str(exports / "other.stashfs"))
    before_ls, before_stats, before_packs = ci.ls(), ci.stats(), pack_files(store)
    for i, data in enumerate(variants):
        f = workdir / f"bad-{case}-{i}.stashfs"
        f.write_bytes(data)
        res = ci.cmd("import", str(f), check=False)
        what = f"import of {case} #{i} ({len(data)} bytes)"
        assert res.returncode == 1, f"{what} exited {res.returncode}: {res.stdout}{res.stderr}"
        line = one_line(res, what)
        assert f.name in line, f"{what}: the error does not name the file: {line}"
        assert res.stdout == "", res.stdout
        assert ci.ls() == before_ls, f"{what} changed `stashfs ls`"
        assert ci.stats() == before_stats, f"{what} changed `stashfs stats`"
        assert pack_files(store) == before_packs, f"{what} wrote to the store's packs"
        print(f"{what}: {line}")
    if case in ("missing-object", "crafted-missing-chunk"):
        assert "lacks" in line, line
    if case.startswith(("name-", "nested-")):
        assert "name" in line, line
    # The store still works: the good file imports and mounts.
    res = ci.cmd("import", str(exports / "good.stashfs"))
    assert "imported 'exp-1'" in res.stdout, res.stdout
    m = ci.mount("mnt", "exp-1", extra=["--read-only"])
    assert len(read_file(m.path / "pkgs" / "f6")) == 300_001
    ci.umount(m)


def test_import_refuses_invalid_key_in_file(ci, workdir, store):
    # BUG (found by this test): `stashfs import FILE` does not validate the key recorded in the
    # file (only --key is validated): a file whose key is "../evil key" or "" is imported as a
    # snapshot under that key, which `mount --key` then rejects. Expected: exit 1, one line,
    # store unchanged; with a valid --key the same file imports.
    ci.cmd("import", str(write_tmp(workdir / "seed.stashfs", crafted_archive(b"x", key="seed"))))
    for i, key in enumerate(["../evil key", "", ".hidden", "a\tb", "k" * 513]):
        before_ls, before_stats = ci.ls(), ci.stats()
        f = write_tmp(workdir / f"badkey-{i}.stashfs", crafted_archive(b"y", key=key))
        res = ci.cmd("import", str(f), check=False)
        assert res.returncode == 1, f"import of a file with key {key!r} exited {res.returncode}: " \
                                    f"{res.stdout}"
        one_line(res, f"import of a file with key {key!r}")
        assert ci.ls() == before_ls and ci.stats() == before_stats
        res = ci.cmd("import", str(f), "--key", f"fixed-{i}")
        assert f"imported 'fixed-{i}'" in res.stdout, res.stdout


def write_tmp(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_foreground_mount_reports_json_and_github_output(ci, workdir, store, mount_factory):
    # BUG (found by this test): with --foreground, `--output json` is ignored (the text line is
    # printed) and $GITHUB_OUTPUT is not written; both work only for daemonized mounts
    # (tools/daemon.cc: WriteGithubOutput and the JSON are in the parent's path only).
    gh = workdir / "gh"
    m = mount_factory(volume=None, args=["--key", "fg-1", "--output", "json"], name="mnt",
                      env=clean_env(GITHUB_OUTPUT=str(gh)))
    out = m.stdout().strip()
    info = json.loads(out.splitlines()[0]) if out.startswith("{") else None
    assert info is not None, f"--foreground --output json printed: {out!r}"
    assert info["result"] == "miss" and info["key"] == "fg-1", info
    assert gh.exists() and "cache-result=miss\n" in gh.read_text(), "GITHUB_OUTPUT not written"


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupted_export_leaves_no_file(ci, workdir, sig):
    # Ctrl-C at a terminal, SIGTERM from a CI timeout: neither FILE nor a partial FILE.tmp stays.
    src = workdir / "src"
    src.mkdir()
    for i in range(4):
        (src / f"r{i}").write_bytes(os.urandom(32 * MiB))
    ci.save_tree("big-export", src)
    out = workdir / "big.stashfs"
    tmp = Path(str(out) + ".tmp")
    proc = subprocess.Popen([stashfs_bin(), "--store", str(ci.store), "export", "big-export",
                             "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not tmp.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    assert tmp.exists(), f"export finished before it could be interrupted: {proc.communicate()}"
    os.kill(proc.pid, getattr(signal, sig))
    proc.wait(timeout=30)
    assert proc.returncode == -getattr(signal, sig), (proc.returncode, proc.stderr.read())
    assert not tmp.exists() and not out.exists()
    # The store is untouched: the key still exports whole.
    ci.cmd("export", "big-export", "-o", str(out))
    assert out.stat().st_size > 100 * MiB and not tmp.exists()
