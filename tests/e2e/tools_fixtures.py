"""Drive real package managers (pip, npm, apt, tar) against a directory.

Importable by the end-to-end tests and by the benchmark, so nothing here depends on pytest. Every
helper works only in the directories it is given, and raises `ToolError` (an AssertionError, so
pytest shows it as a test failure) carrying the command line and the tail of its output when a
tool fails or does not behave as expected.

What is here:
- `build_local_index()` makes tiny pure-Python projects, builds their wheels with Debian's
  setuptools and lays them out as a PEP 503 "simple" index; `IndexServer` / `serve_index()`
  serve it on 127.0.0.1 with `Cache-Control: max-age=600` (pip caches HTTP responses only then);
  `pip_env()`, `make_venv()`, `pip_install()` and `check_python_packages()` use it.
- npm: `NPM_PACKAGES` (small, pinned, pure-JS packages from registry.npmjs.org),
  `write_npm_project()`, `generate_npm_lockfile()`, `npm()`, `check_node_packages()`.
- tar: `build_tree_tarball()` (tens of thousands of real files from /usr), `tree_manifest()`,
  `compare_manifests()`, `diff_trees()`.
- apt: `apt_expected_debs()`, `apt_download()`, `check_debs()`.

Only Debian's /usr/bin/python3 is used; the pyenv interpreter and the machine-wide PIP_* settings
(PIP_FIND_LINKS=/opt/wheels and friends) are removed from every child environment.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import re
import shutil
import stat
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

SYSTEM_PYTHON = "/usr/bin/python3"
DEFAULT_TIMEOUT = 600


class ToolError(AssertionError):
    """A real tool failed, or its result was not what it should be."""


# --------------------------------------------------------------------------------------------
# Running commands
# --------------------------------------------------------------------------------------------

def _tail(text: Optional[str], limit: int = 4000) -> str:
    text = text or ""
    return text if len(text) <= limit else "...\n" + text[-limit:]


def run(cmd: Sequence, *, cwd=None, env=None, timeout: float = DEFAULT_TIMEOUT, check: bool = True,
        input: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run `cmd` capturing text output; raise ToolError with its output if it fails and `check`."""
    cmd = [str(c) for c in cmd]
    try:
        res = subprocess.run(cmd, cwd=None if cwd is None else str(cwd), env=env, input=input,
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise ToolError(f"timed out after {timeout}s: {' '.join(cmd)}\nstdout:\n"
                        f"{_tail(e.stdout if isinstance(e.stdout, str) else '')}\nstderr:\n"
                        f"{_tail(e.stderr if isinstance(e.stderr, str) else '')}") from None
    if check and res.returncode != 0:
        raise ToolError(f"exit {res.returncode}: {' '.join(cmd)}\n(cwd={cwd})\nstdout:\n"
                        f"{_tail(res.stdout)}\nstderr:\n{_tail(res.stderr)}")
    return res


def clean_env(extra: Optional[dict] = None) -> dict:
    """os.environ without Python/pip/npm settings inherited from the machine, and without pyenv.

    Debian's /usr/bin/python3 is what runs; PYTHONDONTWRITEBYTECODE is dropped too, so imports write
    __pycache__ like they do for users.
    """
    env = dict(os.environ)
    for key in list(env):
        if key.startswith(("PIP_", "PYTHON", "PYENV", "VIRTUAL_ENV", "CONDA", "npm_config_",
                           "NPM_CONFIG_", "SOURCE_DATE_EPOCH")):
            del env[key]
    path = [p for p in env.get("PATH", "").split(":") if p and ".pyenv" not in p]
    for p in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        if p not in path:
            path.append(p)
    env["PATH"] = ":".join(path)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("LC_ALL", "C.UTF-8")
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


def count_files(root: Path) -> int:
    """Regular files below `root` (0 if it does not exist)."""
    n = 0
    for _dirpath, _dirs, files in os.walk(root):
        n += len(files)
    return n


def tree_bytes(root: Path) -> int:
    """Sum of the sizes of the regular files below `root`."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


# --------------------------------------------------------------------------------------------
# A local Python package index
# --------------------------------------------------------------------------------------------

def _blob(size: int = 192 * 1024) -> bytes:
    """Deterministic incompressible bytes: package data that zstd cannot shrink."""
    return hashlib.shake_256(b"stashfs e2e stashdemo_c blob").digest(size)


def _table_source(n: int = 2000) -> str:
    lines = ["TABLE = {"] + [f'    "key{i:05d}": {i * 7919 % 10007},' for i in range(n)] + ["}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PyProject:
    """One tiny pure-Python project, written out as a pyproject.toml setuptools project."""
    name: str                      # distribution and import name, e.g. "stashdemo_a"
    version: str
    files: Dict[str, object]       # path relative to the project dir -> str or bytes
    dependencies: Tuple[str, ...] = ()
    packages: Tuple[str, ...] = ()
    py_modules: Tuple[str, ...] = ()
    package_data: Dict[str, Tuple[str, ...]] = field(default_factory=dict)
    scripts: Dict[str, str] = field(default_factory=dict)

    def pyproject_toml(self) -> str:
        def arr(items):
            return "[" + ", ".join(json.dumps(i) for i in items) + "]"
        out = ['[build-system]', 'requires = ["setuptools>=61"]',
               'build-backend = "setuptools.build_meta"', '',
               '[project]', f'name = "{self.name}"', f'version = "{self.version}"',
               f'description = "stashfs end-to-end test project {self.name}"',
               'requires-python = ">=3.7"', f'dependencies = {arr(self.dependencies)}', '']
        if self.scripts:
            out += ['[project.scripts]'] + [f'{k} = "{v}"' for k, v in self.scripts.items()] + ['']
        out += ['[tool.setuptools]', 'include-package-data = false']
        if self.packages:
            out.append(f'packages = {arr(self.packages)}')
        if self.py_modules:
            out.append(f'py-modules = {arr(self.py_modules)}')
        out.append('')
        if self.package_data:
            out += ['[tool.setuptools.package-data]']
            out += [f'{k} = {arr(v)}' for k, v in self.package_data.items()] + ['']
        return "\n".join(out)

    @property
    def normalized(self) -> str:
        return normalize_name(self.name)

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


def normalize_name(name: str) -> str:
    """PEP 503 project name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


PY_PROJECTS: Tuple[PyProject, ...] = (
    PyProject(
        name="stashdemo_a", version="1.0.0", dependencies=("stashdemo_b==1.2.0",),
        packages=("stashdemo_a",),
        files={
            "stashdemo_a/__init__.py": (
                '"""stashfs e2e: depends on stashdemo_b, which depends on stashdemo_c."""\n'
                'from stashdemo_a.core import greet\n\n__version__ = "1.0.0"\n'),
            "stashdemo_a/core.py": (
                "import stashdemo_b\nimport stashdemo_c\n\n\n"
                "def greet(name):\n"
                "    return stashdemo_b.shout(name) + ' ' + '-'.join(stashdemo_c.words()[:3])\n"),
        }),
    PyProject(
        name="stashdemo_b", version="1.2.0", dependencies=("stashdemo_c==0.3.1",),
        py_modules=("stashdemo_b",),
        files={
            "stashdemo_b.py": (
                '"""stashfs e2e: a single-module distribution."""\nimport stashdemo_c\n\n'
                '__version__ = "1.2.0"\n\n\n'
                "def shout(name):\n"
                "    greeting = stashdemo_c.config()['greeting']\n"
                "    return '%s, %s!' % (greeting.upper(), name.upper())\n"),
        }),
    PyProject(
        name="stashdemo_c", version="0.3.1", packages=("stashdemo_c",),
        package_data={"stashdemo_c": ("data/*.txt", "data/*.json", "data/*.bin")},
        files={
            "stashdemo_c/__init__.py": (
                '"""stashfs e2e: a package with data files read through importlib.resources."""\n'
                "import hashlib\nimport json\nfrom importlib import resources\n\n"
                '__version__ = "0.3.1"\n\n\n'
                "def _data(name):\n"
                "    return resources.files(__name__).joinpath('data').joinpath(name)\n\n\n"
                "def words():\n"
                "    return _data('words.txt').read_text(encoding='utf-8').split()\n\n\n"
                "def config():\n"
                "    return json.loads(_data('config.json').read_text(encoding='utf-8'))\n\n\n"
                "def blob_sha256():\n"
                "    return hashlib.sha256(_data('blob.bin').read_bytes()).hexdigest()\n"),
            "stashdemo_c/data/words.txt": "stash chunk volume snapshot store\n",
            "stashdemo_c/data/config.json": '{"greeting": "hello", "answer": 42}\n',
            "stashdemo_c/data/blob.bin": _blob(),
        }),
    PyProject(
        name="stashdemo_d", version="2.0.0", packages=("stashdemo_d",),
        scripts={"stashdemo-d": "stashdemo_d:main"},
        files={
            "stashdemo_d/__init__.py": (
                '"""stashfs e2e: a console script and a larger module."""\n'
                "import json\nimport sys\n\nfrom stashdemo_d.table import TABLE\n\n"
                '__version__ = "2.0.0"\n\n\n'
                "def main():\n"
                "    print(json.dumps({'name': 'stashdemo_d', 'version': __version__,\n"
                "                      'prefix': sys.prefix, 'table': len(TABLE),\n"
                "                      'checksum': sum(TABLE.values())}))\n"),
            "stashdemo_d/table.py": _table_source(),
        }),
)

# What a venv with all of PY_PROJECTS installed must print for PY_CHECK_SCRIPT.
PY_REQUIREMENTS: Tuple[str, ...] = ("stashdemo_a==1.0.0", "stashdemo_d==2.0.0")
PY_CHECK_SCRIPT = r"""
import json, sys
import stashdemo_a, stashdemo_b, stashdemo_c, stashdemo_d
mods = (stashdemo_a, stashdemo_b, stashdemo_c, stashdemo_d)
print(json.dumps({
    "greet": stashdemo_a.greet("fuse"),
    "shout": stashdemo_b.shout("volume"),
    "words": stashdemo_c.words(),
    "config": stashdemo_c.config(),
    "blob": stashdemo_c.blob_sha256(),
    "table": len(stashdemo_d.TABLE),
    "versions": [m.__version__ for m in mods],
    "files": [m.__file__ for m in mods],
    "prefix": sys.prefix,
}))
"""
PY_EXPECTED = {
    "greet": "HELLO, FUSE! stash-chunk-volume",
    "shout": "HELLO, VOLUME!",
    "words": ["stash", "chunk", "volume", "snapshot", "store"],
    "config": {"greeting": "hello", "answer": 42},
    "blob": hashlib.sha256(_blob()).hexdigest(),
    "table": 2000,
    "versions": ["1.0.0", "1.2.0", "0.3.1", "2.0.0"],
}
PY_SCRIPT_EXPECTED = {"name": "stashdemo_d", "version": "2.0.0", "table": 2000,
                      "checksum": sum(i * 7919 % 10007 for i in range(2000))}


@dataclass
class LocalIndex:
    """A PEP 503 index on disk: root/simple/<project>/index.html and root/packages/*.whl."""
    root: Path
    wheels: Dict[str, Path]        # distribution name -> wheel file
    projects: Tuple[PyProject, ...]

    @property
    def simple(self) -> Path:
        return self.root / "simple"

    @property
    def requirements(self) -> List[str]:
        return list(PY_REQUIREMENTS)


def write_py_project(project: PyProject, dest: Path) -> Path:
    """Write `project`'s source tree into dest/<name> and return that directory."""
    pdir = dest / project.name
    if pdir.exists():
        shutil.rmtree(pdir)
    pdir.mkdir(parents=True)
    (pdir / "pyproject.toml").write_text(project.pyproject_toml())
    for rel, content in project.files.items():
        p = pdir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    return pdir


def build_wheels(projects: Iterable[PyProject], src_dir: Path, out_dir: Path) -> Dict[str, Path]:
    """Build one wheel per project with Debian's pip/setuptools/wheel, offline, in one pip run."""
    projects = list(projects)
    out_dir.mkdir(parents=True, exist_ok=True)
    dirs = [write_py_project(p, src_dir) for p in projects]
    env = clean_env({"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1",
                     "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1",
                     "PIP_NO_INPUT": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    run([SYSTEM_PYTHON, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", out_dir, *dirs], env=env, cwd=src_dir)
    wheels = {}
    for p in projects:
        found = sorted(out_dir.glob(f"{p.name}-{p.version}-*.whl"))
        if len(found) != 1:
            raise ToolError(f"expected one wheel for {p.name} in {out_dir}, found {found}")
        wheels[p.name] = found[0]
    return wheels


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_local_index(dest: Path, projects: Sequence[PyProject] = PY_PROJECTS) -> LocalIndex:
    """Build wheels for `projects` and write a PEP 503 simple index below dest/index."""
    dest = Path(dest)
    root = dest / "index"
    if root.exists():
        shutil.rmtree(root)
    wheels = build_wheels(projects, dest / "src", root / "packages")
    simple = root / "simple"
    simple.mkdir(parents=True)
    links = []
    for p in projects:
        whl = wheels[p.name]
        pdir = simple / p.normalized
        pdir.mkdir()
        (pdir / "index.html").write_text(
            "<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.0\">"
            f"<title>Links for {p.normalized}</title></head><body>\n"
            f"<h1>Links for {p.normalized}</h1>\n"
            f"<a href=\"../../packages/{whl.name}#sha256={_sha256_file(whl)}\" "
            f"data-requires-python=\"&gt;=3.7\">{whl.name}</a><br/>\n</body></html>\n")
        links.append(f"<a href=\"{p.normalized}/\">{p.normalized}</a><br/>")
    (simple / "index.html").write_text(
        "<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.0\">"
        "<title>Simple index</title></head><body>\n" + "\n".join(links) + "\n</body></html>\n")
    return LocalIndex(root=root, wheels=wheels, projects=tuple(projects))


class _IndexHandler(http.server.SimpleHTTPRequestHandler):
    server: "IndexServer"

    def send_head(self):
        if any(self.path.startswith(p) for p in self.server.deny):
            self.send_error(404, "denied by the test")
            return None
        return super().send_head()

    def end_headers(self):
        self.send_header("Cache-Control", f"max-age={self.server.max_age}")
        super().end_headers()

    def log_request(self, code="-", size="-"):
        try:
            code = int(code)
        except (TypeError, ValueError):
            code = 0
        self.server.record(self.command, self.path, code)

    def log_message(self, format, *args):  # noqa: A002 - keep the test output quiet
        pass


class IndexServer(http.server.ThreadingHTTPServer):
    """Serves a directory on 127.0.0.1:<ephemeral> with Cache-Control: max-age and a request log.

    Use as a context manager (`with IndexServer(root) as srv:`) or via serve_index().
    `requests` is a list of (method, path, status) in arrival order. Paths starting with a prefix
    in `deny` (settable at any time) get 404: `srv.deny = ("/packages/",)` keeps the index pages
    and makes every wheel download fail, so a later install proves the wheels came from a cache.
    (The server must stay the same: pip's cache keys are URLs, port included.)
    """
    daemon_threads = True

    def __init__(self, root: Path, max_age: int = 600, deny: Sequence[str] = ()):
        self.root = Path(root)
        self.max_age = max_age
        self.deny: Tuple[str, ...] = tuple(deny)
        self.requests: List[Tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        super().__init__(("127.0.0.1", 0), _IndexHandler)

    def finish_request(self, request, client_address):
        self.RequestHandlerClass(request, client_address, self, directory=str(self.root))

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def index_url(self) -> str:
        return self.url + "/simple"

    def record(self, method: str, path: str, code: int):
        with self._lock:
            self.requests.append((method, path, code))

    def take_requests(self) -> List[Tuple[str, str, int]]:
        """Return the requests seen so far and forget them."""
        with self._lock:
            out, self.requests = self.requests, []
        return out

    def start(self) -> "IndexServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"index-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self.server_close()

    def __enter__(self) -> "IndexServer":
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@contextlib.contextmanager
def serve_index(root: Path, max_age: int = 600, deny: Sequence[str] = ()) -> Iterator[IndexServer]:
    """Serve `root` (a LocalIndex.root) over HTTP on 127.0.0.1 for the duration of the block."""
    srv = IndexServer(root, max_age=max_age, deny=deny).start()
    try:
        yield srv
    finally:
        srv.stop()


def pip_env(index_url: Optional[str], cache_dir: Optional[Path],
            extra: Optional[dict] = None) -> dict:
    """Environment for pip: our index only, our cache dir, no machine-wide pip settings.

    The machine sets PIP_FIND_LINKS=/opt/wheels, PIP_CERT and a /etc/pip.conf; all are ignored
    (PIP_CONFIG_FILE=/dev/null makes pip read no configuration file). `index_url=None` gives
    `--no-index`; `cache_dir=None` disables pip's cache.
    """
    env = clean_env({"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                     "PIP_NO_INPUT": "1", "PIP_PROGRESS_BAR": "off", "PIP_DEFAULT_TIMEOUT": "30"})
    if index_url is None:
        env["PIP_NO_INDEX"] = "1"
    else:
        env["PIP_INDEX_URL"] = index_url
        # Besides allowing plain http, a trusted host is what makes pip cache http:// responses:
        # pip mounts its caching adapter only on https:// and on trusted hosts.
        env["PIP_TRUSTED_HOST"] = "127.0.0.1"
    if cache_dir is None:
        env["PIP_NO_CACHE_DIR"] = "1"
    else:
        env["PIP_CACHE_DIR"] = str(cache_dir)
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


def venv_python(venv: Path) -> Path:
    return Path(venv) / "bin" / "python"


def make_venv(venv: Path, env: Optional[dict] = None, python: str = SYSTEM_PYTHON,
              timeout: float = DEFAULT_TIMEOUT) -> Path:
    """`python3 -m venv` (with pip, from Debian's bundled wheels) and return the venv's python."""
    env = env or clean_env({"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    run([python, "-m", "venv", venv], env=env, timeout=timeout)
    py = venv_python(venv)
    if not py.exists():
        raise ToolError(f"venv {venv} has no bin/python")
    return py


def pip_install(venv: Path, requirements: Sequence[str], env: dict, *args: str,
                timeout: float = DEFAULT_TIMEOUT) -> subprocess.CompletedProcess:
    """`<venv>/bin/python -m pip install [args] requirements` with `env` (see pip_env)."""
    return run([venv_python(venv), "-m", "pip", "install", *args, *requirements], env=env,
               timeout=timeout)


def check_python_packages(venv: Path, env: Optional[dict] = None) -> dict:
    """Import the stashdemo packages with the venv's python and check what they compute.

    Also checks that every module came from inside the venv. Returns the script's JSON output.
    """
    venv = Path(venv)
    res = run([venv_python(venv), "-c", PY_CHECK_SCRIPT], env=env or clean_env(), cwd=venv)
    try:
        out = json.loads(res.stdout)
    except ValueError:
        raise ToolError(f"import check printed no JSON: {res.stdout!r} {res.stderr!r}") from None
    for key, want in PY_EXPECTED.items():
        if out.get(key) != want:
            raise ToolError(f"venv {venv}: {key} = {out.get(key)!r}, expected {want!r}")
    for f in out["files"]:
        if not os.path.realpath(f).startswith(os.path.realpath(venv) + os.sep):
            raise ToolError(f"module imported from {f}, outside venv {venv}")
    return out


def check_console_script(venv: Path, env: Optional[dict] = None) -> dict:
    """Run the `stashdemo-d` console script pip generated in the venv's bin directory."""
    venv = Path(venv)
    res = run([venv / "bin" / "stashdemo-d"], env=env or clean_env(), cwd=venv)
    out = json.loads(res.stdout)
    for key, want in PY_SCRIPT_EXPECTED.items():
        if out.get(key) != want:
            raise ToolError(f"stashdemo-d: {key} = {out.get(key)!r}, expected {want!r}")
    if os.path.realpath(out["prefix"]) != os.path.realpath(venv):
        raise ToolError(f"stashdemo-d ran with prefix {out['prefix']}, expected {venv}")
    return out


def pip_http_cache_dirs(cache_dir: Path) -> List[Path]:
    """pip's HTTP cache directories below PIP_CACHE_DIR ("http" up to pip 23.2, "http-v2" after)."""
    return sorted(p for p in Path(cache_dir).glob("http*") if p.is_dir())


# --------------------------------------------------------------------------------------------
# npm
# --------------------------------------------------------------------------------------------

# Small, pinned, pure-JavaScript packages (no install scripts, no native builds). semver pulls in
# lru-cache@6.0.0 and yallist@4.0.0; lodash alone is ~1,000 files.
NPM_PACKAGES: Dict[str, str] = {
    "is-number": "7.0.0",
    "left-pad": "1.3.0",
    "ms": "2.1.3",
    "lodash": "4.17.21",
    "semver": "7.6.0",
}
NPM_TRANSITIVE: Dict[str, str] = {"lru-cache": "6.0.0", "yallist": "4.0.0"}

NODE_CHECK_SCRIPT = r"""
const names = %s;
const isNumber = require('is-number');
const leftPad = require('left-pad');
const ms = require('ms');
const _ = require('lodash');
const semver = require('semver');
const LRU = require('lru-cache');
const cache = new LRU({max: 2}); cache.set('a', 1); cache.set('b', 2); cache.set('c', 3);
console.log(JSON.stringify({
  isNumber: [isNumber(5), isNumber('5'), isNumber('abc'), isNumber(NaN)],
  leftPad: [leftPad('17', 5, '0'), leftPad('stash', 7)],
  ms: [ms('2h'), ms(60000), ms('1d'), ms(1500, {long: true})],
  lodash: [_.chunk([1, 2, 3, 4, 5], 2), _.kebabCase('Stash FS Volume'), _.VERSION,
           _.sum(_.range(1000))],
  semver: [semver.satisfies('1.2.3', '^1.0.0'), semver.inc('1.2.3', 'minor'),
           semver.valid('v7.6.0'), semver.maxSatisfying(['1.0.0', '1.4.2', '2.0.0'], '^1')],
  lru: [cache.has('a'), cache.get('c')],
  versions: Object.fromEntries(names.map(n => [n, require(n + '/package.json').version])),
  paths: Object.fromEntries(names.map(n => [n, require.resolve(n)])),
}));
"""
NODE_EXPECTED = {
    "isNumber": [True, True, False, False],
    "leftPad": ["00017", "  stash"],
    "ms": [7200000, "1m", 86400000, "2 seconds"],
    "lodash": [[[1, 2], [3, 4], [5]], "stash-fs-volume", "4.17.21", 499500],
    "semver": [True, "1.3.0", "7.6.0", "1.4.2"],
    "lru": [False, 3],
    "versions": {**NPM_PACKAGES, **NPM_TRANSITIVE},
}


def npm_env(extra: Optional[dict] = None) -> dict:
    """Environment for npm: no user ~/.npmrc (this machine's sets omit-lockfile-registry-resolved),
    no audit/fund/update-notifier/progress. npm's global config (CA file) still applies."""
    env = clean_env({"NPM_CONFIG_USERCONFIG": os.devnull, "npm_config_audit": "false",
                     "npm_config_fund": "false", "npm_config_update_notifier": "false",
                     "npm_config_progress": "false", "npm_config_loglevel": "warn",
                     "npm_config_fetch_retries": "3"})
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


def write_npm_project(proj: Path, lockfile: Optional[Path] = None,
                      packages: Optional[Dict[str, str]] = None) -> Path:
    """Write package.json (exact pinned versions) into `proj`, and copy `lockfile` in if given."""
    proj = Path(proj)
    proj.mkdir(parents=True, exist_ok=True)
    pkg = {"name": "stashfs-e2e-npm", "version": "1.0.0", "private": True,
           "description": "stashfs end-to-end test project", "license": "MIT",
           "dependencies": dict(packages or NPM_PACKAGES)}
    (proj / "package.json").write_text(json.dumps(pkg, indent=2) + "\n")
    if lockfile is not None:
        shutil.copyfile(lockfile, proj / "package-lock.json")
    return proj


def npm(proj: Path, *args: str, cache: Path, env: Optional[dict] = None,
        timeout: float = DEFAULT_TIMEOUT) -> subprocess.CompletedProcess:
    """`npm <args> --cache <cache> --no-audit --no-fund` in `proj`."""
    return run(["npm", *args, "--cache", cache, "--no-audit", "--no-fund"], cwd=proj,
               env=env or npm_env(), timeout=timeout)


def generate_npm_lockfile(dest: Path, packages: Optional[Dict[str, str]] = None) -> Path:
    """Resolve NPM_PACKAGES once (`npm install --package-lock-only`, with a private cache in dest)
    and return the path of the package-lock.json (lockfileVersion 3, with resolved+integrity)."""
    dest = Path(dest)
    proj = write_npm_project(dest / "lockgen", packages=packages)
    npm(proj, "install", "--package-lock-only", "--ignore-scripts", cache=dest / "lockgen-cache")
    lock = proj / "package-lock.json"
    data = json.loads(lock.read_text())
    for name in list((packages or NPM_PACKAGES)) + list(NPM_TRANSITIVE if packages is None else ()):
        entry = data.get("packages", {}).get(f"node_modules/{name}")
        if not entry or "integrity" not in entry or "resolved" not in entry:
            raise ToolError(f"lockfile {lock} has no resolved+integrity entry for {name}: {entry}")
    return lock


def npm_lock_packages(lockfile: Path) -> Dict[str, str]:
    """node_modules/<name> -> version for every package in a package-lock.json."""
    data = json.loads(Path(lockfile).read_text())
    return {k[len("node_modules/"):]: v.get("version") for k, v in data.get("packages", {}).items()
            if k.startswith("node_modules/")}


def check_node_packages(proj: Path, env: Optional[dict] = None) -> dict:
    """require() every package from proj/node_modules with node and check what it computes;
    also run the `semver` bin link npm made in node_modules/.bin. Returns the script output."""
    proj = Path(proj)
    names = list(NPM_PACKAGES) + list(NPM_TRANSITIVE)
    script = NODE_CHECK_SCRIPT % json.dumps(names)
    res = run(["node", "-e", script], cwd=proj, env=env or npm_env())
    try:
        out = json.loads(res.stdout)
    except ValueError:
        raise ToolError(f"node check printed no JSON: {res.stdout!r} {res.stderr!r}") from None
    for key, want in NODE_EXPECTED.items():
        if out.get(key) != want:
            raise ToolError(f"{proj}: node {key} = {out.get(key)!r}, expected {want!r}")
    nm = os.path.realpath(proj / "node_modules") + os.sep
    for name, path in out["paths"].items():
        if not os.path.realpath(path).startswith(nm):
            raise ToolError(f"require('{name}') resolved to {path}, outside {nm}")
    bin_link = proj / "node_modules" / ".bin" / "semver"
    if not bin_link.is_symlink():
        raise ToolError(f"{bin_link} is not the symlink npm makes for a package's bin")
    res = run([bin_link, "-i", "minor", "1.2.3"], cwd=proj, env=env or npm_env())
    if res.stdout.strip() != "1.3.0":
        raise ToolError(f"node_modules/.bin/semver -i minor 1.2.3 printed {res.stdout!r}")
    return out


# --------------------------------------------------------------------------------------------
# A large real tree for tar -x
# --------------------------------------------------------------------------------------------

DEFAULT_TREE_SOURCES: Tuple[str, ...] = ("usr/lib/python3", "usr/share/doc", "usr/share/man",
                                         "usr/share/zoneinfo")
DEFAULT_TREE_EXCLUDES: Tuple[str, ...] = ("usr/share/doc/nodejs",)  # 35 MB of HTML for one package
EXTRA_DIR = "stashfs-extra"


@dataclass
class TreeTarball:
    path: Path
    entries: int          # members in the archive
    size: int             # bytes of the archive
    sources: Tuple[str, ...]
    # Parents of the sources (usr, usr/lib, ...): not archive members, so tar -x creates them
    # with the current time; leave them out of manifest comparisons.
    implicit_dirs: Tuple[str, ...] = ()


def _write_extra_tree(root: Path):
    """A few things /usr does not have: hard links, odd names, empty and executable files."""
    if root.exists():
        shutil.rmtree(root)
    d = root / EXTRA_DIR
    (d / "links").mkdir(parents=True)
    (d / "links" / "original.txt").write_text("three names, one inode\n" * 100)
    os.link(d / "links" / "original.txt", d / "links" / "second.txt")
    (d / "links" / "sub").mkdir()
    os.link(d / "links" / "original.txt", d / "links" / "sub" / "third.txt")
    os.symlink("original.txt", d / "links" / "symlink.txt")
    os.symlink("../links", d / "links" / "sub" / "dirlink")
    os.symlink("does-not-exist", d / "links" / "dangling")
    (d / "names").mkdir()
    (d / "names" / "with space & quote'.txt").write_text("space\n")
    (d / "names" / "unicode-\u00fc\u00df\u65e5\u672c.txt").write_text("unicode\n")
    (d / "names" / ("long-" + "x" * 240)).write_text("long\n")
    (d / "names" / ".hidden").write_text("hidden\n")
    (d / "names" / "empty").write_bytes(b"")
    exe = d / "names" / "run.sh"
    exe.write_text("#!/bin/sh\necho ran\n")
    exe.chmod(0o755)
    ro = d / "names" / "readonly"
    ro.write_text("read only\n")
    ro.chmod(0o444)
    (d / "big").mkdir()
    noise = hashlib.shake_256(b"stashfs tar").digest(3 << 20)
    (d / "big" / "incompressible.bin").write_bytes(noise)
    (d / "big" / "zeros.bin").write_bytes(bytes(2 << 20))
    for p, ns in ((d / "names" / "empty", 1_234_567_891_123_456_789),
                  (d / "names" / "run.sh", 1_000_000_000_987_654_321)):
        os.utime(p, ns=(ns, ns))


def build_tree_tarball(dest: Path, sources: Sequence[str] = DEFAULT_TREE_SOURCES,
                       excludes: Sequence[str] = DEFAULT_TREE_EXCLUDES,
                       extra: bool = True) -> TreeTarball:
    """tar (pax format: nanosecond mtimes) of real system directories, ~35,000 entries, ~170 MB.

    `sources` are paths relative to /; missing ones are left out. With `extra`, a small synthetic
    directory (hard links, symlinks, odd names, modes) is appended as stashfs-extra/.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    present = tuple(s for s in sources if os.path.isdir("/" + s))
    if not present:
        raise ToolError(f"none of {sources} exist")
    cmd = ["tar", "--format=pax", "--sort=name", "-cf", dest]
    cmd += [f"--exclude={e}" for e in excludes]
    cmd += ["-C", "/", *present]
    if extra:
        staging = dest.parent / (dest.name + ".extra")
        _write_extra_tree(staging)
        cmd += ["-C", staging, EXTRA_DIR]
    res = run(cmd, check=False)
    # 1 = "file changed as we read it" (apt running elsewhere): the archive is still valid.
    if res.returncode not in (0, 1):
        raise ToolError(f"tar -c failed ({res.returncode}): {_tail(res.stderr)}")
    listing = run(["tar", "-tf", dest]).stdout
    implicit = sorted({str(p) for s in present for p in Path(s).parents if str(p) != "."})
    return TreeTarball(path=dest, entries=listing.count("\n"), size=dest.stat().st_size,
                       sources=present, implicit_dirs=tuple(implicit))


def extract_tarball(tarball: Path, dest: Path, timeout: float = DEFAULT_TIMEOUT):
    """`tar -xf` into dest (created if needed), as the tool would: owners, modes, mtimes kept."""
    Path(dest).mkdir(parents=True, exist_ok=True)
    run(["tar", "-xf", tarball, "-C", dest], timeout=timeout)


def tree_manifest(root: Path) -> Dict[str, tuple]:
    """relative path -> metadata that a faithful copy must keep.

    Files: ("f", mode, uid, gid, size, mtime_ns, nlink, hard-link group); symlinks: ("l", target,
    uid, gid, mtime_ns); directories: ("d", mode, uid, gid, mtime_ns). The hard-link group is the
    sorted tuple of paths that share the inode (empty for nlink == 1). Directory sizes and
    directory link counts differ between filesystems and are not included.
    """
    root = Path(root)
    out: Dict[str, tuple] = {}
    inodes: Dict[tuple, List[str]] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(root / rel if rel else root) as it:
            for e in it:
                r = f"{rel}/{e.name}" if rel else e.name
                st = e.stat(follow_symlinks=False)
                m = st.st_mode
                if stat.S_ISDIR(m):
                    out[r] = ("d", stat.S_IMODE(m), st.st_uid, st.st_gid, st.st_mtime_ns)
                    stack.append(r)
                elif stat.S_ISLNK(m):
                    out[r] = ("l", os.readlink(e.path), st.st_uid, st.st_gid, st.st_mtime_ns)
                elif stat.S_ISREG(m):
                    out[r] = ("f", stat.S_IMODE(m), st.st_uid, st.st_gid, st.st_size,
                              st.st_mtime_ns, st.st_nlink, ())
                    if st.st_nlink > 1:
                        inodes.setdefault((st.st_dev, st.st_ino), []).append(r)
                else:
                    out[r] = ("?", stat.S_IFMT(m), stat.S_IMODE(m), st.st_uid, st.st_gid)
    for paths in inodes.values():
        group = tuple(sorted(paths))
        for p in paths:
            out[p] = out[p][:-1] + (group,)
    return out


def compare_manifests(want: Dict[str, tuple], got: Dict[str, tuple], limit: int = 20,
                      skip: Iterable[str] = ()) -> List[str]:
    """Human-readable differences between two tree_manifest() results (at most `limit`),
    ignoring the paths in `skip`."""
    diffs = []
    skip = set(skip)
    for p in sorted((set(want) | set(got)) - skip):
        if want.get(p) != got.get(p):
            diffs.append(f"{p}: expected {want.get(p)!r}, got {got.get(p)!r}")
            if len(diffs) >= limit:
                diffs.append("...")
                break
    return diffs


def diff_trees(a: Path, b: Path, timeout: float = DEFAULT_TIMEOUT) -> str:
    """`diff -r --no-dereference -q a b`: '' if every file's bytes and every symlink match."""
    res = run(["diff", "-r", "--no-dereference", "-q", a, b], check=False, timeout=timeout)
    if res.returncode not in (0, 1):
        raise ToolError(f"diff failed ({res.returncode}): {_tail(res.stderr)}")
    return (res.stdout + res.stderr).strip()


# --------------------------------------------------------------------------------------------
# apt
# --------------------------------------------------------------------------------------------

# Small Debian packages not installed on a build machine; cowsay pulls libtext-charwidth-perl.
APT_PACKAGES: Tuple[str, ...] = ("hello", "sl", "cowsay")
_APT_HASHES = {"MD5Sum": "md5", "SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512"}


def apt_env() -> dict:
    return clean_env({"DEBIAN_FRONTEND": "noninteractive"})


def _apt_args(archives: Path) -> List[str]:
    # The trailing slash matters to nothing but keeps apt's messages tidy.
    return ["-o", f"Dir::Cache::archives={archives}/", "-o", "APT::Install-Recommends=false",
            "-o", "Acquire::Retries=3", "-o", "DPkg::Lock::Timeout=120", "-q", "-y"]


def apt_expected_debs(scratch_archives: Path, packages: Sequence[str] = APT_PACKAGES
                      ) -> Dict[str, Tuple[str, str, int]]:
    """File name -> (hashlib name, hex digest, size) that downloading `packages` (with their
    missing dependencies) must produce, from `apt-get --print-uris` against an empty archive dir."""
    Path(scratch_archives).mkdir(parents=True, exist_ok=True)
    res = run(["apt-get", *_apt_args(scratch_archives), "install", "--reinstall", "--print-uris",
               "-qq", *packages], env=apt_env())
    out = {}
    for line in res.stdout.splitlines():
        m = re.match(r"^'(\S+)' (\S+) (\d+) (\S+):([0-9a-f]+)$", line.strip())
        if m:
            algo = _APT_HASHES.get(m.group(4))
            if algo is None:
                raise ToolError(f"unknown hash type in apt-get --print-uris: {line}")
            out[m.group(2)] = (algo, m.group(5), int(m.group(3)))
    if not out:
        raise ToolError(f"apt-get --print-uris listed nothing for {packages}:\n{res.stdout}")
    return out


def apt_download(archives: Path, packages: Sequence[str] = APT_PACKAGES,
                 require_sandbox: bool = True) -> subprocess.CompletedProcess:
    """`apt-get install --download-only --reinstall` with `archives` as apt's archive cache.

    apt creates archives/partial itself (owner _apt, mode 0700), takes an fcntl lock on
    archives/lock, and its http method downloads into partial/ as the unprivileged `_apt` user;
    if _apt cannot reach partial/ apt falls back to downloading as root with a warning, which
    `require_sandbox` turns into a failure.
    """
    res = run(["apt-get", *_apt_args(archives), "install", "--download-only", "--reinstall",
               *packages], env=apt_env())
    text = res.stdout + res.stderr
    if require_sandbox and "unsandboxed" in text:
        raise ToolError(f"apt could not download as _apt into {archives}/partial:\n{_tail(text)}")
    return res


def check_debs(archives: Path, expected: Dict[str, Tuple[str, str, int]]) -> Dict[str, str]:
    """Every expected .deb is in `archives` with the right size and hash and `dpkg-deb -I` reads
    it. Returns file name -> package name."""
    archives = Path(archives)
    names = {}
    for fname, (algo, digest, size) in expected.items():
        p = archives / fname
        if not p.is_file():
            raise ToolError(f"{p} missing; archives has {sorted(os.listdir(archives))}")
        if p.stat().st_size != size:
            raise ToolError(f"{p}: size {p.stat().st_size}, expected {size}")
        h = hashlib.new(algo)
        h.update(p.read_bytes())
        if h.hexdigest() != digest:
            raise ToolError(f"{p}: {algo} {h.hexdigest()}, expected {digest}")
        info = run(["dpkg-deb", "-I", p]).stdout
        m = re.search(r"^ Package: (\S+)$", info, re.M)
        if not m:
            raise ToolError(f"dpkg-deb -I {p} shows no Package field:\n{info}")
        names[fname] = m.group(1)
    return names


def ensure_others_can_traverse(path: Path) -> Optional[str]:
    """None if every directory from / down to `path` is searchable by other users; else the
    first directory that is not (apt's _apt user and Docker containers need that)."""
    p = Path(path).resolve()
    for d in [*reversed(p.parents), p]:
        if not os.stat(d).st_mode & stat.S_IXOTH:
            return str(d)
    return None

