"""Write tiny sdists whose in-tree PEP 517 backend misbehaves on request.

The backend (``_fakebackend.py``, found through ``backend-path``) needs nothing
installed. Its behaviour comes from ``fake.json`` inside the sdist:

- ``sleep``: seconds to sleep in ``build_wheel``
- ``alloc_mb``: megabytes to allocate (and touch) while sleeping
- ``until``: a file; ``build_wheel`` waits for it to exist (60 s at most) before it sleeps: the test opens the gate
- ``until_starts``: ``build_wheel`` waits until the ``events`` file has this many ``start`` events (30 s at most)
  before it sleeps: builds that must overlap end once they have, or, if they never all run at once, 30 s later
- ``events``: a file to append ``{"name", "event", "t", "pid"}`` lines to: ``requires`` from
  ``get_requires_for_build_wheel``, ``start`` and ``end`` from ``build_wheel``
- ``record_env``: names of environment variables whose values (``None`` if unset) the
  ``start`` event carries as ``"env"``, and the wheel as ``NAME/env.json`` (readable from a sandbox)
- ``record_priority``: the ``requires`` and ``start`` events carry ``"priority"``: the hook's niceness
  (``/proc/self/stat``) and I/O class (``ionice -p``), and ``child``, what ``nice`` and ``ionice`` say of
  themselves when the hook starts them
- ``record_parents``: every event carries ``"parents"``: the pids of the hook's parent, grandparent and
  great-grandparent (Linux: read from ``/proc``): unsandboxed, the build's hook server, its worker, the fork server;
  and ``"parent_cmdline"``, the parent's command line
- ``record_gc``: every event carries ``"gc"``: whether the hook's process had its collector on, and how many
  collections of each generation it had run, as the backend's module was imported (what its process inherited)
- ``record_random``: every event carries ``"random"``: ``random.random()`` and the next name ``tempfile`` would try
- ``record_modules``: module names; the wheel holds ``NAME/loaded.json``, ``{"requires": [...], "build_wheel":
  [...]}``: those of them each hook's process had imported before the backend's module was (readable from a sandbox)
- ``imports``: module names ``build_wheel`` imports, as an ``import`` statement does
- ``leave_state``: ``get_requires_for_build_wheel`` leaves what a later hook of the same process would see (an
  environment variable, a module in ``sys.modules``, an attribute on the ``json`` module), and the ``start`` event
  carries ``"left"``, those of them ``build_wheel`` sees; each hook registers an ``atexit`` handler that appends an
  ``atexit`` event, and ``build_wheel`` starts a non-daemon thread that appends a ``thread`` event 0.3 s later
- ``requires_daemon``: ``get_requires_for_build_wheel`` leaves a double-forked ``setsid`` daemon sleeping 60 s with
  this token on its command line; whether ``build_wheel`` sees it goes to the wheel as ``NAME/daemon.json``
  (``{"seen": bool}``)
- ``burn_s``: a child of ``build_wheel`` spends this many CPU seconds, as a compiler would
- ``fail``: raise in ``build_wheel``;  ``crash``: SIGKILL itself;  ``hang``: sleep forever
- ``print``: text to print to stdout
- ``wheel_name``: report and write a wheel of this filename instead
- ``no_wheel``: report a filename but write nothing
- ``requires``: extra requirements from ``get_requires_for_build_wheel``
- ``linger_s``: ``get_requires_for_build_wheel`` forks a child (no exec: it holds every descriptor the hook had)
  that sleeps this many seconds after the hook has ended; its pid goes to ``events`` as a ``lingering`` event
- ``spawn_child``: start a grandchild process that sleeps (to test tree killing); its pid goes to ``events``
- ``kill_farm_worker``: SIGKILL the process that started the build worker or its fork server (on a farm, the
  Dask worker), then hang
- ``ignore_sigterm``: ignore SIGTERM (the backend and its grandchild), so only SIGKILL stops it
- ``pad_kb``: add this many kilobytes of random bytes to the wheel
- ``write_files``: paths (``$NAME`` expanded from the hook's environment) ``build_wheel`` tries to write,
  recording each attempt in the wheel as ``NAME/writes.json`` (path as given -> ``{"ok", "got"|"error"}``)
- ``write_site``: write a marker module into the build environment's site-packages
- ``check_site``: fail if that marker module is importable
- ``build_requires``: ``build-system.requires`` of the project (default none)
- ``escape``: in ``build_wheel``, try each way out of a sandbox and record what happened in the wheel as
  ``NAME/escape.json``: ``{"secret_path": FILE, "outside": FILE, "port": N, "env": NAME, "daemon": TOKEN}``
  reads ``$HOME/.ssh/id_rsa`` and ``secret_path``, writes ``outside``, connects to 127.0.0.1:``port``, reads
  ``env``, and leaves a double-forked ``setsid`` daemon sleeping 60 s with ``TOKEN`` on its command line
- ``jobserver``: in ``build_wheel``, be a jobserver client of the FIFO named in ``MAKEFLAGS``
  (``--jobserver-auth=fifo:PATH``), recording in the wheel, as ``NAME/jobserver.json``, ``makeflags`` and
  ``log``, a list of ``[t, +n]`` (time just before reading n tokens) and ``[t, -n]`` (just after writing them
  back). Keys: ``want`` (most tokens held at once), ``window_s`` (how long to keep trying), ``hold_s`` (each
  take is held this long, then given back), ``barrier`` (first wait until the ``events`` file has this many
  ``start`` events), ``keep`` (take tokens without giving any back until ``want`` are held), ``crash`` (with
  ``keep``: SIGKILL itself, holding them)
- ``run``: commands (argument lists) ``build_wheel`` runs in turn, failing if one fails; their stdout goes to
  the wheel as ``NAME/run.json``
- ``requires_dist``: ``Requires-Dist`` lines of the wheel's METADATA and the sdist's PKG-INFO
  (pip's resolver reads them by building the wheel, as the backend has no metadata hook)

``make_sdist``/``make_tree`` also take ``extra_files``: more members of the sdist, path -> bytes.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

BACKEND = r'''
import sys
LOADED = set(sys.modules)  # what the hook's process had before this backend's imports
import gc
GC = {"enabled": gc.isenabled(), "collections": [generation["collections"] for generation in gc.get_stats()]}
import base64, hashlib, json, os, signal, subprocess, sysconfig, time, zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "fake.json")) as f:
    CONFIG = json.load(f)


def _parents():
    chain, pid = [], os.getpid()
    for _ in range(3):
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
        chain.append(pid)
    return chain


def _event(kind, **extra):
    path = CONFIG.get("events")
    if path:
        if CONFIG.get("record_parents"):
            extra["parents"] = _parents()
            with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
                extra["parent_cmdline"] = f.read().decode().split("\0")[:-1]
        if CONFIG.get("record_gc"):
            extra["gc"] = GC
        if CONFIG.get("record_random"):
            import random, tempfile
            extra["random"] = [random.random(), next(tempfile._get_candidate_names())]
        line = json.dumps({"name": CONFIG["name"], "event": kind, "t": time.time(), "pid": os.getpid(), **extra})
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, (line + "\n").encode())
        os.close(fd)


def _priority():
    with open("/proc/self/stat") as f:
        nice = int(f.read().rsplit(")", 1)[1].split()[16])  # field 19, counting from the pid
    ioclass = subprocess.run(["ionice", "-p", str(os.getpid())], capture_output=True, text=True).stdout.strip()
    child = subprocess.run(["sh", "-c", "nice; ionice"], capture_output=True, text=True).stdout.split()
    return {"nice": nice, "ioclass": ioclass, "child": child}


def _priority_extra():
    return {"priority": _priority()} if CONFIG.get("record_priority") else {}


def _at_exit(hook):
    if CONFIG.get("leave_state"):
        import atexit
        atexit.register(_event, "atexit", hook=hook)


def _left():
    seen = ["environ"] if "ORCHESTRATE_LEFT" in os.environ else []
    seen += ["module"] if "orchestrate_left" in sys.modules else []
    return seen + (["json"] if hasattr(json, "orchestrate_left") else [])


def _seen(token):
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if token.encode() in f.read():
                    return True
        except OSError:
            pass
    return False


def _loaded():
    return [name for name in CONFIG["record_modules"] if name in LOADED]


def get_requires_for_build_wheel(config_settings=None):
    _event("requires", **_priority_extra())
    if CONFIG.get("record_modules"):
        with open(os.path.join(HERE, "_loaded.json"), "w") as f:
            json.dump(_loaded(), f)
    _at_exit("requires")
    if CONFIG.get("leave_state"):
        import types
        os.environ["ORCHESTRATE_LEFT"] = "yes"
        sys.modules["orchestrate_left"] = types.ModuleType("orchestrate_left")
        json.orchestrate_left = True
    if CONFIG.get("requires_daemon"):
        _daemon(CONFIG["requires_daemon"])
    if CONFIG.get("linger_s"):
        _linger(CONFIG["linger_s"])
    return list(CONFIG.get("requires", []))


def _linger(seconds):
    child = os.fork()
    if child == 0:  # no exec: the child keeps every descriptor the hook had
        time.sleep(seconds)
        os._exit(0)
    _event("lingering", child=child)


def _attempt(action):
    try:
        return {"ok": True, "got": action()}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def _read(path):
    with open(path) as f:
        return f.read()


def _write(path):
    with open(path, "w") as f:
        f.write("escaped\n")
    return path


def _connect(port):
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"escaped\n")
    return port


def _env(name):
    if name not in os.environ:
        raise KeyError(name)
    return os.environ[name]


def _daemon(token):
    first = os.fork()
    if first == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)", token])
        os._exit(0)
    os.waitpid(first, 0)
    return token


def _escape(plan):
    return {
        "home_secret": _attempt(lambda: _read(os.path.join(os.environ.get("HOME", "/"), ".ssh", "id_rsa"))),
        "secret_path": _attempt(lambda: _read(plan["secret_path"])),
        "outside": _attempt(lambda: _write(plan["outside"])),
        "connect": _attempt(lambda: _connect(plan["port"])),
        "env": _attempt(lambda: _env(plan["env"])),
        "daemon": _attempt(lambda: _daemon(plan["daemon"])),
    }


def _parent_of_build_worker():
    pid, found = os.getpid(), False
    while pid > 1:  # the build worker and, above it, the fork server it is a fork of, share a command line
        with open(f"/proc/{pid}/stat") as f:
            parent = int(f.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            ours = b"orchestrator.build.worker" in f.read()
        if found and not ours:
            return pid
        found, pid = found or ours, parent
    raise RuntimeError("no build worker above this process")


def _starts():
    with open(CONFIG["events"]) as f:
        return sum(json.loads(line)["event"] == "start" for line in f if line.strip())


def _jobserver(plan):
    flags = os.environ.get("MAKEFLAGS", "")
    fifo = [word.split(":", 1)[1] for word in flags.split() if word.startswith("--jobserver-auth=fifo:")]
    result = {"makeflags": flags, "log": []}
    if not fifo:
        return result
    fd = os.open(fifo[-1], os.O_RDWR | os.O_NONBLOCK)
    if plan.get("barrier"):
        deadline = time.time() + 60
        while _starts() < plan["barrier"] and time.time() < deadline:
            time.sleep(0.02)
    held, end = 0, time.time() + plan.get("window_s", 1.0)
    while time.time() < end and (not plan.get("keep") or held < plan["want"]):
        stamp = time.time()
        try:
            got = len(os.read(fd, plan["want"] - held))
        except BlockingIOError:
            got = 0
        if not got:
            time.sleep(0.01)
            continue
        result["log"].append([stamp, got])
        held += got
        if plan.get("keep"):
            continue
        time.sleep(plan.get("hold_s", 0.1))
        os.write(fd, b"+" * held)
        result["log"].append([time.time(), -held])
        held = 0
    if plan.get("crash"):
        os.kill(os.getpid(), signal.SIGKILL)
    if held:
        os.write(fd, b"+" * held)
        result["log"].append([time.time(), -held])
    os.close(fd)
    return result


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    state = {"left": _left()} if CONFIG.get("leave_state") else {}
    daemon_seen = _seen(CONFIG["requires_daemon"]) if CONFIG.get("requires_daemon") else None
    _event("start", **({"env": {name: os.environ.get(name) for name in CONFIG["record_env"]}}
                       if CONFIG.get("record_env") else {}), **_priority_extra(), **state)
    _at_exit("build_wheel")
    if CONFIG.get("leave_state"):
        import threading
        threading.Thread(target=lambda: (time.sleep(0.3), _event("thread"))).start()
    if CONFIG.get("print"):
        print(CONFIG["print"], flush=True)
    if CONFIG.get("ignore_sigterm"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the grandchild
    if CONFIG.get("check_site"):
        try:
            import orchestrate_marker  # noqa: F401
        except ImportError:
            pass
        else:
            raise RuntimeError("the marker written by another build is visible here")
    if CONFIG.get("write_site"):
        with open(os.path.join(sysconfig.get_paths()["purelib"], "orchestrate_marker.py"), "w") as f:
            f.write("MARK = 1\n")
    if CONFIG.get("spawn_child"):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        _event("child", child=child.pid)
    hold = None
    if CONFIG.get("alloc_mb"):
        hold = b"\x01" * (CONFIG["alloc_mb"] * 1024 * 1024)
    if CONFIG.get("crash"):
        os.kill(os.getpid(), signal.SIGKILL)
    if CONFIG.get("kill_farm_worker"):
        os.kill(_parent_of_build_worker(), signal.SIGKILL)
        while True:  # until the build worker, its parent gone, takes its group down
            time.sleep(1)
    if CONFIG.get("hang"):
        while True:
            time.sleep(1)
    if CONFIG.get("burn_s"):  # CPU spent by a child, as a compiler's would be
        subprocess.run([sys.executable, "-c", "import time\nend = time.process_time() + %r\n"
                        "while time.process_time() < end: pass" % CONFIG["burn_s"]], check=True)
    ran = [subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout for cmd in CONFIG.get("run", [])]
    tokens = _jobserver(CONFIG["jobserver"]) if CONFIG.get("jobserver") else None
    gate_closes = time.monotonic() + 60
    while CONFIG.get("until") and not os.path.exists(CONFIG["until"]) and time.monotonic() < gate_closes:
        time.sleep(0.02)
    gate_closes = time.monotonic() + 30
    while CONFIG.get("until_starts") and _starts() < CONFIG["until_starts"] and time.monotonic() < gate_closes:
        time.sleep(0.02)
    time.sleep(CONFIG.get("sleep", 0))
    for name in CONFIG.get("imports", []):
        __import__(name)  # as an import statement does
    del hold
    if CONFIG.get("fail"):
        _event("end", ok=False)
        raise RuntimeError("fake backend asked to fail")
    name, version = CONFIG["name"].replace("-", "_"), CONFIG["version"]
    filename = CONFIG.get("wheel_name") or f"{name}-{version}-py3-none-any.whl"
    if CONFIG.get("no_wheel"):
        _event("end", ok=True)
        return filename
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {CONFIG['name']}\nVersion: {version}\n"
            + "".join(f"Requires-Dist: {r}\n" for r in CONFIG.get("requires_dist", []))
        ).encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: fakebackend\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    if CONFIG.get("record_env"):
        files[f"{name}/env.json"] = json.dumps({n: os.environ.get(n) for n in CONFIG["record_env"]}).encode()
    if CONFIG.get("record_modules"):
        with open(os.path.join(HERE, "_loaded.json")) as f:
            files[f"{name}/loaded.json"] = json.dumps({"requires": json.load(f), "build_wheel": _loaded()}).encode()
    if tokens is not None:
        files[f"{name}/jobserver.json"] = json.dumps(tokens).encode()
    if CONFIG.get("run"):
        files[f"{name}/run.json"] = json.dumps(ran).encode()
    if CONFIG.get("escape"):
        files[f"{name}/escape.json"] = json.dumps(_escape(CONFIG["escape"])).encode()
    if daemon_seen is not None:
        files[f"{name}/daemon.json"] = json.dumps({"seen": daemon_seen}).encode()
    if CONFIG.get("write_files"):
        files[f"{name}/writes.json"] = json.dumps(
            {path: _attempt(lambda path=path: _write(os.path.expandvars(path))) for path in CONFIG["write_files"]}
        ).encode()
    if CONFIG.get("pad_kb"):
        files[f"{name}/blob.bin"] = os.urandom(CONFIG["pad_kb"] * 1024)
    record = [_record_line(path, data) for path, data in files.items()] + [f"{dist_info}/RECORD,,"]
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as whl:
        for path, data in files.items():
            whl.writestr(path, data)
    _event("end", ok=True)
    return filename


def build_sdist(sdist_directory, config_settings=None):
    raise NotImplementedError
'''


def _pyproject(name: str, version: str, build_requires: list[str]) -> str:
    return (
        f"[build-system]\nrequires = {json.dumps(build_requires)}\n"
        f"build-backend = \"_fakebackend\"\nbackend-path = [\".\"]\n\n"
        f"[project]\nname = \"{name}\"\nversion = \"{version}\"\n"
    )


def sdist_files(name: str, version: str, **behaviour: Any) -> dict[str, bytes]:
    """The files of a fake project: pyproject.toml, the backend and its config."""
    config = {"name": name, "version": version, **behaviour}
    return {
        "pyproject.toml": _pyproject(name, version, behaviour.get("build_requires", [])).encode(),
        "_fakebackend.py": BACKEND.encode(),
        "fake.json": json.dumps(config).encode(),
        "PKG-INFO": (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                     + "".join(f"Requires-Dist: {r}\n" for r in behaviour.get("requires_dist", []))).encode(),
    }


_TAR_MODES = {"tar.gz": "w:gz", "tgz": "w:gz", "tar.bz2": "w:bz2", "tbz": "w:bz2", "tar.xz": "w:xz", "txz": "w:xz",
              "tar": "w"}


def make_sdist(folder: Path, name: str, version: str = "1.0", *, fmt: str = "tar.gz",
               extra_files: dict[str, bytes] | None = None, **behaviour: Any) -> Path:
    """Write ``name-version.<fmt>`` into ``folder``; see the module docstring for ``behaviour``.

    ``fmt`` is ``zip`` or a tar suffix: ``tar.gz``, ``tgz``, ``tar.bz2``, ``tbz``, ``tar.xz``, ``txz`` or ``tar``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{name.replace('-', '_')}-{version}"
    files = {**sdist_files(name, version, **behaviour), **(extra_files or {})}
    path = folder / f"{stem}.{fmt}"
    if fmt == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            for member, data in files.items():
                archive.writestr(f"{stem}/{member}", data)
    else:
        with tarfile.open(path, _TAR_MODES[fmt]) as archive:  # type: ignore[call-overload]
            for member, data in files.items():
                info = tarfile.TarInfo(f"{stem}/{member}")
                info.size = len(data)
                info.mode = 0o644
                archive.addfile(info, io.BytesIO(data))
    return path


def make_tree(folder: Path, name: str, version: str = "1.0", **behaviour: Any) -> Path:
    """Write the same project as a source tree."""
    folder.mkdir(parents=True, exist_ok=True)
    for member, data in sdist_files(name, version, **behaviour).items():
        (folder / member).write_bytes(data)
    return folder


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def max_concurrency(events: list[dict[str, Any]]) -> int:
    """The most builds running at once according to the backend's own start/end events."""
    points = sorted(
        (event["t"], 1 if event["event"] == "start" else -1) for event in events if event["event"] in ("start", "end")
    )
    running = peak = 0
    for _, delta in points:
        running += delta
        peak = max(peak, running)
    return peak
