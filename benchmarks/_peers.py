"""How ``memory_pressure.py`` runs a tool and measures it the same way for all: orchestrate, uv, GNU parallel.

Every tool runs as one process started here, in a session of its own, with the same clean environment
(``corpus.clean_environ``: no ``PIP_*`` sources of this machine, no ``UV_*`` or ``ORCHESTRATE_*``); a
:class:`TreeSampler` sums the RSS of that process and all its descendants every ``interval`` seconds, so the
peak is never a tool's own figure; the makespan is the wall time from the start of the process to its exit.

- uv: ``uv pip install --no-deps`` of every sdist into a fresh virtualenv with ``UV_CONCURRENT_BUILDS`` and
  an empty cache of its own (as ``corpus.py`` runs it);
- GNU parallel: one ``uv build --wheel`` per sdist, ``-j`` the count cap and ``--memfree`` from
  :func:`_packing.memfree_setting`. ``uv build`` gives each build the same isolation as uv's own rows (a
  fresh virtualenv made by the same frontend, the same PEP 517 calls), so this row differs from them only
  in how the builds are started; ``pip wheel`` would add pip's slower start-up to every build.

The free memory GNU parallel compares with ``--memfree`` is its own formula (MemFree + Buffers + Cached +
SwapCached from ``/proc/meminfo``), so :func:`parallel_free_bytes` reads the same fields: psutil's
``available`` is a different figure and would shift the setting.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil


class TreeSampler:
    """Sums the RSS of a process and all its descendants every ``interval`` seconds, in a thread."""

    def __init__(self, pid: int, interval: float) -> None:
        self.peak = 0
        self._pid = pid
        self._interval = interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            root = psutil.Process(self._pid)
        except psutil.Error:
            return
        while not self._done.is_set():
            total = 0
            try:
                processes = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            for process in processes:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._done.wait(self._interval)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


@dataclass(frozen=True, slots=True, kw_only=True)
class Sampled:
    """One tool's run, measured from outside."""

    makespan_s: float
    """Wall time from starting the tool's process to its exit."""
    peak_tree_rss_bytes: int
    """The largest sum of RSS over the tool's process tree, sampled every interval."""
    stdout: str
    stderr: str
    load_1m_at_start: float


def run_sampled(label: str, command: list[str], *, env: dict[str, str], interval: float,
                timeout: float) -> Sampled:
    """Run ``command`` with its tree sampled; a run past ``timeout`` seconds is killed, tree and all, and ends
    the benchmark, as does a failed one (its output is printed)."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    sampler = TreeSampler(process.pid, interval)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(process.pid)
        process.wait()
        for pipe in (process.stdout, process.stderr):  # not read to the end: an escaped process may hold them
            if pipe is not None:
                pipe.close()
        raise SystemExit(f"{label}: still running after {timeout:g} s (--run-timeout); stopped it")
    finally:
        sampler.stop()
    makespan = time.perf_counter() - start
    if process.returncode != 0:
        print(stdout[-4000:], stderr[-4000:], sep="\n")
        raise SystemExit(f"{label}: {command[0]} exited with {process.returncode}")
    return Sampled(makespan_s=round(makespan, 2), peak_tree_rss_bytes=sampler.peak, stdout=stdout, stderr=stderr,
                   load_1m_at_start=load)


def _kill_tree(pid: int) -> None:
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    for process in processes:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(processes, timeout=10)


def uv_binary() -> str | None:
    """The uv that ships with the ``uv`` package (the test extra), else the one on ``PATH``."""
    try:
        import uv
    except ImportError:
        return shutil.which("uv")
    return str(uv.find_uv_bin())


def gnu_parallel() -> tuple[str | None, str]:
    """GNU parallel's path and version line, or ``None`` and why it cannot be used."""
    path = shutil.which("parallel")
    if path is None:
        return None, "not installed (Debian: apt-get install parallel)"
    version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout.partition("\n")[0]
    if not version.startswith("GNU parallel"):  # moreutils has a `parallel` too, without --memfree
        return None, f"{path} is not GNU parallel (Debian: apt-get install parallel)"
    return path, version


def parallel_free_bytes(meminfo: Path = Path("/proc/meminfo")) -> int:
    """Free memory as GNU parallel computes it for ``--memfree``: MemFree + Buffers + Cached + SwapCached."""
    fields = ("MemFree:", "Buffers:", "Cached:", "SwapCached:")
    return sum(int(line.split()[1]) * 1024 for line in meminfo.read_text().splitlines()
               if line.split()[0] in fields)


def run_uv(label: str, uv: str, sdists: list[Path], work: Path, cap: int, *, python: str, env: dict[str, str],
           interval: float, timeout: float) -> tuple[Sampled, list[str]]:
    """``uv pip install --no-deps`` of ``sdists`` into a fresh virtualenv, ``UV_CONCURRENT_BUILDS=cap``."""
    env = {**env, "UV_CACHE_DIR": str(work / "uv-cache"), "UV_CONCURRENT_BUILDS": str(cap)}
    subprocess.run([uv, "venv", "--quiet", "--python", python, str(work / "venv")], env=env, check=True)
    command = [uv, "pip", "install", "--no-deps", "--offline", "--no-index",
               "--python", str(work / "venv" / "bin" / "python"), *map(str, sdists)]
    return run_sampled(label, command, env=env, interval=interval, timeout=timeout), command


def run_parallel(label: str, parallel: str, uv: str, sdists: list[Path], work: Path, jobs: int, memfree: int, *,
                 python: str, env: dict[str, str], interval: float, timeout: float) -> tuple[Sampled, list[str]]:
    """GNU parallel, ``-j jobs --memfree memfree``, running ``uv build --wheel`` once per sdist into ``work/wh``."""
    env = {**env, "UV_CACHE_DIR": str(work / "uv-cache")}
    command = [parallel, "--will-cite", "--halt", "now,fail=1", "-j", str(jobs), "--memfree", str(memfree),
               uv, "build", "--quiet", "--wheel", "--offline", "--no-index", "--python", python,
               "-o", str(work / "wh"), "{}", ":::", *map(str, sdists)]
    return run_sampled(label, command, env=env, interval=interval, timeout=timeout), command
