"""Faults, signals and hostile input: nothing is lost, nothing is left behind, nothing crashes."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from conftest import orchestrate
from index_server import IndexServer, index_server_fixture  # noqa: F401 - the index_server fixture
from sdists import make_sdist, read_events, sdist_files


def start(*args: str | os.PathLike[str], env: dict[str, str] | None = None,
          prelude: str = "") -> subprocess.Popen[str]:
    """``orchestrate ARGS`` in a subprocess; ``prelude``, Python run first, can change a default at a seam."""
    command = ["-c", f"{prelude}\nfrom orchestrator.cli import main\nmain()"] if prelude else ["-m", "orchestrator"]
    return subprocess.Popen(
        [sys.executable, *command, *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def started(events: Path, count: int) -> Callable[[], bool]:
    return lambda: len([e for e in read_events(events) if e["event"] == "child"]) >= count


def build_pids(events: Path) -> list[int]:
    """The backend processes building wheels and the grandchildren they spawned."""
    pids = []
    for event in read_events(events):
        if event["event"] != "requires":  # that hook's process ended before the build was admitted
            pids.append(event["pid"])
        if "child" in event:
            pids.append(event["child"])
    return pids


def first_backend(events: Path) -> int:
    """The process of the first ``build_wheel`` to start, once one has."""
    def starts() -> list[int]:
        return [event["pid"] for event in read_events(events) if event["event"] == "start"]
    wait_for(lambda: bool(starts()))
    return starts()[0]


def assert_all_gone(pids: list[int], timeout: float = 10) -> None:
    def gone() -> bool:
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    return False
            except psutil.NoSuchProcess:
                pass
        return True

    wait_for(gone, timeout)


def visible_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".orchestrate"))


def test_timeout_stops_the_whole_tree(tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    make_sdist(tmp_path / "sdists", "hangs", hang=True, spawn_child=True, events=str(events))
    make_sdist(tmp_path / "sdists", "fine")
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--timeout", "3")
    assert result.returncode == 1
    assert "timed out after 3 s" in result.stderr
    assert visible_files(tmp_path / "wh") == ["fine-1.0-py3-none-any.whl"]
    assert_all_gone(build_pids(events))


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_builds_writes_partial_report(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    events = tmp_path / "events.log"
    for i in range(3):
        make_sdist(tmp_path / "sdists", f"slow{i}", sleep=60, spawn_child=True, events=str(events))
    make_sdist(tmp_path / "sdists", "zquick")
    report = tmp_path / "report.json"
    # Two at once whatever else the machine runs: the CPU rule is not what this test is about.
    process = start("build", tmp_path / "sdists", "-w", tmp_path / "wh", "-j", "2", "--max-cpu", "0",
                    "--report-json", report)
    wait_for(started(events, 2))
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == code, stderr
    assert_all_gone(build_pids(events))
    assert visible_files(tmp_path / "wh") == []
    assert not list((tmp_path / "wh").glob(".*.part"))
    data = json.loads(report.read_text())
    assert data["interrupted"] == sig.name
    statuses = sorted(record["status"] for record in data["builds"])
    assert statuses == ["not started", "not started", "stopped", "stopped"]  # 2 stopped, 2 never admitted
    assert "Traceback" not in stderr
    # Stopped builds are no failures: no FAILED line, no log tail; the summary counts them.
    assert "FAILED" not in stderr
    assert any(line.startswith("0 built, 0 skipped, 0 failed, 2 not started, 2 stopped in ")
               for line in stderr.splitlines())


def test_second_interrupt_kills_at_once(tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    # A backend that ignores SIGTERM would otherwise hold the run for the whole grace period.
    make_sdist(tmp_path / "sdists", "stubborn", sleep=60, spawn_child=True, ignore_sigterm=True, events=str(events))
    # A grace of 60 s (3 s by default) tells "killed at once" from "waited it out" on a machine however busy.
    process = start("build", tmp_path / "sdists", "-w", tmp_path / "wh",
                    prelude="from orchestrator.scheduler import SchedulerSettings\n"
                            "SchedulerSettings.__init__.__kwdefaults__['grace'] = 60.0")
    wait_for(started(events, 1))
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert process.poll() is None  # waiting out the grace period for the stubborn tree
    second = time.monotonic()
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=50)
    assert time.monotonic() - second < 30
    assert process.returncode == 130
    assert_all_gone(build_pids(events))


def test_killed_backend_is_reported_and_retried(tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    gate = tmp_path / "gate"
    make_sdist(tmp_path / "sdists", "victim", until=str(gate), events=str(events))
    report = tmp_path / "report.json"
    process = start("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--retries", "1", "--report-json", report)
    os.kill(first_backend(events), signal.SIGKILL)
    gate.touch()  # the second attempt goes through
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "killed by SIGKILL; retrying" in stderr
    (record,) = json.loads(report.read_text())["builds"]
    assert record["status"] == "built" and record["attempts"] == 2


def test_killed_worker_without_retries_fails_with_signal_name(tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    make_sdist(tmp_path / "sdists", "victim", sleep=30, spawn_child=True, events=str(events))
    make_sdist(tmp_path / "sdists", "other")
    process = start("build", tmp_path / "sdists", "-w", tmp_path / "wh", "-j", "2")
    wait_for(started(events, 1))
    backend = psutil.Process(first_backend(events))
    worker = next(p for p in backend.parents() if "orchestrator.build.worker" in " ".join(p.cmdline()))
    worker.kill()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "the worker was killed by SIGKILL" in stderr
    assert visible_files(tmp_path / "wh") == ["other-1.0-py3-none-any.whl"]
    assert_all_gone(build_pids(events))


def test_kill_9_of_orchestrate_then_rerun_completes(tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    for i in range(2):
        make_sdist(tmp_path / "sdists", f"slow{i}", sleep=30, spawn_child=True, events=str(events))
    process = start("build", tmp_path / "sdists", "-w", tmp_path / "wh", "-j", "2", "--max-cpu", "0")
    wait_for(started(events, 2))
    process.kill()
    process.communicate()
    assert_all_gone(build_pids(events))  # the workers noticed and took their builds down
    for i in range(2):
        make_sdist(tmp_path / "sdists", f"slow{i}")  # quick this time
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh")
    assert result.returncode == 0, result.stderr
    assert visible_files(tmp_path / "wh") == ["slow0-1.0-py3-none-any.whl", "slow1-1.0-py3-none-any.whl"]



def test_kill_9_of_orchestrate_takes_down_an_unsandboxed_builds_daemon(tmp_path: Path) -> None:
    # A setsid daemon leaves its build's process group: the fork server, finding its run gone, killed each worker's
    # group, and the daemon the worker had adopted (the reaper of its build's orphans) lived on.
    events, token = tmp_path / "events.log", f"orchestrate-daemon-{os.getpid()}-{time.monotonic_ns()}"
    make_sdist(tmp_path / "sdists", "lurker", requires_daemon=token, sleep=30, events=str(events))

    def daemons() -> list[psutil.Process]:
        return [process for process in psutil.process_iter(["cmdline"]) if token in (process.info["cmdline"] or [])]

    process = start("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--no-sandbox")
    try:
        wait_for(lambda: any(event["event"] == "start" for event in read_events(events)))  # building, after the
        assert daemons(), "the build left no daemon"  # hook that left the daemon
        process.kill()
        process.communicate()
        assert_all_gone([daemon.pid for daemon in daemons()])
    finally:
        for daemon in daemons():
            daemon.kill()

# Run first in `orchestrate`: marks the file {mark} once its first try for the wheelhouse's lock finds it held,
# then waits for it as the real run does.
FINDS_THE_LOCK_HELD = """
import pathlib, filelock
from orchestrator.wheels.wheelhouse import LOCK
_acquire = filelock.BaseFileLock.acquire
def acquire(self, timeout=None, *args, **kwargs):
    if self.lock_file.endswith(LOCK):
        try:
            return _acquire(self, 0, *args, **kwargs)
        except filelock.Timeout:
            pathlib.Path({mark!r}).touch()
    return _acquire(self, timeout, *args, **kwargs)
filelock.BaseFileLock.acquire = acquire
"""


def test_two_runs_on_one_wheelhouse(tmp_path: Path) -> None:
    events, gate, held = tmp_path / "events.log", tmp_path / "gate", tmp_path / "found-held"
    make_sdist(tmp_path / "sdists", "slow", until=str(gate), events=str(events))
    first = start("build", tmp_path / "sdists", "-w", tmp_path / "wh")
    waited: subprocess.Popen[str] | None = None
    try:
        wait_for(lambda: bool(read_events(events)))  # building, the wheelhouse locked, until the gate opens
        refused = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh")
        assert refused.returncode == 1
        assert "another orchestrate run is writing this wheelhouse" in refused.stderr
        waited = start("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--wait-lock", "60",
                       prelude=FINDS_THE_LOCK_HELD.format(mark=str(held)))
        wait_for(held.exists)
        gate.touch()
        first.communicate(timeout=60)
        _, stderr = waited.communicate(timeout=60)
    finally:
        gate.touch()
        for process in (first, waited):
            if process is not None and process.poll() is None:
                process.kill()
                process.communicate()
    assert first.returncode == 0
    assert waited.returncode == 0, stderr
    assert "skipped" in stderr


def _tar_with(path: Path, members: dict[str, bytes | str]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(data, str):  # a symlink to that target
                info.type, info.linkname = tarfile.SYMTYPE, data
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return path


def _zip_with(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        # random bytes with an sdist's name
        ("random-1.0.tar.gz", lambda p: p.write_bytes(os.urandom(4096)), "random-1.0.tar.gz"),
        # an empty file
        ("empty-1.0.tar.gz", lambda p: p.write_bytes(b""), "empty-1.0.tar.gz"),
        # a gzip stream cut in half
        ("cut-1.0.tar.gz", lambda p: p.write_bytes(
            _tar_with(p, {f"cut-1.0/{k}": v for k, v in sdist_files("cut", "1.0", pad=1).items()}).read_bytes()[:200]
        ), "cut-1.0.tar.gz"),
        # a member that climbs out of the extraction folder
        ("evil-1.0.tar.gz", lambda p: _tar_with(p, {"evil-1.0/../../escaped.txt": b"x"}), "escaped.txt"),
        # a symlink out of the folder, then a member written through it
        ("linky-1.0.tar.gz", lambda p: _tar_with(p, {"linky-1.0/pyproject.toml": b"", "linky-1.0/out": "../../..",
                                                    "linky-1.0/out/escaped.txt": b"x"}),
         "member 'linky-1.0/out' is a symlink to '../../..', outside the extraction folder"),
        # zip slip
        ("slip-1.0.zip", lambda p: _zip_with(p, {"slip-1.0/pyproject.toml": b"", "../../escaped.txt": b"x"}),
         "member '../../escaped.txt'"),
        # neither pyproject.toml nor setup.py
        ("bare-1.0.tar.gz", lambda p: _tar_with(p, {"bare-1.0/README": b"hi"}), "no pyproject.toml or setup.py"),
        # a backend that does not exist
        ("nobackend-1.0.tar.gz", lambda p: _tar_with(p, {"nobackend-1.0/pyproject.toml": (
            b'[build-system]\nrequires = []\nbuild-backend = "no_such_backend"\nbackend-path = ["."]\n')}),
         "'no_such_backend' is not available"),
        # pyproject.toml that is not TOML
        ("badtoml-1.0.tar.gz", lambda p: _tar_with(p, {"badtoml-1.0/pyproject.toml": b"[build-system\n"}),
         "pyproject.toml"),
    ],
)
def test_bad_sdists_fail_alone_with_one_line(tmp_path: Path, name: str, make: Callable[[Path], object],
                                             message: str) -> None:
    folder = tmp_path / "sdists"
    make_sdist(folder, "good")
    make(folder / name)
    result = orchestrate("build", folder, "-w", tmp_path / "wh")
    assert result.returncode == 1
    failure = next(line for line in result.stderr.splitlines() if line.startswith("FAILED"))
    assert message in failure
    assert visible_files(tmp_path / "wh") == ["good-1.0-py3-none-any.whl"]
    assert not (tmp_path / "escaped.txt").exists()
    assert "Traceback" not in result.stderr


def publish_failure(wheelhouse: Path) -> str:
    return (f"cannot publish huge-1.0-py3-none-any.whl to {wheelhouse}: No space left on device; "
            "free some space there or choose another wheelhouse")


@pytest.fixture()
def tiny_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True,
                          check=False)
    if done.returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_disk_full_fails_the_build_and_leaves_no_partial_file(tmp_path: Path, tiny_disk: Path) -> None:
    make_sdist(tmp_path / "sdists", "huge", pad_kb=1024)
    make_sdist(tmp_path / "sdists", "small")
    # One build at a time: side by side, small's wheel can meet the disk while huge's partial file fills it.
    result = orchestrate("build", tmp_path / "sdists", "-w", tiny_disk, "--max-builds", "1")
    assert result.returncode == 1
    assert f"FAILED huge 1.0: {publish_failure(tiny_disk)}" in result.stderr.splitlines()
    assert visible_files(tiny_disk) == ["small-1.0-py3-none-any.whl"]
    assert not list(tiny_disk.glob(".*.part"))


def test_disk_full_in_a_private_mount_namespace(tmp_path: Path) -> None:
    """A real full disk without root: a 256k tmpfs in a user and mount namespace of the test's own."""
    wheelhouse, listing = tmp_path / "wh", tmp_path / "listing.txt"
    wheelhouse.mkdir()
    # The mount lives as long as the namespace: list the wheelhouse from inside it.
    script = 'mount -t tmpfs -o size=256k tmpfs "$WH" || exit 99; "$@"; code=$?; ls -A "$WH" > "$LISTING"; exit $code'
    unshare = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh"]
    env = {**os.environ, "WH": str(wheelhouse), "LISTING": str(listing)}
    if shutil.which("unshare") is None or subprocess.run([*unshare, "true"], env=env, check=False).returncode:
        pytest.skip("user namespaces are not available here")
    make_sdist(tmp_path / "sdists", "huge", pad_kb=1024)
    make_sdist(tmp_path / "sdists", "small")
    result = subprocess.run([*unshare, sys.executable, "-m", "orchestrator", "build", str(tmp_path / "sdists"),
                             "-w", str(wheelhouse), "--max-builds", "1"], env=env, capture_output=True, text=True,
                            timeout=240, check=False)
    assert result.returncode == 1, result.stderr
    assert f"FAILED huge 1.0: {publish_failure(wheelhouse)}" in result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    files = listing.read_text().split()
    assert [name for name in files if not name.startswith(".orchestrate")] == ["small-1.0-py3-none-any.whl"]


# Loaded by every Python process of the orchestrate run through PYTHONPATH (the CLI, its
# workers, build backends): a file that ``atomic_write`` opens, whose path matches
# $FAULT_ENOSPC, takes 512 bytes and then fails as a full disk does.
ENOSPC_SITECUSTOMIZE = """
import errno, fnmatch, io, os

_pattern = os.environ.get("FAULT_ENOSPC")
_fdopen = os.fdopen


class _FullDisk(io.BufferedWriter):
    room = 512

    def write(self, data):
        if len(data) <= self.room:
            self.room -= len(data)
            return super().write(data)
        super().write(bytes(data[: self.room]))
        self.room = 0
        self.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fdopen(fd, mode="r", *args, **kwargs):
    if _pattern and mode == "wb" and fnmatch.fnmatch(os.readlink(f"/proc/self/fd/{fd}"), _pattern):
        return _FullDisk(io.FileIO(fd, "wb"))
    return _fdopen(fd, mode, *args, **kwargs)


os.fdopen = fdopen
"""


def disk_full_for(pattern: str, tmp_path: Path) -> dict[str, str]:
    """The environment that makes the orchestrate process run out of space writing files that match ``pattern``."""
    inject = tmp_path / "inject"
    inject.mkdir(exist_ok=True)
    (inject / "sitecustomize.py").write_text(ENOSPC_SITECUSTOMIZE)
    path = os.pathsep.join(filter(None, [str(inject), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "FAULT_ENOSPC": pattern}


def test_disk_full_while_publishing_a_wheel_fails_that_build_only(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wh"
    make_sdist(tmp_path / "sdists", "huge", pad_kb=64)
    make_sdist(tmp_path / "sdists", "small")
    env = disk_full_for(f"{wheelhouse.resolve()}/.huge-*.part", tmp_path)
    result = orchestrate("build", tmp_path / "sdists", "-w", wheelhouse, env=env)
    assert result.returncode == 1, result.stderr
    assert f"FAILED huge 1.0: {publish_failure(wheelhouse)}" in result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    assert visible_files(wheelhouse) == ["small-1.0-py3-none-any.whl"]
    assert not list(wheelhouse.glob(".*.part"))


@pytest.mark.parametrize("full", ["dest", "cache"])
def test_disk_full_while_saving_a_download(tmp_path: Path, index_server: IndexServer, full: str) -> None:
    dest, cache = tmp_path / "sdists", tmp_path / "cache"
    for name in ("big", "other"):
        sdist = make_sdist(tmp_path / "made", name)
        index_server.add(sdist.name, sdist.read_bytes())
    (tmp_path / "req.txt").write_text("big==1.0\nother==1.0\n")
    where = f"{dest.resolve()}/.big-*" if full == "dest" else f"{cache.resolve()}/*/.big-*"
    result = orchestrate("download", "-r", tmp_path / "req.txt", "--no-deps", "-d", dest, "--cache-dir", cache,
                         "-i", index_server.simple_url, env=disk_full_for(where, tmp_path))
    assert "Traceback" not in result.stderr
    cached = sorted(p.name for p in cache.rglob("*") if p.is_file())
    if full == "dest":
        assert result.returncode == 1, result.stderr
        message = (f"big 1.0: cannot save big-1.0.tar.gz in {dest}: No space left on device; "
                   "free some space there or choose another folder")
        assert f"FAILED download of big 1.0: {message}" in result.stderr.splitlines()
        assert sorted(p.name for p in dest.iterdir()) == ["other-1.0.tar.gz"]
    else:  # the cache only saves time: the download stands, the cache gets nothing of it
        assert result.returncode == 0, result.stderr
        assert "cannot store big-1.0.tar.gz in the cache" in result.stderr
        assert sorted(p.name for p in dest.iterdir()) == ["big-1.0.tar.gz", "other-1.0.tar.gz"]
    assert cached == ["other-1.0.tar.gz"]


def test_unreadable_or_misnamed_sdists_fail_alone(tmp_path: Path) -> None:
    folder = tmp_path / "sdists"
    make_sdist(folder, "good")
    (folder / "not_a_version.tar.gz").write_bytes(b"x")  # no NAME-VERSION in the filename
    locked = make_sdist(folder, "locked")
    locked.chmod(0)
    result = orchestrate("build", folder, "-w", tmp_path / "wh")
    if os.geteuid() != 0:  # root reads anything
        assert "locked-1.0.tar.gz: cannot read the file" in result.stderr
    assert result.returncode == 1
    assert "not_a_version.tar.gz: not an sdist filename" in result.stderr
    assert "good-1.0-py3-none-any.whl" in visible_files(tmp_path / "wh")
    assert "Traceback" not in result.stderr


def test_temp_folders_are_removed_after_timeouts_and_interrupts(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"TMPDIR": str(temp)}
    events = tmp_path / "events.log"
    make_sdist(tmp_path / "a", "hangs", hang=True, spawn_child=True, events=str(events))
    make_sdist(tmp_path / "a", "fine")
    result = orchestrate("build", tmp_path / "a", "-w", tmp_path / "wh", "--timeout", "2", env=env)
    assert result.returncode == 1
    assert list(temp.iterdir()) == []
    make_sdist(tmp_path / "b", "slow", sleep=60, spawn_child=True, events=str(events))
    process = start("build", tmp_path / "b", "-w", tmp_path / "wh", env=env)
    wait_for(started(events, 2))
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=30)
    assert process.returncode == 130
    assert list(temp.iterdir()) == []
    assert_all_gone(build_pids(events))


# Run first: Ctrl-C lands while the command's own modules are still being imported (as the terminal's would in
# its first few hundred milliseconds), then the command starts as `python -m orchestrator` or the `orchestrate`
# script does.
_INTERRUPT_WHILE_IMPORTING = """
import importlib.abc, importlib.metadata, os, runpy, signal, sys
class Interrupt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "orchestrator.cli.app":
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Interrupt())
sys.argv = ["orchestrate", *sys.argv[1:]]
if {script!r}:
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name="orchestrate")
    entry.load()()
else:
    runpy.run_module("orchestrator", run_name="__main__", alter_sys=True)
"""


# As above, but the interrupt is raised inside a weakref callback as a module loads, as it was once inside
# importlib's own (the run then lost the Ctrl-C, and later hung on the import lock that callback held):
# Python reports such an exception as ignored and goes on.
_INTERRUPT_INSIDE_A_CALLBACK = """
import importlib.abc, os, runpy, signal, sys, weakref
class Interrupt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "orchestrator.cli.app":
            class Lock: pass
            lock = Lock()
            ref = weakref.ref(lock, lambda ref: [os.kill(os.getpid(), signal.SIGINT)] + [None for _ in range(1000)])
            del lock
        return None
sys.meta_path.insert(0, Interrupt())
sys.argv = ["orchestrate", *sys.argv[1:]]
runpy.run_module("orchestrator", run_name="__main__", alter_sys=True)
"""


def test_interrupt_inside_a_callback_while_the_command_loads_is_not_lost(tmp_path: Path) -> None:
    make_sdist(tmp_path / "sdists", "never")
    result = subprocess.run(
        [sys.executable, "-c", _INTERRUPT_INSIDE_A_CALLBACK, "build", str(tmp_path / "sdists"), "-w",
         str(tmp_path / "wh")], capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 130, result.stderr
    assert "Exception ignored" not in result.stderr
    assert not list((tmp_path / "wh").glob("*.whl"))


@pytest.mark.parametrize("script", [False, True], ids=["python -m orchestrator", "orchestrate script"])
def test_interrupt_while_the_command_loads_exits_130_quietly(tmp_path: Path, script: bool) -> None:
    make_sdist(tmp_path / "sdists", "never")
    result = subprocess.run(
        [sys.executable, "-c", _INTERRUPT_WHILE_IMPORTING.format(script=script), "build", str(tmp_path / "sdists"),
         "-w", str(tmp_path / "wh")], capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == "interrupted: nothing was started"
    assert not (tmp_path / "wh").exists()


# First on PYTHONPATH as sitecustomize, armed in the first process that loads it (the command): once a build has
# started, Ctrl-C lands inside an exec() of a string, as it would while dataclasses makes a class's methods (the
# signal is handled in the main thread, through SIGUSR1's handler).
_INTERRUPT_INSIDE_EXEC = """
import json, os, signal, threading, time
try:
    os.close(os.open(os.environ["ARMED"], os.O_CREAT | os.O_EXCL))
except FileExistsError:
    pass
else:
    def interrupt(signum, frame):
        exec("import os, signal\\nos.kill(os.getpid(), signal.SIGINT)\\nfor _ in range(1000): pass\\n")
    def watch():
        while not os.path.exists(os.environ["EVENTS"]):
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGUSR1)
    signal.signal(signal.SIGUSR1, interrupt)
    threading.Thread(target=watch, daemon=True).start()
"""


def test_interrupt_inside_an_exec_exits_130(tmp_path: Path) -> None:
    """CPython ends ``python -m`` by SIGINT, whatever its exit code, once a KeyboardInterrupt left an exec()
    and no exec() completed after it."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_INTERRUPT_INSIDE_EXEC)
    events = tmp_path / "events.log"
    make_sdist(tmp_path / "sdists", "slow", sleep=60, events=str(events))
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh",
                         env={"PYTHONPATH": path, "ARMED": str(tmp_path / "armed"), "EVENTS": str(events)})
    assert "interrupted: running builds were stopped" in result.stderr
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr


# Loaded by every Python process of the run through PYTHONPATH: a file that ``atomic_write`` opens, whose path
# matches $FAULT_HANG, marks $FAULT_HANG_MARK at its first write and then hangs there: a build caught as it
# publishes its wheel.
HANG_SITECUSTOMIZE = """
import fnmatch, io, os, time

_pattern = os.environ.get("FAULT_HANG")
_fdopen = os.fdopen


class _Hanging(io.BufferedWriter):
    def write(self, data):
        open(os.environ["FAULT_HANG_MARK"], "w").close()
        while True:
            time.sleep(1)


def fdopen(fd, mode="r", *args, **kwargs):
    if _pattern and mode == "wb" and fnmatch.fnmatch(os.readlink(f"/proc/self/fd/{fd}"), _pattern):
        return _Hanging(io.FileIO(fd, "wb"))
    return _fdopen(fd, mode, *args, **kwargs)


os.fdopen = fdopen
"""


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_stopped_while_publishing_leaves_no_partial_file(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    wheelhouse = tmp_path / "wh"
    make_sdist(tmp_path / "sdists", "caught")
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(HANG_SITECUSTOMIZE)
    mark = tmp_path / "publishing"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(inject), os.environ.get("PYTHONPATH")])),
           "FAULT_HANG": f"{wheelhouse.resolve()}/.caught-*.part", "FAULT_HANG_MARK": str(mark)}
    process = start("build", tmp_path / "sdists", "-w", wheelhouse, env=env)
    wait_for(mark.exists)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert visible_files(wheelhouse) == []
    assert not list(wheelhouse.glob(".*.part"))
