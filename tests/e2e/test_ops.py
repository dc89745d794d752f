"""Store maintenance end to end (issue 4): `gc`, `prune`, `fsck`, `config`, `stats` and automatic
pruning at unmount, on real mounts of the real binary, while other mounts read and write.

    stashfs gc [--dry-run] [--json]
    stashfs prune [--max-size SIZE] [--max-age AGE] [--dry-run] [--json]
    stashfs fsck [--repair] [--sample PERCENT] [--json]   # exit 0 clean, 3 damage left, 4 repaired
    stashfs config [KEY [VALUE]] [--unset]

Disk usage is measured from outside with `du -sb STORE/packs` (plus the catalog files), never
only with the numbers stashfs reports about itself. Damage is made by hand: a flipped byte in a
pack (located through the catalog, store/FORMAT.md "Packs and blocks") and a deleted pack file.

Tests 2 and 4 print the figures the issue's closing note asks for; run with `-s` to see them.
Needs real mounts: skipped with STASHFS_E2E_NATIVE=1.
"""
import errno
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import is_mounted, native_mode, run_stashfs, stashfs_bin
from helpers import KiB, MiB, det_bytes, diff_r, run, sha256_bytes, write_file

pytestmark = pytest.mark.skipif(native_mode(), reason="needs real stashfs mounts")

# created/last_used in the catalog have a resolution of one second.
CLOCK_TICK = 1.1
EXIT_DAMAGE = 3
EXIT_REPAIRED = 4


def fmt(n: int) -> str:
    return f"{n / MiB:.2f} MiB ({n} bytes)"


# ------------------------------------------------------------------------------------------------
# Trees: dict relpath -> bytes, written to a native directory (the source) and copied into mounts


def make_files(seed: str, n_big=0, big=0, n_mid=0, mid=0, n_small=0, small=0, text=0,
               dirs=3) -> dict:
    """Random (incompressible, unique per seed) files: `n_big` of `big` bytes (a block each,
    several chunks), `n_mid` of `mid` bytes, `n_small` of up to `small` bytes (gathered into shared
    blocks), and one compressible text file of `text` bytes."""
    rng = random.Random(f"files-{seed}")
    files = {}
    for i in range(n_big):
        files[f"big/{seed}-b{i}.bin"] = det_bytes(f"{seed}-b{i}", big)
    for i in range(n_mid):
        files[f"d{i % dirs}/{seed}-m{i}.bin"] = det_bytes(f"{seed}-m{i}", mid)
    for i in range(n_small):
        files[f"d{i % dirs}/s/{seed}-s{i}.dat"] = det_bytes(f"{seed}-s{i}",
                                                            rng.randint(small // 2, small))
    if text:
        files[f"{seed}-doc.txt"] = det_bytes(f"{seed}-doc", text, compressible=True)
    return files


def write_tree(root: Path, files: dict):
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        write_file(p, data)


def cp_a(src: Path, dst: Path):
    run(["cp", "-a", f"{src}/.", str(dst)])


def read_problems(root: Path, files: dict, drop_cache=True) -> list:
    """Reads every file of `files` under root; returns one line per wrong or failed read."""
    problems = []
    for rel, want in files.items():
        try:
            fd = os.open(root / rel, os.O_RDONLY)
            try:
                if drop_cache:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                chunks = []
                while True:
                    b = os.read(fd, 1 * MiB)
                    if not b:
                        break
                    chunks.append(b)
                got = b"".join(chunks)
            finally:
                os.close(fd)
        except OSError as e:
            problems.append(f"{rel}: {errno.errorcode.get(e.errno, e.errno)} ({e.strerror})")
            continue
        if got != want:
            problems.append(f"{rel}: {len(got)} bytes that differ from the {len(want)} written")
    return problems


def read_errno(path: Path):
    """None if the whole file reads, else the errno of the failing read."""
    try:
        with open(path, "rb") as f:
            while f.read(1 * MiB):
                pass
    except OSError as e:
        return e.errno
    return None


def du_sb(path: Path) -> int:
    return int(run(["du", "-sb", str(path)]).stdout.split()[0])


def catalog_bytes(store: Path) -> int:
    return sum(os.path.getsize(store / n) for n in ("catalog.db", "catalog.db-wal")
               if (store / n).exists())


def store_bytes(store: Path) -> int:
    """What the store occupies: du of the packs plus the catalog files."""
    return du_sb(store / "packs") + catalog_bytes(store)


def pack_path(store: Path, pack_id: int) -> Path:
    return store / "packs" / f"{pack_id % 256:02x}" / f"{pack_id:016x}.pack"


def pack_files(store: Path) -> set:
    return {p.relative_to(store) for p in (store / "packs").glob("*/*.pack")}


def query(store: Path, sql: str, args=()) -> list:
    """Reads the catalog with sqlite3 (only while no stashfs process is writing)."""
    con = sqlite3.connect(str(store / "catalog.db"))
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def one_line_error(res: subprocess.CompletedProcess, what: str) -> str:
    assert res.returncode != 0, f"{what}: exited 0, expected a failure:\n{res.stdout}{res.stderr}"
    err = res.stderr.strip()
    assert err, f"{what}: exited {res.returncode} with nothing on stderr (stdout: {res.stdout!r})"
    assert "\n" not in err, f"{what}: the error is not one line:\n{err}"
    assert err.startswith("stashfs: "), f"{what}: {err!r}"
    return err


# ------------------------------------------------------------------------------------------------
# One store, its commands and its mounts


class Ops:
    def __init__(self, store: Path, workdir: Path, mount_factory):
        self.store = store
        self.workdir = workdir
        self.mf = mount_factory
        self.n = 0
        xdg = workdir / "xdg"
        xdg.mkdir(exist_ok=True)
        # No STASHFS_* settings of whoever runs the tests, no $GITHUB_OUTPUT (key mounts append to
        # it), and an empty ~/.config/stashfs.
        self.env = {k: v for k, v in os.environ.items()
                    if k != "GITHUB_OUTPUT" and not k.startswith("STASHFS_")}
        self.env["XDG_CONFIG_HOME"] = str(xdg)

    def env_with(self, **kw) -> dict:
        e = dict(self.env)
        e.update(kw)
        return e

    def cli(self, *args, check=True, env=None, store=None, timeout=300):
        return run_stashfs(store or self.store, *map(str, args), check=check,
                           env=env or self.env, timeout=timeout)

    def json(self, *args, codes=(0,), env=None, store=None):
        res = self.cli(*args, "--json", check=False, env=env, store=store)
        assert res.returncode in codes, (f"stashfs {' '.join(map(str, args))} --json exited "
                                         f"{res.returncode}, expected {codes}:\n"
                                         f"{res.stdout[-3000:]}{res.stderr[-3000:]}")
        return json.loads(res.stdout), res

    def mount(self, key=None, volume=None, restore=(), extra=(), env=None, store=None):
        self.n += 1
        if key is not None:
            args = ["--key", key]
            for r in restore:
                args += ["--restore-key", r]
        else:
            args = ["--volume", volume]
        return self.mf(volume=None, args=args + list(extra), name=f"mnt{self.n:03d}",
                       env=env or self.env, store_dir=store)

    def save_key(self, key: str, src: Path, store=None, env=None):
        """A new key holding a copy of the native tree `src` (mount: a miss; cp -a; umount)."""
        m = self.mount(key=key, store=store, env=env)
        cp_a(src, m.path)
        res = m.umount()
        assert f"saved key '{key}'" in res.stdout, res.stdout
        return res

    def snapshots(self, store=None) -> dict:
        return {s["key"]: s for s in self.json("ls", store=store)[0]["snapshots"]}

    def volumes(self, store=None) -> dict:
        return {v["name"]: v for v in self.json("ls", store=store)[0]["volumes"]}

    def check_key(self, key: str, files: dict, store=None, what=""):
        m = self.mount(key=key, store=store, extra=["--no-save"])
        try:
            problems = read_problems(m.path, files)
            assert not problems, (f"{what}snapshot '{key}': {len(problems)} bad files:\n  " +
                                  "\n  ".join(problems[:15]) + f"\ndaemon:\n{m.stderr()[-2000:]}")
            names = sorted(str(p.relative_to(m.path)) for p in m.path.rglob("*") if p.is_file())
            assert names == sorted(files), f"{what}snapshot '{key}' holds {names}"
        finally:
            m.umount()


@pytest.fixture
def ops(store, workdir, mount_factory):
    return Ops(store, workdir, mount_factory)


def new_tree(ops: Ops, name: str, **spec) -> tuple:
    files = make_files(name, **spec)
    src = ops.workdir / f"src-{name}"
    write_tree(src, files)
    return src, files


# ------------------------------------------------------------------------------------------------
# 0. gc and an open file whose name is gone


def test_gc_keeps_data_of_open_unlinked_file(ops):
    """A file that is open but unlinked keeps reading its stored data while gc runs: once a
    commit drops its name nothing references the chunks, so the mount must pin them."""
    m = ops.mount(volume="orph")
    # Under 1 MiB: no clean scratch copy is kept, so reads after the flush go to the store.
    data = det_bytes("orphan", 900 * KiB + 123)
    p = m.path / "doomed"
    write_file(p, data)
    os.sync()
    ops.cli("save", m.path, "--key", "before")  # stored and committed for sure
    ops.cli("rm", "before")  # the snapshot no longer holds the chunks either
    fd = os.open(p, os.O_RDONLY)
    try:
        os.unlink(p)
        dfd = os.open(m.path, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dfd)  # commits the volume without the name
        os.close(dfd)
        rep, _ = ops.json("gc")
        assert rep["objects_deleted"] >= 0
        # Drop the kernel's cached pages so the read really goes to the store.
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        got = b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
        assert got == data, f"read {len(got)} bytes of the unlinked file after gc"
    finally:
        os.close(fd)
    m.umount()


# ------------------------------------------------------------------------------------------------
# 1. gc while one mount writes and another reads


def test_gc_while_mounts_write_and_read(ops, workdir, store):
    """gc runs again and again while a volume mount writes (including bytes that gc is deleting at
    that moment, so dedup races deletion) and a key mount reads a snapshot whose pack gc compacts
    under it. Nothing may fail or read wrong bytes, then or after a remount."""
    # More than the reader's 4 MiB block cache holds, so its reads keep going to the packs.
    old_src, old = new_tree(ops, "old", n_big=4, big=1536 * KiB, n_mid=8, mid=150 * KiB,
                            n_small=100, small=8 * KiB, text=200 * KiB)
    junk_src, junk = new_tree(ops, "junk", n_big=6, big=2 * MiB, n_small=40, small=8 * KiB)
    # One mount, one pack: 'full' = old + junk, 'old' = old alone. Once 'full' is removed the
    # pack is mostly dead and gc rewrites it while the reader uses it.
    m = ops.mount(key="old")
    cp_a(old_src, m.path)
    (m.path / "junk").mkdir()
    cp_a(junk_src, m.path / "junk")
    ops.cli("save", m.path, "--key", "full")
    shutil.rmtree(m.path / "junk")
    m.umount()
    others = {}
    for i in range(3):
        src, files = new_tree(ops, f"other{i}", n_big=1, big=1 * MiB, n_small=30, small=8 * KiB)
        ops.save_key(f"other-{i}", src)
        others[i] = files
    # Bytes the writer will store again while gc deletes them (not junk's big files: those must
    # stay dead so that gc compacts the reader's pack).
    pool = [d for d in list(junk.values()) + list(others[1].values()) if 4 * KiB < len(d) < MiB]

    reader = ops.mount(key="old", extra=["--no-save"],
                       env=ops.env_with(STASHFS_BLOCK_CACHE_SIZE="4M"))
    writer = ops.mount(volume="busy", env=ops.env_with(STASHFS_COMMIT_INTERVAL="1s"))
    mirror = workdir / "mirror"
    mirror.mkdir()
    for key in ("full", "other-0", "other-1", "other-2"):
        ops.cli("rm", key)

    stop = threading.Event()
    rewritten = set()  # files written again over their old content with open(O_TRUNC)
    gcs_done = [0]
    errors = []
    reads = [0]

    def read_loop(order):
        files = dict(sorted(old.items(), reverse=order))
        while not stop.is_set():
            problems = read_problems(reader.path, files)
            errors.extend(f"reader: {p}" for p in problems)
            reads[0] += 1
            if problems:
                return

    def write_loop():
        rng = random.Random(1)
        i = 0
        deadline = time.monotonic() + 60
        try:
            while ((i < 150 or gcs_done[0] < 8) and not stop.is_set()
                   and time.monotonic() < deadline):
                kind = i % 4
                if kind == 0:
                    data = det_bytes(f"new-{i}", rng.randint(10 * KiB, 300 * KiB))
                elif kind in (1, 2):
                    data = pool[rng.randrange(len(pool))]
                else:
                    data = det_bytes(f"text-{i}", rng.randint(100, 20 * KiB), compressible=True)
                rel = f"w{i % 5}/f{i:04d}"
                for root in (writer.path, mirror):
                    (root / rel).parent.mkdir(exist_ok=True)
                    write_file(root / rel, data)
                if i % 10 == 9:
                    # Garbage made during the run: a fsynced file deleted again, and a rewrite.
                    tmp = writer.path / f"tmp{i}"
                    write_file(tmp, det_bytes(f"tmp-{i}", 200 * KiB))
                    fd = os.open(tmp, os.O_RDONLY)
                    os.fsync(fd)
                    os.close(fd)
                    os.unlink(tmp)
                    victim = f"w{(i - 9) % 5}/f{i - 9:04d}"
                    rewritten.add(victim)
                    again = det_bytes(f"rewrite-{i}", 50 * KiB)
                    for root in (writer.path, mirror):
                        write_file(root / victim, again)
                    fd = os.open(writer.path / f"w{i % 5}", os.O_RDONLY | os.O_DIRECTORY)
                    os.fsync(fd)
                    os.close(fd)
                i += 1
                time.sleep(0.01)
        except OSError as e:
            errors.append(f"writer: file {i}: {e}")

    readers = [threading.Thread(target=read_loop, args=(o,)) for o in (False, True)]
    wt = threading.Thread(target=write_loop)
    for rt in readers:
        rt.start()
    wt.start()
    reports = []
    try:
        while wt.is_alive() or len(reports) < 8:
            rep, res = ops.json("gc")
            reports.append(rep)
            gcs_done[0] = len(reports)
            time.sleep(0.1)
        wt.join()
        # Let the reader finish a pass that started after the last gc.
        passes = reads[0]
        deadline = time.monotonic() + 30
        while (reads[0] < passes + 3 and any(rt.is_alive() for rt in readers)
               and time.monotonic() < deadline):
            time.sleep(0.05)
    finally:
        stop.set()
        wt.join()
        for rt in readers:
            rt.join()
    st = json.loads(ops.cli("status", reader.path, "--json").stdout)
    print(f"\n{len(reports)} gc runs during the activity, {reads[0]} read passes "
          f"({st['bytes_read_from_store']} bytes read from the store); gc reports:")
    for r in reports:
        print(f"  deleted {r['objects_deleted']} objects, {r['packs_deleted']} packs, compacted "
              f"{r['packs_compacted']}; store {r['disk_bytes_before']} -> {r['disk_bytes_after']}")
    assert not errors, "\n".join(errors[:20]) + f"\nreader daemon:\n{reader.stderr()[-3000:]}" \
        f"\nwriter daemon:\n{writer.stderr()[-3000:]}"
    assert len(reports) >= 8
    # The runs did real work while the mounts were busy, not only before.
    assert sum(r["packs_compacted"] for r in reports) >= 1, reports
    assert sum(r["packs_deleted"] for r in reports) >= 2, reports  # other-0, other-2
    assert sum(r["objects_deleted"] for r in reports[1:]) > 0, (
        "no gc after the first found the writer's garbage", reports)

    diff_r(reader.path, old_src)
    diff_r(writer.path, mirror)
    reader.umount()
    writer.umount()
    # Everything again from fresh daemons (no caches), and a clean fsck.
    m = ops.mount(key="old", extra=["--no-save"])
    diff_r(m.path, old_src)
    m.umount()
    rep, _ = ops.json("fsck")
    assert rep["clean"], rep["problems"]
    m = ops.mount(volume="busy")
    want = {str(p.relative_to(mirror)): p.read_bytes() for p in mirror.rglob("*") if p.is_file()}
    bad = read_problems(m.path, {k: v for k, v in want.items() if k not in rewritten})
    assert not bad, f"after remount, files written once differ: {bad}"
    # Expected: the volume reads back exactly as it was written. (Bug, not gc's: a file rewritten
    # with open(O_TRUNC) to a shorter content keeps its old size after the remount -- the new
    # bytes, then the tail of the old ones. ftruncate/truncate are kept; only the O_TRUNC is lost
    # at commit, with or without gc, even after fsync of the file.)
    bad = read_problems(m.path, {k: v for k, v in want.items() if k in rewritten})
    assert not bad, f"after remount, files rewritten with O_TRUNC differ: {bad}"
    diff_r(m.path, mirror)
    m.umount()


# ------------------------------------------------------------------------------------------------
# 2. gc after rm of half of the snapshots frees the space, measured with du


def test_gc_after_rm_frees_disk_space(ops, workdir, store):
    n = 6
    shared = make_files("shared", n_big=1, big=1 * MiB, n_small=20, small=8 * KiB,
                        text=512 * KiB)
    trees = {}
    for i in range(n):
        files = make_files(f"snap{i}", n_big=1, big=1536 * KiB, n_mid=4, mid=100 * KiB,
                           n_small=40, small=6 * KiB)
        files.update({f"shared/{k}": v for k, v in shared.items()})
        src = workdir / f"src-snap{i}"
        write_tree(src, files)
        ops.save_key(f"snap-{i}", src)
        trees[i] = (src, files)
    unique = sum(len(v) for k, v in trees[0][1].items() if not k.startswith("shared/"))
    removed = [i for i in range(n) if i % 2 == 0]
    for i in removed:
        ops.cli("rm", f"snap-{i}")
    assert set(ops.snapshots()) == {f"snap-{i}" for i in range(n) if i not in removed}

    before = du_sb(store / "packs")
    rep, _ = ops.json("gc")
    after = du_sb(store / "packs")
    freed = before - after
    print(f"\ngc after rm of {len(removed)} of {n} snapshots ({fmt(unique)} of unique random data "
          f"each, plus shared files): du -sb STORE/packs {before} -> {after} bytes, freed "
          f"{fmt(freed)} = {100 * freed / before:.0f}% (gc reported: {rep['objects_deleted']} "
          f"objects, {rep['packs_deleted']} packs deleted, {rep['packs_compacted']} compacted, "
          f"store {rep['disk_bytes_before']} -> {rep['disk_bytes_after']})")
    # Random data does not compress: the removed snapshots' own data is what must go.
    assert freed >= 0.9 * len(removed) * unique, (
        f"gc freed {fmt(freed)}, expected at least 90% of {fmt(len(removed) * unique)}: {rep}")
    assert after >= (n - len(removed)) * unique, f"too much went: {after} bytes left"
    reported = rep["disk_bytes_before"] - rep["disk_bytes_after"]
    assert abs(reported - freed) <= 256 * KiB + 0.02 * freed, (
        f"gc says it freed {reported} bytes, du says {freed}")
    assert rep["packs_deleted"] >= 1 and rep["packs_compacted"] >= 1, rep
    # Nothing is left to collect.
    again, _ = ops.json("gc")
    assert again["objects_deleted"] == 0 and again["packs_deleted"] == 0, again
    assert du_sb(store / "packs") <= after + 4 * KiB
    for i in range(n):
        if i not in removed:
            src, files = trees[i]
            ops.check_key(f"snap-{i}", files, what="after gc: ")
    m = ops.mount(key="snap-0", extra=["--no-save"])
    assert os.listdir(m.path) == [], "a removed key still restores"
    m.umount()


# ------------------------------------------------------------------------------------------------
# 3. prune: least recently used first, never what is mounted; --dry-run; --max-age


def test_prune_lru_order_never_mounted_dry_run_and_max_age(ops, workdir, store):
    unit = 2 * MiB  # unique data of each snapshot and volume
    trees = {}

    def tree(name):
        src, files = new_tree(ops, name, n_big=1, big=unit - 64 * KiB, n_small=10, small=12 * KiB)
        trees[name] = (src, files)
        return src

    def last_used(name):
        s = ops.snapshots()
        return s[name]["last_used"] if name in s else ops.volumes()[name]["last_used"]

    # The oldest of all: a volume, mounted again (and kept mounted) for the prunes below.
    m = ops.mount(volume="old-vol")
    cp_a(tree("old-vol"), m.path)
    m.umount()
    ops.save_key("ancient", tree("ancient"))
    time.sleep(2 * CLOCK_TICK)
    for k in ("k0", "k1", "k2", "k3"):
        ops.save_key(k, tree(k))
        time.sleep(CLOCK_TICK)
    # A mount (and a read) is a use: k0 becomes the most recently used.
    m = ops.mount(key="k0")
    assert not read_problems(m.path, trees["k0"][1])
    m.umount()
    lu = {k: last_used(k) for k in ("old-vol", "ancient", "k0", "k1", "k2", "k3")}
    assert lu["k0"] > lu["k3"] > lu["k2"] > lu["k1"] > lu["ancient"] >= lu["old-vol"], lu

    vol = ops.mount(volume="old-vol")

    def state():
        return (sorted(ops.snapshots()), sorted(ops.volumes()), du_sb(store / "packs"),
                sorted(map(str, pack_files(store))))

    # --max-age: only what is older than k1 goes; the mounted volume is older too but stays.
    age = int(time.time()) - lu["k1"] + 1
    start = state()
    rep, _ = ops.json("prune", "--max-age", f"{age}s", "--dry-run")
    assert [e["name"] for e in rep["evicted"]] == ["ancient"], rep
    assert any("old-vol" in k for k in rep["kept_in_use"]), rep
    assert state() == start, "prune --dry-run changed the store"
    rep, _ = ops.json("prune", "--max-age", f"{age}s")
    assert [(e["name"], e["reason"]) for e in rep["evicted"]] == [("ancient", "age")], rep
    assert any("old-vol" in k for k in rep["kept_in_use"]), rep
    assert set(ops.snapshots()) == {"k0", "k1", "k2", "k3"}
    assert "old-vol" in ops.volumes()

    # --max-size: room for all but two snapshots' data; the LRU two are k1 then k2, not the
    # mounted volume (least recently used of all) and not k0 (used last).
    probe, _ = ops.json("prune", "--max-size", "1T", "--dry-run")
    assert probe["evicted"] == [], probe
    limit = probe["disk_bytes_before"] - int(1.5 * unit)
    start = state()
    rep, _ = ops.json("prune", "--max-size", str(limit), "--dry-run")
    assert [e["name"] for e in rep["evicted"]] == ["k1", "k2"], rep
    assert any("old-vol" in k and "mounted" in k for k in rep["kept_in_use"]), rep
    assert state() == start, "prune --dry-run changed the store"
    rep, _ = ops.json("prune", "--max-size", str(limit))
    assert [(e["name"], e["reason"]) for e in rep["evicted"]] == [("k1", "size"), ("k2", "size")]
    assert any("old-vol" in k and "mounted" in k for k in rep["kept_in_use"]), rep
    assert rep["disk_bytes_after"] <= limit, rep
    assert set(ops.snapshots()) == {"k0", "k3"}
    assert du_sb(store / "packs") < start[2] - 1.5 * unit, "prune did not free the space"

    # A key restored by a live mount is in use too: a limit nothing can meet evicts only k0.
    km = ops.mount(key="k3", extra=["--no-save"])
    rep, res = ops.json("prune", "--max-size", "1K")
    assert [e["name"] for e in rep["evicted"]] == ["k0"], rep
    kept = " ".join(rep["kept_in_use"])
    assert "old-vol" in kept and "'k3'" in kept, rep
    assert set(ops.snapshots()) == {"k3"} and "old-vol" in ops.volumes()
    for mnt, name in ((vol, "old-vol"), (km, "k3")):
        problems = read_problems(mnt.path, trees[name][1])
        assert not problems, f"{name} after prune: {problems}"
    km.umount()
    vol.umount()
    ops.check_key("k3", trees["k3"][1])


# ------------------------------------------------------------------------------------------------
# 4. Automatic prune at unmount (and save) with max_size


def chain_gen(g: int, per_gen: int = 3) -> dict:
    """Generation g of a changing cache: `per_gen` new 1 MiB random files under genG/."""
    return {f"gen{g}/f{j}.bin": det_bytes(f"chain-{g}-{j}", 1 * MiB) for j in range(per_gen)}


def save_chain_gen(ops: Ops, g: int, restored: dict, env=None):
    """Mounts key gen-GG restoring the newest gen- key, drops genG-2/, adds genG/, unmounts.
    Returns (mount, files of the new snapshot, status of the mount)."""
    m = ops.mount(key=f"gen-{g:02d}", restore=["gen-"], env=env)
    st = json.loads(ops.cli("status", m.path, "--json").stdout)
    files = {k: v for k, v in restored.items() if not k.startswith(f"gen{g - 2}/")}
    if (m.path / f"gen{g - 2}").exists():
        shutil.rmtree(m.path / f"gen{g - 2}")
    new = chain_gen(g)
    write_tree(m.path, new)
    files.update(new)
    return m, files, st


def test_prune_of_snapshots_sharing_data_evicts_only_what_is_needed(ops, workdir, store):
    """The usual CI chain: each key restored from the previous one, adding 3 MiB and dropping
    what two keys back added, so neighbours share most data and no snapshot alone holds much.
    A limit 2 MiB under the store's size is met by evicting the two least recently used keys
    (together they alone hold gen0/); nothing newer may go."""
    files = {}
    for g in range(5):
        m, files, st = save_chain_gen(ops, g, files)
        m.umount()
    before = sorted(ops.snapshots())
    probe, _ = ops.json("prune", "--max-size", "1T", "--dry-run")
    limit = probe["disk_bytes_before"] - 2 * MiB
    dry, _ = ops.json("prune", "--max-size", str(limit), "--dry-run")
    rep, _ = ops.json("prune", "--max-size", str(limit))
    left = sorted(ops.snapshots())
    print(f"\nprune --max-size {limit} of {before} ({probe['disk_bytes_before']} bytes): dry run "
          f"would evict {[e['name'] for e in dry['evicted']]}; evicted "
          f"{[e['name'] for e in rep['evicted']]}, store -> {rep['disk_bytes_after']} bytes; "
          f"left {left}")
    # Expected: gen-00 and gen-01 go (LRU order), gen-02..04 stay. (Bug: prune chooses victims by
    # each snapshot's exclusive bytes measured once, before any eviction; shared data counts for
    # none of them, so it evicts every snapshot, the newest too, and empties the store.)
    assert [e["name"] for e in rep["evicted"]] == ["gen-00", "gen-01"], rep
    assert left == ["gen-02", "gen-03", "gen-04"], left
    assert rep["disk_bytes_after"] <= limit, rep
    assert [e["name"] for e in dry["evicted"]] == ["gen-00", "gen-01"], dry
    ops.check_key("gen-04", files)


def test_auto_prune_on_unmount_keeps_store_within_max_size(ops, workdir, store):
    """Repeated saves of a changing tree (each restores the newest key, adds 3 MiB of new data
    and drops the files two saves old) until twice max_size was written: after every unmount
    (and `save`) the store is within max_size and the newest key is there. max_size comes from
    `stashfs config`, then from STASHFS_MAX_SIZE in the mount's environment."""
    slack = 256 * KiB  # the catalog grows a little after the prune (counters, the writer's row)
    contents = {}  # key -> files
    newest = [None]
    written = [0]
    problems = []

    def note(line):
        print(line, flush=True)

    def one_save(g, env, limit, via_save=False):
        key = f"gen-{g:02d}"
        restored = contents.get(newest[0], {})
        m, files, st = save_chain_gen(ops, g, restored, env=env)
        if st["matched_key"] != newest[0]:
            problems.append(f"{key}: restored {st['matched_key']!r}, expected the newest key "
                            f"{newest[0]!r}")
            files = {k: v for k, v in contents.get(st["matched_key"], {}).items()
                     if not k.startswith(f"gen{g - 2}/")}
            files.update(chain_gen(g))
        bad = read_problems(m.path, files)
        if bad:
            problems.append(f"{key}: live tree differs: {bad[:3]}")
        written[0] += 3 * MiB
        if via_save:
            ops.cli("save", m.path, "--key", f"saved-{g:02d}")
            size = store_bytes(store)
            note(f"  saved-{g:02d} (stashfs save on the live mount): store {fmt(size)}")
            if limit and size > limit + slack:
                problems.append(f"after save saved-{g:02d}: store {fmt(size)} > {fmt(limit)}")
            contents[f"saved-{g:02d}"] = dict(files)
        m.umount()
        contents[key] = files
        newest[0] = key
        size, packs = store_bytes(store), du_sb(store / "packs")
        snaps = sorted(ops.snapshots())
        note(f"  {key}: {fmt(written[0])} written so far; store {fmt(size)} (packs {packs}, "
             f"catalog {catalog_bytes(store)}); limit {fmt(limit) if limit else 'none'}; "
             f"snapshots {snaps}")
        if key not in snaps:
            problems.append(f"after umount of {key}: the newest key was pruned; left: {snaps}")
        if limit and size > limit + slack:
            problems.append(f"after umount of {key}: store {fmt(size)} > {fmt(limit)}")
        return snaps

    note("\nauto-prune with `stashfs config max_size 16M`:")
    max_size = 16 * MiB
    one_save(0, ops.env, max_size)  # creates the store: `config` never creates one
    ops.cli("config", "max_size", "16M")
    assert ops.cli("config", "max_size").stdout.strip() == "16M"
    g = 1
    pruned = False
    while written[0] < 2 * max_size + 3 * MiB:
        snaps = one_save(g, ops.env, max_size)
        pruned |= "gen-00" not in snaps
        g += 1
    assert pruned, "nothing was ever pruned"

    note("no max_size at all (config unset): no prune")
    ops.cli("config", "max_size", "--unset")
    before = len(ops.snapshots())
    snaps = one_save(g, ops.env, 0)
    g += 1
    if len(snaps) != before + 1:
        problems.append(f"pruned without a max_size: {before} snapshots -> {snaps}")

    note("max_size from STASHFS_MAX_SIZE=10M in the mount's environment:")
    env = ops.env_with(STASHFS_MAX_SIZE="10M")
    for i in range(4):
        one_save(g, env, 10 * MiB, via_save=(i == 2))
        g += 1
    if newest[0] in ops.snapshots():
        ops.check_key(newest[0], contents[newest[0]], what="newest after auto-prune: ")
    rep, _ = ops.json("fsck")
    assert rep["clean"], rep["problems"]
    # Expected: no problems. (Bug: the first automatic prune evicts every snapshot, the key just
    # saved included -- see test_prune_of_snapshots_sharing_data_evicts_only_what_is_needed.)
    assert not problems, f"{len(problems)} problems:\n  " + "\n  ".join(problems)


# ------------------------------------------------------------------------------------------------
# 5. fsck: a flipped byte, a deleted pack, --repair, EIO on the damaged files only, healing


def chunk_location(store: Path, data: bytes) -> tuple:
    """(pack file, block offset, header_len, stored_len, codec) of the block holding the chunk
    whose bytes are `data` (a file under 128 KiB is one chunk, named by its SHA-256)."""
    rows = query(store,
                 "SELECT b.pack_id, b.offset, b.header_len, b.stored_len, b.codec FROM objects o "
                 "JOIN blocks b ON b.id = o.block_id WHERE o.hash = ? AND o.kind = 1",
                 (bytes.fromhex(sha256_bytes(data)),))
    assert len(rows) == 1, f"chunk {sha256_bytes(data)} not found in the catalog: {rows}"
    pack_id, offset, header_len, stored_len, codec = rows[0]
    return pack_path(store, pack_id), offset, header_len, stored_len, codec


def flip_byte(path: Path, pos: int):
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x5A]))


def test_fsck_flipped_byte_repair_eio_and_heal(ops, workdir, store):
    src, files = new_tree(ops, "base", n_big=1, big=700 * KiB, n_mid=3, mid=100 * KiB,
                          n_small=40, small=6 * KiB, text=100 * KiB)
    victim = "d1/base-m1.bin"  # 100 KiB: one chunk, a block of its own
    ops.save_key("base", src)
    rep, _ = ops.json("fsck")
    assert rep["clean"] and rep["exit_code"] == 0 and rep["problems"] == [], rep
    assert ops.cli("fsck").returncode == 0
    total_blocks = rep["blocks_checked"]
    assert total_blocks >= 8, rep

    # --sample checks a part, least recently verified first: successive runs cover new blocks.
    time.sleep(CLOCK_TICK)
    sample, _ = ops.json("fsck", "--sample", "10")
    assert sample["clean"], sample
    assert 1 <= sample["blocks_checked"] < total_blocks, (sample, total_blocks)

    pack, off, hlen, slen, codec = chunk_location(store, files[victim])
    assert slen >= 64 * KiB, "the victim should have a block of its own"
    flip_byte(pack, off + hlen + slen // 2)
    digest = sha256_bytes(files[victim])

    found = False
    for _ in range(-(-total_blocks // sample["blocks_checked"]) + 1):
        srep, _ = ops.json("fsck", "--sample", "10", codes=(0, EXIT_DAMAGE))
        assert srep["blocks_checked"] < total_blocks, srep
        if srep["exit_code"] == EXIT_DAMAGE:
            found = True
            break
    assert found, "successive --sample 10 runs never reached the damaged block"

    res = ops.cli("fsck", check=False)
    assert res.returncode == EXIT_DAMAGE, f"fsck exited {res.returncode}:\n{res.stdout}{res.stderr}"
    assert digest in res.stdout, f"fsck does not name chunk {digest}:\n{res.stdout}"
    rep, _ = ops.json("fsck", codes=(EXIT_DAMAGE,))
    assert not rep["clean"] and not rep["repaired"] and rep["exit_code"] == EXIT_DAMAGE, rep
    assert rep["damaged_objects"] == 1, rep
    assert rep["damaged_snapshots"] == ["snapshot 'base'"], rep
    assert not ops.snapshots()["base"]["damaged"], "fsck without --repair changed the store"

    res = ops.cli("fsck", "--repair", check=False)
    assert res.returncode == EXIT_REPAIRED, f"fsck --repair exited {res.returncode}:\n{res.stdout}"
    assert digest in res.stdout, res.stdout
    assert ops.snapshots()["base"]["damaged"] is True

    m = ops.mount(key="base", extra=["--no-save"])
    assert "damaged" in m.stdout() + m.stderr(), (m.stdout(), m.stderr())
    assert read_errno(m.path / victim) == errno.EIO
    others = {k: v for k, v in files.items() if k != victim}
    problems = read_problems(m.path, others)
    assert not problems, f"files that do not use the damaged chunk: {problems}"
    m.umount()
    assert digest in m.stderr(), f"no log line names the lost chunk:\n{m.stderr()}"

    # The same bytes written again (under another key) heal the object for every snapshot.
    h = ops.mount(key="heal")
    write_file(h.path / "copy.bin", files[victim])
    h.umount()
    m = ops.mount(key="base", extra=["--no-save"])
    problems = read_problems(m.path, files)
    assert not problems, f"after healing: {problems}"
    m.umount()
    rep, _ = ops.json("fsck")
    assert rep["clean"] and rep["exit_code"] == 0, rep
    # Expected: once the data is whole again, `fsck --repair` (clean) clears the damaged mark, so
    # `ls` and the next mount stop calling the snapshot damaged. (Bug: the mark stays for good.)
    rep, _ = ops.json("fsck", "--repair")
    assert rep["exit_code"] == 0, rep
    assert ops.snapshots()["base"]["damaged"] is False, (
        "snapshot 'base' reads whole and fsck --repair is clean, yet ls still marks it damaged")


def test_fsck_deleted_pack_repair_and_eio_only_there(ops, workdir, store):
    a_src, a_files = new_tree(ops, "a", n_big=1, big=300 * KiB, n_mid=2, mid=90 * KiB,
                              n_small=20, small=6 * KiB)
    c_src, c_files = new_tree(ops, "c", n_big=1, big=400 * KiB, n_mid=2, mid=80 * KiB,
                              n_small=10, small=6 * KiB)
    ops.save_key("a", a_src)
    ops.save_key("c", c_src)  # c's data is alone in its pack
    # b = a + copies of c's files under other names (their chunks stay in c's pack) + its own.
    m = ops.mount(key="b", restore=["a"])
    lost = {}
    for rel, data in c_files.items():
        name = f"from-c/{rel.replace('/', '_')}"
        (m.path / name).parent.mkdir(exist_ok=True)
        write_file(m.path / name, data)
        lost[name] = data
    own = {"own.bin": det_bytes("b-own", 200 * KiB)}
    write_tree(m.path, own)
    m.umount()

    c_pack = chunk_location(store, c_files["d0/c-m0.bin"])[0]
    assert chunk_location(store, a_files["d0/a-m0.bin"])[0] != c_pack
    assert chunk_location(store, own["own.bin"])[0] != c_pack
    assert ops.cli("fsck").returncode == 0
    c_pack.unlink()

    res = ops.cli("fsck", check=False)
    assert res.returncode == EXIT_DAMAGE, f"fsck exited {res.returncode}:\n{res.stdout}{res.stderr}"
    assert str(c_pack) in res.stdout and "missing" in res.stdout, res.stdout
    rep, _ = ops.json("fsck", "--repair", codes=(EXIT_REPAIRED,))
    assert rep["repaired"] and rep["exit_code"] == EXIT_REPAIRED, rep
    assert sorted(rep["damaged_snapshots"]) == ["snapshot 'b'", "snapshot 'c'"], rep
    snaps = ops.snapshots()
    assert (snaps["a"]["damaged"], snaps["b"]["damaged"], snaps["c"]["damaged"]) == (
        False, True, True), snaps
    # Damage left but isolated: the next fsck says so and names the damaged snapshots.
    rep, _ = ops.json("fsck", codes=(EXIT_DAMAGE,))
    assert "snapshot 'b'" in rep["damaged_snapshots"], rep

    m = ops.mount(key="b", extra=["--no-save"])
    assert "damaged" in m.stdout() + m.stderr(), (m.stdout(), m.stderr())
    for rel in lost:
        assert read_errno(m.path / rel) == errno.EIO, f"{rel} (its data was in the deleted pack)"
    problems = read_problems(m.path, {**a_files, **own})
    assert not problems, f"files whose data is elsewhere: {problems}"
    m.umount()
    ops.check_key("a", a_files)


# ------------------------------------------------------------------------------------------------
# 6. SIGKILL during gc


def test_sigkill_during_gc_leaves_consistent_store(ops, workdir, store):
    """A store with much to collect (a mostly dead pack to compact, dead packs, thousands of dead
    small objects) is copied, and gc on each copy is killed after a different delay. Each copy
    then passes fsck, a second gc finishes the work, and the kept snapshots read back intact."""
    keep_src, keep = new_tree(ops, "keep", n_big=3, big=1 * MiB, n_mid=10, mid=120 * KiB,
                              n_small=500, small=8 * KiB, text=1 * MiB)
    junk_src, _ = new_tree(ops, "junk6", n_big=6, big=2 * MiB, n_small=500, small=8 * KiB)
    m = ops.mount(key="keep")
    cp_a(keep_src, m.path)
    (m.path / "junk").mkdir()
    cp_a(junk_src, m.path / "junk")
    ops.cli("save", m.path, "--key", "drop-with-junk")
    shutil.rmtree(m.path / "junk")
    m.umount()
    many_src = workdir / "src-many"
    for d in range(10):
        (many_src / f"d{d}").mkdir(parents=True)
        for f in range(300):
            write_file(many_src / f"d{d}" / f"f{f}", det_bytes(f"many-{d}-{f}", 300 + f))
    ops.save_key("drop-many", many_src)
    keep2_src, keep2 = new_tree(ops, "keep2", n_big=1, big=1 * MiB, n_small=20, small=8 * KiB)
    ops.save_key("keep2", keep2_src)
    for i in range(2):
        src, _ = new_tree(ops, f"dead{i}", n_big=2, big=2 * MiB)
        ops.save_key(f"drop-{i}", src)
    for key in ("drop-with-junk", "drop-many", "drop-0", "drop-1"):
        ops.cli("rm", key)
    template = workdir / "template"
    shutil.copytree(store, template, symlinks=True)

    # How long an uninterrupted gc takes on a copy.
    full = workdir / "store-full"
    shutil.copytree(template, full, symlinks=True)
    t0 = time.monotonic()
    rep_full, _ = ops.json("gc", store=full)
    t_full = time.monotonic() - t0
    print(f"\nuninterrupted gc: {t_full * 1000:.0f} ms: {rep_full}")
    ops.check_key("keep", keep, store=full, what="after an uninterrupted gc: ")
    assert rep_full["packs_compacted"] >= 1 and rep_full["packs_deleted"] >= 2, rep_full
    assert rep_full["objects_deleted"] >= 3000, rep_full
    shutil.rmtree(full)

    # Where gc is when it dies: after fixed delays, and at moments seen on disk -- the compaction's
    # new pack file appears (pack rewrite in progress), the compacted pack is gone (its catalog
    # switch committed), the first dead pack is gone (deleting packs).
    compacted = chunk_location(store, keep["d0/keep-m0.bin"])[0].relative_to(store)
    dead = chunk_location(store, det_bytes("many-0-0", 300))[0].relative_to(store)
    initial = pack_files(template)
    assert {compacted, dead} <= initial
    triggers = [
        ("after 10% of a full run", 0.1),
        ("after 40% of a full run", 0.4),
        ("after 70% of a full run", 0.7),
        ("once the compaction's new pack exists", lambda c: pack_files(c) - initial),
        ("once the compacted pack is deleted", lambda c: not (c / compacted).exists()),
        ("once a dead pack is deleted", lambda c: not (c / dead).exists()),
    ]
    killed_midway = 0
    for n, (label, trigger) in enumerate(triggers):
        copy = workdir / f"store-kill-{n}"
        shutil.copytree(template, copy, symlinks=True)
        proc = subprocess.Popen([stashfs_bin(), "--store", str(copy), "gc", "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ops.env)
        try:
            t0 = time.monotonic()
            if callable(trigger):
                while proc.poll() is None and not trigger(copy) and time.monotonic() < t0 + 30:
                    pass
            else:
                time.sleep(trigger * t_full)
            waited = time.monotonic() - t0
        finally:
            proc.send_signal(signal.SIGKILL)  # our own child, never reaped before this point
            out, err = proc.communicate(timeout=60)
        midway = proc.returncode == -signal.SIGKILL
        killed_midway += midway
        what = f"SIGKILL of gc {label} ({waited * 1000:.1f} ms)"
        rep, _ = ops.json("fsck", store=copy)
        assert rep["clean"], f"after {what}: {rep['problems']}"
        g2, _ = ops.json("gc", store=copy)
        rep, _ = ops.json("fsck", store=copy)
        assert rep["clean"], f"after the gc following {what}: {rep['problems']}"
        print(f"  {what}: {'killed mid-run' if midway else 'gc had already finished'}; the next "
              f"gc deleted {g2['objects_deleted']} objects and {g2['packs_deleted']} packs, "
              f"compacted {g2['packs_compacted']}, removed {g2['orphan_files_removed']} orphan "
              f"files")
        # Every pack file is one the catalog knows, and the data is all there.
        rows = {pack_path(copy, i).relative_to(copy)
                for (i,) in query(copy, "SELECT id FROM packs")}
        assert pack_files(copy) == rows, (what, pack_files(copy), rows)
        assert sorted(ops.snapshots(store=copy)) == ["keep", "keep2"], what
        ops.check_key("keep", keep, store=copy, what=f"after {what}: ")
        ops.check_key("keep2", keep2, store=copy, what=f"after {what}: ")
        shutil.rmtree(copy)
    assert killed_midway >= 3, f"only {killed_midway} kills landed while gc was running"


# ------------------------------------------------------------------------------------------------
# 7. Bad input


@pytest.mark.parametrize("args,mentions", [
    (["prune", "--max-size", "12x"], "12x"),
    (["prune", "--max-size", "-1"], "-1"),
    (["prune", "--max-age", "5parsecs"], "5parsecs"),
    (["prune", "--max-size", "10G", "--max-age", "3 days"], "3 days"),
    (["config", "max_size", "lots"], "lots"),
    (["config", "compression_level", "99"], "99"),
    (["config", "prune_low_watermark", "0.1"], "0.1"),
    (["config", "no_such_key", "1"], "no_such_key"),
    (["fsck", "--sample", "0"], "--sample"),
    (["fsck", "--sample", "101"], "--sample"),
])
def test_bad_input_rejected_with_one_line(ops, workdir, store, args, mentions):
    src, files = new_tree(ops, "bad", n_mid=1, mid=100 * KiB, n_small=5, small=4 * KiB)
    ops.save_key("k", src)
    ops.cli("rm", "k")  # garbage a wrongly accepted prune or gc would collect
    ops.save_key("k2", src)
    ops.cli("config", "max_age", "30d")

    def state():
        cfg = (store / "config").read_text()
        return (cfg, ops.json("ls")[0]["snapshots"], sorted(map(str, pack_files(store))),
                du_sb(store / "packs"), query(store, "SELECT count(*) FROM objects"))

    before = state()
    res = ops.cli(*args, check=False)
    err = one_line_error(res, " ".join(args))
    assert mentions in err, f"the error does not name the bad value '{mentions}': {err}"
    assert res.stdout == "", res.stdout
    assert state() == before, "a rejected command changed the store"


@pytest.mark.parametrize("text,line,what", [
    ("# limits\nmax_size = 10G\nthis is not a setting\n", 3, "not a setting"),
    ("max_age = 7d\n\nmax_size = lots\n", 3, "lots"),
    ("compression_level = 0\n", 1, "compression_level"),
    ("max_size = 1G\nno_such_key = 1\n", 2, "no_such_key"),
])
def test_bad_store_config_file_fails_mount(ops, workdir, store, text, line, what):
    src, files = new_tree(ops, "cfg", n_small=3, small=4 * KiB)
    ops.save_key("k", src)
    (store / "config").write_text(text)
    mnt = workdir / "mnt-bad"
    mnt.mkdir()
    before = ops.json("ls")[0]
    res = ops.cli("mount", "--key", "k", mnt, check=False)
    if res.returncode == 0:
        ops.cli("umount", mnt, check=False)
    err = one_line_error(res, f"mount with {text!r} in STORE/config")
    assert not is_mounted(mnt)
    assert what in err, err
    # Expected: every error from a config file names the file and the line, like
    # "STORE/config:3: ..." (today only syntax errors carry the line; a bad size not even the file).
    assert f"{store / 'config'}:{line}" in err, (
        f"the error does not name {store / 'config'} line {line}: {err}")
    assert ops.json("ls")[0] == before


def test_bad_environment_setting_fails_mount(ops, workdir, store):
    src, files = new_tree(ops, "env", n_small=3, small=4 * KiB)
    ops.save_key("k", src)
    mnt = workdir / "mnt-env"
    mnt.mkdir()
    problems = []
    for var, value in (("STASHFS_COMPRESSION_LEVEL", "0"), ("STASHFS_MAX_SIZE", "huge"),
                       ("STASHFS_MAX_AGE", "5parsecs")):
        res = ops.cli("mount", "--volume", "v", mnt, check=False, env=ops.env_with(**{var: value}))
        if res.returncode == 0:
            ops.cli("umount", mnt, check=False)
        err = one_line_error(res, f"mount with {var}={value}")
        assert not is_mounted(mnt)
        assert value in err, err
        # Expected: the error names the variable the bad value came from.
        if var not in err:
            problems.append(f"{var}={value}: {err}")
    assert ops.json("ls")[0]["volumes"] == [], "a failed mount created its volume"
    assert not problems, "errors that do not say where the bad value came from:\n" + \
        "\n".join(problems)


# ------------------------------------------------------------------------------------------------
# 8. stats: hit/miss counters and reclaimable space


def test_stats_counters_and_reclaimable(ops, workdir, store):
    def counters():
        return ops.json("stats")[0].get("counters", {})

    def delta(before, after):
        return {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)
                if after.get(k, 0) != before.get(k, 0)}

    src, files = new_tree(ops, "st", n_big=1, big=600 * KiB, n_small=20, small=6 * KiB)
    assert not store.exists()
    c0 = {}
    ops.save_key("st-1", src)  # a miss
    c1 = counters()
    d = delta(c0, c1)
    assert d.get("key_misses") == 1 and d.get("mounts") == 1, d
    assert "key_hits_exact" not in d and "key_hits_restore_key" not in d, d
    assert d.get("files_created", 0) >= len(files), d
    assert d.get("lookups", 0) > 0 and d.get("negative_lookups", 0) > 0, d

    m = ops.mount(key="st-1")  # exact
    assert not read_problems(m.path, files)
    m.umount()
    c2 = counters()
    d = delta(c1, c2)
    assert d.get("key_hits_exact") == 1 and d.get("mounts") == 1, d
    assert "key_misses" not in d and "key_hits_restore_key" not in d, d
    assert d.get("files_read_from_store", 0) >= len(files), d
    assert d.get("bytes_read_from_store", 0) >= sum(map(len, files.values())), d

    m = ops.mount(key="st-2", restore=["nothing-", "st-"])  # a restore-key hit
    write_file(m.path / "more", b"more")
    m.umount()
    m = ops.mount(key="st-3", restore=["nothing-"])  # a miss with restore keys
    m.umount()
    c3 = counters()
    d = delta(c2, c3)
    assert d.get("key_hits_restore_key") == 1 and d.get("key_misses") == 1, d
    assert d.get("mounts") == 2 and "key_hits_exact" not in d, d

    # Reclaimable: what gc --dry-run would free, before and after an rm.
    ops.cli("rm", "st-1")
    ops.cli("rm", "st-2")
    s = ops.json("stats")[0]
    dry, _ = ops.json("gc", "--dry-run")
    assert s["unreferenced_objects"] == dry["objects_deleted"] > 0, (s, dry)
    assert s["snapshots"] == 1, s
    s2 = ops.json("stats")[0]
    for k in ("objects", "unreferenced_objects", "stored_bytes", "packs", "snapshots"):
        assert s2[k] == s[k], f"gc --dry-run changed {k}: {s[k]} -> {s2[k]}"
    real, _ = ops.json("gc")
    assert real["objects_deleted"] == dry["objects_deleted"], (dry, real)
    assert real["object_bytes_deleted"] == dry["object_bytes_deleted"], (dry, real)
    after = ops.json("stats")[0]
    assert after["unreferenced_objects"] == 0, after
    # Expected (issue 4: "stats ... reclaimable bytes"): stats reports the bytes gc would free,
    # matching gc --dry-run. (Bug: stats --json has only the count `unreferenced_objects`.)
    reclaimable = [k for k in s if "reclaimable" in k]
    assert reclaimable, f"stats --json has no reclaimable bytes: {sorted(s)}"
    value = s[reclaimable[0]]
    assert value in (dry["object_bytes_deleted"],
                     dry["disk_bytes_before"] - dry["disk_bytes_after"]), (s, dry)
    assert after[reclaimable[0]] == 0, after
