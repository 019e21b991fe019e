"""The memory ceiling per build (cgroup v2 ``memory.max``, issue #18): where the kernel gives one, and where not."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import orchestrate
from sdists import make_sdist

from orchestrator.build.ceiling import (
    BuildCgroup,
    MemoryCeiling,
    RunCgroup,
    ceiling_for,
    own_cgroup,
)
from orchestrator.build.sandbox import Sandbox
from orchestrator.buildstate import containment
from orchestrator.jobs import BuildJob, Status, WorkerOutcome
from orchestrator.settings import IndexSettings

MIB, GIB = 1024**2, 1024**3

pytestmark = pytest.mark.usefixtures("sandboxed")  # the ceiling comes with --sandbox


@pytest.mark.parametrize(("need", "ceiling"), [
    (GIB, 1536 * MIB),  # half as much again
    (2 * GIB, 3 * GIB),
    (256 * MIB, 768 * MIB),  # small needs get 512 MiB of slack instead
    (MIB, 513 * MIB),
    (1024 * MIB, 1536 * MIB),  # where the two rules meet
])
def test_a_ceiling_is_a_little_above_the_need(need: int, ceiling: int) -> None:
    assert ceiling_for(need) == ceiling


@pytest.mark.parametrize(("limit", "need", "raised"), [
    (576 * MIB, 1200 * MIB, 1800 * MIB),  # a memory requeue's need: its ceiling follows
    (3 * GIB, GIB, 3 * GIB),  # never lower than it was (a ceiling declared larger stays)
])
def test_a_ceiling_is_raised_with_the_need_never_lowered(limit: int, need: int, raised: int) -> None:
    ceiling = MemoryCeiling(parent="/sys/fs/cgroup/orchestrate-run-1", home="/sys/fs/cgroup", limit=limit)
    assert ceiling.raised_to(need) == MemoryCeiling(parent=ceiling.parent, home=ceiling.home, limit=raised)


HYBRID = """\
30 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
"""
UNIFIED = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
V1_ONLY = "32 30 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory\n"


@pytest.mark.parametrize(("mountinfo", "membership", "expected"), [
    (UNIFIED, "0::/user.slice/user-1000.slice/user@1000.service/app.slice/run-r1.scope\n",
     "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/run-r1.scope"),
    (HYBRID, "4:memory:/user.slice\n1:name=systemd:/user.slice\n0::/user.slice/session-2.scope\n",
     "/sys/fs/cgroup/unified/user.slice/session-2.scope"),
    (UNIFIED, "0::/\n", "/sys/fs/cgroup"),  # a container's own root
    (V1_ONLY, "4:memory:/user.slice\n", None),  # cgroup v1 only: no v2 hierarchy
])
def test_own_cgroup_is_found_in_the_v2_hierarchy(tmp_path: Path, mountinfo: str, membership: str,
                                                 expected: str | None) -> None:
    (tmp_path / "mountinfo").write_text(mountinfo)
    (tmp_path / "cgroup").write_text(membership)
    if expected is None:
        with pytest.raises(OSError, match="no cgroup v2 hierarchy is mounted"):
            own_cgroup(tmp_path / "mountinfo", tmp_path / "cgroup")
    else:
        assert own_cgroup(tmp_path / "mountinfo", tmp_path / "cgroup") == Path(expected)


def _no_ceiling_here() -> str | None:
    """Why this machine gives no memory ceiling, found without the code under test; ``None`` if it may."""
    relative = next((line[3:] for line in Path("/proc/self/cgroup").read_text().splitlines()
                     if line.startswith("0::")), None)
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if " - cgroup2 " in line]
    if relative is None or not mounts:
        return "no cgroup v2 hierarchy is mounted"
    own = Path(mounts[0]) / relative.lstrip("/")
    if "memory" not in (own / "cgroup.controllers").read_text().split():
        return f"the memory controller is not available in {own} (cgroup v1 may hold it)"
    return None


def test_without_a_memory_controller_the_run_says_so_once_and_builds(tmp_path: Path) -> None:
    reason = _no_ceiling_here()
    if reason is None:
        pytest.skip("this machine may give a memory ceiling (see the next test)")
    make_sdist(tmp_path / "sdists", "known")
    make_sdist(tmp_path / "sdists", "other")
    (tmp_path / "orchestrate.toml").write_text('[packages.known]\nmemory = "64M"\n')
    report = tmp_path / "r.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--report-json", report,
                         "--installer", "pip", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    notes = [line.split("] ", 1)[-1] for line in result.stderr.splitlines() if "memory ceiling" in line]
    assert notes == [f"no memory ceiling: {reason}"]
    data = json.loads(report.read_text())
    assert data["settings"]["memory_ceiling"] == f"no memory ceiling: {reason}"
    assert not any("memory ceiling" in record["sandbox"] for record in data["builds"])
    quiet = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh2", "--no-sandbox", "--installer", "pip",
                        "--report-json", report, cwd=tmp_path)
    assert quiet.returncode == 0 and "memory ceiling" not in quiet.stderr
    assert json.loads(report.read_text())["settings"]["memory_ceiling"] == "off (--no-sandbox)"


def _delegated() -> list[str]:
    """The command prefix that runs a command in a cgroup delegated to it (``systemd-run --scope -p Delegate=yes``,
    as CI's root or a desktop's user), where systemd can; else none: the command runs where this one does."""
    prefix = ["systemd-run", "--quiet", "--scope", "-p", "Delegate=yes", *([] if os.geteuid() == 0 else ["--user"]),
              "--"]
    try:
        subprocess.run([*prefix, "true"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return prefix


def test_a_runaway_build_is_stopped_by_its_ceiling(tmp_path: Path) -> None:
    prefix = _delegated()
    if not prefix and (reason := _no_ceiling_here()) is not None:
        pytest.skip(f"no memory ceiling here, and no systemd to delegate one: {reason}")

    def build(*args: str | Path, wheelhouse: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*prefix, sys.executable, "-m", "orchestrator", "build", *map(str, args), "-w",
                               str(tmp_path / wheelhouse), "--report-json", str(tmp_path / "r.json"),
                               "--installer", "pip"], cwd=tmp_path, capture_output=True, text=True, timeout=240)

    make_sdist(tmp_path / "sdists", "runaway", alloc_mb=900, sleep=0.5)
    make_sdist(tmp_path / "sdists", "fits", alloc_mb=50)
    make_sdist(tmp_path / "sdists", "unknown")
    (tmp_path / "orchestrate.toml").write_text('[packages.runaway]\nmemory = "64M"\n[packages.fits]\nmemory = "64M"\n')
    result = build(tmp_path / "sdists", wheelhouse="wh")
    if "no memory ceiling" in result.stderr:  # the controller is there, but not delegated to this process
        pytest.skip(next(line for line in result.stderr.splitlines() if "no memory ceiling" in line))
    assert result.returncode == 1, result.stderr
    records = {record["name"]: record for record in json.loads((tmp_path / "r.json").read_text())["builds"]}
    # 64 MiB declared: the ceiling is 64 MiB + 512 MiB, and the kernel stops 900 MiB.
    assert records["runaway"]["error"] == ("stopped by its memory ceiling of 576.0 MiB: raise `memory` for it "
                                           "in orchestrate.toml")
    assert records["runaway"]["status"] == "failed" and records["runaway"]["attempts"] == 1
    assert records["fits"]["status"] == "built" and records["fits"]["sandbox"].endswith(", memory ceiling 576.0 MiB")
    # Never built before, nothing declared: no ceiling from a guess...
    assert "memory ceiling" not in records["unknown"]["sandbox"]
    # ...but once its history holds a build, it gets one.
    again = build(records["unknown"]["source"], wheelhouse="wh2")
    assert again.returncode == 0, again.stderr
    (record,) = json.loads((tmp_path / "r.json").read_text())["builds"]
    assert "memory ceiling" in record["sandbox"]


def test_run_cgroup_removal_kills_what_is_left_in_a_real_cgroup2(tmp_path: Path) -> None:
    """The kernel side of the clean-up, on whatever cgroup v2 hierarchy this process may write (no memory
    controller needed): a process left in a build's cgroup is killed, and the cgroups are removed."""
    try:
        own = own_cgroup()
    except OSError as exc:
        pytest.skip(str(exc))
    if not os.access(own, os.W_OK):
        pytest.skip(f"{own} is not writable here")
    run = own / f"orchestrate-run-test-{uuid.uuid4().hex[:8]}"
    (run / "build").mkdir(parents=True)
    if not (run / "build" / "cgroup.kill").exists():
        (run / "build").rmdir()
        run.rmdir()
        pytest.skip("no cgroup.kill here (Linux 5.14)")
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / "build" / "cgroup.procs").write_text(str(daemon.pid))
        assert (run / "build" / "cgroup.procs").read_text().split() == [str(daemon.pid)]
        RunCgroup(run, own).remove()
        assert daemon.wait(timeout=5) == -9
        assert not run.exists()
    finally:
        daemon.kill()
        daemon.wait()
        for path in (run / "build", run):
            if path.exists():
                path.rmdir()


def test_entering_a_cgroup_without_the_memory_controller_fails_and_leaves_nothing() -> None:
    try:
        own = own_cgroup()
    except OSError as exc:
        pytest.skip(str(exc))
    if not os.access(own, os.W_OK) or "memory" in (own / "cgroup.subtree_control").read_text().split():
        pytest.skip(f"{own} is not writable here, or hands the memory controller down")
    name = f"orchestrate-build-test-{uuid.uuid4().hex[:8]}"
    with pytest.raises(OSError):
        BuildCgroup.enter(MemoryCeiling(parent=str(own), home=str(own), limit=GIB), name)
    assert not (own / name).exists()


def _job(tmp_path: Path, sandbox: Sandbox) -> BuildJob:
    return BuildJob(key="k", source=tmp_path, kind="tree", name="k", version=None, sha256=None, wheelhouse=tmp_path,
                    log_path=tmp_path / "log", index=IndexSettings(), installer="pip", env_cache=tmp_path,
                    sandbox=sandbox, memory_ceiling=MemoryCeiling(parent="/sys/fs/cgroup/r", home="/", limit=GIB))


@pytest.mark.parametrize(("sandbox", "ceiling", "expected"), [
    (Sandbox(tool="bwrap", executable="/usr/bin/bwrap", network=False), 1536 * MIB,
     "bwrap: read-only host, private home and /tmp, no secrets, pid namespace, no network, memory ceiling 1.5 GiB"),
    (Sandbox(), 576 * MIB, "none: memory ceiling 576.0 MiB"),
    (Sandbox(), None, "none"),
])
def test_the_report_names_the_ceiling_in_force(tmp_path: Path, sandbox: Sandbox, ceiling: int | None,
                                               expected: str) -> None:
    outcome = WorkerOutcome(status=Status.BUILT, memory_ceiling=ceiling)
    assert containment(_job(tmp_path, sandbox), outcome) == expected


def test_the_job_carries_its_ceiling_across_json(tmp_path: Path) -> None:
    job = _job(tmp_path, Sandbox())
    assert BuildJob.from_json(json.loads(json.dumps(job.to_json()))) == job


def test_a_worker_that_cannot_enter_its_cgroup_builds_without_a_ceiling_and_logs_why(tmp_path: Path) -> None:
    """The real worker, given a ceiling in a real cgroup v2 folder without the memory controller: the build
    goes on, its log says why it had no ceiling, and its outcome claims none."""
    try:
        own = own_cgroup()
    except OSError as exc:
        pytest.skip(str(exc))
    if not os.access(own, os.W_OK) or "memory" in (own / "cgroup.subtree_control").read_text().split():
        pytest.skip(f"{own} is not writable here, or hands the memory controller down")
    sdist = make_sdist(tmp_path / "sdists", "plain")
    (tmp_path / "wh").mkdir()
    (tmp_path / "work" / "tmp").mkdir(parents=True)
    job = BuildJob(key="plain-1.0", source=sdist, kind="sdist", name="plain", version="1.0", sha256=None,
                   wheelhouse=tmp_path / "wh", log_path=tmp_path / "plain.log", index=IndexSettings(), installer="pip",
                   env_cache=tmp_path / "envs",
                   memory_ceiling=MemoryCeiling(parent=str(own), home=str(own), limit=GIB))
    request = json.dumps({"job": job.to_json(), "work_dir": str(tmp_path / "work")})
    done = subprocess.run([sys.executable, "-m", "orchestrator.build.worker"], input=f"{request}\ngo\n",
                          capture_output=True, text=True, timeout=120)
    (line,) = [line for line in done.stdout.splitlines() if '"outcome"' in line]
    outcome = json.loads(line.split(" ", 1)[1])["outcome"]
    assert outcome["status"] == "built" and outcome["memory_ceiling"] is None, outcome
    assert f"no memory ceiling for this build: [Errno 2] cannot write {str(GIB)!r} to {own}/plain-1.0-" in (
        tmp_path / "plain.log").read_text()
    assert not [path for path in own.glob("plain-1.0-*")]


@pytest.mark.parametrize("fail", [False, True])
def test_the_run_removes_its_cgroup_however_it_ends(tmp_path: Path, fail: bool) -> None:
    # The run's cgroup at the seam (this machine may have none): its removal is what is checked.
    marker = tmp_path / "removed"
    prelude = f"""
import pathlib
import orchestrator.build.ceiling as ceiling
class Removed:
    def remove(self):
        pathlib.Path({str(marker)!r}).write_text("removed")
ceiling.for_run = lambda: (Removed(), None)
"""
    make_sdist(tmp_path / "sdists", "plain", fail=fail)
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--installer", "pip", prelude=prelude)
    assert result.returncode == (1 if fail else 0), result.stderr
    assert marker.read_text() == "removed"


def test_a_build_requeued_for_memory_runs_again_under_a_ceiling_raised_with_its_need(tmp_path: Path) -> None:
    """Real workers under memory pressure, with the run's cgroup at the seam as a plain folder (this machine
    delegates no cgroup v2): each worker tries to give its build the job's ``memory.max`` and logs the value."""
    folder = tmp_path / "run-cgroup"
    folder.mkdir()
    prelude = f"""
import pathlib
import orchestrator.build.ceiling as ceiling
ceiling.for_run = lambda: (ceiling.RunCgroup(pathlib.Path({str(folder)!r}), pathlib.Path({str(folder)!r})), None)
"""
    for name in ("hog1", "hog2"):
        make_sdist(tmp_path / "sdists", name, alloc_mb=200, sleep=3)
    (tmp_path / "orchestrate.toml").write_text('[packages.hog1]\nmemory = "64M"\n[packages.hog2]\nmemory = "64M"\n')
    report = tmp_path / "r.json"
    # Both start at once (64M each), then hold 200M and more each: 400M is passed, the younger is stopped.
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--installer", "pip",
                         "--memory-limit", "400M", "--memory-per-build", "64M", "--max-cpu", "0",
                         "--report-json", report, cwd=tmp_path, prelude=prelude)
    assert result.returncode == 0, result.stderr
    (requeued,) = [record for record in json.loads(report.read_text())["builds"] if record["memory_requeues"]]
    assert requeued["memory_requeues"] == 1 and requeued["status"] == "built"
    need = requeued["predicted_rss_bytes"]  # 1.2 x the peak it was stopped at, part of the way to its 200M
    assert 64 * MIB < need < GIB  # more than it was admitted with: the ceiling, the need plus 512 MiB, rises
    tried = re.findall(r"no memory ceiling for this build: \[Errno 2\] cannot write '(\d+)'",
                       Path(requeued["log"]).read_text())
    assert [int(limit) for limit in tried] == [576 * MIB, need + 512 * MIB]
