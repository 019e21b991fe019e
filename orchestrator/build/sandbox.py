"""The sandbox the PEP 517 hooks run in: what the system gives (probed once) and the command that enters it.

With bubblewrap (``bwrap``, Debian's ``bubblewrap``; unprivileged, no helper of
ours) a hook sees the host read-only, an empty home and ``/tmp``, its own build
folder writable, no secret in its environment, no capability, a PID namespace
that dies with it (daemons included) and, with the build network off, only
loopback. Where ``bwrap`` is missing or cannot work, util-linux ``unshare`` with
user namespaces makes the namespaces and ``sandbox_init.py``, run inside them,
shapes the same sandbox; its probe runs each step once and the report lists only
those that held. With neither, builds run as before and the run says so once.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

SECRET_NAMES = (
    "*TOKEN*", "*SECRET*", "*PASSWORD*", "*PASSWD*", "*API_KEY*", "*ACCESS_KEY*", "*PRIVATE_KEY*", "*CREDENTIAL*",
    "*_AUTH", "*_AUTH_*", "AUTH_*", "*AUTHTOKEN*", "*AUTHORIZATION*", "*OAUTH*", "AWS_*", "AZURE_*",
    "GOOGLE_APPLICATION_CREDENTIALS", "GH_*", "GITHUB_TOKEN", "PYPI_*", "TWINE_*", "NETRC", "SSH_AUTH_SOCK",
)
"""Environment variables never passed into a sandboxed build (``fnmatch`` patterns on the upper-cased name):
tokens, passwords, keys and credentials by their usual words (``AUTH`` only as a word of its own, so that
``GIT_AUTHOR_NAME`` passes), the cloud providers' and publishing tools' prefixes,
and the ssh agent. A build that needs one has to run with ``--no-sandbox``."""
URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")
"""The ``user:password@`` of a URL (``PIP_INDEX_URL=https://user:token@host/simple``, ``HTTPS_PROXY``), taken out of
every value passed into a sandboxed build, whatever the variable's name."""


UNSHARE = ("--user", "--map-root-user", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc")
"""The namespaces of an ``unshare`` sandbox (``--net`` is added with the build network off)."""
SANDBOX_INIT = Path(__file__).with_name("sandbox_init.py")
"""The script that shapes an ``unshare`` sandbox and runs the hook as its init."""
_RUN_INIT = (f"import sys; sys.path.append({str(SANDBOX_INIT.parent)!r}); import sandbox_init; "
             "sys.exit(sandbox_init.main())")
"""Imported, not run as a script: its bytecode is then cached, where a script is compiled at every start."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Sandbox:
    """The containment in force for a build's hooks."""

    tool: Literal["bwrap", "unshare", "none"] = "none"
    executable: str | None = None
    """The absolute path of ``bwrap`` or ``unshare``, as probed."""
    network: bool = True
    """``False``: only loopback inside (``--no-build-network``, or ``build_network = false`` for the package)."""
    steps: tuple[str, ...] = ()
    """With ``unshare``: the steps of ``sandbox_init.py`` the probe saw work here (``read-only host``, ...)."""

    @property
    def protections(self) -> tuple[str, ...]:
        """What the sandbox protects, in words, for the report."""
        if self.tool == "none":
            return ()
        if self.tool == "bwrap":
            shaped: tuple[str, ...] = ("read-only host", "private home and /tmp")
        else:  # mounts hold only when the build cannot undo them, without capabilities
            shaped = tuple(step for step in ("read-only host", "private home and /tmp")
                           if step in self.steps and "no capabilities" in self.steps)
        return (*shaped, "no secrets", "pid namespace", *(() if self.network else ("no network",)))

    def describe(self) -> str:
        """One line for the report: ``bwrap: read-only host, ..., no network`` or ``none``."""
        return f"{self.tool}: {', '.join(self.protections)}" if self.protections else "none"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Sandbox:
        return cls(**{**data, "steps": tuple(data.get("steps", ()))})


@dataclass(frozen=True, slots=True)
class Probe:
    """What the system gives: the sandbox to use, or why there is none."""

    sandbox: Sandbox
    reason: str | None = None
    """One line saying why builds are not sandboxed; ``None`` when they are."""


def probe() -> Probe:
    """The first of ``bwrap`` and ``unshare`` on PATH that can make a sandbox here, each tried once
    (cached per PATH)."""
    return _probe(os.environ.get("PATH", os.defpath))


@functools.cache
def _probe(path: str) -> Probe:
    bwrap = _try("bwrap", path, ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "true"],
                 missing="bwrap is not on PATH (install bubblewrap)")
    if isinstance(bwrap, tuple):
        return Probe(Sandbox(tool="bwrap", executable=bwrap[0]))
    with tempfile.TemporaryDirectory(prefix="orchestrate-probe-") as folder:
        hidden = Path(folder, "hidden")
        (hidden / "kept").mkdir(parents=True)
        unshare = _try("unshare", path, [*UNSHARE, "--net", *_init(["--probe"], hide=[hidden], rw=[hidden / "kept"])],
                       missing="unshare is not on PATH (util-linux)")
    if isinstance(unshare, str):
        return Probe(Sandbox(), f"{bwrap}; {unshare}")
    return Probe(Sandbox(tool="unshare", executable=unshare[0], steps=tuple(unshare[1].split("\n")[:-1])))


def _try(tool: str, path: str, args: list[str], *, missing: str) -> tuple[str, str] | str:
    """Run ``tool`` from ``path`` once with ``args``: its absolute path and what it printed, or why it cannot."""
    executable = shutil.which(tool, path=path)
    if executable is None:
        return missing
    try:
        done = subprocess.run([executable, *args], stdin=subprocess.DEVNULL, capture_output=True, check=True,
                              timeout=30)
    except subprocess.CalledProcessError as exc:
        said = exc.stderr.decode(errors="replace").strip().splitlines()
        return f"{executable} cannot make a sandbox here: {said[-1] if said else exc}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{executable} cannot make a sandbox here: {exc}"
    return executable, done.stdout.decode()


def _init(args: list[str], **options: Sequence[Path | str]) -> list[str]:
    """The command that runs :data:`SANDBOX_INIT` with ``args`` and ``--NAME VALUE`` for each of ``options``,
    isolated from the environment (``-I -S``)."""
    given = [item for name, values in options.items() for value in values for item in (f"--{name}", str(value))]
    return [sys.executable, "-I", "-S", "-c", _RUN_INIT, *args, *given]


def for_run(wanted: bool, *, network: bool) -> tuple[Sandbox, str | None]:
    """The sandbox of a run's builds (``--sandbox``, ``--build-network``), and the one line saying
    when they are not sandboxed, or only in part, and why."""
    return settle(probe(), wanted=wanted, network=network) if wanted else (Sandbox(), None)


def settle(found: Probe, *, wanted: bool, network: bool) -> tuple[Sandbox, str | None]:
    """:func:`for_run` for what the probe ``found``."""
    if not wanted:
        return Sandbox(), None
    if found.reason is not None:
        cut = "" if network else "; --no-build-network cannot be enforced"
        return Sandbox(), f"builds are not sandboxed: {found.reason}{cut} (--no-sandbox silences this note)"
    sandbox = dataclasses.replace(found.sandbox, network=network)
    missing = [word for word in ("read-only host", "private home and /tmp") if word not in sandbox.protections]
    if missing:
        return sandbox, (f"builds are sandboxed with {sandbox.executable} without {' or '.join(missing)}: "
                         "this kernel refused the mounts (install bubblewrap)")
    return sandbox, None


_SECRET = re.compile("|".join(fnmatch.translate(pattern) for pattern in SECRET_NAMES))
""":data:`SECRET_NAMES` as one expression, compiled once (in the fork server): matching each name against
each pattern with ``fnmatch`` cost a no-op build a tenth of its own CPU."""


def is_secret(name: str) -> bool:
    """Whether the environment variable ``name`` carries a secret by :data:`SECRET_NAMES`."""
    return _SECRET.match(name.upper()) is not None


def environ(env: Mapping[str, str], *, sandbox: Sandbox, build_dir: Path, tmp_dir: Path) -> dict[str, str]:
    """What of ``env`` a process inside ``sandbox`` gets: no secret, no credential in a URL, its own home and
    temporary folder."""
    if sandbox.tool == "none" or sandbox.executable is None:
        return dict(env)
    clean = {name: URL_CREDENTIALS.sub(r"\1", value) if "@" in value else value
             for name, value in env.items() if not is_secret(name)}
    clean.update(HOME=str(build_dir / "home"), TMPDIR=str(tmp_dir))
    return clean


@functools.lru_cache(maxsize=4)
def _home(value: str) -> Path | None:
    """The home folder ``value`` as the sandbox hides it (resolved), ``None`` for ``/``."""
    home = Path(value).resolve()
    return None if home == Path("/") else home


@functools.cache
def _interpreter_folders() -> tuple[Path, ...]:
    """The folders of the running interpreter and of this module, resolved, those that exist."""
    folders = [Path(sys.base_prefix), Path(sys.prefix), Path(sys.executable).resolve().parent.parent,
               Path(__file__).resolve().parent]
    return tuple(path for path in dict.fromkeys(path.resolve() for path in folders) if path.exists())


def resolve_once() -> None:
    """Resolve, in the fork server, the paths every build's :func:`wrap` asks for: the interpreter's folders and the
    home folder. Each is a dozen ``lstat`` calls in ``os.path.realpath``'s Python loop: about a millisecond of a
    no-op build's worker, where a fork inherits the answers."""
    _interpreter_folders()
    for value in dict.fromkeys([os.environ.get("HOME"), os.path.expanduser("~")]):
        if value:
            _home(value)


def wrap(cmd: Sequence[str], *, sandbox: Sandbox, build_dir: Path, tmp_dir: Path, out_dir: Path,
         env: Mapping[str, str], cwd: str | None = None, readable: Sequence[Path] = (),
         writable: Sequence[Path] = ()) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run ``cmd`` inside ``sandbox``.

    ``build_dir`` (the build's own folder), ``tmp_dir`` and ``out_dir`` and the ``writable`` paths (a source
    tree built in place) stay writable; ``readable`` paths (the prepared build environments), the interpreter
    and the writable ones are bound back in where the private home or ``/tmp`` would hide them.
    """
    if sandbox.tool == "none" or sandbox.executable is None:
        return list(cmd), dict(env)
    (build_dir / "home").mkdir(exist_ok=True)
    hidden = list(dict.fromkeys([Path("/tmp"), *(home for value in {env.get("HOME"), os.path.expanduser("~")}
                                                 if value and (home := _home(value)) is not None)]))
    # Back in, read-only, what lies under a hidden folder and the build needs: the interpreter, its environments,
    # and this folder, whose hook server (hookserver.py) the build's interpreter runs.
    kept = [path for path in dict.fromkeys([*_interpreter_folders(), *(path.resolve() for path in readable
                                                                        if path.exists())])
            if any(path.is_relative_to(folder) for folder in hidden)]
    bound: list[Path] = []
    for path in dict.fromkeys(path.resolve() for path in [build_dir, tmp_dir, out_dir, *writable]):
        path.mkdir(parents=True, exist_ok=True)
        if not any(path.is_relative_to(folder) for folder in bound):
            bound.append(path)
    clean = environ(env, sandbox=sandbox, build_dir=build_dir, tmp_dir=tmp_dir)
    if sandbox.tool == "unshare":
        steps = [step for step in sandbox.steps if step != "loopback" or not sandbox.network]
        init = _init([], hide=[*hidden, Path("/dev/shm")], ro=kept, rw=bound, step=steps, cwd=[cwd] if cwd else [])
        net = [] if sandbox.network else ["--net"]
        return [sandbox.executable, *UNSHARE, *net, *init, "--", *cmd], clean
    args = [sandbox.executable, "--ro-bind", "/", "/", "--dev", "/dev", "--tmpfs", "/dev/shm", "--proc", "/proc"]
    for path in hidden:
        if path.is_dir():
            args += ["--tmpfs", str(path)]
    for path in kept:
        args += ["--ro-bind", str(path), str(path)]
    for path in bound:
        args += ["--bind", str(path), str(path)]
    # Run as root, bwrap keeps every capability unless told: the hook could remount the host writable.
    args += ["--unshare-pid", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if not sandbox.network:
        args += ["--unshare-net"]
    if cwd is not None:
        args += ["--chdir", cwd]
    return [*args, "--", *cmd], clean
