"""The run's jobserver, through real runs: fake builds that take tokens from the FIFO named in their
``MAKEFLAGS`` as a make or ninja would, a fake ``make`` that says it is 4.3, and a real ninja >= 1.13.

Every run is pinned to 2 CPUs, so the usable CPUs follow from ``--max-cpu`` alone: 2 x the share.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import orchestrate, pinned_to
from sdists import make_sdist
from toolpaths import path_without

from orchestrator.build.jobserver import hook_environ, jobserver_ninja
from orchestrator.build.sandbox import probe
from orchestrator.executors.tokens import TokenPool

BASE = ("--compiler-cache", "off", "--no-history")


@pytest.fixture(autouse=True)
def _two_cpus() -> Iterator[None]:
    with pinned_to(2):
        yield


def build(tmp_path: Path, *sdists: Path, args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
    result = orchestrate("build", *sdists, "-w", tmp_path / "wh", *BASE, *args, env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def member(tmp_path: Path, name: str, file: str) -> Any:
    """What a fake build recorded in its wheel (``jobserver.json``, ``run.json``)."""
    wheel = next((tmp_path / "wh").glob(f"{name}-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        return json.loads(archive.read(f"{name}/{file}"))


def most_held(*logs: list[list[float]]) -> int:
    """The most tokens held at once by the builds together, from their ``[t, +n]`` / ``[t, -n]`` logs
    (taken just before a read, given back just after a write: each holding looks longer, never shorter)."""
    held = peak = 0
    for _, delta in sorted((entry for log in logs for entry in log), key=lambda entry: (entry[0], -entry[1])):
        held += int(delta)
        peak = max(peak, held)
    return peak


def test_concurrent_builds_never_hold_more_than_usable_cpus_minus_running_builds(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    names = ["taker-a", "taker-b", "taker-c"]
    plan = {"want": 8, "window_s": 2.0, "hold_s": 0.15, "barrier": 3}
    sdists = [make_sdist(tmp_path / "sdists", name, events=str(events), jobserver=plan) for name in names]
    # 300% of 2 CPUs: 6 usable, 3 builds running, each with its implicit slot: 3 tokens.
    build(tmp_path, *sdists, args=("--max-builds", "3", "--max-cpu", "300"))
    logs = [member(tmp_path, name.replace("-", "_"), "jobserver.json")["log"] for name in names]
    assert most_held(*logs) == 3


def test_tokens_of_a_killed_build_return_to_the_pool(tmp_path: Path) -> None:
    # 200% of 2 CPUs: 4 usable, one build at a time: 3 tokens. The greedy build (the larger sdist: first) takes
    # all three and is killed holding them; the next one must get all three back.
    greedy = make_sdist(tmp_path / "sdists", "greedy", extra_files={"pad.bin": os.urandom(200_000)},
                        jobserver={"want": 3, "keep": True, "crash": True, "window_s": 20})
    after = make_sdist(tmp_path / "sdists", "after", jobserver={"want": 3, "keep": True, "window_s": 20})
    result = orchestrate("build", greedy, after, "-w", tmp_path / "wh", *BASE, "--max-builds", "1", "--max-cpu", "200")
    assert result.returncode != 0
    assert "greedy-1.0: FAILED: the build backend was killed by SIGKILL" in result.stderr
    log = member(tmp_path, "after", "jobserver.json")["log"]
    assert most_held(log) == 3


def test_a_pool_gets_back_what_a_dead_build_took(tmp_path: Path) -> None:
    pool = TokenPool(usable=4, share=0)
    pool.open("first", tmp_path / "first.fifo")
    fd = os.open(tmp_path / "first.fifo", os.O_RDWR | os.O_NONBLOCK)
    assert len(os.read(fd, 10)) == 3  # taken, never given back: the client dies
    os.close(fd)
    pool.close("first")
    assert not (tmp_path / "first.fifo").exists()
    pool.open("second", tmp_path / "second.fifo")
    fd = os.open(tmp_path / "second.fifo", os.O_RDWR | os.O_NONBLOCK)
    assert len(os.read(fd, 10)) == 3
    os.close(fd)
    pool.stop()


def test_a_second_build_gets_what_the_first_leaves_in_its_fifo(tmp_path: Path) -> None:
    pool = TokenPool(usable=5, share=1)
    pool.open("first", tmp_path / "first.fifo")  # alone: 4 tokens, none taken
    pool.open("second", tmp_path / "second.fifo")  # now 3: first keeps its share, second's FIFO is empty
    pool.close("absent")
    fds = [os.open(tmp_path / f"{key}.fifo", os.O_RDWR | os.O_NONBLOCK) for key in ("first", "second")]
    taken = [len(os.read(fd, 10)) for fd in fds]
    assert sum(taken) == 3 and min(taken) >= 1
    for fd in fds:
        os.close(fd)
    pool.stop()
    assert pool.lent() == 0


def fake_make(folder: Path, version: str) -> dict[str, str]:
    """A PATH whose ``make`` says it is GNU Make ``version`` and prints the MAKEFLAGS it was given."""
    folder.mkdir()
    make = folder / "make"
    make.write_text(f'#!/bin/sh\nif [ "$1" = --version ]; then echo "GNU Make {version}"; exit 0; fi\n'
                    'echo "$MAKEFLAGS"\n')
    make.chmod(make.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize(("version", "make_gets_fifo"), [("4.3", False), ("4.2.1", False), ("4.4.1", True)])
def test_an_old_make_never_sees_the_fifo_form(tmp_path: Path, version: str, make_gets_fifo: bool) -> None:
    sdist = make_sdist(tmp_path / "sdists", "maker", run=[["make"], ["sh", "-c", 'echo "$MAKEFLAGS"']])
    build(tmp_path, sdist, args=("--max-builds", "1"), env=fake_make(tmp_path / "bin", version))
    make_saw, hook_saw = (flags.strip() for flags in member(tmp_path, "maker", "run.json"))
    assert hook_saw.startswith("-j2 --jobserver-auth=fifo:")  # for ninja and cargo
    if make_gets_fifo:
        assert make_saw == hook_saw
    else:
        assert make_saw == "-j2"  # today's split: 2 CPUs, one build


def test_the_builds_of_a_run_share_one_folder_of_the_make_script_and_ninja_in_the_runs_folder(
        tmp_path: Path) -> None:
    where = ["sh", "-c", "command -v make; command -v ninja"]
    sdists = [make_sdist(tmp_path / "sdists", name, run=[where, ["make"]]) for name in ("one", "two")]
    env = fake_make(tmp_path / "bin", "4.3")
    old_ninja = tmp_path / "bin" / "ninja"  # first on PATH and no jobserver client: ours shadows it, whatever PATH has
    old_ninja.write_text('#!/bin/sh\necho 1.11.1\n')
    old_ninja.chmod(0o755)
    build(tmp_path, *sdists, args=("--max-builds", "1"), env=env)
    found = [member(tmp_path, name, "run.json") for name in ("one", "two")]
    assert found[0] == found[1], found  # the same make script and ninja link: no build makes its own
    make, ninja = found[0][0].split()
    assert "/build-envs/runs/run-" in make and Path(make).parent == Path(ninja).parent, make
    assert [flags.strip() for _, flags in found] == ["-j2", "-j2"]  # the shared script still finds the split


def test_the_tools_are_asked_their_version_once_per_run_not_per_build(tmp_path: Path) -> None:
    env = fake_make(tmp_path / "bin", "4.3")
    asked = tmp_path / "asked.log"
    make = tmp_path / "bin" / "make"
    make.write_text(make.read_text().replace("#!/bin/sh\n", f"#!/bin/sh\necho \"make $1\" >> {asked}\n", 1))
    sdists = [make_sdist(tmp_path / "sdists", f"maker{i}", run=[["make"]]) for i in range(4)]
    build(tmp_path, *sdists, args=("--max-builds", "2"), env=env)
    calls = asked.read_text().splitlines()
    assert sorted(calls) == ["make "] * 4 + ["make --version"], calls  # and each build ran make once


def test_jobserver_off_keeps_the_split(tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path / "sdists", "maker", run=[["make"], ["sh", "-c", 'echo "$MAKEFLAGS"']])
    build(tmp_path, sdist, args=("--max-builds", "2", "--jobserver", "off"), env=fake_make(tmp_path / "bin", "4.4.1"))
    assert [flags.strip() for flags in member(tmp_path, "maker", "run.json")] == ["-j1", "-j1"]


def test_a_users_makeflags_are_left_alone(tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path / "sdists", "maker", run=[["sh", "-c", 'echo "$MAKEFLAGS"']])
    build(tmp_path, sdist, env={"MAKEFLAGS": "-j7"})
    assert member(tmp_path, "maker", "run.json") == ["-j7\n"]


def test_a_users_cmake_parallel_level_is_left_alone_and_the_runs_own_dropped(tmp_path: Path) -> None:
    echo = ["sh", "-c", 'echo "${CMAKE_BUILD_PARALLEL_LEVEL-unset} $MAKEFLAGS"']
    mine = make_sdist(tmp_path / "sdists", "mine", run=[echo])
    build(tmp_path, mine, args=("--max-builds", "1"), env={"CMAKE_BUILD_PARALLEL_LEVEL": "3"})
    (seen,) = member(tmp_path, "mine", "run.json")
    assert seen.startswith("3 -j2 --jobserver-auth=fifo:"), seen
    shutil.rmtree(tmp_path / "wh")
    build(tmp_path, mine, args=("--max-builds", "1"))
    (seen,) = member(tmp_path, "mine", "run.json")
    assert seen.startswith("unset -j2 --jobserver-auth=fifo:"), seen


@pytest.fixture(params=["bwrap", "unshare"])
def sandbox_path(request: pytest.FixtureRequest, sandboxed: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each sandbox tool in turn, where it works here."""
    if request.param == "bwrap":
        if probe().sandbox.tool != "bwrap":
            pytest.skip("no working bwrap here")
        yield
        return
    with path_without("bwrap") as path:
        monkeypatch.setenv("PATH", path)
        if probe().sandbox.tool != "unshare":
            pytest.skip("unshare makes no sandbox here")
        yield


def test_the_fifo_is_reachable_inside_the_sandbox(tmp_path: Path, sandbox_path: None) -> None:
    sdist = make_sdist(tmp_path / "sdists", "boxed", jobserver={"want": 3, "keep": True, "window_s": 20})
    build(tmp_path, sdist, args=("--max-builds", "1", "--max-cpu", "200"))
    assert most_held(member(tmp_path, "boxed", "jobserver.json")["log"]) == 3


NINJA_FILE = """rule edge
  command = sh -c 'echo "$$(date +%s.%N) 1" >> times; sleep 0.4; echo "$$(date +%s.%N) -1" >> times; touch $out'
""" + "".join(f"build out{index}: edge\n" for index in range(6))


def ninja_concurrency(tmp_path: Path, *args: str, path: str) -> int:
    """The most edges a real ninja ran at once in a fake build's ``build_wheel``, with ``path`` as PATH."""
    sdist = make_sdist(tmp_path / "sdists", "ninjabuild", extra_files={"nj/build.ninja": NINJA_FILE.encode()},
                       run=[["ninja", "-C", "nj"], ["cat", "nj/times"]])
    shutil.rmtree(tmp_path / "wh", ignore_errors=True)
    build(tmp_path, sdist, args=("--max-builds", "1", *args), env={"PATH": path})
    running = peak = 0
    times = member(tmp_path, "ninjabuild", "run.json")[1].split("\n")
    for _, delta in sorted((float(t), int(d)) for t, d in (line.split() for line in times if line.strip())):
        running += delta
        peak = max(peak, running)
    return peak


needs_ninja = pytest.mark.skipif(jobserver_ninja() is None, reason="the PyPI ninja >= 1.13 is not installed")


@needs_ninja
def test_a_real_ninja_runs_as_many_edges_as_it_has_tokens(tmp_path: Path) -> None:
    ninja = jobserver_ninja()
    assert ninja is not None
    path = f"{Path(ninja).parent}{os.pathsep}{os.environ['PATH']}"
    assert ninja_concurrency(tmp_path, "--max-cpu", "200", path=path) >= 3  # 4 usable: 3 tokens, 1 implicit slot
    assert ninja_concurrency(tmp_path, "--max-cpu", "50", path=path) == 1  # 1 usable: the implicit slot only
    # Without the jobserver the same ninja runs CPUs + 2 edges at once: the limit above was the jobserver's.
    assert ninja_concurrency(tmp_path, "--max-cpu", "50", "--jobserver", "off", path=path) > 1


@needs_ninja
def test_a_ninja_too_old_for_the_jobserver_is_shadowed_by_pypis(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    (old / "ninja").write_text('#!/bin/sh\nif [ "$1" = --version ]; then echo 1.11.1; exit 0; fi\nexit 3\n')
    (old / "ninja").chmod(0o755)
    assert ninja_concurrency(tmp_path, "--max-cpu", "200", path=f"{old}{os.pathsep}{os.environ['PATH']}") >= 3


def test_the_make_script_hands_an_old_make_the_split_and_a_sub_make_its_parents_flags(tmp_path: Path) -> None:
    path = fake_make(tmp_path / "bin", "4.3")["PATH"]
    env = {"PATH": path, "MAKEFLAGS": "-j3", "CMAKE_BUILD_PARALLEL_LEVEL": "3", "NINJA": "/opt/ninja"}
    fifo = tmp_path / "jobserver.fifo"
    (tmp_path / "run").mkdir()
    hooks = hook_environ(env, fifo=fifo, bin_root=tmp_path / "run")
    assert hooks["MAKEFLAGS"] == hooks["CARGO_MAKEFLAGS"] == f"-j3 --jobserver-auth=fifo:{fifo}"
    assert "CMAKE_BUILD_PARALLEL_LEVEL" not in hooks  # cmake --build would make it an explicit -j
    (bin_dir,) = (tmp_path / "run").iterdir()
    assert sorted(path.name for path in bin_dir.iterdir()) == ["make"]  # NINJA is the user's
    make = shutil.which("make", path=hooks["PATH"])
    assert make == str(bin_dir / "make")
    said = subprocess.run([make], env=hooks, capture_output=True, text=True, check=True).stdout.strip()
    assert said == "-j3"
    nested = {**hooks, "MAKEFLAGS": " -j3 --jobserver-auth=3,4"}  # set by a make 4.3 above: its own pipe
    said = subprocess.run([make], env=nested, capture_output=True, text=True, check=True).stdout.strip()
    assert said == "-j3 --jobserver-auth=3,4"


def test_a_build_that_runs_an_old_make_by_its_path_builds_again_with_the_split(tmp_path: Path) -> None:
    strict = tmp_path / "opt" / "make"  # past the make script on PATH: it sees what the hook has
    strict.parent.mkdir()
    strict.write_text('#!/bin/sh\ncase "$MAKEFLAGS" in *fifo:*) echo "make: *** internal error: invalid '
                      "--jobserver-auth string 'fifo:x'.  Stop.\" >&2; exit 2;; esac\necho \"$MAKEFLAGS\"\n")
    strict.chmod(0o755)
    sdist = make_sdist(tmp_path / "sdists", "maker", run=[[str(strict)]])
    result = orchestrate("build", sdist, "-w", tmp_path / "wh", *BASE, "--max-builds", "1",
                         "--log-dir", tmp_path / "logs")
    assert result.returncode == 0, result.stderr
    assert member(tmp_path, "maker", "run.json") == ["-j2\n"]
    log = (tmp_path / "logs" / "maker-1.0.log").read_text()
    assert "=== orchestrate: jobserver: MAKEFLAGS=-j2 --jobserver-auth=fifo:" in log  # the first attempt's
    assert "refused the jobserver" in log
