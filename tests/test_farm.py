"""The build farm (--cluster) on real Dask clusters: `dask scheduler` and `dask worker` processes
started here on 127.0.0.1, and a LocalCluster of worker processes; the real `orchestrate` command."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any

import cloudpickle
import distributed
import psutil
import pytest
from conftest import backend_index_args, orchestrate
from sdists import make_sdist, max_concurrency, read_events

import orchestrator
from orchestrator.executors import remote
from orchestrator.executors.cluster import refusal

EXAMPLES = Path(__file__).parent.parent / "examples" / "sdists"
FAST_CONNECT = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "3s"}


def still_runs(pid: int) -> bool:
    """Whether ``pid`` runs: an orphan that has exited runs nothing, though init may take seconds to reap it."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def wait_for(condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


class Cluster:
    """A Dask scheduler and workers in processes of their own, as a farm runs them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.scheduler_file = folder / "scheduler.json"
        self.scheduler: list[subprocess.Popen[bytes]] = []
        self.workers: list[subprocess.Popen[bytes]] = []

    def _spawn(self, python: str, module: str, *args: str, env: dict[str, str] | None = None
               ) -> subprocess.Popen[bytes]:
        count = len(self.scheduler) + len(self.workers)
        with (self.folder / f"{module.rsplit('.', 1)[-1]}-{count}.log").open("wb") as log:
            return subprocess.Popen([python, "-m", module, *args], stdout=log, stderr=subprocess.STDOUT,
                                    cwd=self.folder, env={**os.environ, **(env or {})})

    def start_scheduler(self) -> None:
        self.scheduler.append(self._spawn(sys.executable, "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                          "--port", "0", "--no-dashboard", "--scheduler-file",
                                          str(self.scheduler_file)))
        wait_for(self.scheduler_file.exists)

    @property
    def address(self) -> str:
        return str(json.loads(self.scheduler_file.read_text())["address"])

    def start_worker(self, nthreads: int, python: str = sys.executable, *, nworkers: int = 1,
                     env: dict[str, str] | None = None) -> None:
        """`dask worker`: one process of ``nthreads`` slots, or ``nworkers`` of them under a nanny."""
        processes = ["--nworkers", str(nworkers)] if nworkers > 1 else ["--no-nanny"]
        self.workers.append(self._spawn(python, "distributed.cli.dask_worker", "--scheduler-file",
                                        str(self.scheduler_file), "--nthreads", str(nthreads), "--host", "127.0.0.1",
                                        *processes, "--no-dashboard", env=env))

    def stop(self) -> None:
        """The workers, then the scheduler. Stopped together, a nanny may miss the exit of its worker, which closes
        on the scheduler's word meanwhile, and kill it only after 8 s (Dask's race: a farm's workers outlive
        the scheduler's restarts and its runs; orchestrate stops neither)."""
        for processes in (self.workers, self.scheduler):
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@contextlib.contextmanager
def client_of(address: str) -> Iterator[distributed.Client]:
    client = distributed.Client(address, timeout=20, set_as_default=False)
    try:
        yield client
    finally:
        client.close()


def venv_without_orchestrator(folder: Path) -> str:
    """A virtualenv that has distributed (this environment's site-packages, through a .pth file) but not
    orchestrator: installed editable, it is found through a .pth file of its own, which is not read there."""
    subprocess.run([sys.executable, "-m", "virtualenv", "-q", str(folder)], check=True)
    purelib = Path(subprocess.check_output([str(folder / "bin" / "python"), "-c",
                                            "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True)
                   .strip())
    (purelib / "farm.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = str(folder / "bin" / "python")
    probe = subprocess.run([python, "-c", "import distributed, orchestrator"], capture_output=True, text=True,
                           cwd=folder)
    assert "No module named 'orchestrator'" in probe.stderr, probe.stderr  # the premise of the test
    return python


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """`dask scheduler` with workers of 2 and 1 slots, and one worker whose environment lacks orchestrator."""
    folder = tmp_path_factory.mktemp("farm")
    cluster = Cluster(folder)
    try:
        cluster.start_scheduler()
        cluster.start_worker(2)
        cluster.start_worker(1)
        cluster.start_worker(1, python=venv_without_orchestrator(folder / "bare"))
        with client_of(cluster.address) as client:
            client.wait_for_workers(3, timeout=60)
        yield cluster
    finally:
        cluster.stop()


def workers_of(client: distributed.Client) -> dict[str, int]:
    """Each worker's address and slots."""
    return {address: info["nthreads"] for address, info in client.scheduler_info(n_workers=-1)["workers"].items()}


def built_on(record: dict[str, Any]) -> str:
    """The worker that built a build, as the log the farm brought back says."""
    match = re.search(r"built on \S+ \((\S+)\)", Path(record["log"]).read_text())
    assert match, record["log"]
    return match[1]


def test_builds_spread_over_the_workers_each_holding_its_slots(farm: Cluster, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    for index in range(8):
        make_sdist(tmp_path / "sdists", f"spread{index}", sleep=0.8, events=str(events))
    report = tmp_path / "report.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--cluster", farm.address,
                         "--report-json", report, "--no-history", "--max-cpu", "0", env=FAST_CONNECT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(list((tmp_path / "wh").glob("*.whl"))) == 8
    # The worker without orchestrator is named, with what to do, and gets no build.
    refused = [line for line in (result.stdout + result.stderr).splitlines() if "refused" in line]
    assert len(refused) == 1 and "orchestrator is not installed there" in refused[0], result.stdout + result.stderr
    with client_of(farm.address) as client:
        slots = workers_of(client)
    records = json.loads(report.read_text())["builds"]
    assert {record["host"] for record in records} == {socket.gethostname()}
    by_worker: dict[str, list[str]] = {}
    for record in records:
        by_worker.setdefault(built_on(record), []).append(record["name"])
    usable = {address for address in slots if address not in refused[0]}
    assert set(by_worker) == usable, by_worker  # both usable workers built, the refused one nothing
    backend_events = read_events(events)
    for worker, names in by_worker.items():
        own = [event for event in backend_events if event["name"] in names]
        assert max_concurrency(own) <= slots[worker], (worker, own)
    assert max_concurrency(backend_events) >= 2  # the farm built on both machines at once


def test_the_builds_of_a_worker_are_forks_of_its_one_fork_server(farm: Cluster, tmp_path: Path) -> None:
    """As locally, each Dask worker process forks its builds' workers from one server, the run's, gone with it."""
    events = tmp_path / "events.jsonl"
    for index in range(4):  # on two usable workers: at least two builds on one of them
        make_sdist(tmp_path / "sdists", f"forked{index}", sleep=0.2, events=str(events), record_parents=True)
    report = tmp_path / "report.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--cluster", farm.address,
                         "--report-json", report, "--no-history", "--max-cpu", "0", env=FAST_CONNECT)
    assert result.returncode == 0, result.stdout + result.stderr
    names_by_worker: dict[str, set[str]] = {}
    for record in json.loads(report.read_text())["builds"]:
        names_by_worker.setdefault(built_on(record), set()).add(record["name"])
        # Hashed as it was published here, not read again by the run.
        assert record["wheel_sha256"] == hashlib.sha256((tmp_path / "wh" / record["wheel"]).read_bytes()).hexdigest()
    hooks = read_events(events)
    with client_of(farm.address) as client:
        dask_pids = client.run(os.getpid, workers=list(names_by_worker))
    servers = set()
    for worker, names in names_by_worker.items():
        own = [hook for hook in hooks if hook["name"] in names]
        build_workers = {hook["name"]: hook["parents"][1] for hook in own}
        assert len(set(build_workers.values())) == len(names)  # a build worker per build
        (server,) = {hook["parents"][2] for hook in own}  # all forked by one server
        assert server != dask_pids[worker]  # not started by the Dask worker itself, a fresh interpreter each
        assert not psutil.pid_exists(server) or psutil.Process(server).status() == psutil.STATUS_ZOMBIE  # ended
        servers.add(server)
    assert len(servers) == len(names_by_worker)
    assert max(len(names) for names in names_by_worker.values()) >= 2


def test_a_runs_fork_server_on_a_worker_lives_from_start_run_to_end_run(farm: Cluster) -> None:
    with client_of(farm.address) as client:
        (worker,) = [address for address, slots in workers_of(client).items() if address in _usable(client)
                     and slots == 1]
        dask_worker = psutil.Process(client.run(os.getpid, workers=[worker])[worker])

        def servers() -> list[psutil.Process]:
            return [child for child in dask_worker.children() if "--fork-server" in child.cmdline()]

        assert servers() == []
        client.run(remote.start_run, "test-run", workers=[worker])
        (server,) = servers()
        client.run(remote.end_run, "test-run", workers=[worker])
        wait_for(lambda: not server.is_running() or server.status() == psutil.STATUS_ZOMBIE, timeout=10)
        assert servers() == []  # reaped by the worker


def test_a_real_c_extension_builds_on_a_worker(farm: Cluster, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = orchestrate("build", EXAMPLES / "hello_ext-1.0.tar.gz", "-w", tmp_path / "wh", "--report-json", report,
                         "--state-dir", tmp_path / "state", *backend_index_args(),
                         env={**FAST_CONNECT, "ORCHESTRATE_CLUSTER": farm.address})
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "wh").glob("hello_ext-*.whl")
    assert "-py3-none-any" not in wheel.name  # compiled: a platform wheel
    (record,) = json.loads(report.read_text())["builds"]
    assert record["status"] == "built" and record["host"] == socket.gethostname()
    assert record["phases"]["backend"] > 0 and record["peak_rss_bytes"] > 10 * 1024 * 1024
    assert "built on" in Path(record["log"]).read_text()  # the worker's log came back
    # Where it ran, with its wall time as the line rounds it (the report keeps three decimals, the line one).
    shown = re.search(rf"in (\d+\.\d) s on {re.escape(socket.gethostname())}", result.stdout + result.stderr)
    assert shown and abs(float(shown[1]) - record["wall_s"]) <= 0.051, result.stdout + result.stderr
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "history.sqlite3")) as history:
        assert history.execute("SELECT host FROM builds").fetchall() == [(socket.gethostname(),)]  # and the history


def test_ctrl_c_leaves_no_build_process_on_any_worker(farm: Cluster, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    for index in range(4):
        make_sdist(tmp_path / "sdists", f"hang{index}", hang=True, spawn_child=True, events=str(events))
    with (tmp_path / "output.txt").open("w") as out:
        run = subprocess.Popen([sys.executable, "-m", "orchestrator", "build", str(tmp_path / "sdists"), "-w",
                                str(tmp_path / "wh"), "--cluster", farm.address, "--no-history", "--max-cpu", "0"],
                               stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **FAST_CONNECT})
    try:
        wait_for(lambda: len([e for e in read_events(events) if "child" in e]) >= 3 or run.poll() is not None)
        run.send_signal(signal.SIGINT)  # every slot building
        run.wait(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    output = (tmp_path / "output.txt").read_text()
    assert run.returncode == 130, output
    pids = [event["pid"] for event in read_events(events)] + [e["child"] for e in read_events(events) if "child" in e]
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    with client_of(farm.address) as client:
        running = client.run(remote.build_pids, workers=[w for w in workers_of(client) if w in _usable(client)])
    assert all(pids == [] for pids in running.values()), running


def _usable(client: distributed.Client) -> list[str]:
    answers = client.run(remote.probe, on_error="return")
    return [address for address, answer in answers.items() if isinstance(answer, dict)]


def test_a_wheel_corrupted_in_transit_is_refused(farm: Cluster, tmp_path: Path) -> None:
    make_sdist(tmp_path / "sdists", "mangled")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this module
    with client_of(farm.address) as client:
        workers = _usable(client)
        client.run(_corrupt_wheels, True, workers=workers)
        try:
            report = tmp_path / "report.json"
            result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--cluster", farm.address,
                                 "--report-json", report, "--no-history", env=FAST_CONNECT)
        finally:
            client.run(_corrupt_wheels, False, workers=workers)
    assert result.returncode == 1, result.stdout + result.stderr
    (record,) = json.loads(report.read_text())["builds"]
    assert record["status"] == "failed" and "refused on arrival" in record["error"], record
    assert not list((tmp_path / "wh").iterdir()) or not list((tmp_path / "wh").glob("*.whl*"))


def _corrupt_wheels(on: bool) -> None:
    """On a worker: flip a byte in the middle of every wheel it sends back (or stop doing so)."""
    original = getattr(remote, "_original_wheel_bytes", remote.wheel_bytes)
    remote._original_wheel_bytes = original  # type: ignore[attr-defined]

    def corrupted(path: Path) -> bytes:
        data = bytearray(original(path))
        data[len(data) // 2] ^= 0xFF
        return bytes(data)

    remote.wheel_bytes = corrupted if on else original


def test_a_build_no_machine_can_hold_fails_at_once(farm: Cluster, tmp_path: Path) -> None:
    make_sdist(tmp_path / "sdists", "huge")
    make_sdist(tmp_path / "sdists", "small")
    (tmp_path / "orchestrate.toml").write_text('[packages.huge]\nmemory = "500T"\n')
    report = tmp_path / "report.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--cluster", farm.address,
                         "--report-json", report, "--no-history", "--config", tmp_path / "orchestrate.toml",
                         env=FAST_CONNECT)
    assert result.returncode == 1, result.stdout + result.stderr
    records = {record["name"]: record for record in json.loads(report.read_text())["builds"]}
    assert records["small"]["status"] == "built"
    assert records["huge"]["status"] == "failed"
    assert "no farm machine can ever hold it" in records["huge"]["error"], records["huge"]


def test_an_unreachable_scheduler_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once it is closed
    make_sdist(tmp_path / "sdists", "alone")
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--cluster", f"tcp://127.0.0.1:{port}",
                         env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"})
    assert result.returncode == 1
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot reach the Dask scheduler at tcp://127.0.0.1:{port}")
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="session")
def _resource_tracker() -> None:
    """This process's multiprocessing resource tracker, started before any test's processes are counted: a
    LocalCluster's nannies spawn their workers through it, and it lives as long as pytest (the one process
    of a LocalCluster that outlives it; counted as the test's, it was waited for 15 s, then killed)."""
    resource_tracker.ensure_running()


@pytest.fixture
def local_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  _resource_tracker: None) -> Iterator[distributed.LocalCluster]:
    """A LocalCluster of two worker processes (with nannies, which replace a killed worker) of one slot each,
    whose temporary folder is the test's ``machine-tmp``."""
    (tmp_path / "machine-tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "machine-tmp"))
    before = set(psutil.Process().children(recursive=True))
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=":0")
    try:
        yield cluster
    finally:
        cluster.close()
        reap_since(before)


def reap_since(before: set[psutil.Process], timeout: float = 15) -> None:
    """Wait for the processes started since ``before`` to end (a closed cluster's, a replaced worker's), reaping
    them; past ``timeout``, kill them."""
    deadline = time.monotonic() + timeout
    while left := [process for process in psutil.Process().children(recursive=True) if process not in before]:
        if time.monotonic() > deadline:
            for process in left:
                with contextlib.suppress(psutil.Error):
                    process.kill()
            psutil.wait_procs(left, timeout=1)
            return
        psutil.wait_procs(left, timeout=0.5)


def test_a_worker_killed_mid_build_loses_no_wheel(local_cluster: distributed.LocalCluster, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    for index in range(4):
        make_sdist(tmp_path / "sdists", f"survivor{index}", sleep=1.5, events=str(events))
    report = tmp_path / "report.json"
    run = subprocess.Popen([sys.executable, "-m", "orchestrator", "build", str(tmp_path / "sdists"), "-w",
                            str(tmp_path / "wh"), "--cluster", local_cluster.scheduler_address, "--report-json",
                            str(report), "--no-history", "--max-cpu", "0"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with client_of(local_cluster.scheduler_address) as client:
            wait_for(lambda: any(e["event"] == "start" for e in read_events(events)))
            building = {address: pids for address, pids in client.run(remote.build_pids).items() if pids}
            victim, orphans = next(iter(building.items()))
            worker_pid = client.run(os.getpid, workers=[victim])[victim]
            os.kill(worker_pid, signal.SIGKILL)  # the machine is lost, mid-build
            # Its build worker notices its parent is gone and takes its whole group down.
            wait_for(lambda: not any(still_runs(pid) for pid in orphans), timeout=10)
            output, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, output
    assert len(list((tmp_path / "wh").glob("*.whl"))) == 4
    records = json.loads(report.read_text())["builds"]
    assert all(record["status"] == "built" for record in records)
    assert max(record["attempts"] for record in records) == 2, records  # the lost attempt counted
    # The run's build environments on the machine went with the run, though a process that shared them was killed.
    runs = tmp_path / "machine-tmp" / "orchestrate-farm" / "build-envs" / "runs"
    assert runs.is_dir() and not list(runs.iterdir())


def test_a_timeout_stops_the_remote_build_tree(farm: Cluster, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    make_sdist(tmp_path / "sdists", "stuck", hang=True, spawn_child=True, events=str(events))
    report = tmp_path / "report.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--cluster", farm.address,
                         "--timeout", "3", "--report-json", report, "--no-history", env=FAST_CONNECT)
    assert result.returncode == 1, result.stdout + result.stderr
    (record,) = json.loads(report.read_text())["builds"]
    assert record["status"] == "failed" and record["error"] == "timed out after 3 s", record
    pids = [event["pid"] for event in read_events(events)] + [e["child"] for e in read_events(events) if "child" in e]
    assert pids and not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]


def test_each_machine_admits_by_memory(farm: Cluster, tmp_path: Path) -> None:
    """Under --memory-limit 500M, a build that needs 300M runs alone on its machine, whatever its workers' slots:
    the worker processes of a machine (these three share one) admit against its memory together."""
    events = tmp_path / "events.jsonl"
    for index in range(4):
        make_sdist(tmp_path / "sdists", f"fat{index}", alloc_mb=100, sleep=1.5, events=str(events))
    report = tmp_path / "report.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--cluster", farm.address,
                         "--memory-per-build", "300M", "--memory-limit", "500M", "--max-cpu", "0",
                         "--report-json", report, "--no-history", env=FAST_CONNECT)
    assert result.returncode == 0, result.stdout + result.stderr
    records = json.loads(report.read_text())["builds"]
    with client_of(farm.address) as client:
        slots = workers_of(client)
    by_worker: dict[str, list[str]] = {}
    for record in records:
        by_worker.setdefault(built_on(record), []).append(record["name"])
    wide = next(address for address, count in slots.items() if count == 2)
    assert len(by_worker[wide]) >= 2, by_worker  # the client sent it two at once: it has two slots
    assert len(by_worker) == 2, by_worker  # both usable workers built
    # Each process judging alone ran one build each at once, promising 600M.
    assert max_concurrency(read_events(events)) == 1, read_events(events)  # the machine ran them one at a time
    assert all(record["peak_rss_bytes"] >= 100 * 1024 * 1024 for record in records)  # samples came back


HERE = {"implementation": sys.implementation.name, "python": "%d.%d" % sys.version_info[:2],
        "platform": sysconfig.get_platform(), "orchestrator": orchestrator.__version__}


@pytest.mark.parametrize(("answer", "reason"), [
    (HERE, None),
    # Another Python: its wheels would be for another interpreter, and its history is another's.
    ({**HERE, "python": "3.99"}, "python 3.99, this run needs"),
    ({**HERE, "implementation": "pypy"}, "implementation pypy, this run needs"),
    # Another platform: its platform wheels would not install here.
    ({**HERE, "platform": "macosx-14.0-arm64"}, "platform macosx-14.0-arm64, this run needs"),
    # Another orchestrator: the two sides of the farm could disagree on their messages.
    ({**HERE, "orchestrator": "0.0.1"}, "orchestrator 0.0.1, this run needs"),
    # The probe could not even be unpickled there.
    (ModuleNotFoundError("No module named 'orchestrator'"), "orchestrator is not installed there"),
    (RuntimeError("disk on fire"), "the check failed there: RuntimeError('disk on fire')"),
])
def test_which_workers_are_refused(answer: dict[str, Any] | BaseException, reason: str | None) -> None:
    refused = refusal(answer)
    assert refused == reason if reason is None else refused is not None and refused.startswith(reason)


def test_a_build_that_keeps_killing_its_workers_fails_saying_so(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        cluster.start_scheduler()
        for _ in range(4):  # one for each attempt: a worker killed without a nanny does not come back
            cluster.start_worker(1)
        with client_of(cluster.address) as client:
            client.wait_for_workers(4, timeout=60)
        make_sdist(tmp_path / "sdists", "killer", kill_farm_worker=True)
        report = tmp_path / "report.json"
        result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--cluster", cluster.address,
                             "--report-json", report, "--no-history", env=FAST_CONNECT)
    finally:
        cluster.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    (killer,) = json.loads(report.read_text())["builds"]
    assert killer["status"] == "failed" and killer["attempts"] == 4, killer
    assert killer["error"] == "the workers holding it were lost 4 times; not tried again"
