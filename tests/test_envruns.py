"""A farm run's folder of prepared environments, shared by the processes of one machine (build/envruns.py):
real processes join it, are killed, leave; the store's dead-run sweep judges it by its lock."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.build.envruns import run_env_cache
from orchestrator.executors.machine import Machine, env_root

# Joins the run, says where, leaves when its stdin closes.
MEMBER = """
import sys
from pathlib import Path
from orchestrator.build import envruns
shared = envruns.join(Path(sys.argv[1]), sys.argv[2], keep=sys.argv[3] == "keep")
print(shared.path, flush=True)
sys.stdin.read()
shared.leave()
"""


@pytest.fixture
def members() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


def join(members: list[subprocess.Popen[str]], root: Path, run_id: str, keep: bool = False) -> Path:
    """A process of the run, joined: the run's folder."""
    process = subprocess.Popen([sys.executable, "-c", MEMBER, str(root), run_id, "keep" if keep else "-"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    members.append(process)
    assert process.stdout is not None
    return Path(process.stdout.readline().strip())


def leave(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.close()
    assert process.wait(timeout=30) == 0


def test_the_last_process_to_leave_removes_the_run_even_if_another_was_killed(
        tmp_path: Path, members: list[subprocess.Popen[str]]) -> None:
    path = join(members, tmp_path, "r1")
    assert join(members, tmp_path, "r1") == path and join(members, tmp_path, "r1") == path
    (path / "envs" / "prepared").mkdir()  # what a build prepared there
    first, second, third = members
    second.send_signal(signal.SIGKILL)
    second.wait()
    leave(first)
    assert (path / "envs" / "prepared").is_dir()  # the third still builds
    leave(third)  # the last one alive: the run is over on this machine
    assert not path.exists() and not Path(f"{path}.lock").exists()


def test_a_run_whose_processes_were_all_killed_is_swept_by_the_next(
        tmp_path: Path, members: list[subprocess.Popen[str]]) -> None:
    dead = join(members, tmp_path, "dead")
    join(members, tmp_path, "dead")
    alive = join(members, tmp_path, "alive")
    for process in members[:2]:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert dead.is_dir()
    with run_env_cache(tmp_path, keep=False) as local:  # a run on this machine sweeps, as a farm run's join does
        assert not dead.exists() and alive.is_dir() and local.is_dir()
    next_run = join(members, tmp_path, "next")
    assert alive.is_dir() and next_run.is_dir()  # its process lives: it is no dead run



def test_a_folder_made_again_after_its_run_ended_is_swept_by_the_next(
        tmp_path: Path, members: list[subprocess.Popen[str]]) -> None:
    # A worker of a stopped run, still preparing an environment as its run removed the folder, made it again with
    # no lock beside it (chaos rounds of stop 24): the sweep went by lock files alone, and kept it for ever.
    with run_env_cache(tmp_path, keep=False) as ended:
        pass
    (ended / "envs" / "key-unfinished").mkdir(parents=True)  # what the straggler made
    alive = join(members, tmp_path, "alive")
    with run_env_cache(tmp_path, keep=False) as local, run_env_cache(tmp_path, keep=True) as other:
        assert not ended.exists()  # swept by the first
        assert alive.is_dir() and local.is_dir() and other.is_dir()  # each held: no run's sweep takes another's


def test_a_kept_store_outlives_the_run(tmp_path: Path, members: list[subprocess.Popen[str]]) -> None:
    path = join(members, tmp_path, "kept", keep=True)
    join(members, tmp_path, "kept", keep=True)
    assert (path / "envs").resolve() == (tmp_path / "envs").resolve()
    (path / "envs" / "prepared").mkdir()
    for process in list(members):
        leave(process)
    assert not path.exists()
    assert (tmp_path / "envs" / "prepared").is_dir()



def test_a_farm_machine_ending_the_run_removes_it_when_all_that_shared_it_were_killed(
        tmp_path: Path, members: list[subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # this process is the machine's other worker
    path = join(members, env_root(keep=False), "lost")
    (only,) = members
    only.send_signal(signal.SIGKILL)
    only.wait()
    assert path.is_dir()
    Machine().end_run("lost")  # a worker process that never built for the run
    assert not path.exists()
