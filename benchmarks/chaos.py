"""Chaos rounds: real ``orchestrate`` runs interrupted at a random moment, then the promises checked.

Each round generates a few sdists with the tests' in-tree backend (some sleep, allocate, spawn a
child or a ``setsid`` daemon, compile a C file, ignore SIGTERM; a few fail), starts a real
``orchestrate build`` (some rounds ``build --install-into``, some ``orchestrate install`` of
generated wheels over an older version), sandboxed or not, ``--max-builds`` 2-4, in a session of
its own; waits a random time (a fifth of the rounds within the first 100 ms, the rest up to a
little past the run's expected length, so the shutdown is hit too) and delivers one of: SIGINT to
the process group (as a terminal does), SIGTERM or SIGKILL to orchestrate, SIGKILL to a fork
server, a build worker or a hook process (install rounds: the bytecode compiler). Then it checks:

- the run exits in time (a hang gets ``py-spy dump``) with the documented status: 130, 143, -9,
  or 0/1 when only a worker was killed or the signal came after the end;
- within 5 s no process of the run is alive: the run's descendants (sampled every 20 ms, by pid
  and start time), anything whose environment or command line carries the round's mark, and
  anything in a PID namespace one of its sandboxes made;
- every ``.whl`` in the wheelhouse is a zip whose RECORD hashes match; nothing else is visible;
- a second, uninterrupted run on the same wheelhouse and state folder exits as it should,
  builds exactly the wheels that were missing (skipping the others), leaves no hidden partial
  file and removes the first run's private folders; after install rounds, the next install
  leaves a venv where ``pip check`` passes, every distribution is at the wanted version, its
  RECORD matches the files and its module imports.

Nothing here is timed. A violation is printed with the round's settings and its folder is kept.

    python benchmarks/chaos.py [--rounds 100] [--seed N] [--kinds build,build_install,install]
        [--workdir DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests")]

from sdists import make_sdist  # noqa: E402
from wheels import write_wheel  # noqa: E402

ACTIONS = ("sigint-group", "sigint-twice", "sigterm", "sigkill", "sigkill-rerun", "kill-forkserver", "kill-worker",
           "kill-hook")
INSTALL_ACTIONS = ("sigint-group", "sigterm", "sigkill", "kill-compiler")
C_SOURCE = b"int chaos(int x) { return x * 2; }\n"


@dataclass(kw_only=True)
class Round:
    """One interrupted run and what was found."""

    index: int
    kind: str
    sandbox: bool
    max_builds: int
    action: str
    delay_s: float
    mark: str
    delivered: str = ""
    returncode: int | None = None
    violations: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    """Documented limits met: a signal while the interpreter itself starts, or in its finalization once the run
    said its last line. (An unsandboxed build's daemon was one, until the worker killed what its build left.)"""


@dataclass
class Sampler:
    """The run's descendants, seen every 20 ms: (pid, start time) -> command line, and their PID namespaces."""

    root: int
    seen: dict[tuple[int, float], str] = field(default_factory=dict)
    namespaces: set[str] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        host = _pidns(os.getpid())
        while not self.stop.is_set():
            try:
                children = psutil.Process(self.root).children(recursive=True)
            except psutil.Error:
                children = []
            for child in children:
                try:
                    key = (child.pid, child.create_time())
                    if key not in self.seen:
                        self.seen[key] = " ".join(child.cmdline())[:300]
                    ns = _pidns(child.pid)
                    if ns and ns != host:
                        self.namespaces.add(ns)
                except psutil.Error:
                    pass
            time.sleep(0.02)


def _pidns(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return ""


def _alive(process: psutil.Process) -> bool:
    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def leftovers(sampler: Sampler, mark: str) -> list[str]:
    """Processes of the run still alive: sampled descendants, marked ones, those in its sandboxes' namespaces."""
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            key = (process.pid, process.create_time())
            ours = key in sampler.seen or _pidns(process.pid) in sampler.namespaces
            if not ours:
                cmdline = " ".join(process.cmdline())
                ours = mark in cmdline or mark in process.environ().get("CHAOS_MARK", "")
            if ours and _alive(process):
                found.append(f"{process.pid} {' '.join(process.cmdline())[:200]}")
        except psutil.Error:
            continue
    return found


def check_interrupted(spec: Round, log_path: Path, what: str) -> None:
    """The interrupted ``what``'s exit status and output, unless the signal came while the interpreter started."""
    log = log_path.read_text(errors="replace")
    codes = expected_codes(spec, log)
    if interpreter_start(spec, log):
        return
    if spec.returncode not in codes:
        spec.violations.append(f"exit status {spec.returncode}, expected one of {sorted(codes)} "
                               f"({spec.delivered}); log {log_path}")
    if own_traceback(log):
        spec.violations.append(f"a traceback in the output of the interrupted {what}: {log_path}")


def own_traceback(log: str) -> bool:
    """Whether ``log`` holds a traceback of the run's own: a failed build's log tail, which the summary shows, holds
    the fake backend's."""
    blocks = log.split("Traceback (most recent call last):")[1:]
    return any("_fakebackend.py" not in block.split("\n  full log: ", 1)[0] for block in blocks)


def wait_gone(sampler: Sampler, mark: str, within: float, spec: Round, what: str) -> None:
    """Wait up to ``within`` seconds for the run's processes to be gone; what is left is a violation, and is
    killed."""
    deadline = time.monotonic() + within
    while True:
        left = leftovers(sampler, mark)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if left:
        spec.violations.append(f"{what}: alive 5 s after the run ended: {left[:4]}")
    kill_leftovers(sampler, mark)


def kill_leftovers(sampler: Sampler, mark: str) -> None:
    """Clear what a violating round left (these are this script's own processes) so the next round starts clean."""
    for line in leftovers(sampler, mark):
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except OSError:
            pass


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")


def wheel_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete wheel, or None."""
    try:
        with zipfile.ZipFile(path) as whl:
            if whl.testzip() is not None:
                return "a member's CRC does not match"
            records = [n for n in whl.namelist() if n.endswith(".dist-info/RECORD")]
            if len(records) != 1:
                return "no RECORD"
            rows = list(csv.reader(io.StringIO(whl.read(records[0]).decode())))
            listed = {row[0] for row in rows if row}
            for row in rows:
                if row and row[1] and _record_hash(whl.read(row[0])) != row[1]:
                    return f"{row[0]}: hash does not match RECORD"
            if set(whl.namelist()) - listed:
                return "members missing from RECORD"
    except (zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
        return f"not a valid wheel: {exc}"
    return None


def check_wheelhouse(wheelhouse: Path, *, partial_allowed: bool) -> tuple[set[str], list[str]]:
    """The valid wheels' names, and the problems: invalid wheels, stray visible files, hidden partial ones."""
    wheels: set[str] = set()
    problems: list[str] = []
    if not wheelhouse.is_dir():
        return wheels, problems
    for path in wheelhouse.iterdir():
        if path.name.startswith("."):
            if path.name not in (".orchestrate-manifest.json", ".orchestrate.lock") and not partial_allowed:
                problems.append(f"hidden file left in the wheelhouse: {path.name}")
            continue
        if not path.name.endswith(".whl"):
            problems.append(f"stray file in the wheelhouse: {path.name}")
            continue
        problem = wheel_problem(path)
        if problem:
            problems.append(f"{path.name}: {problem}")
        else:
            wheels.add(path.name)
    return wheels, problems


def make_sources(folder: Path, rng: random.Random, mark: str) -> dict[str, bool]:
    """Write 3-7 sdists; name -> whether its build should succeed."""
    expected = {}
    for i in range(rng.randint(3, 7)):
        name = f"p{i}"
        behaviour: dict[str, Any] = {"sleep": round(rng.uniform(0.1, 1.5), 2)}
        extra: dict[str, bytes] = {}
        roll = rng.random()
        if roll < 0.15:
            behaviour["spawn_child"] = True
        elif roll < 0.3:
            behaviour["requires_daemon"] = f"chaosdaemon-{mark}-{i}"
        elif roll < 0.4:
            behaviour["alloc_mb"] = 64
        elif roll < 0.55:
            extra["chaos.c"] = C_SOURCE
            behaviour["run"] = [["cc", "-O1", "-c", "chaos.c", "-o", "chaos.o"]]
        elif roll < 0.62:
            behaviour["spawn_child"] = True
            behaviour["ignore_sigterm"] = True
        elif roll < 0.68:
            behaviour["linger_s"] = 3
        ok = rng.random() > 0.1
        if not ok:
            behaviour["fail"] = True
        make_sdist(folder, name, "1.0", extra_files=extra, **behaviour)
        expected[f"{name}-1.0-py3-none-any.whl"] = ok
    return expected


def make_install_wheels(folder: Path, version: str, count: int) -> list[Path]:
    """``count`` wheels of 60 modules each at ``version``, each requiring the next at that version."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        files = {f"chaos_w{i}/__init__.py": f"VERSION = {version!r}\n"}
        files.update({f"chaos_w{i}/m{j}.py": f"X = {j}\n" + "# pad\n" * 40 for j in range(60)})
        requires = [f"chaos-w{i + 1}=={version}"] if i + 1 < count else []
        paths.append(write_wheel(folder, f"chaos-w{i}", version, files=files, requires_dist=requires))
    return paths


def venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return path / "bin" / "python"


def venv_problems(python: Path, wanted: dict[str, str], *, either: str | None = None) -> list[str]:
    """``pip check``, and each distribution at its wanted version, its RECORD matching and its module importing.

    ``either``: another version each distribution may be at (an install that stopped between wheels); no
    ``pip check`` then, as the versions may be mixed.
    """
    problems = []
    # the venv alone: not a checkout the runs were pointed at (PYTHONPATH)
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    if either is None:
        check = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "check"],
                               capture_output=True, text=True, env=env)
        if check.returncode != 0:
            problems.append(f"pip check: {check.stdout.strip()} {check.stderr.strip()}"[:300])
    code = (
        "import base64, hashlib, importlib, importlib.metadata as md, json, sys\n"
        "wanted = json.loads(sys.argv[1]); either = sys.argv[2]; out = []\n"
        "for name, version in wanted.items():\n"
        "    try:\n"
        "        dist = md.distribution(name)\n"
        "    except md.PackageNotFoundError:\n"
        "        out.append(f'{name}: not installed'); continue\n"
        "    if dist.version not in (version, either): out.append(f'{name}: {dist.version}, wanted {version}')\n"
        "    for f in dist.files or []:\n"
        "        if f.hash is None: continue\n"
        "        p = f.locate()\n"
        "        try: data = open(p, 'rb').read()\n"
        "        except OSError: out.append(f'{name}: {f} missing'); continue\n"
        "        digest = base64.urlsafe_b64encode(hashlib.new(f.hash.mode, data).digest()).decode().rstrip('=')\n"
        "        if digest != f.hash.value:\n"
        "            out.append(f'{name}: {f} does not match RECORD')\n"
        "    module = importlib.import_module(name.replace('-', '_'))\n"
        "    got = getattr(module, 'VERSION', None)\n"
        "    if got != dist.version: out.append(f'{name}: {dist.version} installed, imports version {got}')\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run([str(python), "-c", code, json.dumps(wanted), either or ""], capture_output=True,
                            text=True, env=env)
    if result.returncode != 0:
        problems.append(f"import check failed: {result.stderr.strip()[-300:]}")
    else:
        problems.extend(json.loads(result.stdout))
    return problems


def pick_target(sampler: Sampler, action: str, orchestrate: int) -> int | None:
    """A live process of the run for ``action``, or None if there is none now."""
    try:
        children = psutil.Process(orchestrate).children(recursive=True)
    except psutil.Error:
        return None
    candidates = []
    for child in children:
        try:
            cmdline = " ".join(child.cmdline())
            parent = child.ppid()
        except psutil.Error:
            continue
        if action == "kill-forkserver" and "--fork-server" in cmdline and parent == orchestrate:
            candidates.append(child.pid)
        elif action == "kill-worker" and "--fork-server" in cmdline and parent != orchestrate:
            candidates.append(child.pid)
        elif action == "kill-hook" and ("hookserver" in cmdline or "_in_process" in cmdline) and "bwrap" not in cmdline:
            candidates.append(child.pid)
        elif action == "kill-compiler" and ("compile" in cmdline.lower()) and child.pid != orchestrate:
            candidates.append(child.pid)
    return random.choice(candidates) if candidates else None


def py_spy(pid: int) -> str:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    try:
        return subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"py-spy failed: {exc}"


def orchestrate_cmd(*args: object) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *map(str, args)]


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def deliver(process: subprocess.Popen[bytes], sampler: Sampler, spec: Round) -> None:
    """Wait ``spec.delay_s``, then act; a process action waits (up to the run's end) for its first target."""
    time.sleep(spec.delay_s)
    if process.poll() is not None:
        spec.delivered = "after exit"
        return
    if spec.action == "sigint-group":
        os.killpg(process.pid, signal.SIGINT)
    elif spec.action == "sigint-twice":  # the second while the first stops the builds
        os.killpg(process.pid, signal.SIGINT)
        second = random.uniform(0, 1.0)
        time.sleep(second)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            spec.delivered = f"sigint at {spec.delay_s:.2f}s and {spec.delay_s + second:.2f}s"
            return
    elif spec.action == "sigterm":
        process.send_signal(signal.SIGTERM)
    elif spec.action in ("sigkill", "sigkill-rerun"):
        process.send_signal(signal.SIGKILL)
    else:
        while process.poll() is None:
            target = pick_target(sampler, spec.action, process.pid)
            if target is not None:
                try:
                    os.kill(target, signal.SIGKILL)
                except OSError:
                    continue
                spec.delivered = f"{spec.action} pid {target} at {spec.delay_s:.2f}s+"
                return
            time.sleep(0.01)
        spec.delivered = "no target before exit"
        return
    spec.delivered = f"{spec.action} at {spec.delay_s:.2f}s"


def expected_codes(spec: Round, output: str) -> set[int]:
    """The documented exit statuses after ``spec``'s action (a killed worker fails its build, or is unnoticed).

    A signal that lands before the interpreter has set its handlers, or once finalization has put them back,
    kills the process, as the shell's 128+N says too: accepted only when the run had printed nothing yet, or
    had printed its last line (its work done).
    """
    if spec.delivered in ("after exit", "no target before exit") or spec.action.startswith("kill-"):
        return {0, 1}
    lines = output.strip().splitlines()
    # Before any output, or once the run has said its last line: the interpreter's own start or finalization
    ended = bool(lines) and lines[-1].startswith(("report: ", "error: ")) and "interrupted" not in output
    early = {-signal.SIGINT, -signal.SIGTERM} if not lines or ended else set()
    return {"sigint-group": {130}, "sigint-twice": {130}, "sigterm": {143}, "sigkill": {-9},
            "sigkill-rerun": {-9}}[spec.action] | early


def interpreter_start(spec: Round, output: str) -> bool:
    """Whether the signal landed while the interpreter itself started (importing ``site``, or runpy finding the
    package, before any code of orchestrate's runs): it then prints its own error and exits 1, or dies by the
    signal, and the round is a documented limit."""
    before_ours = "KeyboardInterrupt" in output and "orchestrator/" not in output  # runpy finding the package
    if "Fatal Python error: init_import_site" not in output and not before_ours:
        return False
    spec.known.append(f"interrupted while the interpreter started (exit {spec.returncode})")
    return True


def run_interrupted(spec: Round, args: list[str], env: dict[str, str], log: Path, expected_s: float,
                    folder: Path, *, check_now: bool = True) -> tuple[Sampler, subprocess.Popen[bytes]]:
    """Start the run, act, wait for its end; then (``check_now``) for its processes to be gone."""
    process = start(args, env, log)
    sampler = Sampler(process.pid)
    watcher = threading.Thread(target=sampler.run, daemon=True)
    watcher.start()
    deliver(process, sampler, spec)
    try:
        process.wait(timeout=max(60, 4 * expected_s))
    except subprocess.TimeoutExpired:
        dump = py_spy(process.pid)
        (folder / "hang.txt").write_text(dump)
        spec.violations.append(f"run did not end after {spec.delivered}; py-spy dump in {folder / 'hang.txt'}")
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    spec.returncode = process.returncode
    if check_now:
        wait_gone(sampler, spec.mark, 5, spec, "the interrupted run")
    sampler.stop.set()
    watcher.join()
    return sampler, process


def build_round(spec: Round, folder: Path, rng: random.Random) -> None:
    expected = make_sources(folder / "sdists", rng, spec.mark)
    some_fail = not all(expected.values())
    wheelhouse, state = folder / "wh", folder / "state"
    common = ["build", folder / "sdists", "-w", wheelhouse, "--state-dir", state, "-j", spec.max_builds,
              "--max-cpu", "0", "--memory-limit", "8G", "--sandbox" if spec.sandbox else "--no-sandbox"]
    target_python = None
    if spec.kind == "build_install":
        target_python = venv(folder / "venv")
        common += ["--install-into", folder / "venv"]
    env = {**os.environ, "CHAOS_MARK": spec.mark}
    rerun_at_once = spec.action == "sigkill-rerun"  # the next run starts while the killed run's workers stop
    sampler1, process = run_interrupted(spec, orchestrate_cmd(*common), env, folder / "run1.log", 3.0, folder,
                                        check_now=not rerun_at_once)
    check_interrupted(spec, folder / "run1.log", "run")
    present, problems = check_wheelhouse(wheelhouse, partial_allowed=spec.action.startswith("sigkill"))
    spec.violations += problems
    bad = present - {name for name, ok in expected.items() if ok}
    if bad:
        spec.violations.append(f"wheels of failing builds in the wheelhouse: {sorted(bad)}")

    # The second run, uninterrupted, on the same wheelhouse and state folder.
    second = Round(index=spec.index, kind=spec.kind, sandbox=spec.sandbox, max_builds=spec.max_builds,
                   action="none", delay_s=0, mark="again" + spec.mark)
    report = folder / "report2.json"
    log2 = folder / "run2.log"
    args2 = orchestrate_cmd(*common, "--report-json", report)
    process2 = start(args2, {**os.environ, "CHAOS_MARK": second.mark}, log2)
    sampler2 = Sampler(process2.pid)
    watcher = threading.Thread(target=sampler2.run, daemon=True)
    watcher.start()
    try:
        process2.wait(timeout=120)
    except subprocess.TimeoutExpired:
        (folder / "hang2.txt").write_text(py_spy(process2.pid))
        spec.violations.append(f"the second run hung; py-spy dump in {folder / 'hang2.txt'}")
        os.killpg(process2.pid, signal.SIGKILL)
        process2.wait()
    wait_gone(sampler2, second.mark, 5, spec, "the second run")
    if rerun_at_once:
        wait_gone(sampler1, spec.mark, 5, spec, "the killed run, after the second")
    sampler2.stop.set()
    watcher.join()
    want_code = 1 if some_fail else 0
    if process2.returncode != want_code:
        spec.violations.append(f"second run exited {process2.returncode}, expected {want_code}; log {log2}")
    final, problems = check_wheelhouse(wheelhouse, partial_allowed=False)
    spec.violations += [f"after the second run: {p}" for p in problems]
    wanted = {name for name, ok in expected.items() if ok}
    if final != wanted:
        spec.violations.append(f"after the second run the wheelhouse holds {sorted(final)}, wanted {sorted(wanted)}")
    if report.exists():
        builds = json.loads(report.read_text())["builds"]
        built = {b["wheel"] for b in builds if b["status"] == "built"}
        skipped = {f"{b['name']}-{b['version']}-py3-none-any.whl" for b in builds if b["status"] == "skipped"}
        missing = wanted - present
        if built - missing and not rerun_at_once:
            # A SIGKILL may land between a wheel's rename and the manifest's next write (documented).
            note = " (documented after kill -9)" if spec.action.startswith("sigkill") else ""
            if not note:
                spec.violations.append(f"second run rebuilt wheels already there: {sorted(built - missing)}")
        if missing - built and not rerun_at_once:  # a killed run's worker may still publish a wheel
            spec.violations.append(f"second run did not build missing {sorted(missing - built)}")
        if skipped - present and not rerun_at_once:
            spec.violations.append(f"second run skipped wheels that were not there: {sorted(skipped - present)}")
    elif process2.returncode in (0, 1):
        spec.violations.append("second run wrote no report")
    runs = state / "build-envs" / "runs"
    if runs.is_dir() and any(runs.iterdir()):
        spec.violations.append(f"run folders remain in the state folder after the second run: {sorted(runs.iterdir())}")
    for tmp in (Path(tempfile.gettempdir()), Path("/dev/shm")):
        stale = list(tmp.glob(f"orchestrate-run-{process.pid}-*"))
        if stale:
            spec.violations.append(f"the first run's private folders remain after the second: {stale}")
    if target_python is not None:
        versions = {name.split("-")[0]: "1.0" for name in wanted}
        spec.violations += [f"venv after the second run: {p}" for p in venv_problems(target_python, versions)]


def install_round(spec: Round, folder: Path, rng: random.Random) -> None:
    count = rng.randint(3, 8)
    old, new = folder / "old", folder / "new"
    make_install_wheels(old, "1.0", count)
    make_install_wheels(new, "2.0", count)
    python = venv(folder / "venv")
    first = subprocess.run(orchestrate_cmd("install", old, "--into", folder / "venv"), capture_output=True,
                           text=True)
    if first.returncode != 0:
        spec.violations.append(f"installing the old versions failed: {first.stderr[-300:]}")
        return
    args = orchestrate_cmd("install", new, "--into", folder / "venv", "--max-installs", spec.max_builds)
    run_interrupted(spec, args, {**os.environ, "CHAOS_MARK": spec.mark}, folder / "run1.log", 2.0, folder)
    check_interrupted(spec, folder / "run1.log", "install")
    wanted = {f"chaos-w{i}": "2.0" for i in range(count)}
    if spec.action != "sigkill":  # stopped, not killed: each wheel is in whole or rolled back already
        spec.violations += [f"venv right after the interrupted install: {p}"
                            for p in venv_problems(python, wanted, either="1.0")]
    again = subprocess.run(orchestrate_cmd("install", new, "--into", folder / "venv"), capture_output=True, text=True,
                           timeout=120)
    if again.returncode != 0:
        spec.violations.append(f"the next install exited {again.returncode}: {again.stderr[-400:]}")
    spec.violations += [f"venv after the next install: {p}" for p in venv_problems(python, wanted)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--kinds", default="build,build_install,install")
    parser.add_argument("--actions", default="", help="comma-separated subset of the actions")
    parser.add_argument("--early-weight", type=float, default=1.0,
                        help="how much likelier than by default a signal within the first 500 ms is")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "chaos.json")
    options = parser.parse_args()
    seed = options.seed if options.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    random.seed(seed)
    # Started in the background by a shell, this script inherits SIGINT ignored, and so would each run (CPython
    # sets its handler only where SIGINT is not ignored): a run must get SIGINT as a terminal's would.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    kinds = options.kinds.split(",")
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"seed {seed}, work folder {workdir}", flush=True)
    rounds: list[Round] = []
    for index in range(options.rounds):
        kind = rng.choice(kinds)
        actions: tuple[str, ...] = INSTALL_ACTIONS if kind == "install" else ACTIONS
        if options.actions:
            actions = tuple(a for a in actions if a in options.actions.split(",")) or actions
        roll = rng.random() / options.early_weight
        # the interpreter's start (first 100 ms), the command's imports (to 500 ms), then anywhere to past the end
        end = 1.2 if kind == "install" else 4.0
        earliest, latest = (0.0, 0.1) if roll < 0.1 else (0.1, 0.5) if roll < 0.25 else (0.0, end)
        spec = Round(index=index, kind=kind, sandbox=rng.random() < 0.6, max_builds=rng.randint(2, 4),
                     action=rng.choice(actions), delay_s=round(rng.uniform(earliest, latest), 3),
                     mark=f"chaos{seed}r{index}")
        folder = workdir / f"round-{index}"
        folder.mkdir()
        try:
            (install_round if kind == "install" else build_round)(spec, folder, rng)
        except Exception as exc:  # a broken round is reported, and the next one runs
            spec.violations.append(f"the driver failed: {exc!r}")
        rounds.append(spec)
        status = "ok" if not spec.violations else "VIOLATION"
        print(f"{index:4d} {kind:13s} sandbox={spec.sandbox!s:5s} -j{spec.max_builds} {spec.action:15s} "
              f"{spec.delay_s:5.2f}s rc={spec.returncode} {spec.delivered!r}: {status}", flush=True)
        for violation in spec.violations:
            print(f"       - {violation}", flush=True)
        for known in spec.known:
            print(f"       (known) {known}", flush=True)
        if not spec.violations:
            shutil.rmtree(folder, ignore_errors=True)
    tally: dict[str, int] = {}
    for spec in rounds:
        key = f"{spec.kind} {spec.action}"
        tally[key] = tally.get(key, 0) + 1
    print(json.dumps(tally, indent=1, sort_keys=True))
    print(f"{sum(1 for r in rounds if r.violations)} of {len(rounds)} rounds broke a promise; "
          f"{sum(1 for r in rounds if r.known)} met a documented limit")
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps({"seed": seed, "tally": tally, "rounds": [asdict(r) for r in rounds]},
                                       indent=1))


if __name__ == "__main__":
    main()
