"""The build worker: a process of its own per build, started by the local executor.

Protocol (``executors.local`` speaks the other side): the worker starts before it
has a job (one is started a build ahead) and imports the build machinery while it
waits. The job arrives as one line of JSON on stdin, ``{"job": {...}, "work_dir":
PATH, "scratch_dir": PATH}``, the work folder being private and empty (the executor
removes it afterwards), the scratch folder too, on a tmpfs (or ``null``: none). The
worker prepares the build (extracts it, prepares its environment, installs what the
backend asks for), then waits for the line :data:`ADMIT`: the build's admission,
after which it builds the wheel. Stdin closed instead means "not needed", and the
worker exits. The worker writes messages to stdout, one per line, each
:data:`MESSAGE_PREFIX` followed by JSON: ``{"phase": NAME}`` as a phase starts, then
``{"outcome": {...}}`` once. Everything the build prints goes to the job's log file
instead. The worker never raises: any failure is an outcome with status ``failed``.
A worker that dies without an outcome is reported from its exit status.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import resource
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import IO, Any

from orchestrator.build.ceiling import BuildCgroup
from orchestrator.jobs import BuildJob, Status, WorkerOutcome

MESSAGE_PREFIX = "@@orchestrate "
"""Starts each message line on stdout; other lines (a stray print) are not messages."""
ADMIT = "go"
"""The line on stdin that admits a staged build."""


def encode_message(message: dict[str, Any]) -> str:
    """One message as its line on stdout."""
    return MESSAGE_PREFIX + json.dumps(message) + "\n"


def decode_message(line: str) -> dict[str, Any] | None:
    """The message a stdout line carries, or ``None`` for any other line."""
    if not line.startswith(MESSAGE_PREFIX):
        return None
    try:
        message = json.loads(line[len(MESSAGE_PREFIX):])
    except json.JSONDecodeError:
        return None
    return message if isinstance(message, dict) else None


def _send(message: dict[str, Any]) -> None:
    sys.stdout.write(encode_message(message))
    sys.stdout.flush()


_PR_SET_CHILD_SUBREAPER = 36


def _adopt_orphans() -> None:
    """Become the reaper of the build's orphans (Linux). bubblewrap's outer process exits without
    waiting for the PID namespace's init, which is then re-parented: only a process that waits for
    it counts the CPU of the hook and its compilers, which that init waited for."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: nothing is counted short


def _end_leftovers() -> None:
    """Kill what the build left running: unsandboxed, a daemon it started, adopted here as the reaper of its
    orphans (a sandbox's PID namespace ends its own with its init). No process of a build outlives it."""
    import psutil

    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            process.kill()


def _reap_orphans(*, wait: float) -> None:
    """Wait for adopted orphans, up to ``wait`` seconds for those still running: a sandbox's init ends
    with its hook (and takes the namespace's last processes with it), what is left unsandboxed is killed."""
    deadline = time.monotonic() + wait
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # none left
        if pid == 0:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.001)  # a sandbox's init ends within a millisecond of its hook: the outcome waits for it


def _usage() -> tuple[float, int]:
    """CPU seconds and largest RSS of this process and every process it waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    return cpu, max(own.ru_maxrss, children.ru_maxrss) * 1024


def _watch_parent(parent: int) -> None:
    """Take the whole build down if its parent (the run) dies (kill -9): no orphan keeps building."""
    while os.getppid() == parent:
        time.sleep(0.5)
    _end_leftovers()  # a daemon the build left is no longer in the group
    os.killpg(0, signal.SIGKILL)  # the worker leads its own process group


def _wait_for_admission() -> None:
    if sys.stdin.readline().strip() != ADMIT:
        sys.exit(0)  # not needed: the executor removes the work folder


def _enter_cgroup(job: BuildJob, log: IO[str]) -> BuildCgroup | None:
    """Put this worker, and so its whole build, under the job's memory ceiling, if it has one."""
    if job.memory_ceiling is None:
        return None
    try:
        return BuildCgroup.enter(job.memory_ceiling, f"{job.key}-{os.getpid()}")
    except OSError as exc:
        log.write(f"=== orchestrate: no memory ceiling for this build: {exc} ===\n")
        return None


def _under_ceiling(outcome: WorkerOutcome, cgroup: BuildCgroup) -> WorkerOutcome:
    """The outcome with the ceiling it ran under, and the kernel's kill as its reason; out of the cgroup."""
    outcome = dataclasses.replace(outcome, memory_ceiling=cgroup.ceiling.limit)
    if outcome.status is Status.FAILED and cgroup.oom_killed():
        outcome = dataclasses.replace(outcome, error=cgroup.reason(), killed_by=None)
    cgroup.leave()
    return outcome


def main() -> int:
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    _adopt_orphans()
    try:
        from orchestrator.build import builder
    except Exception:  # reported below, once there is a log to write it to
        import_error: str | None = traceback.format_exc()
    else:
        import_error = None
    message = sys.stdin.readline()
    if not message:
        return 0
    request = json.loads(message)
    job = BuildJob.from_json(request["job"])
    work_dir = Path(request["work_dir"])
    scratch = Path(request["scratch_dir"]) if request.get("scratch_dir") else None
    if job.nice:  # before anything of the build starts: every process of it inherits the priority
        from orchestrator.resources import lower_priority

        lower_priority()
    # The build's tools put their temporary files in the work folder, which goes with the build. Set, not found
    # again from TMPDIR: tempfile would write and remove a file there to probe it. The worker's own (pyproject_hooks'
    # control folders, two small files each, per hook) go to the scratch folder on a tmpfs, where there is one.
    (work_dir / "tmp").mkdir(exist_ok=True)
    os.environ["TMPDIR"] = str(work_dir / "tmp")
    tempfile.tempdir = str(scratch) if scratch is not None else os.environ["TMPDIR"]
    job.log_path.parent.mkdir(parents=True, exist_ok=True)
    with job.log_path.open("a", encoding="utf-8", errors="replace") as log:
        cgroup = _enter_cgroup(job, log)
        try:
            if import_error is not None:
                log.write(import_error)
                raise RuntimeError("cannot import the build machinery")
            outcome = builder.build_source(job, work_dir, log, lambda phase: _send({"phase": phase}),
                                           admitted=_wait_for_admission, scratch=scratch)
        except Exception as exc:  # the last line of defence: report, never raise
            log.write(traceback.format_exc())
            outcome = WorkerOutcome(status=Status.FAILED, error=f"internal error: {exc!r}; see the log")
        if cgroup is not None:
            outcome = _under_ceiling(outcome, cgroup)
        if outcome.error:
            log.write(f"\n=== orchestrate: failed: {outcome.error} ===\n")
    if job.sandbox.tool == "none":
        _end_leftovers()
    _reap_orphans(wait=1.0)
    cpu, max_rss = _usage()
    _send({"outcome": {**outcome.to_json(), "cpu_s": round(cpu, 3), "max_rss_bytes": max_rss}})
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--fork-server"]:  # the run's fork server (build/forkserver.py), on this socket
        from orchestrator.build import forkserver

        sys.exit(forkserver.serve(int(sys.argv[2])))
    sys.exit(main())
