"""The hook server preloads what the backend's hooks imported before (``build/preload.py``), through the real
``orchestrate build``: the fake backend's hooks record which modules their process had before the backend's own
imports, and what they import in ``build_wheel``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import zipfile
from pathlib import Path

import psutil
import pytest
from conftest import orchestrate
from sdists import make_sdist, read_events

from orchestrator.build import preload

WATCHED = ["colorsys", "wave", "zipfile", "datetime", "preload_helper"]
"""colorsys: imported by build_wheel; wave: imported by the source's own module preload_helper; zipfile: in the
server's own list, imported by the backend's module; datetime: in that list, never imported by the backend."""


def build_one(tmp_path: Path, name: str) -> list[list[str]]:
    """Build one sdist of the fake backend, in a run of its own (the state is the test's); for each of its two
    hooks, which of :data:`WATCHED` its process had before the backend's module imported anything."""
    make_sdist(tmp_path / name, name, imports=["colorsys", "preload_helper"], record_modules=WATCHED,
               extra_files={"preload_helper.py": b"import wave\n"})
    result = orchestrate("build", tmp_path / name, "-w", tmp_path / "wh", "-j", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    with zipfile.ZipFile(tmp_path / "wh" / f"{name}-1.0-py3-none-any.whl") as wheel:
        loaded = json.loads(wheel.read(f"{name}/loaded.json"))
    return [loaded["requires"], loaded["build_wheel"]]


def learned_files() -> list[Path]:
    return sorted((Path(os.environ["ORCHESTRATE_STATE_DIR"]) / "build-envs" / "preload").glob("*.json"))


def learned() -> list[str]:
    (path,) = learned_files()
    modules: list[str] = json.loads(path.read_text())["modules"]
    return modules


@pytest.mark.parametrize("sandbox", [False, True], ids=["unsandboxed", "sandboxed"])
def test_the_next_build_of_a_backend_preloads_the_standard_library_its_hooks_imported_and_nothing_else(
        tmp_path: Path, sandbox: bool, request: pytest.FixtureRequest) -> None:
    if sandbox:
        request.getfixturevalue("sandboxed")
    for loaded in build_one(tmp_path, "first"):  # nothing learned: the server's own list
        assert loaded == ["zipfile", "datetime"], loaded
    modules = learned()
    # What the hooks imported, and what the backend's module imported by name from what was preloaded;
    # never the source's own module, nor the backend's.
    assert {"colorsys", "wave", "zipfile"} <= set(modules)
    assert not {"datetime", "preload_helper", "_fakebackend"} & set(modules), modules
    assert learned_files()[0].stat().st_size < 2000  # stdlib modules the fake backend used, not every one
    for loaded in build_one(tmp_path, "second"):
        assert loaded == ["colorsys", "wave", "zipfile"], loaded
    assert learned() == modules  # nothing new: the file stays as it was


def test_a_file_learned_that_cannot_be_read_falls_back_to_the_servers_list_and_is_learned_again(
        tmp_path: Path) -> None:
    build_one(tmp_path, "first")
    (path,) = learned_files()
    path.write_text('{"modules": ["colorsys", ')  # cut short
    for loaded in build_one(tmp_path, "second"):
        assert loaded == ["zipfile", "datetime"], loaded
    assert "colorsys" in learned()
    path.write_text('{"modules": "colorsys"}')  # not a list
    for loaded in build_one(tmp_path, "third"):
        assert loaded == ["zipfile", "datetime"], loaded
    path.unlink()
    for loaded in build_one(tmp_path, "fourth"):
        assert loaded == ["zipfile", "datetime"], loaded
    assert "colorsys" in learned()


def test_a_learned_file_naming_modules_outside_the_standard_library_preloads_only_the_standard_ones(
        tmp_path: Path) -> None:
    build_one(tmp_path, "first")
    (path,) = learned_files()
    path.write_text(json.dumps({"modules": ["preload_helper", "colorsys", "not a module", "os.system",
                                            "packaging", "this"]}))
    for loaded in build_one(tmp_path, "second"):
        assert loaded == ["colorsys"], loaded  # preload_helper is the source's, packaging installed
    assert "zipfile" in learned()  # what the hooks imported themselves, added
    logs = (Path(os.environ["ORCHESTRATE_STATE_DIR"]) / "runs").glob("*/logs/second-1.0.log")
    assert "Beautiful is better than ugly" not in next(logs).read_text()  # `this` prints as it is imported


def test_builds_of_one_backend_and_requirement_names_learn_into_one_file(tmp_path: Path) -> None:
    run = tmp_path / "build-envs" / "runs" / "run-1"
    file = preload.learned_path(run, "setuptools.build_meta", ["setuptools>=61", "wheel"])
    assert file.parent == tmp_path / "build-envs" / "preload"  # beside the runs: it outlives them
    assert preload.learned_path(tmp_path / "build-envs" / "runs" / "run-2", "setuptools.build_meta",
                                ["Wheel", "SetupTools"]) == file  # names, canonical, in any order; no versions
    assert preload.learned_path(run, "setuptools.build_meta", ["setuptools", "cython"]) != file
    assert preload.learned_path(run, "hatchling.build", ["setuptools", "wheel"]) != file


@pytest.mark.parametrize("content", [
    None,  # no file
    b"",  # empty
    b'{"modules": ["zipfile", ',  # cut short
    b'["zipfile"]',  # not an object
    b'{"modules": "zipfile"}',  # not a list
    b'{"modules": ["zipfile", 3]}',  # not names
    b"\xff\xfe",  # not text
])
def test_nothing_is_learned_from_a_file_that_is_not_a_list_of_names(tmp_path: Path, content: bytes | None) -> None:
    file = tmp_path / "learned.json"
    if content is not None:
        file.write_bytes(content)
    assert preload.load(file) is None


def test_a_learned_list_grows_and_is_written_only_when_it_did(tmp_path: Path) -> None:
    file = tmp_path / "preload" / "key.json"
    assert preload.save(file, None, []) is None and not file.exists()  # nothing reported: nothing to keep
    learned = preload.save(file, None, {"zipfile": None, "hashlib": None})
    assert learned == ("zipfile", "hashlib") == preload.load(file)
    written = file.stat().st_mtime_ns, file.stat().st_ino
    assert preload.save(file, learned, ["hashlib"]) == learned
    assert (file.stat().st_mtime_ns, file.stat().st_ino) == written  # nothing new: not written again
    assert preload.save(file, learned, ["colorsys", "zipfile"]) == ("zipfile", "hashlib", "colorsys")
    assert preload.load(file) == ("zipfile", "hashlib", "colorsys")
    assert sorted(path.name for path in file.parent.iterdir()) == ["key.json"]  # no partial file left


def test_a_process_a_hook_leaves_holding_its_report_pipe_holds_up_neither_the_build_nor_the_learning(
        tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    make_sdist(tmp_path / "sdists", "lingering", events=str(events), linger_s=60, imports=["colorsys"])
    started = time.monotonic()
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "-j", "1")
    took = time.monotonic() - started
    (lingering,) = [event for event in read_events(events) if event["event"] == "lingering"]
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        assert took < 50, took  # the build ended while it still held the hook's pipes: it lingers 60 s
        assert "colorsys" in learned()  # build_wheel's report came through
        # Unsandboxed, the worker kills what its build left as it ends.
        with contextlib.suppress(psutil.NoSuchProcess):
            assert psutil.Process(lingering["child"]).status() == psutil.STATUS_ZOMBIE
    finally:
        with contextlib.suppress(OSError):
            os.kill(lingering["child"], signal.SIGKILL)
