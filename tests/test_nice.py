"""``--nice``: every process of a build runs at niceness 10 and in the idle I/O class, read from /proc by the
real hooks of a real build (and by the processes a hook starts), and nothing changes without it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import orchestrate
from sdists import make_sdist, read_events

from orchestrator.resources import NICE_LEVEL

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists() or shutil.which("ionice") is None,
                                reason="needs Linux's /proc and ionice")


def hook_priorities(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> list[dict[str, object]]:
    events = tmp_path / "events.jsonl"
    sdist = make_sdist(tmp_path / "sdists", "polite", events=str(events), record_priority=True)
    result = orchestrate("build", sdist, "-w", tmp_path / "wh", "--compiler-cache", "off", *args, env=env)
    assert result.returncode == 0, result.stderr
    recorded = [event for event in read_events(events) if "priority" in event]
    assert {event["event"] for event in recorded} == {"requires", "start"}  # both hooks, each in its own process
    return [event["priority"] for event in recorded]


@pytest.mark.parametrize("how", ["option", "variable"])
def test_nice_lowers_every_build_process(tmp_path: Path, how: str) -> None:
    nice = max(os.getpriority(os.PRIO_PROCESS, 0), NICE_LEVEL)
    args, env = (["--nice"], None) if how == "option" else ([], {"ORCHESTRATE_NICE": "1"})
    for priority in hook_priorities(tmp_path, *args, env=env):
        assert priority == {"nice": nice, "ioclass": "idle", "child": [str(nice), "idle"]}


def test_without_nice_builds_keep_the_priority_of_the_run(tmp_path: Path) -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    for priority in hook_priorities(tmp_path):
        assert priority["nice"] == own and priority["ioclass"] != "idle"
