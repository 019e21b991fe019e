"""A build's hooks are forks of its hook server (``build/hookserver.py``), through the real ``orchestrate build``.

The fake backend's hooks record their process, their ancestors, what an earlier hook left, and
what runs as they end; real backends build through the server in tests/test_real_backends.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import uuid
import zipfile
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import orchestrate
from sdists import make_sdist, read_events
from test_sandbox import Tool, no_bwrap_path, tool  # noqa: F401 - the fixtures
from wheels import write_wheel

import orchestrator.build.hooks
from orchestrator.build.hooks import HOOK_SERVER, HookServer


def build(tmp_path: Path, *args: str | Path, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Build every sdist under ``tmp_path/sdists``, one at a time; the hooks' events."""
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "-j", "1", *args, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return read_events(tmp_path / "events.jsonl")


def test_a_builds_two_hooks_are_processes_of_their_own_forked_by_one_server_in_its_environment(
        tmp_path: Path) -> None:
    for name in ("alpha", "beta"):
        make_sdist(tmp_path / "sdists", name, events=str(tmp_path / "events.jsonl"), record_parents=True)
    hooks = build(tmp_path)
    servers = set()
    for name in ("alpha", "beta"):
        requires, start = (next(hook for hook in hooks if hook["name"] == name and hook["event"] == event)
                           for event in ("requires", "start"))
        assert requires["pid"] != start["pid"]  # each hook a fresh process
        server, worker, _ = requires["parents"]
        assert start["parents"][:2] == [server, worker] and server != worker  # both forks of the build's server
        python, *args = requires["parent_cmdline"]
        assert python.endswith("/env/bin/python") and "hookserver.serve(" in " ".join(args), requires
        servers.add(server)
    assert len(servers) == 2  # a server per build


def test_what_a_hook_leaves_in_its_process_never_reaches_the_next_and_each_ends_as_an_interpreter_does(
        tmp_path: Path) -> None:
    make_sdist(tmp_path / "sdists", "stateful", events=str(tmp_path / "events.jsonl"), leave_state=True)
    hooks = build(tmp_path)
    (start,) = [hook for hook in hooks if hook["event"] == "start"]
    assert start["left"] == []  # not the variable, the module, nor the attribute get_requires left
    ends = [(hook["event"], hook.get("hook")) for hook in hooks if hook["event"] in ("atexit", "thread")]
    # Each hook ran its atexit handlers; build_wheel's after its non-daemon thread ended, as an interpreter does.
    assert ends == [("atexit", "requires"), ("thread", None), ("atexit", "build_wheel")]


def test_hooks_forked_from_one_server_draw_random_numbers_and_temporary_names_of_their_own(tmp_path: Path) -> None:
    """The server imports ``random`` and ``tempfile`` before it forks: each hook still gets state of its own."""
    for name in ("alpha", "beta"):
        make_sdist(tmp_path / "sdists", name, events=str(tmp_path / "events.jsonl"), record_random=True)
    hooks = build(tmp_path)
    drawn = [hook["random"] for hook in hooks if hook["event"] in ("requires", "start")]
    assert len(drawn) == 4
    assert len({number for number, _ in drawn}) == 4 and len({name for _, name in drawn}) == 4, drawn


def test_the_server_imports_without_collecting_and_each_hook_collects_as_an_interpreter_does(tmp_path: Path) -> None:
    """The server's start runs no collection (what it imports lives as long as it does); its hooks have the collector
    on. An interpreter's own start collects a few times (generation 0) before the server's code runs; importing the
    server's list collected generation 1 too."""
    make_sdist(tmp_path / "sdists", "collector", events=str(tmp_path / "events.jsonl"), record_gc=True)
    hooks = build(tmp_path)
    seen = [hook["gc"] for hook in hooks if hook["event"] in ("requires", "start")]
    assert len(seen) == 2
    for inherited in seen:
        assert inherited["enabled"], inherited
        assert inherited["collections"][1:] == [0, 0], inherited


def test_the_servers_own_code_imports_nothing_a_hook_would_not(tmp_path: Path) -> None:
    """Once its backend's imports are learned, a hook's process holds what the hook script and the backend
    import, not what the server's own annotations name (``typing``: 2 ms at every build's start)."""
    for name in ("first", "second"):
        make_sdist(tmp_path / "sdists" / name, name, record_modules=["typing", "zipfile"])
        result = orchestrate("build", tmp_path / "sdists" / name, "-w", tmp_path / "wh", "-j", "1")
        assert result.returncode == 0, result.stdout + result.stderr
    with zipfile.ZipFile(tmp_path / "wh" / "second-1.0-py3-none-any.whl") as wheel:
        loaded = json.loads(wheel.read("second/loaded.json"))
    assert loaded == {"requires": ["zipfile"], "build_wheel": ["zipfile"]}, loaded  # preloaded: learned


def test_what_get_requires_asked_for_is_in_build_wheels_interpreter_pth_files_included(tmp_path: Path) -> None:
    """The server started for get_requires_for_build_wheel predates what it asked for: build_wheel's has it."""
    (tmp_path / "links").mkdir()
    write_wheel(tmp_path / "links", "tinypth", "1.0",
                files={"tinypth/__init__.py": "", "tinypth.pth": "import os; os.environ['TINYPTH'] = 'ran'\n"})
    make_sdist(tmp_path / "sdists", "asker", events=str(tmp_path / "events.jsonl"), requires=["tinypth"],
               record_env=["TINYPTH"])
    hooks = build(tmp_path, "--no-index", "--find-links", tmp_path / "links")
    (start,) = [hook for hook in hooks if hook["event"] == "start"]
    assert start["env"] == {"TINYPTH": "ran"}


@pytest.mark.usefixtures("sandboxed")
def test_a_process_a_hook_leaves_in_the_sandbox_is_stopped_before_the_next_hook(
        tmp_path: Path, tool: Tool) -> None:  # noqa: F811 - the fixture
    token = f"orchestrate-left-{uuid.uuid4().hex}"
    make_sdist(tmp_path / "sdists", "daemonic", requires_daemon=token)
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", env=tool.env)
    assert result.returncode == 0, result.stdout + result.stderr
    with zipfile.ZipFile(tmp_path / "wh" / "daemonic-1.0-py3-none-any.whl") as wheel:
        assert json.loads(wheel.read("daemonic/daemon.json")) == {"seen": False}
    assert not [process for process in psutil.process_iter(["cmdline"]) if token in (process.info["cmdline"] or [])]


@pytest.mark.usefixtures("sandboxed")
def test_the_hook_server_runs_in_the_sandbox_when_this_package_lies_in_the_hidden_home(
        tmp_path: Path, tool: Tool) -> None:  # noqa: F811 - the fixture
    """A tool installed under the user's home (or /tmp), which the sandbox hides, still runs its hook server there:
    each hook finds what the server preloaded, where a hook started on its own would not."""
    make_sdist(tmp_path / "sdists", "homely", record_modules=["zipfile", "datetime"])
    home = Path(orchestrator.build.hooks.__file__).resolve().parents[2]  # holds the package: hidden in the sandbox
    caches = {name: str(tmp_path / name) for name in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "UV_CACHE_DIR")}
    env = {**tool.env, **caches, "HOME": str(home)}  # what the run keeps in the home goes to the test's folder
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    with zipfile.ZipFile(tmp_path / "wh" / "homely-1.0-py3-none-any.whl") as wheel:
        loaded = json.loads(wheel.read("homely/loaded.json"))
    assert loaded == {"requires": ["zipfile", "datetime"], "build_wheel": ["zipfile", "datetime"]}, loaded


@pytest.mark.usefixtures("sandboxed")
def test_the_run_writes_the_hook_servers_bytecode_which_its_sandbox_could_not_unless_told_not_to(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each build's server imports ``hookserver`` in a sandbox that makes its folder read-only: the run writes its
    bytecode once (where it is missing, as after an install that compiled none), or every build compiled it."""
    bytecode = Path(importlib.util.cache_from_source(str(HOOK_SERVER)))
    if not os.access(bytecode.parent.parent, os.W_OK):
        pytest.skip(f"{bytecode.parent.parent} is read-only here")
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    bytecode.unlink(missing_ok=True)
    make_sdist(tmp_path / "told", "told")
    result = orchestrate("build", tmp_path / "told", "-w", tmp_path / "wh")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not bytecode.exists()  # the user's word
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE")
    make_sdist(tmp_path / "untold", "untold")
    result = orchestrate("build", tmp_path / "untold", "-w", tmp_path / "wh")
    assert result.returncode == 0, result.stdout + result.stderr
    assert bytecode.exists()


def test_a_server_that_does_not_start_says_so_in_the_log(tmp_path: Path) -> None:
    with (tmp_path / "build.log").open("w") as log:
        server = HookServer.start(sys.executable, str(tmp_path / "_in_process.py"), env={}, cwd=None, log=log,
                                  sandboxed=False, wrap=lambda cmd, env, cwd: (["false", *cmd[1:]], dict(env)))
    assert server is None  # the runner then runs each hook on its own
    assert (tmp_path / "build.log").read_text() == (
        "=== orchestrate: the hook server did not start (exit status 1); each hook starts its own interpreter ===\n")
