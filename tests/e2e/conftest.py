"""Shared fixtures for the end-to-end tests: real stashfs mounts of a real store.

Every test gets a fresh store in a temporary directory. `mount_factory` mounts volumes of it with
the real `stashfs` binary (in the foreground, so the test owns the daemon's PID and its stderr);
`target` is a ready mounted directory. With STASHFS_E2E_NATIVE=1 the `target` fixture is a plain
directory instead, which checks that the tests themselves are right.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MOUNT_TIMEOUT = 20.0
# Sanitizer and fatal-error markers: any of these in a daemon's stderr fails the test.
BAD_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
               "WARNING: ThreadSanitizer", "ERROR: UndefinedBehaviorSanitizer")


def stashfs_bin() -> str:
    env = os.environ.get("STASHFS_BIN")
    if env:
        return env
    for cand in (REPO / "build" / "tools" / "stashfs",):
        if cand.exists():
            return str(cand)
    found = shutil.which("stashfs")
    if found:
        return found
    pytest.fail("stashfs binary not found: build it (cmake --build build) or set STASHFS_BIN")


def native_mode() -> bool:
    return os.environ.get("STASHFS_E2E_NATIVE") == "1"


def is_mounted(path: Path) -> bool:
    return os.path.ismount(str(path))


class Mount:
    """One foreground `stashfs mount` daemon serving `path`."""

    def __init__(self, store: Path, path: Path, args: list, env: dict, log_dir: Path = None):
        self.store = store
        self.log_dir = log_dir
        self.path = path
        self.args = args
        self.env = env
        self.proc = None
        self.stderr_path = None
        self.stdout_path = None

    def start(self):
        self.path.mkdir(parents=True, exist_ok=True)
        # Daemon output lives beside the test's store, so it goes away with the work directory.
        log_dir = str(self.log_dir) if self.log_dir else None
        fd, self.stderr_path = tempfile.mkstemp(prefix="daemon-", suffix=".err", dir=log_dir)
        os.close(fd)
        fd, self.stdout_path = tempfile.mkstemp(prefix="daemon-", suffix=".out", dir=log_dir)
        os.close(fd)
        cmd = [stashfs_bin(), "--store", str(self.store), "mount", "--foreground", *self.args,
               str(self.path)]
        self.proc = subprocess.Popen(cmd, stdout=open(self.stdout_path, "w"),
                                     stderr=open(self.stderr_path, "w"), env=self.env)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mounted(self.path):
            if self.proc.poll() is not None:
                raise AssertionError(f"stashfs mount exited {self.proc.returncode}: {self.stderr()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"stashfs mount did not come up: {self.stderr()}")
            time.sleep(0.02)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return Path(self.stderr_path).read_text(errors="replace") if self.stderr_path else ""

    def stdout(self) -> str:
        return Path(self.stdout_path).read_text(errors="replace") if self.stdout_path else ""

    def umount(self, check=True) -> subprocess.CompletedProcess:
        """`stashfs umount`: returns once the daemon has committed and exited."""
        res = run_stashfs(self.store, "umount", str(self.path), check=False, env=self.env)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        if check:
            assert res.returncode == 0, f"umount failed: {res.stderr}{self.stderr()}"
            assert self.proc.returncode == 0, f"daemon exited {self.proc.returncode}: {self.stderr()}"
        self.check_clean()
        return res

    def kill(self):
        """SIGKILL the daemon (a crash) and clean up the dead mountpoint."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
        subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)

    def check_clean(self):
        err = self.stderr()
        for marker in BAD_MARKERS:
            assert marker not in err, f"daemon reported '{marker}':\n{err}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def run_stashfs(store, *args, check=True, env=None, input=None, timeout=300):
    cmd = [stashfs_bin()]
    if store is not None:
        cmd += ["--store", str(store)]
    cmd += list(args)
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, input=input, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {res.returncode}: {res.stderr}{res.stdout}")
    return res


def stats(store) -> dict:
    return json.loads(run_stashfs(store, "stats", "--json").stdout)


@pytest.fixture
def workdir(tmp_path_factory):
    # Not under /tmp's tmpfs if there is one: the store should sit on a real disk like in use.
    base = Path(os.environ.get("STASHFS_E2E_TMP", tempfile.gettempdir()))
    d = Path(tempfile.mkdtemp(prefix="stashfs-e2e-", dir=base))
    yield d
    for m in d.glob("**/mnt*"):
        if is_mounted(m):
            subprocess.run(["umount", "-l", str(m)], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def store(workdir) -> Path:
    return workdir / "store"


@pytest.fixture
def mount_factory(store, workdir):
    """mount_factory(volume="v", args=[...], name="mnt") -> started Mount. Unmounted at teardown."""
    mounts = []

    def factory(volume="v", args=None, name="mnt", store_dir=None, env=None):
        extra = list(args or [])
        if volume is not None and not any(a in ("--key", "--volume") for a in extra):
            extra = ["--volume", volume] + extra
        m = Mount(store_dir or store, workdir / name, extra, env or os.environ.copy(), workdir)
        mounts.append(m)
        return m.start()

    yield factory
    for m in mounts:
        if m.alive():
            if is_mounted(m.path):
                m.umount(check=False)
            else:
                m.proc.kill()
        m.check_clean()


@pytest.fixture
def target(workdir, mount_factory):
    """A directory to test filesystem behaviour in: a stashfs mount (or native with NATIVE=1)."""
    if native_mode():
        d = workdir / "native"
        d.mkdir()
        yield d
    else:
        m = mount_factory()
        yield m.path
