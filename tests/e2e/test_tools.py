"""Real package managers on a stashfs mount: pip + venv, npm, tar, apt, and dedup across volumes.

Every test runs the real tool (Debian's /usr/bin/python3 and its pip, node/npm against
registry.npmjs.org, GNU tar, apt-get against the Debian mirror) with its data in the mount and then
checks what the tool produced by using it: importing modules, require()-ing packages, diffing
trees, reading .debs with dpkg-deb. With STASHFS_E2E_NATIVE=1 the same steps run in a plain
directory; the parts that need a real mount (remount, stats) are skipped or left out there.

Python packages come from a local PEP 503 index served on 127.0.0.1 (tools_fixtures), never PyPI.
"""
import os
import pwd
import shutil
import stat
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

import tools_fixtures as tf
from conftest import native_mode, stats

needs_mount = pytest.mark.skipif(native_mode(), reason="needs a real stashfs mount")


@contextmanager
def timed(what: str):
    t0 = time.monotonic()
    yield
    print(f"[timing] {what}: {time.monotonic() - t0:.2f}s")


class Place:
    """Where a test runs its tools: one stashfs volume mounted at `path`, or a native directory."""

    def __init__(self, path: Path, factory=None, mount=None, volume=None, args=(), name="mnt"):
        self.path = Path(path)
        self.factory = factory
        self.mount = mount
        self.volume = volume
        self.args = list(args)
        self.name = name

    @property
    def native(self) -> bool:
        return self.mount is None

    def remount(self):
        """`stashfs umount` (waits for the commit), then mount the same volume at the same path."""
        assert not self.native, "remount needs a real mount"
        self.mount.umount()
        assert not os.path.ismount(self.path)
        self.mount = self.factory(volume=self.volume, args=self.args, name=self.name)
        self.path = self.mount.path


@pytest.fixture
def make_place(workdir, mount_factory):
    def make(volume="v", args=(), name="mnt") -> Place:
        if native_mode():
            d = workdir / f"native-{name}"
            d.mkdir()
            return Place(d)
        m = mount_factory(volume=volume, args=list(args), name=name)
        return Place(m.path, factory=mount_factory, mount=m, volume=volume, args=args, name=name)
    return make


# --------------------------------------------------------------------------------------------
# Module-wide inputs, built once: the local Python index, the npm lockfile, the big tarball.
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def py_index(tmp_path_factory):
    with timed("build local index (4 wheels)"):
        return tf.build_local_index(tmp_path_factory.mktemp("pyindex"))


@pytest.fixture(scope="module")
def npm_lock(tmp_path_factory):
    with timed("npm lockfile"):
        return tf.generate_npm_lockfile(tmp_path_factory.mktemp("npmlock"))


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory):
    """(TreeTarball, native reference extraction, its manifest). Deleted at the end: ~0.5 GB."""
    d = tmp_path_factory.mktemp("bigtree")
    with timed("tar -c of the real tree"):
        tarball = tf.build_tree_tarball(d / "tree.tar")
    assert tarball.entries > 20000, tarball
    ref = d / "ref"
    with timed("tar -x native reference"):
        tf.extract_tarball(tarball.path, ref)
    yield tarball, ref, tf.tree_manifest(ref)
    shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# pip + venv
# --------------------------------------------------------------------------------------------

def wheel_requests(requests):
    return [r for r in requests if r[1].startswith("/packages/")]


def test_pip_venv_install_and_http_cache(target, py_index):
    """venv in the mount, pip's cache in the mount; a second install is served by that cache."""
    cache = target / "pip-cache"
    venv1, venv2 = target / "venv1", target / "venv2"
    wheelhouse = target / "wheelhouse"
    with tf.serve_index(py_index.root) as srv:
        env = tf.pip_env(srv.index_url, cache)

        with timed("python3 -m venv (1)"):
            tf.make_venv(venv1)
        with timed("pip install from the index"):
            tf.pip_install(venv1, py_index.requirements, env)
        tf.check_python_packages(venv1)
        tf.check_console_script(venv1)
        got = wheel_requests(srv.take_requests())
        assert sorted(p for _m, p, code in got if code == 200) == sorted(
            f"/packages/{w.name}" for w in py_index.wheels.values()), got

        http_dirs = tf.pip_http_cache_dirs(cache)
        assert http_dirs, f"pip made no http cache dir in {cache}: {os.listdir(cache)}"
        n_cached = sum(tf.count_files(d) for d in http_dirs)
        assert n_cached >= len(py_index.wheels), f"pip cached only {n_cached} responses"

        # pip always revalidates index pages (it sends Cache-Control: max-age=0 for them), so the
        # index must answer; the wheels must come from the cache in the mount: make them 404.
        srv.deny = ("/packages/",)
        with timed("python3 -m venv (2)"):
            tf.make_venv(venv2)
        with timed("pip install from the http cache"):
            res = tf.pip_install(venv2, py_index.requirements, env)
        assert "Using cached" in res.stdout, res.stdout
        tf.check_python_packages(venv2)
        tf.check_console_script(venv2)

        # A wheelhouse in the mount, also filled from the cache.
        with timed("pip download from the http cache"):
            tf.run([tf.venv_python(venv2), "-m", "pip", "download", "-d", wheelhouse,
                    *py_index.requirements], env=env)
        requests = srv.take_requests()
        assert not wheel_requests(requests), f"wheels were requested, not cached: {requests}"
    for name, whl in py_index.wheels.items():
        assert (wheelhouse / whl.name).read_bytes() == whl.read_bytes(), name

    # Index server gone: fully offline reinstall over the existing files of venv1. pip renames the
    # old package directories aside inside site-packages (~tashdemo_c) and moves single files to
    # a temporary directory in /tmp (from a mount: EXDEV, so shutil copies and unlinks).
    with timed("pip install --no-index --force-reinstall"):
        tf.pip_install(venv1, py_index.requirements, tf.pip_env(None, cache),
                       "--no-index", "--find-links", str(wheelhouse), "--force-reinstall")
    tf.check_python_packages(venv1)
    tf.check_console_script(venv1)
    # pip compiled bytecode next to the sources (written to a temporary name, then renamed).
    site = venv1 / "lib"
    assert list(site.glob("python3*/site-packages/stashdemo_c/__pycache__/*.pyc"))


# --------------------------------------------------------------------------------------------
# npm
# --------------------------------------------------------------------------------------------

def test_npm_install_then_offline_ci(target, npm_lock):
    """npm's cache and node_modules in the mount; `npm ci --offline` works from that cache alone."""
    cache = target / "npm-cache"
    proj = tf.write_npm_project(target / "proj", lockfile=npm_lock)
    with timed("npm install (network)"):
        tf.npm(proj, "install", cache=cache)
    tf.check_node_packages(proj)
    assert tf.npm_lock_packages(proj / "package-lock.json") == tf.npm_lock_packages(npm_lock)
    content = cache / "_cacache" / "content-v2"
    n_content = tf.count_files(content)
    assert n_content >= len(tf.NPM_PACKAGES) + len(tf.NPM_TRANSITIVE), n_content

    # npm cache verify re-hashes every tarball in the cache (reads through the mount).
    res = tf.npm(proj, "cache", "verify", cache=cache)
    assert "Content verified" in res.stdout + res.stderr, res.stdout + res.stderr

    shutil.rmtree(proj / "node_modules")
    assert not (proj / "node_modules").exists()
    with timed("npm ci --offline"):
        tf.npm(proj, "ci", "--offline", cache=cache)
    tf.check_node_packages(proj)
    assert tf.npm_lock_packages(proj / "package-lock.json") == tf.npm_lock_packages(npm_lock)


# --------------------------------------------------------------------------------------------
# tar
# --------------------------------------------------------------------------------------------

def check_tree(tree, got: Path):
    tarball, ref, manifest = tree
    with timed("manifest compare"):
        diffs = tf.compare_manifests(manifest, tf.tree_manifest(got),
                                     skip=tarball.implicit_dirs)
    assert not diffs, "tree differs from a native extraction:\n" + "\n".join(diffs)
    with timed("diff -r"):
        out = tf.diff_trees(ref, got)
    assert out == "", out[:4000]


def test_tar_extract_large_real_tree(make_place, big_tree):
    """tar -x of ~35,000 real files; identical to a native extraction, also after a remount."""
    tarball = big_tree[0]
    place = make_place()
    dest = place.path / "tree"
    with timed(f"tar -x {tarball.entries} entries, {tarball.size >> 20} MiB"):
        tf.extract_tarball(tarball.path, dest)
    check_tree(big_tree, dest)
    if place.native:
        return
    with timed("umount + mount"):
        place.remount()
    check_tree(big_tree, place.path / "tree")


# --------------------------------------------------------------------------------------------
# apt
# --------------------------------------------------------------------------------------------

def test_apt_archive_cache_as_apt_user(workdir, make_place):
    """apt-get --download-only with its archive cache in an --allow-other mount.

    apt makes archives/partial owned by _apt (mode 0700) and downloads as _apt into it, then, as
    root, chowns each file back to root, chmods it 0644 and renames it into archives/. If _apt
    cannot reach partial/, apt warns "Download is performed unsandboxed as root" and that fails
    the test: other users' access through the mount is the point.
    """
    try:
        apt_uid = pwd.getpwnam("_apt").pw_uid
    except KeyError:
        pytest.skip("no _apt user")
    place = make_place(args=["--allow-other"])
    os.chmod(workdir, 0o755)      # mkdtemp made it 0700; _apt must be able to walk to the mount
    os.chmod(place.path, 0o755)
    blocked = tf.ensure_others_can_traverse(place.path)
    if blocked:
        pytest.skip(f"{blocked} is not searchable by other users; set STASHFS_E2E_TMP elsewhere")
    archives = place.path / "archives"
    archives.mkdir()

    expected = tf.apt_expected_debs(workdir / "apt-scratch" / "archives")
    with timed("apt-get --download-only"):
        tf.apt_download(archives)

    def check_archive():
        st = os.stat(archives / "partial")
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (apt_uid, 0o700), st
        names = tf.check_debs(archives, expected)
        for fname in names:
            st = os.stat(archives / fname)
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o644), (fname, st)
        assert set(tf.APT_PACKAGES) <= set(names.values()), names
        assert not os.listdir(archives / "partial")

    def check_apt_reuses_cache():
        res = tf.apt_download(archives)
        fetched = [ln for ln in res.stdout.splitlines() if ln.startswith("Get:")]
        assert not fetched, f"apt downloaded again instead of using the cache: {fetched}"
        check_archive()

    check_archive()
    if place.native:
        check_apt_reuses_cache()
        return
    with timed("umount + mount"):
        place.remount()
    archives = place.path / "archives"
    check_archive()
    check_apt_reuses_cache()


# --------------------------------------------------------------------------------------------
# dedup across volumes
# --------------------------------------------------------------------------------------------

def fill_npm(root: Path, npm_lock, _index):
    proj = tf.write_npm_project(root / "proj", lockfile=npm_lock)
    tf.npm(proj, "ci", cache=root / "npm-cache")
    tf.check_node_packages(proj)


def fill_venv(root: Path, _lock, index_url):
    # Bytecode embeds the source path (same here: same mountpoint) and, by default, the source
    # mtime, which differs per install; SOURCE_DATE_EPOCH makes pip/ensurepip write hash-based
    # .pyc files, so two installs of the same wheels are byte-identical.
    env = tf.pip_env(index_url, None, {"SOURCE_DATE_EPOCH": "1700000000"})
    tf.make_venv(root / "venv", env=env)
    tf.pip_install(root / "venv", list(tf.PY_REQUIREMENTS), env)
    tf.check_python_packages(root / "venv")


@needs_mount
@pytest.mark.parametrize("kind", ["npm", "venv"])
def test_dedup_same_install_in_two_volumes(kind, store, mount_factory, npm_lock, py_index):
    """The same install in a second volume adds almost nothing to the store's stored bytes."""
    fill = {"npm": fill_npm, "venv": fill_venv}[kind]
    with tf.serve_index(py_index.root) as srv:
        samples = []
        for volume in ("dedup-a", "dedup-b"):
            # Same mountpoint for both volumes, as a CI runner would use.
            m = mount_factory(volume=volume, name="mnt")
            with timed(f"{kind} install into {volume}"):
                fill(m.path, npm_lock, srv.index_url)
            logical = tf.tree_bytes(m.path)
            m.umount()
            samples.append((logical, stats(store)))
    (tree1, s1), (tree2, s2) = samples
    print(f"[dedup {kind}] tree bytes {tree1} / {tree2}; stats after first: {s1}; "
          f"after second: {s2}")
    assert s1["stored_bytes"] > 0 and s1["logical_bytes"] >= tree1 * 0.9, s1
    assert s2["logical_bytes"] - s1["logical_bytes"] >= tree2 * 0.9, (s1, s2)
    # Only npm's debug logs, cacache index entries (they hold timestamps) and the like differ.
    added = s2["stored_bytes"] - s1["stored_bytes"]
    print(f"[dedup {kind}] stored bytes added by the second install: {added} "
          f"({100.0 * added / s1['stored_bytes']:.1f}% of the first)")
    assert added <= 0.2 * s1["stored_bytes"], (
        f"second identical {kind} install added {added} stored bytes "
        f"(first stored {s1['stored_bytes']}): not deduplicated")
