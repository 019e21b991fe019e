"""The inputs of ``wheelhouse.py``: a lock, the files it needs from the corpus and PyPI, checked, and a local index.

Preparation runs once per ``--work`` folder and is not timed:

1. The lock's top-level pins are resolved against PyPI for this interpreter by pip
   (``pip install --dry-run --ignore-installed --report``): that gives the closure, one version of each
   package, and for each the file PyPI would serve it as, with its sha256.
2. Each package of the closure gets the index files the tables below say: the corpus sdist (checked
   against the corpus's pinned hash), the PyPI wheel (downloaded by ``pip download --require-hashes``
   with the report's hash), or both. Packages the corpus lacks are served as PyPI serves them.
3. The build backends of the corpus (a find-links folder) are added, each checked against the sha256
   PyPI's simple page (PEP 691) lists for that file name.

:func:`serve` then writes a static PEP 503 index of the files (``simple/<project>/index.html``, links with
``#sha256=``) and serves it on 127.0.0.1, on a port of its own, while a benchmark runs.

``manifest.json`` records the lock, the closure, every file's sha256 and where it came from, and which
packages the index holds as wheel only, sdist only or both (read from the files, not from the tables).
A later run reuses the folder when the lock is the same and every file still has its recorded hash.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import html
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

PYPI_SIMPLE = "https://pypi.org/simple/"

FULL_LOCK = (
    "aiohttp", "attrs", "bitarray", "brotli", "certifi", "click", "fastapi", "httpx", "jinja2", "kiwisolver", "msgpack",
    "packaging", "psutil", "pycryptodome", "pygments", "pytz", "pyyaml", "regex", "requests", "rich", "simplejson",
    "six", "sqlalchemy", "tabulate", "termcolor", "tomli", "tomlkit", "toolz", "typer", "werkzeug", "zipp",
)
"""Thirty-one of the 35 corpus packages; the other four (frozenlist, markupsafe, multidict, urllib3) come in as
dependencies, so a resolver has to find them."""

QUICK_LOCK = ("jinja2", "msgpack", "packaging", "requests", "six", "tabulate", "termcolor", "toolz")

CORPUS_WITH_WHEEL = frozenset({
    # The four longest C builds of the corpus (40-80 s each alone): with their wheels beside the sdists, a
    # tool that takes the wheel saves most of the run. The other ten C extensions stay sdist only.
    "aiohttp", "brotli", "pycryptodome", "sqlalchemy",
    # Pure-Python ones, as most projects publish them.
    "attrs", "certifi", "packaging", "pytz", "requests", "six", "tomlkit", "urllib3",
})
"""Corpus packages the index also serves as their PyPI wheel."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Inputs:
    """A prepared, checked set of index files and the lock that needs them."""

    lock: Path
    """The requirements file both tools are given: the top-level pins, one ``name==version`` a line."""
    files: Path
    """The folder of every file the index serves."""
    sha256: dict[str, str]
    """File name to sha256, for every file the index serves."""
    closure: dict[str, str]
    """Canonical name to version of every package a full wheelhouse of the lock holds."""
    manifest: dict[str, Any]
    """What ``manifest.json`` holds (for the benchmark's JSON)."""


def prepare(work: Path, corpus: Path, backends: Path, *, quick: bool) -> Inputs:
    """Return the inputs under ``work``, preparing them first unless a checked copy is there."""
    folder = work / ("quick" if quick else "full")
    files = folder / "files"
    pins = corpus_pins(corpus / "requirements.txt")
    lock_lines = [f"{name}=={pins[name][0]}" for name in (QUICK_LOCK if quick else FULL_LOCK)]
    cached = _load(folder, lock_lines)
    if cached is not None:
        return cached
    print(f"preparing the index under {folder} (once; not timed)", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    files.mkdir(parents=True)
    (folder / "lock.txt").write_text("".join(f"{line}\n" for line in lock_lines))
    # Dependencies the corpus has (urllib3 of requests) take the corpus's version, not PyPI's newest.
    (folder / "corpus-constraints.txt").write_text("".join(f"{name}=={pin[0]}\n" for name, pin in pins.items()))
    report = _resolve(folder / "lock.txt", folder / "corpus-constraints.txt", folder / "resolve-report.json")
    closure: dict[str, str] = {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"] for item in report
    }
    origins: dict[str, str] = {}
    downloads: list[str] = []
    for item in report:
        name = canonicalize_name(item["metadata"]["name"])
        url, sha256 = item["download_info"]["url"], item["download_info"]["archive_info"]["hashes"]["sha256"]
        if name in pins:
            version, corpus_sha256, sdist = pins[name]
            if version != closure[name]:
                raise SystemExit(f"{name}: the corpus pins {version}, the resolution chose {closure[name]}")
            _check(sdist, corpus_sha256, "the corpus requirements")
            shutil.copy2(sdist, files / sdist.name)
            origins[sdist.name] = "corpus sdist"
        if name not in pins or name in CORPUS_WITH_WHEEL:
            if name in pins and not url.endswith(".whl"):
                raise SystemExit(f"{name}: PyPI has no wheel of {closure[name]} for this interpreter")
            downloads.append(f"{name}=={closure[name]} --hash=sha256:{sha256}")
            origins[url.rsplit("/", 1)[-1]] = "PyPI wheel" if url.endswith(".whl") else "PyPI sdist"
    _download(downloads, files, folder / "downloads.txt")
    for wheel in sorted(backends.glob("*.whl")):
        _check(wheel, _pypi_sha256(wheel.name), "PyPI's simple page")
        origins.setdefault(wheel.name, "corpus backend")
        shutil.copy2(wheel, files / wheel.name)
    missing = sorted(set(origins) - {path.name for path in files.iterdir()})
    if missing:
        raise SystemExit(f"pip download did not save {', '.join(missing)}; see {folder / 'downloads.txt'}")
    sha256 = {path.name: _sha256(path) for path in sorted(files.iterdir())}
    manifest: dict[str, Any] = {
        "lock": lock_lines,
        "corpus_with_wheel": sorted(CORPUS_WITH_WHEEL),
        "closure": closure,
        "files": {name: {"sha256": digest, "origin": origins[name]} for name, digest in sha256.items()},
        **_kinds(closure, sha256),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return Inputs(lock=folder / "lock.txt", files=files, sha256=sha256, closure=closure, manifest=manifest)


@contextlib.contextmanager
def serve(inputs: Inputs) -> Iterator[str]:
    """Serve the files as a static PEP 503 index on 127.0.0.1 while the block runs; yield its simple URL.

    A plain static server, as a folder behind any web server would be: it answers GET and HEAD (uv asks
    HEAD first), without byte ranges, over keep-alive connections.
    """
    root = inputs.files.parent
    pages = root / "simple"
    shutil.rmtree(pages, ignore_errors=True)
    projects: dict[str, list[str]] = {}
    for name in inputs.sha256:
        owner = parse_wheel_filename(name)[0] if name.endswith(".whl") else parse_sdist_filename(name)[0]
        projects.setdefault(owner, []).append(name)
    for project, names in projects.items():
        (pages / project).mkdir(parents=True)
        links = "".join(f'<a href="../../files/{html.escape(name)}#sha256={inputs.sha256[name]}">'
                        f"{html.escape(name)}</a><br>\n" for name in sorted(names))
        (pages / project / "index.html").write_text(f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n")
    links = "".join(f'<a href="{project}/">{project}</a><br>\n' for project in sorted(projects))
    (pages / "index.html").write_text(f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, name="index", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm and the client's
        # delayed ACK add about 40 ms to each response on a kept-alive connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def corpus_pins(requirements: Path) -> dict[str, tuple[str, str, Path]]:
    """Canonical name to (version, sha256, sdist path) from the corpus's hashed requirements file."""
    text = requirements.read_text().replace("\\\n", " ")
    sdists = {parse_sdist_filename(path.name)[0]: path for path in (requirements.parent / "sdists").iterdir()}
    pins: dict[str, tuple[str, str, Path]] = {}
    for line in text.splitlines():
        match = re.match(r"\s*([A-Za-z0-9._-]+)==(\S+)\s+--hash=sha256:([0-9a-f]{64})", line)
        if match:
            name = canonicalize_name(match[1])
            pins[name] = (match[2], match[3], sdists[name])
    return pins


def _load(folder: Path, lock_lines: list[str]) -> Inputs | None:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("lock") != lock_lines or manifest.get("corpus_with_wheel") != sorted(CORPUS_WITH_WHEEL):
        return None
    sha256 = {name: entry["sha256"] for name, entry in manifest["files"].items()}
    files = folder / "files"
    if {path.name for path in files.iterdir()} != set(sha256) or any(
        _sha256(files / name) != digest for name, digest in sha256.items()
    ):
        return None
    return Inputs(lock=folder / "lock.txt", files=files, sha256=sha256, closure=manifest["closure"],
                  manifest=manifest)


def _kinds(closure: dict[str, str], sha256: dict[str, str]) -> dict[str, list[str]]:
    """Which packages of the closure the index serves as wheel only, sdist only, or both, at their version."""
    wheels = {parse_wheel_filename(name)[:2] for name in sha256 if name.endswith(".whl")}
    sdists = {parse_sdist_filename(name) for name in sha256 if not name.endswith(".whl")}
    # One version of each package of the closure, so that any resolver picks the closure's.
    others = sorted(f"{name} {version}" for name, version in wheels | sdists
                    if name in closure and version != Version(closure[name]))
    if others:
        raise SystemExit(f"the index would also serve {', '.join(others)}; a resolver could pick them")
    kinds: dict[str, list[str]] = {"wheel_only": [], "sdist_only": [], "both": []}
    for name, version in sorted(closure.items()):
        key = (canonicalize_name(name), Version(version))
        kind = {(True, True): "both", (True, False): "wheel_only", (False, True): "sdist_only"}.get(
            (key in wheels, key in sdists))
        if kind is None:
            raise SystemExit(f"the index has no file of {name} {version}")
        kinds[kind].append(name)
    return kinds


def _pypi_environ() -> dict[str, str]:
    """The environment for pip talking to PyPI: no local package sources from this machine's configuration."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_") or key == "PIP_CERT"}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def _resolve(lock: Path, constraints: Path, report: Path) -> list[dict[str, Any]]:
    """pip's resolution of ``lock`` against PyPI for this interpreter, one entry per package."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                    "--report", str(report), "-r", str(lock), "-c", str(constraints)], env=_pypi_environ(), check=True)
    installs: list[dict[str, Any]] = json.loads(report.read_text())["install"]
    return installs


def _download(lines: list[str], dest: Path, requirements: Path) -> None:
    """Download ``name==version --hash=...`` lines with pip, which refuses any file with another hash."""
    requirements.write_text("".join(f"{line}\n" for line in lines))
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--quiet",
                    "-r", str(requirements), "-d", str(dest)], env=_pypi_environ(), check=True)


def _pypi_sha256(filename: str) -> str:
    """The sha256 PyPI's simple page (PEP 691 JSON) lists for ``filename``."""
    project = parse_wheel_filename(filename)[0]
    request = urllib.request.Request(f"{PYPI_SIMPLE}{project}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        page = json.load(response)
    for file in page["files"]:
        if file["filename"] == filename:
            return str(file["hashes"]["sha256"])
    raise SystemExit(f"{filename}: not on PyPI's page for {project}")


def _check(path: Path, expected: str, source: str) -> None:
    actual = _sha256(path)
    if actual != expected:
        raise SystemExit(f"{path}: sha256 {actual}, but {source} gives {expected}")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
