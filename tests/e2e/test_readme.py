"""README.md's first set-up command, run as written, in a fresh copy of the repository.

A newcomer's first step is `packaging/setup.sh mount ~/.cache/pip`; it once failed at once on a
fresh machine and nothing noticed. This test takes the command from README.md itself (so the
README cannot drift), runs it with bash in a fresh copy of the tracked files and a fresh HOME,
and checks the mount: write, `stashfs umount`, remount, read back.

It runs as root, so setup.sh installs into /usr/local and the store is /var/lib/stashfs: both are
a tmpfs in a private mount namespace here, so the machine's own are never touched. The install
and build steps are the script's own; the Debian packages are already installed by the test
command that runs this suite.
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

SCRIPT_TIMEOUT = 1500  # a build from scratch on 2 cores, shared with the other suites


def readme_setup_blocks():
    """The fenced sh blocks of README.md's 'Set up' section, in order."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", section, re.S)]


def fresh_copy(dest: Path):
    """The tracked files as they are in the work tree (a clone would miss uncommitted edits)."""
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], check=True,
                           capture_output=True).stdout.split(b"\0")
    for name in filter(None, files):
        src = REPO / os.fsdecode(name)
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the work tree
        out = dest / os.fsdecode(name)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out, follow_symlinks=False)


def test_first_readme_command_mounts_a_cache_that_persists(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("this suite runs as root (CI does): setup.sh's root path is what it checks")
    blocks = readme_setup_blocks()
    assert len(blocks) == 2, f"README's Set up section should give exactly two commands: {blocks}"
    first = blocks[0]
    assert "\n" not in first and first.startswith("packaging/setup.sh mount "), first

    clone, home = tmp_path / "clone", tmp_path / "home"
    fresh_copy(clone)
    home.mkdir()
    made_store_dir = not os.path.exists("/var/lib/stashfs")
    # The README's command twice, with a write before an unmount and a read after the remount.
    script = f"""
set -eu
mount -t tmpfs tmpfs /usr/local
mkdir -p /var/lib/stashfs && mount -t tmpfs -o mode=0700 tmpfs /var/lib/stashfs
cd {clone}
{first}
mountpoint -q ~/.cache/pip
echo "written before umount" > ~/.cache/pip/greeting
stashfs umount ~/.cache/pip
! mountpoint -q ~/.cache/pip
test ! -e ~/.cache/pip/greeting
{first}
cat ~/.cache/pip/greeting
stashfs status ~/.cache/pip
stashfs umount ~/.cache/pip
"""
    env = {"HOME": str(home), "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "LANG": "C.UTF-8", "TERM": "dumb"}
    try:
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
                           env=env, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT)
    finally:
        if made_store_dir:
            try:
                os.rmdir("/var/lib/stashfs")
            except OSError:
                pass
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout[-4000:]}\nstderr:\n{r.stderr[-4000:]}"
    assert "written before umount" in r.stdout, r.stdout
    # Volume `pip`, named after the directory, as README.md says.
    assert re.search(r"^volume: +pip$", r.stdout, re.M), r.stdout


@pytest.mark.parametrize("name,volume", [
    ("with space", "with-space"), ("-lead", "lead"), ("ünï", "n--"), ("...", "default"),
])
def test_setup_mount_names_any_directory(tmp_path, name, volume):
    """The volume name setup.sh derives from a directory name, without building anything."""
    script = (REPO / "packaging" / "setup.sh").read_text()
    # The derivation is one pipeline in the script; run that line alone on the name.
    line = next(l for l in script.splitlines() if "volume=$(printf %s" in l)
    r = subprocess.run(["bash", "-c", f'set -euo pipefail; dir="$1"\n{line}\n'
                        '[ -n "$volume" ] || volume=default\necho "$volume"', "-", str(tmp_path / name)],
                       capture_output=True, text=True, env={"LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == volume


def readme_block_after(heading: str) -> str:
    """The first fenced sh block under a README heading."""
    text = (REPO / "README.md").read_text()
    section = text.split(heading + "\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def test_keeping_a_store_in_shape_block_runs_as_written(tmp_path):
    """README's maintenance recipe, line by line as written, against a store holding pip-old."""
    from conftest import stashfs_bin
    block = readme_block_after("## Keeping a store in shape")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "stashfs").symlink_to(stashfs_bin())
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    mnt.mkdir()
    env = {"PATH": f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path),
           "STASHFS_STORE": str(store), "LANG": "C.UTF-8"}
    setup = f"""set -eu
stashfs mount --key pip-old {mnt}
head -c 3000000 /dev/urandom > {mnt}/wheel.whl
stashfs umount {mnt}
"""
    r = subprocess.run(["bash", "-c", setup + "set -x\n" + block + "\nstashfs ls"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    config = (store / "config").read_text()
    assert re.search(r"max_size\s*=\s*50G", config) and re.search(r"max_age\s*=\s*14d", config), config
    assert "removed snapshot 'pip-old'" in r.stdout and "gc freed 2.9 MiB" in r.stdout, r.stdout
    listing = r.stdout.split("TYPE ", 1)[1]  # the closing `stashfs ls`
    assert "pip-old" not in listing, r.stdout


@pytest.fixture(scope="module")
def local_index(tmp_path_factory):
    """Wheels built here and served on 127.0.0.1: the README's `pip install -r` needs an index."""
    from tools_fixtures import build_local_index, serve_index
    index = build_local_index(tmp_path_factory.mktemp("index"))
    with serve_index(index.root) as srv:
        yield index, srv


@pytest.mark.parametrize("heading,saved", [
    ("### Named volumes (developer machines)", r"^volume +pip "),
    ("### Cache keys (CI)", r"^snapshot +pip-[0-9a-f]{16} "),
])
def test_pip_recipe_runs_as_written(tmp_path, local_index, heading, saved):
    """A 'Using it' recipe as written: mount, pip install -r requirements.txt, umount; saved."""
    from conftest import stashfs_bin
    from tools_fixtures import make_venv, pip_env
    index, srv = local_index
    block = readme_block_after(heading)
    home, work = tmp_path / "home", tmp_path / "work"
    for d in (home / ".cache" / "pip", home / ".npm", work):
        d.mkdir(parents=True)
    (work / "requirements.txt").write_text("\n".join(index.requirements) + "\n")
    venv = tmp_path / "venv"
    make_venv(venv)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "stashfs").symlink_to(stashfs_bin())
    env = pip_env(f"{srv.url}/simple/", None)
    del env["PIP_NO_CACHE_DIR"]  # pip's cache is ~/.cache/pip: the mount under test
    env.update({"HOME": str(home), "STASHFS_STORE": str(tmp_path / "store"),
                "PATH": f"{venv}/bin:{bindir}:{env['PATH']}"})
    # A recipe may leave other mounts up (the volumes one mounts ~/.npm too): unmount them after.
    script = "set -e\n" + block + "\nstashfs ls\n"
    try:
        r = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True,
                           text=True, timeout=300)
    finally:
        for d in (home / ".cache" / "pip", home / ".npm"):
            if os.path.ismount(d):
                subprocess.run([stashfs_bin(), "umount", str(d)], env=env, timeout=120)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    assert re.search(saved, r.stdout, re.M), r.stdout
    assert "Successfully installed" in r.stdout, r.stdout
    # What pip cached lives in the store: the saved tree is not empty.
    assert not re.search(saved + r"+0 B", r.stdout, re.M), r.stdout


def test_plain_shell_apt_recipe_runs_as_written(tmp_path):
    """The 'Plain shell' recipe: apt downloads (as _apt) into an --allow-other key mount.

    It mounts at /var/cache/apt/archives, so it runs in a private mount namespace with a tmpfs
    over /var/cache/apt: the machine's own apt cache is never touched. `sl` is small, needs only
    libc and ncurses, and is not installed here, so apt really downloads it.
    """
    from conftest import stashfs_bin
    if os.geteuid() != 0:
        pytest.fail("this suite runs as root (CI does): apt-get needs it")
    block = readme_block_after("### Plain shell")
    work, bindir = tmp_path / "work", tmp_path / "bin"
    work.mkdir()
    bindir.mkdir()
    (bindir / "stashfs").symlink_to(stashfs_bin())
    (work / "packages.txt").write_text("sl\n")
    env = {"PATH": f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path),
           "STASHFS_STORE": str(tmp_path / "store"), "LANG": "C.UTF-8",
           "DEBIAN_FRONTEND": "noninteractive"}
    # The recipe runs in a subshell, so its EXIT trap (the umount) fires before the checks.
    script = f"""set -eu
mount -t tmpfs tmpfs /var/cache/apt
( {block} )
stashfs ls
"""
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
                       cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    assert re.search(r"^snapshot +apt-[0-9a-f]{16} ", r.stdout, re.M), r.stdout
    assert re.search(r"saved key 'apt-[0-9a-f]{16}' \([1-9]", r.stdout + r.stderr), r.stdout + r.stderr


# Every fenced sh block in README.md, by the heading it sits under: the test here that runs it,
# or why no test can. A new block fails test_every_readme_sh_block_is_accounted_for until it is
# added here, so the README cannot grow a recipe that nothing runs.
README_SH_BLOCKS = {
    "## Set up (fresh Debian machine)": [
        "test_first_readme_command_mounts_a_cache_that_persists",
        "test_ci_runs_the_readme_test_command",
    ],
    "### Named volumes (developer machines)": ["test_pip_recipe_runs_as_written"],
    "### Cache keys (CI)": ["test_pip_recipe_runs_as_written"],
    "### Docker": ["not run: it pulls python:3.12 from a registry, which this machine cannot "
                   "reach; the container tests of the packaging work cover bind-mounting a mount"],
    "### Plain shell": ["test_plain_shell_apt_recipe_runs_as_written"],
    "## Keeping a store in shape": ["test_keeping_a_store_in_shape_block_runs_as_written"],
}


def readme_sh_blocks_by_heading():
    """[(heading, block)] for every fenced sh block, the heading being the nearest one above."""
    heading, out, in_block, lines = None, [], False, []
    for line in (REPO / "README.md").read_text().splitlines():
        if in_block:
            if line.startswith("```"):
                if in_block is True:
                    out.append((heading, "\n".join(lines)))
                in_block = False
            else:
                lines.append(line)
        elif line.startswith("```sh"):
            in_block, lines = True, []
        elif line.startswith("```"):
            in_block, lines = "other", []  # another language (yaml): skip to its end
        elif re.match(r"#{1,4} ", line):
            heading = line
    return out


def test_every_readme_sh_block_is_accounted_for():
    found = readme_sh_blocks_by_heading()
    assert found, "README.md has no sh blocks: the parser is wrong"
    counts = {}
    for heading, _ in found:
        counts[heading] = counts.get(heading, 0) + 1
    missing = sorted(set(counts) - set(README_SH_BLOCKS))
    assert not missing, f"README sh blocks that no test runs (add a test and list it here): {missing}"
    for heading, runners in README_SH_BLOCKS.items():
        assert heading in counts, f"README no longer has '{heading}': update README_SH_BLOCKS"
        assert len(runners) == counts[heading], (heading, counts[heading], runners)
        for runner in runners:
            if runner.startswith("test_"):
                assert callable(globals().get(runner)), f"{runner} is listed but does not exist"


def test_ci_runs_the_readme_test_command():
    """README's second command is what CI runs: .ci/run execs it and nothing else."""
    second = readme_setup_blocks()[1]
    assert second == "packaging/setup.sh test", second
    ci = [l for l in (REPO / ".ci" / "run").read_text().splitlines()
          if l.strip() and not l.startswith("#") and not l.startswith("set ") and not l.startswith("cd ")]
    assert ci == ["exec bash " + second], ci


def test_commands_table_matches_the_cli():
    """Each row of README's Commands table names a real subcommand, and each flag it shows is one
    that subcommand's --help lists (or a global option)."""
    from conftest import stashfs_bin
    text = (REPO / "README.md").read_text()
    table = text.split("## Commands\n", 1)[1].split("\n## ", 1)[0]
    rows = [l for l in table.splitlines() if l.startswith("| `stashfs ")]
    assert len(rows) >= 10, rows
    top = subprocess.run([stashfs_bin(), "--help"], capture_output=True, text=True).stdout
    seen = set()
    for row in rows:
        commands = re.findall(r"`stashfs ([a-z]+)", row)
        flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-o)(?![\w-])", row))
        helps = {}
        for cmd in commands:
            r = subprocess.run([stashfs_bin(), cmd, "--help"], capture_output=True, text=True)
            assert r.returncode == 0, f"README lists `stashfs {cmd}`: {r.stderr}"
            helps[cmd] = r.stdout
            seen.add(cmd)
        for flag in flags:
            assert any(re.search(rf"(^|[\s,]){re.escape(flag)}\b", h, re.M) for h in helps.values()) \
                or re.search(rf"\s{re.escape(flag)}\b", top), f"{flag} in `{row}` is not in --help"
    listed = set(re.findall(r"^  ([a-z]+) {2,}", top.split("Subcommands:", 1)[1], re.M))
    assert listed == seen, f"subcommands missing from README's table: {sorted(listed - seen)}; " \
                           f"not in the CLI: {sorted(seen - listed)}"


def test_setup_mount_tells_a_normal_user_what_fuse_access_is_missing():
    """As a normal user without access to /dev/fuse, the first command says so in one line,
    before it installs or builds anything, and exits 1.

    /dev/fuse is replaced by a root-only node in a private mount namespace, so the test does not
    depend on how this machine's /dev/fuse happens to be set up.
    """
    if os.geteuid() != 0:
        pytest.fail("this suite runs as root (CI does): it drops to uid 65534 itself")
    import tempfile
    # Not pytest's tmp_path: its parents are 0700 root, and uid 65534 must reach the copy.
    with tempfile.TemporaryDirectory(prefix="stashfs-readme-") as top:
        os.chmod(top, 0o755)
        check_normal_user_line(Path(top))


def check_normal_user_line(tmp_path: Path):
    clone = tmp_path / "clone"
    fresh_copy(clone)
    node = tmp_path / "fuse"
    script = f"""set -eu
mknod -m 0600 {node} c 10 229
mount --bind {node} /dev/fuse
cd {clone}
exec setpriv --reuid 65534 --regid 65534 --clear-groups env HOME={tmp_path}/home \\
  bash packaging/setup.sh mount {tmp_path}/home/.cache/pip
"""
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
                       capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
    assert r.returncode == 1, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "/dev/fuse is not readable and writable by nobody" in lines[0], lines[0]
    assert "run as root" in lines[0], lines[0]
    assert not (clone / "build").exists() and not (tmp_path / "home").exists()


def test_every_command_takes_store_after_the_subcommand_too(tmp_path):
    """README: 'Every command takes --store DIR'. Users write it after the subcommand as often
    as before it; both must reach the same store (and no other: STASHFS_STORE points elsewhere)."""
    from conftest import stashfs_bin
    store, mnt, other = tmp_path / "store", tmp_path / "mnt", tmp_path / "elsewhere"
    mnt.mkdir()
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "STASHFS_STORE": str(other)}
    S = ["--store", str(store)]

    def run(*args):
        r = subprocess.run([stashfs_bin(), *args], env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, f"stashfs {' '.join(args)}: exit {r.returncode}: {r.stderr}"
        return r.stdout + r.stderr

    run("mount", *S, "--volume", "v", str(mnt))
    (mnt / "f").write_text("through --store after the subcommand\n")
    run("save", str(mnt), *S, "--key", "k1")
    assert "volume:" in run("status", str(mnt), *S)
    run("umount", str(mnt), *S)
    assert re.search(r"^snapshot +k1 ", run("ls", *S), re.M)
    assert "store:" in run("stats", *S)
    run("config", *S, "max_age", "30d")
    assert "30d" in run("config", *S, "max_age")
    run("export", "k1", *S, "-o", str(tmp_path / "k1.stash"))
    run("import", str(tmp_path / "k1.stash"), *S, "--key", "k2")
    run("rm", "k1", *S)
    run("gc", *S, "--dry-run")
    run("prune", *S, "--dry-run")
    run("fsck", *S)
    listing = run("ls", "--store", str(store))
    assert "k2" in listing and "k1 " not in listing, listing
    assert not other.exists(), "a command used STASHFS_STORE although --store was given"
