"""The state folder stays bounded: what no run used for --prune-unused-after days goes, never what a run uses."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import orchestrate
from index_server import IndexServer, index_server_fixture  # noqa: F401 - the index_server fixture
from sdists import make_sdist
from wheels import write_wheel

from orchestrator.build import envprune, storelocks
from orchestrator.build.envcache import EnvCache, SubprocessInstaller
from orchestrator.build.envprune import PrunedEnvs
from orchestrator.download import cache as download_cache
from orchestrator.policy.history import SUCCESS, PrunedHistory
from orchestrator.pruning import STAMP, Pruned, prune_state
from orchestrator.settings import IndexSettings

DAY = 86400.0
PRUNED = re.compile(r"pruned (.*) unused for 40 days \((\d+(\.\d)? [KMG]?i?B)\)")


def age(folder: Path, days: float, *, stamp: bool = True, only: str | None = None) -> None:
    """Move every entry under ``folder`` (the state folder's check, ``stamp``, too; or only the one named ``only``)
    ``days`` into the past, as if no run had used it since."""
    then = time.time() - days * DAY
    for parent, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            if (stamp or name != STAMP) and only in (None, name):
                os.utime(os.path.join(parent, name), (then, then), follow_symlinks=False)


def _published_envs(state: Path) -> list[str]:
    store = state / "build-envs" / "envs"
    return sorted(entry.name for entry in store.iterdir() if entry.is_symlink()) if store.is_dir() else []


def _downloads(state: Path) -> list[str]:
    return sorted(path.parent.name for path in (state / "downloads").glob("sha256/*/*/*"))


def _logs(state: Path) -> str:
    return "".join(path.read_text() for path in sorted(state.glob("runs/*/logs/*.log")))


@pytest.fixture
def served(tmp_path: Path, index_server: IndexServer) -> tuple[str, ...]:
    """An sdist that needs a build requirement, both on the real index; the build's arguments."""
    made = make_sdist(tmp_path / "made", "prunable", build_requires=["tinydep"])
    index_server.add(made.name, made.read_bytes())
    wheel = write_wheel(tmp_path / "made", "tinydep", "1.0")
    index_server.add(wheel.name, wheel.read_bytes())
    (tmp_path / "req.txt").write_text("prunable==1.0\n")
    return ("build", "-r", str(tmp_path / "req.txt"), "--no-deps", "-w", str(tmp_path / "wh"), "--force",
            "-i", index_server.simple_url, "--installer", "uv", "--keep-build-envs")


def test_what_no_run_used_goes_at_most_hourly_and_the_next_run_builds_again(
    tmp_path: Path, index_server: IndexServer, served: tuple[str, ...]
) -> None:
    state = tmp_path / "state"
    env = {"PYTHONDONTWRITEBYTECODE": "1"}  # bytecode compiled at preparation, into the shared store
    first = orchestrate(*served, env=env)
    assert first.returncode == 0, first.stderr
    envs, downloads = _published_envs(state), _downloads(state)
    assert len(envs) == 2 and len(downloads) == 1  # the empty env and tinydep's; the sdist
    assert list((state / "build-envs" / "envs" / "bytecode").glob("tinydep-*"))
    assert list((state / "build-envs" / "preload").glob("*.json"))

    # Checked within the hour: nothing goes, however old; the run's uses move the entries' times forward.
    age(state, 50, stamp=False)
    started = time.time()
    second = orchestrate(*served, env=env)
    assert second.returncode == 0, second.stderr
    assert "pruned" not in second.stderr + second.stdout
    assert _published_envs(state) == envs and _downloads(state) == downloads
    store = state / "build-envs" / "envs"
    assert all(os.lstat(store / key).st_mtime >= started - 1 for key in envs)  # the links' own times
    assert _logs(state).count("reused (tinydep==1.0)") == 1

    age(state, 50)
    third = orchestrate(*served, env=env)
    assert third.returncode == 0, third.stderr
    line = PRUNED.search(third.stderr + third.stdout)
    assert line, third.stderr
    assert line.group(1) == "2 build environments, 1 bytecode entry, 1 preload list and 1 download"
    # The third run prepared and fetched again what was pruned, and built.
    assert _logs(state).count("preparing (tinydep==1.0)") == 2
    assert index_server.downloads("prunable-1.0.tar.gz") == 2
    assert len(_published_envs(state)) == 2 and not set(_published_envs(state)) - set(envs)  # same keys, again
    assert not [entry for entry in store.iterdir() if entry.name.endswith("-pruned") or entry.name.startswith(".")]
    assert list((tmp_path / "wh").glob("prunable-1.0-*.whl"))


@pytest.mark.parametrize("how", [("--prune-unused-after", "never"), ("--prune-unused-after", "0"), ("env", "never")])
def test_never_keeps_everything(tmp_path: Path, served: tuple[str, ...], how: tuple[str, str]) -> None:
    state = tmp_path / "state"
    assert orchestrate(*served).returncode == 0
    age(state, 5000)
    before = (_published_envs(state), _downloads(state))
    args, env = ((), {"ORCHESTRATE_PRUNE_UNUSED_AFTER": how[1]}) if how[0] == "env" else (how, {})
    result = orchestrate(*served, *args, env=env)
    assert result.returncode == 0, result.stderr
    assert "pruned" not in result.stderr + result.stdout
    assert (_published_envs(state), _downloads(state)) == before


def test_a_bad_age_is_one_line_naming_the_option(tmp_path: Path) -> None:
    result = orchestrate("build", tmp_path, "--prune-unused-after", "soon")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: Invalid value for '--prune-unused-after'")
    assert line.endswith("'soon' is not a number of days; give one such as 40, or never")


def test_an_env_a_build_is_using_is_never_pruned(tmp_path: Path) -> None:
    """A build that runs while another run prunes keeps its env, however old its time says it is."""
    find_links = tmp_path / "find-links"
    find_links.mkdir()
    write_wheel(find_links, "tinydep", "1.0")
    gate, events = tmp_path / "gate", tmp_path / "events"
    make_sdist(tmp_path / "slow", "slow", build_requires=["tinydep"], until=str(gate), events=str(events))
    make_sdist(tmp_path / "quick", "quick")
    state = tmp_path / "state"
    common = ("--state-dir", str(state), "--keep-build-envs", "--no-index", "--find-links", str(find_links))
    slow = subprocess.Popen([sys.executable, "-m", "orchestrator", "build", str(tmp_path / "slow"), "-w",
                             str(tmp_path / "wh1"), *common], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (events.exists() and '"start"' in events.read_text()):  # in build_wheel, its env in use
            assert time.monotonic() < deadline and slow.poll() is None
            time.sleep(0.05)
        envs = _published_envs(state)
        assert len(envs) == 2 and list((state / "build-envs" / "envs" / "resolutions").glob("*.txt"))
        age(state, 50)
        other = orchestrate("build", tmp_path / "quick", "-w", tmp_path / "wh2", *common)
        assert other.returncode == 0, other.stderr
        # Both envs are the slow build's (the empty one too): the check leaves them (a learned list may go).
        assert "build environment" not in other.stderr + other.stdout
        assert _published_envs(state) == envs
    finally:
        gate.touch()
        out, err = slow.communicate(timeout=120)
    assert slow.returncode == 0, err
    # Once the build has ended, the same check removes what is old.
    age(state, 50)
    pruned = prune_state(state, days=40, downloads=None, history=None, now=time.time())
    assert pruned is not None and pruned.envs.envs == 2
    # tinydep's resolution (from a local folder, so kept) went too, in one check or the other: read once, it is
    # not held while in use.
    assert not list((state / "build-envs" / "envs" / "resolutions").glob("*.txt"))
    assert _published_envs(state) == []
    assert [entry.name for entry in (state / "build-envs" / "envs").iterdir()
            if entry.name not in ("bytecode", "resolutions")] == []


@pytest.mark.parametrize("where", ["build environment", "download"])
def test_a_prune_killed_half_way_leaves_nothing_a_run_would_use(
    tmp_path: Path, index_server: IndexServer, served: tuple[str, ...], where: str
) -> None:
    """Each entry is unpublished before it is removed: killed in between, the next run prepares or fetches it
    again, and the next check removes what the killed one left."""
    state = tmp_path / "state"
    assert orchestrate(*served).returncode == 0
    # SIGKILL once the first entry is unpublished, before its files are removed (only downloads are old in the
    # second case: the first removal is theirs).
    if where == "build environment":
        age(state, 50)
        # Part of the env's folder goes first (its description), as a kill in the middle of its removal leaves it.
        module, name = "orchestrator.build.envprune", "remove_tree"
        half = ("os.chmod(a[0], 0o755); p = os.path.join(a[0], 'orchestrate-env.json'); "
                "os.path.exists(p) and os.unlink(p); ")
    else:
        age(state / "downloads", 50)
        age(state, 50, stamp=True, only=STAMP)
        module, name, half = "orchestrator.lastuse", "bytes_freed", ""
    prelude = (f"import importlib, os, signal\nm = importlib.import_module({module!r})\n"
               f"def killed(*a, **k):\n    {half}os.kill(os.getpid(), signal.SIGKILL)\n"
               f"setattr(m, {name!r}, killed)")
    killed = orchestrate(*served, prelude=prelude)
    assert killed.returncode == -9
    again = orchestrate(*served)
    assert again.returncode == 0, again.stderr
    if where == "build environment":
        assert "removing" in _logs(state) and _logs(state).count("preparing (") >= 3
    else:
        assert index_server.downloads("prunable-1.0.tar.gz") == 2
        assert list((state / "downloads").glob("sha256/*/.*.pruned"))  # what the killed check left
    age(state, 50)
    pruned = prune_state(state, days=40, downloads=state / "downloads", history=None, now=time.time())
    assert pruned is not None
    assert not list((state / "downloads").glob("sha256/*/.*"))
    store = state / "build-envs" / "envs"
    assert not [entry for entry in store.iterdir() if entry.name not in ("bytecode", "resolutions")]


@pytest.mark.parametrize(("pruned", "line"), [
    (Pruned(days=40, envs=PrunedEnvs(), history=PrunedHistory()), None),
    (Pruned(days=40, envs=PrunedEnvs(envs=1), history=PrunedHistory(), bytes_freed=512),
     "pruned 1 build environment unused for 40 days (512 B)"),
    (Pruned(days=30, envs=PrunedEnvs(envs=3, bytecode=2), downloads=41, history=PrunedHistory(),
            bytes_freed=1288490189),
     "pruned 3 build environments, 2 bytecode entries and 41 downloads unused for 30 days (1.2 GiB)"),
    (Pruned(days=7, envs=PrunedEnvs(resolutions=1, preload_lists=2), history=PrunedHistory()),
     "pruned 1 resolution and 2 preload lists unused for 7 days (0 B)"),
    (Pruned(days=40, envs=PrunedEnvs(), history=PrunedHistory(builds=1, runs=2), compiled_sources=3),
     "pruned 1 build in the history, 2 runs in the history and 3 compiled-sources records unused for 40 days (0 B)"),
])
def test_the_line_says_what_went(pruned: Pruned, line: str | None) -> None:
    assert pruned.line() == line


def test_the_report_keeps_the_line(tmp_path: Path, served: tuple[str, ...]) -> None:
    state = tmp_path / "state"
    assert orchestrate(*served).returncode == 0
    age(state, 50)
    result = orchestrate(*served, "--report-json", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    settings = json.loads((tmp_path / "r.json").read_text())["settings"]
    assert PRUNED.fullmatch(settings["pruned"]), settings


def test_a_lock_its_holder_unlinked_is_taken_afresh_by_whoever_waited(tmp_path: Path) -> None:
    """The pruner unlinks the lock file of an entry it removed while it holds it: a build that waited for it locks
    the file now at the path, which the next check then sees held."""
    lock = tmp_path / "key.lock"
    assert storelocks.try_exclusive(lock) is None and not lock.exists()  # another pruner's, removed: not made again
    lock.touch()
    pruner = storelocks.try_exclusive(lock)
    assert pruner is not None
    taken: list[int] = []
    waiter = threading.Thread(target=lambda: taken.append(storelocks.hold(lock, shared=True)))
    waiter.start()
    time.sleep(0.2)
    assert not taken  # it waits
    lock.unlink()
    lock.touch()  # made anew by another taker meanwhile
    os.close(pruner)
    waiter.join(10)
    (held,) = taken
    assert os.fstat(held).st_ino == os.stat(lock).st_ino
    assert storelocks.try_exclusive(lock) is None  # in use
    os.close(held)
    again = storelocks.try_exclusive(lock)
    assert again is not None
    os.close(again)


def test_a_pruned_bytecode_entry_leaves_the_envs_linked_to_it_whole(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    find_links = tmp_path / "find-links"
    find_links.mkdir()
    write_wheel(find_links, "tinybackend", "1.0", files={f"tinybackend/m{i}.py": f"X = {i}\n" for i in range(3)})
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    root = tmp_path / "build-envs"  # the run's folder is the root here: its store is root/envs
    (root / "envs").mkdir(parents=True)
    (root / "resolutions").mkdir()
    index = IndexSettings(no_index=True, find_links=(str(find_links),))
    with (tmp_path / "build.log").open("w") as log:
        cache = EnvCache(root, SubprocessInstaller("uv", index, log), index=index, log=log, compiled=True)
        env = cache.prepare(["tinybackend"])
    compiled = env.path / env.purelib / "tinybackend" / "__pycache__" / f"m0.{sys.implementation.cache_tag}.pyc"
    data = compiled.read_bytes()
    (entry,) = [path for path in (root / "envs" / "bytecode").glob("tinybackend-*") if path.is_dir()]
    then = time.time() - 50 * DAY
    os.utime(entry, (then, then))
    pruned = envprune.prune(root, unused_since=time.time() - 40 * DAY)
    assert (pruned.bytecode, pruned.envs, pruned.resolutions) == (1, 0, 0)
    assert pruned.bytes_freed == 0  # its files are hard links the env still holds
    assert not entry.exists() and compiled.read_bytes() == data
    assert not list((root / "envs" / "bytecode").glob("tinybackend-*"))  # nor its lock, nor a renamed folder


def test_a_download_pruned_as_a_run_reads_it_is_a_miss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "made").mkdir()
    wheel = write_wheel(tmp_path / "made", "tinydep", "1.0")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    cache = download_cache.Cache(tmp_path / "cache")
    cache.store(wheel, sha)
    (dest := tmp_path / "dest").mkdir()
    listdir = os.listdir

    def listed_then_pruned(path: str | os.PathLike[str]) -> list[str]:
        names = listdir(path)
        assert download_cache.prune(tmp_path / "cache", unused_since=time.time() + 1) == (1, wheel.stat().st_size)
        return names

    monkeypatch.setattr(os, "listdir", listed_then_pruned)
    with caplog.at_level(logging.WARNING):
        assert cache.copy_out(sha, dest, "tinydep 1.0") is None
    monkeypatch.undo()
    assert not caplog.records and not list(dest.iterdir())
    assert cache.copy_out(sha, dest, "tinydep 1.0") is None  # and once it has gone
    assert not list((tmp_path / "cache").glob("sha256/*/*"))


def test_the_download_command_prunes_its_cache_too(tmp_path: Path, index_server: IndexServer) -> None:
    made = make_sdist(tmp_path / "made", "fetched")
    index_server.add(made.name, made.read_bytes())
    (tmp_path / "req.txt").write_text("fetched==1.0\n")
    cache = tmp_path / "elsewhere"  # --cache-dir: pruned with the state folder it is named beside
    args = ("download", "-r", tmp_path / "req.txt", "--no-deps", "-i", index_server.simple_url, "--cache-dir", cache)
    assert orchestrate(*args, "-d", tmp_path / "one").returncode == 0
    assert list(cache.glob("sha256/*/*/fetched-1.0.tar.gz"))
    age(cache, 50)
    age(tmp_path / "state", 50)
    result = orchestrate(*args, "-d", tmp_path / "two")
    assert result.returncode == 0, result.stderr
    line = PRUNED.search(result.stderr + result.stdout)
    assert line and line.group(1) == "1 download", result.stderr
    assert index_server.downloads(made.name) == 2 and (tmp_path / "two" / made.name).is_file()


PREPARE = """
import io, sys
from pathlib import Path
from orchestrator.build.envcache import EnvCache
from orchestrator.settings import IndexSettings

class Installer:  # resolves a set to itself, installs nothing: enough for envs to prune
    name, seed_pip = "fake", False
    def resolve(self, requirements): return [f"{r}==1.0" for r in requirements]
    def install(self, venv, python, pins): pass

for number in range(6):
    EnvCache(Path(sys.argv[1]), Installer(), index=IndexSettings(), log=io.StringIO()).prepare([f"dist{number}"])
"""


def test_checks_running_at_once_remove_each_entry_once(tmp_path: Path) -> None:
    root = tmp_path / "build-envs"
    (root / "envs").mkdir(parents=True)
    (root / "resolutions").mkdir()
    subprocess.run([sys.executable, "-c", PREPARE, str(root)], check=True)  # its locks go with it
    assert len(_published_envs(tmp_path)) == 7  # six sets and the empty env
    age(root, 50)
    results: list[envprune.PrunedEnvs] = []
    checks = [threading.Thread(target=lambda: results.append(envprune.prune(root, unused_since=time.time() - DAY)))
              for _ in range(4)]
    for check in checks:
        check.start()
    for check in checks:
        check.join(60)
    assert len(results) == 4 and sum(result.envs for result in results) == 7
    assert [entry.name for entry in (root / "envs").iterdir() if entry.name not in ("bytecode", "resolutions")] == []


MiB = 1024**2


def _old_build(db: sqlite3.Connection, like: int, *, name: str | None = None, days: float, peak: int,
               status: str = SUCCESS) -> None:
    """Copy the build ``like`` as one of ``name`` (its own by default) that finished ``days`` ago."""
    then = time.time() - days * DAY
    db.execute("INSERT INTO builds (name, version, python, peak_rss_bytes, wall_s, status, started_at, finished_at,"
               " outcome) SELECT COALESCE(?, name), version, python, ?, wall_s, ?, ?, ?, ? FROM builds WHERE id = ?",
               (name, peak, status, then - 5, then, "built" if status == SUCCESS else "failed", like))


def test_the_history_and_compiled_sources_records_keep_what_is_read(tmp_path: Path, served: tuple[str, ...]) -> None:
    """What no prediction or report reads goes from the history; a package's last successful builds from before
    the age stay (the learned need is the same), of a package no run built since too."""
    state = tmp_path / "state"
    first = orchestrate(*served)
    assert first.returncode == 0, first.stderr
    with contextlib.closing(sqlite3.connect(state / "history.sqlite3")) as db, db:
        ((real, python),) = db.execute("SELECT id, python FROM builds").fetchall()
        db.execute("UPDATE builds SET peak_rss_bytes = ? WHERE id = ?", (200 * MiB, real))
        for days in (50, 51, 52, 53):  # the last successes from before the age: the learned need's
            _old_build(db, real, days=days, peak=200 * MiB)
        _old_build(db, real, days=49, peak=900 * MiB, status="backend failed")  # a failure says nothing
        for days in (54, 55, 56):  # the fifth kept (a report's baseline holds five), two older ones go
            _old_build(db, real, days=days, peak=900 * MiB)
        for days in (45, 60):  # a package no run built for the age: kept, its next build's learned need
            _old_build(db, real, name="gone", days=days, peak=100 * MiB)
        db.execute("INSERT INTO runs (started_at, finished_at, command_line, tool_version, python) VALUES"
                   " (?, ?, 'orchestrate build', 'old', ?)", (time.time() - 50 * DAY, time.time() - 50 * DAY, python))
    records = state / "compiled-sources" / python
    records.mkdir(parents=True)
    for name in ("unused", "recent"):
        (records / f"{name}.json").write_text('{"version": "1.0", "other_s": 1.0, "compile_s": 2.0, "seen": []}')
    age(state, 50, only="unused.json")
    age(state, 2, only=STAMP)

    second = orchestrate(*served, "--report-json", tmp_path / "r.json")
    assert second.returncode == 0, second.stderr
    line = PRUNED.search(second.stderr + second.stdout)
    assert line, second.stderr
    assert line.group(1) == "3 builds in the history, 1 run in the history and 1 compiled-sources record"
    (build,) = json.loads((tmp_path / "r.json").read_text())["builds"]
    assert build["predicted_rss_bytes"] == math.ceil(200 * MiB * 1.05)  # five agreeing peaks of 200 MiB
    with contextlib.closing(sqlite3.connect(state / "history.sqlite3")) as db:
        kept = db.execute("SELECT name, peak_rss_bytes / ?, status FROM builds WHERE finished_at < ?"
                          " ORDER BY finished_at DESC", (MiB, time.time() - 40 * DAY)).fetchall()
        assert kept == [("gone", 100, SUCCESS)] + [("prunable", 200, SUCCESS)] * 4 + [("prunable", 900, SUCCESS),
                                                                                     ("gone", 100, SUCCESS)]
        assert db.execute("SELECT COUNT(*) FROM builds WHERE finished_at >= ?", (time.time() - DAY,)).fetchone() == (2,)
        assert db.execute("SELECT COUNT(*), SUM(tool_version = 'old') FROM runs").fetchone() == (2, 0)
    assert sorted(path.name for path in records.iterdir()) == ["recent.json"]
