"""``orchestrate build -r`` makes a wheelhouse as ``pip wheel -r`` does: end to end, through the real command.

A real index on 127.0.0.1 serves wheels and fake sdists that declare dependencies;
pip's resolver, the download stage, the builds (real PEP 517 hooks in real
virtualenvs) and the check of the set all run for real. The fake backend writes an
event per hook; a build by orchestrate is told from pip's own metadata build (pip
runs ``build_wheel`` to read an sdist's metadata) by ``MAX_JOBS``, which orchestrate
sets for its builds only.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import orchestrate
from index_server import IndexServer
from sdists import make_sdist, read_events
from wheels import write_wheel

from orchestrator.wheels.wheelhouse import MANIFEST, Wheelhouse

TOP_REQUIRES = ["wonly", "sonly>=1"]


pytestmark = pytest.mark.usefixtures("hermetic_pip")


@pytest.fixture(autouse=True)
def _no_max_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAX_JOBS", raising=False)  # set by orchestrate for its builds: how they are told apart


class Index:
    """The test index, the files it serves and what its sdists' backend did."""

    def __init__(self, server: IndexServer, folder: Path) -> None:
        self.server = server
        self.folder = folder
        self.events = folder / "events.jsonl"

    def wheel(self, name: str, version: str = "1.0", **options: Any) -> str:
        """Write and serve a wheel; return its file name."""
        path = write_wheel(self.folder, name, version, **options)
        self.server.add(path.name, path.read_bytes())
        return path.name

    def sdist(self, name: str, version: str = "1.0", **behaviour: Any) -> str:
        path = make_sdist(self.folder, name, version, events=str(self.events), record_env=["MAX_JOBS"], **behaviour)
        self.server.add(path.name, path.read_bytes())
        return path.name

    def bytes_of(self, filename: str) -> bytes:
        return (self.folder / filename).read_bytes()

    def builds(self, name: str) -> int:
        """How many times orchestrate ran ``name``'s ``build_wheel`` (pip's metadata builds not counted)."""
        return sum(1 for event in read_events(self.events)
                   if event["name"] == name and event["event"] == "start" and event["env"]["MAX_JOBS"] is not None)

    def hooks(self, name: str) -> list[dict[str, Any]]:
        """Every hook anyone ran of ``name``'s backend."""
        return [event for event in read_events(self.events) if event["name"] == name]


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    folder = tmp_path / "index"
    folder.mkdir()
    with IndexServer() as server:
        served = Index(server, folder)
        # top needs a wheel-only and an sdist-only package
        served.wheel("top", requires_dist=TOP_REQUIRES)
        served.sdist("top", requires_dist=TOP_REQUIRES)
        served.wheel("wonly")
        served.sdist("sonly")
        served.wheel("both")
        served.sdist("both")
        served.wheel("oldtag", tag="cp27-none-any")  # no Python 3 takes it
        served.sdist("oldtag")
        # a == 1 needs c < 2, b == 1 needs c >= 2
        served.wheel("a", requires_dist=["c<2"])
        served.wheel("b", requires_dist=["c>=2"])
        served.wheel("c", "1.0")
        served.wheel("c", "2.0")
        served.wheel("needsabsent", requires_dist=["absent"])  # absent is on no index
        yield served


def build(index: Index, tmp_path: Path, requirements: str, *args: str | os.PathLike[str],
          wheelhouse: Path | None = None, resolver: str = "pip", env: dict[str, str] | None = None,
          ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    """Run ``orchestrate build -r`` on ``requirements`` against the index; the process and its JSON report.

    pip's resolver unless ``resolver`` says otherwise: its semantics are pip wheel's, which these tests
    hold orchestrate to; the ``uv`` cases check what uv's resolver changes (only how a failure reads).
    """
    path = tmp_path / "requirements.txt"
    path.write_text(requirements)
    report = tmp_path / "report.json"
    report.unlink(missing_ok=True)
    result = orchestrate("build", "-r", path, "-w", wheelhouse or tmp_path / "wh", "--index-url",
                         index.server.simple_url, "--report-json", report, "--resolver", resolver, *args, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    return result, json.loads(report.read_text()) if report.exists() else None


def wheels_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("*.whl"))


def statuses(report: dict[str, Any] | None) -> dict[str, str]:
    assert report is not None
    found = {record["name"]: record["status"] for record in report["builds"]}
    assert len(found) == len(report["builds"]), report["builds"]
    return found


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one ``error:`` line of a failed run."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize("resolver", ["pip", "uv"])
def test_dependencies_come_as_index_wheels_and_built_sdists(index: Index, tmp_path: Path, resolver: str) -> None:
    result, report = build(index, tmp_path, "top\n", resolver=resolver)
    assert result.returncode == 0, result.stderr
    wheelhouse = tmp_path / "wh"
    assert wheels_in(wheelhouse) == ["sonly-1.0-py3-none-any.whl", "top-1.0-py3-none-any.whl",
                                     "wonly-1.0-py3-none-any.whl"]
    for taken in ("top-1.0-py3-none-any.whl", "wonly-1.0-py3-none-any.whl"):
        assert (wheelhouse / taken).read_bytes() == index.bytes_of(taken)
    assert statuses(report) == {"top": "downloaded wheel", "wonly": "downloaded wheel", "sonly": "built"}
    assert (index.builds("top"), index.builds("sonly")) == (0, 1)
    assert "top-1.0: downloaded wheel top-1.0-py3-none-any.whl, placed as it is" in result.stderr
    # The report says what each wheel is, checked against the files on disk, and what ran.
    assert report is not None
    for record in report["builds"]:
        on_disk = (wheelhouse / record["wheel"]).read_bytes()
        assert record["wheel_sha256"] == hashlib.sha256(on_disk).hexdigest()
        assert record["wheel_tag"] == "py3-none-any"
    assert report["tool_version"] == installed_version("orchestrator")
    assert report["command_line"].startswith("orchestrate build -r ")
    assert f"--index-url {index.server.simple_url}" in report["command_line"]
    assert report["interpreter"].startswith(sys.executable)
    assert platform.python_version() in report["interpreter"]
    assert report["platform"] == platform.platform()
    assert report["resolution"]["resolver"] == f"{resolver} {installed_version(resolver)}"
    assert report["resolution"]["distributions"] == 3
    assert report["unmet"] == []


@pytest.mark.parametrize(("requirements", "args"), [("both\n", ()), ("both==1.0\n", ("--no-deps",))],
                         ids=["resolved", "no-deps"])
def test_a_compatible_wheel_is_taken_as_it_is_and_not_built(index: Index, tmp_path: Path, requirements: str,
                                                            args: tuple[str, ...]) -> None:
    result, report = build(index, tmp_path, requirements, *args)
    assert result.returncode == 0, result.stderr
    assert wheels_in(tmp_path / "wh") == ["both-1.0-py3-none-any.whl"]
    assert (tmp_path / "wh" / "both-1.0-py3-none-any.whl").read_bytes() == index.bytes_of("both-1.0-py3-none-any.whl")
    assert statuses(report) == {"both": "downloaded wheel"}
    assert index.hooks("both") == []  # not even pip ran its backend
    assert index.server.downloads("both-1.0.tar.gz") == 0


@pytest.mark.parametrize(("requirements", "args"), [("oldtag\n", ()), ("oldtag==1.0\n", ("--no-deps",))],
                         ids=["resolved", "no-deps"])
def test_an_incompatible_wheel_leaves_the_sdist_to_build(index: Index, tmp_path: Path, requirements: str,
                                                         args: tuple[str, ...]) -> None:
    result, report = build(index, tmp_path, requirements, *args)
    assert result.returncode == 0, result.stderr
    assert wheels_in(tmp_path / "wh") == ["oldtag-1.0-py3-none-any.whl"]
    assert statuses(report) == {"oldtag": "built"}
    assert index.builds("oldtag") == 1
    assert index.server.downloads("oldtag-1.0-cp27-none-any.whl") == 0


@pytest.mark.parametrize(("requirements", "args"), [("ranked\n", ()), ("ranked==1.0\n", ("--no-deps",))],
                         ids=["resolved", "no-deps"])
def test_the_wheel_this_interpreter_ranks_highest_is_taken(index: Index, tmp_path: Path, requirements: str,
                                                          args: tuple[str, ...]) -> None:
    # For CPython X.Y, as pip ranks them: cpXY-none-any, then pyXY-none-any, then py3-none-any
    index.wheel("ranked")
    best = index.wheel("ranked", tag=f"cp{sys.version_info.major}{sys.version_info.minor}-none-any")
    index.wheel("ranked", tag=f"py{sys.version_info.major}{sys.version_info.minor}-none-any")
    result, _ = build(index, tmp_path, requirements, *args)
    assert result.returncode == 0, result.stderr
    assert wheels_in(tmp_path / "wh") == [best]


def test_no_binary_all_names_the_wheel_only_dependency(index: Index, tmp_path: Path) -> None:
    result, _ = build(index, tmp_path, "top\n", "--no-binary", ":all:")
    assert result.returncode == 1
    line = error_line(result)
    assert "wonly" in line and "--no-binary :all:" in line and str(tmp_path / "requirements.txt") in line
    assert wheels_in(tmp_path / "wh") == []


def test_only_binary_all_names_the_sdist_only_dependency(index: Index, tmp_path: Path) -> None:
    result, _ = build(index, tmp_path, "top\n", "--only-binary", ":all:")
    assert result.returncode == 1
    line = error_line(result)
    assert "sonly>=1 (from top)" in line and "--only-binary :all:" in line
    assert wheels_in(tmp_path / "wh") == []
    assert index.hooks("sonly") == []


def test_no_deps_warns_of_a_missing_dependency(index: Index, tmp_path: Path) -> None:
    result, report = build(index, tmp_path, "top==1.0\n", "--no-deps")
    assert result.returncode == 0, result.stderr
    assert wheels_in(tmp_path / "wh") == ["top-1.0-py3-none-any.whl"]
    unmet = ["top 1.0 requires wonly (missing)", "top 1.0 requires sonly>=1 (missing)"]
    assert report is not None and sorted(report["unmet"]) == sorted(unmet)
    lines = result.stderr.splitlines()
    assert any(line.startswith("warning: the set is incomplete: 2 requirement(s)") for line in lines), result.stderr
    for requirement in unmet:
        assert f"  {requirement}" in lines
    assert not any(line.startswith("the set is incomplete") for line in lines)


def test_a_dependency_on_no_index_fails_the_resolution(index: Index, tmp_path: Path) -> None:
    result, _ = build(index, tmp_path, "needsabsent\n")
    assert result.returncode == 1
    assert "no distribution satisfies absent (from needsabsent)" in error_line(result)
    assert wheels_in(tmp_path / "wh") == []


@pytest.mark.parametrize(("requirement", "requires", "in_wheelhouse", "unmet"), [
    ("liar", "hidden", False, "liar 1.0 requires hidden (missing)"),
    # the extras the requirements ask are checked too
    ("liar[x]", "hidden; extra == 'x'", False, "liar[x] 1.0 requires hidden; extra == 'x' (missing)"),
    ("liar", "hidden; extra == 'x'", False, None),
    # a wheel already in the wheelhouse completes the set
    ("liar", "hidden", True, None),
], ids=["missing", "missing-for-an-extra", "extra-not-asked", "already-in-wheelhouse"])
def test_an_incomplete_set_fails_the_run(tmp_path: Path, requirement: str, requires: str, in_wheelhouse: bool,
                                         unmet: str | None) -> None:
    """pip resolves complete sets; an index whose metadata files hide a dependency makes one it is not."""
    made = tmp_path / "made"
    made.mkdir()
    wheelhouse = tmp_path / "wh"
    wheelhouse.mkdir()
    if in_wheelhouse:
        write_wheel(wheelhouse, "hidden")
    with IndexServer(core_metadata=True) as server:
        liar = write_wheel(made, "liar", requires_dist=[requires])
        # The metadata pip reads says liar needs nothing; the wheel says it needs hidden.
        server.add(liar.name, liar.read_bytes(), metadata=b"Metadata-Version: 2.1\nName: liar\nVersion: 1.0\n")
        hidden = write_wheel(made, "hidden")
        server.add(hidden.name, hidden.read_bytes())
        result, report = build(Index(server, made), tmp_path, f"{requirement}\n", wheelhouse=wheelhouse)
    assert report is not None and statuses(report) == {"liar": "downloaded wheel"}
    assert "liar-1.0-py3-none-any.whl" in wheels_in(wheelhouse)
    if unmet is None:
        assert result.returncode == 0, result.stderr
        assert report["unmet"] == []
        return
    assert result.returncode == 1
    assert report["unmet"] == [unmet]
    lines = result.stderr.splitlines()
    assert any(line.startswith("the set is incomplete: 1 requirement(s)") for line in lines), result.stderr
    assert f"  {unmet}" in lines


@pytest.mark.parametrize(("requirements", "args", "named"), [
    ("top\n", ("--no-binary", ":all:"), ["wonly"]),
    ("top\n", ("--only-binary", ":all:"), ["sonly"]),
    ("needsabsent\n", (), ["absent"]),
    ("a==1.0\nb==1.0\n", (), ["a", "b", "c<2", "c>=2"]),
], ids=["no-binary-all", "only-binary-all", "absent", "conflict"])
def test_uv_resolution_failures_are_one_line(index: Index, tmp_path: Path, requirements: str, args: tuple[str, ...],
                                             named: list[str]) -> None:
    result, _ = build(index, tmp_path, requirements, *args, resolver="uv")
    assert result.returncode == 1
    line = error_line(result)
    assert line.startswith(f"error: cannot resolve {tmp_path / 'requirements.txt'}: "), line
    assert all(name in line for name in named), line
    # Lines that pin one version are fetched while the resolver runs: those may stay, nothing else.
    assert set(wheels_in(tmp_path / "wh")) <= {"a-1.0-py3-none-any.whl", "b-1.0-py3-none-any.whl"}


def test_a_conflict_names_both_requirements(index: Index, tmp_path: Path) -> None:
    result, _ = build(index, tmp_path, "a==1.0\nb==1.0\n")
    assert result.returncode == 1
    line = error_line(result)
    assert "a 1.0 depends on c<2" in line and "b 1.0 depends on c>=2" in line
    assert set(wheels_in(tmp_path / "wh")) <= {"a-1.0-py3-none-any.whl", "b-1.0-py3-none-any.whl"}


@pytest.mark.parametrize("resolver", ["pip", "uv"])
def test_pinned_lines_are_fetched_while_the_resolver_runs_and_placed_once_it_has(index: Index, tmp_path: Path,
                                                                               resolver: str) -> None:
    # slowmeta's PKG-INFO (2.1) is not static metadata: pip and uv run its backend to learn it, unless uv's cache
    # has it: the test's own cache, empty. Its backend ends once sonly's sdist has been fetched: fetching after
    # the resolver, a run would wait for that 60 s. What the pins fetched become waits for the resolution (a
    # failed one leaves the wheelhouse as it was, as pip wheel does).
    sdists = tmp_path / "sdists"
    index.sdist("slowmeta", until=str(sdists / "sonly-1.0.tar.gz"))
    result, report = build(index, tmp_path, "sonly==1.0\nboth==1.0\nslowmeta\n", "--sdist-dir", sdists,
                           resolver=resolver, env={"UV_CACHE_DIR": str(tmp_path / "uv-cache")})
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    resolved = next(number for number, line in enumerate(lines) if "resolved 3 distributions" in line)
    took = float(lines[resolved].rsplit(" in ", 1)[1].split(" s")[0])
    assert took < 30, lines[resolved]  # sonly's sdist came while the resolver waited for it
    placed = next(number for number, line in enumerate(lines) if "both-1.0: downloaded wheel" in line)
    started = next(number for number, line in enumerate(lines) if "sonly-1.0: started" in line)
    assert resolved < placed and resolved < started, result.stderr
    assert statuses(report) == {"both": "downloaded wheel", "sonly": "built", "slowmeta": "built"}


@pytest.mark.parametrize(("text", "why"), [
    ("", "they list no requirement"),
    ("# only a comment\n", "they list no requirement"),
    ('foo; sys_platform == "nowhere"\n', "a marker excludes every line here (1 skipped)"),
], ids=["empty", "comment", "marker"])
def test_nothing_to_build_is_a_usage_error(tmp_path: Path, text: str, why: str) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(text)
    result = orchestrate("build", "-r", requirements, "-w", tmp_path / "wh", "--no-index")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: {requirements}: nothing to build: {why}; check the file and what wrote it"]


def test_a_line_a_marker_excludes_is_listed_as_skipped(index: Index, tmp_path: Path) -> None:
    result, report = build(index, tmp_path, 'wonly\nfoo; sys_platform == "nowhere"\n')
    assert result.returncode == 0, result.stderr
    assert statuses(report) == {"wonly": "downloaded wheel"}
    skipped = [line for line in result.stderr.splitlines() if "skipped" in line and "foo" in line]
    assert len(skipped) == 1 and 'foo; sys_platform == "nowhere"' in skipped[0], result.stderr


@pytest.mark.parametrize(("requirements", "args"), [("both\n", ()), ("both==1.0\n", ("--no-deps",))],
                         ids=["resolved", "no-deps"])
def test_a_package_setting_builds_from_source_where_the_index_has_a_wheel(
        index: Index, tmp_path: Path, requirements: str, args: tuple[str, ...]) -> None:
    config = tmp_path / "orchestrate.toml"
    config.write_text('[packages.both]\nbinary = "source"\n')
    result, report = build(index, tmp_path, requirements, "--config", config, *args)
    assert result.returncode == 0, result.stderr
    assert wheels_in(tmp_path / "wh") == ["both-1.0-py3-none-any.whl"]
    assert statuses(report) == {"both": "built"}
    assert index.builds("both") == 1
    assert index.server.downloads("both-1.0-py3-none-any.whl") == 0


@pytest.mark.parametrize("args", [(), ("--no-deps",)], ids=["resolved", "no-deps"])
def test_require_hashes(index: Index, tmp_path: Path, args: tuple[str, ...]) -> None:
    wheel = "wonly-1.0-py3-none-any.whl"
    right = hashlib.sha256(index.bytes_of(wheel)).hexdigest()
    result, report = build(index, tmp_path, f"wonly==1.0 --hash=sha256:{right}\n", "--require-hashes", *args)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "wh" / wheel).read_bytes() == index.bytes_of(wheel)
    assert statuses(report) == {"wonly": "downloaded wheel"}

    wrong = hashlib.sha256(b"other bytes").hexdigest()
    result, _ = build(index, tmp_path, f"wonly==1.0 --hash=sha256:{wrong}\n", "--require-hashes", *args,
                      wheelhouse=tmp_path / "other")
    assert result.returncode == 1
    failures = [line for line in result.stderr.splitlines()
                if line.startswith(("error:", "FAILED")) and "wonly" in line]
    assert len(failures) == 1, result.stderr
    assert wheels_in(tmp_path / "other") == []


@pytest.mark.parametrize("args", [(), ("--no-deps",)], ids=["resolved", "no-deps"])
def test_a_lock_hashing_only_the_sdist_builds_it_as_pip_does(index: Index, tmp_path: Path,
                                                             args: tuple[str, ...]) -> None:
    """A wheel uploaded after the lock was made: pip takes the file whose hash the lock gives."""
    sdist = hashlib.sha256(index.bytes_of("both-1.0.tar.gz")).hexdigest()
    result, report = build(index, tmp_path, f"both==1.0 --hash=sha256:{sdist}\n", *args)
    assert result.returncode == 0, result.stderr
    assert statuses(report) == {"both": "built"}
    assert index.builds("both") == 1


def test_a_second_run_builds_nothing_again_and_takes_files_from_the_cache(index: Index, tmp_path: Path) -> None:
    first, _ = build(index, tmp_path, "top\n")
    assert first.returncode == 0, first.stderr
    wheelhouse = tmp_path / "wh"
    before = {name: (wheelhouse / name).read_bytes() for name in wheels_in(wheelhouse)}
    second, report = build(index, tmp_path, "top\n")
    assert second.returncode == 0, second.stderr
    assert {name: (wheelhouse / name).read_bytes() for name in wheels_in(wheelhouse)} == before
    assert index.builds("sonly") == 1
    assert report is not None
    # Nothing is placed again: the index's wheels are the bytes already there, the sdist's wheel is recorded.
    assert statuses(report) == {"top": "skipped", "wonly": "skipped", "sonly": "skipped"}
    for record in report["builds"]:  # the skipped one included: the report describes the whole set
        assert record["wheel_sha256"] == hashlib.sha256(before[record["wheel"]]).hexdigest()
        assert record["wheel_tag"] == "py3-none-any"
    assert {download["name"]: download["status"] for download in report["downloads"]} == {
        "top": "cached", "wonly": "cached", "sonly": "cached"}


def test_no_deps_refuses_an_unpinned_line(index: Index, tmp_path: Path) -> None:
    result, _ = build(index, tmp_path, "wonly==1.0\ntop\n", "--no-deps")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {tmp_path / 'requirements.txt'}:2") and "--no-deps" in line


@pytest.mark.parametrize(("named", "args"), [(True, ()), (False, ("--no-deps",))],
                         ids=["name-at-url-resolved", "url-no-deps"])
def test_a_url_to_a_wheel_is_taken_as_it_is(index: Index, tmp_path: Path, args: tuple[str, ...],
                                            named: bool) -> None:
    wheel = "wonly-1.0-py3-none-any.whl"
    url = index.server.file_url(wheel)
    result, report = build(index, tmp_path, f"wonly @ {url}\n" if named else f"{url}\n", *args)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "wh" / wheel).read_bytes() == index.bytes_of(wheel)
    assert statuses(report) == {"wonly": "downloaded wheel"}


@pytest.mark.parametrize(("requirements", "args"), [("linked\n", ()), ("linked==1.0\n", ("--no-deps",))],
                         ids=["resolved", "no-deps"])
def test_a_find_links_wheel_is_taken_as_it_is(index: Index, tmp_path: Path, requirements: str,
                                              args: tuple[str, ...]) -> None:
    links = tmp_path / "links"
    links.mkdir()
    wheel = write_wheel(links, "linked")
    result, report = build(index, tmp_path, requirements, "--find-links", links, *args)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "wh" / wheel.name).read_bytes() == wheel.read_bytes()
    assert statuses(report) == {"linked": "downloaded wheel"}


def test_a_corrupt_wheel_from_the_index_is_refused(index: Index, tmp_path: Path) -> None:
    index.wheel("broken", corrupt="hash")
    result, report = build(index, tmp_path, "broken\n")
    assert result.returncode == 1
    assert statuses(report) == {"broken": "failed"}
    failure = [line for line in result.stderr.splitlines() if line.startswith("FAILED broken")]
    assert len(failure) == 1 and "broken-1.0-py3-none-any.whl is corrupt" in failure[0], result.stderr
    assert wheels_in(tmp_path / "wh") == []


def test_a_constraints_file_and_prefer_binary_reach_the_resolver(index: Index, tmp_path: Path) -> None:
    index.wheel("pref", "1.0")
    index.sdist("pref", "2.0")
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("c<2\n")
    result, report = build(index, tmp_path, "c\npref\n", "-c", constraints, "--prefer-binary")
    assert result.returncode == 0, result.stderr
    assert wheels_in(tmp_path / "wh") == ["c-1.0-py3-none-any.whl", "pref-1.0-py3-none-any.whl"]
    assert statuses(report) == {"c": "downloaded wheel", "pref": "downloaded wheel"}


def test_sources_alone_only_warn_of_an_incomplete_set(tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path / "src", "local", requires_dist=["elsewhere>=2"])
    result = orchestrate("build", sdist, "-w", tmp_path / "wh", "--no-index")
    assert result.returncode == 0, result.stderr
    assert wheels_in(tmp_path / "wh") == ["local-1.0-py3-none-any.whl"]
    lines = result.stderr.splitlines()
    assert any(line.startswith("warning: the set is incomplete: 1 requirement(s)") for line in lines), result.stderr
    assert "  local 1.0 requires elsewhere>=2 (missing)" in lines


@pytest.mark.parametrize(("requirements", "args"), [("top\n", ()), ("sonly==1.0\n", ("--no-deps",))],
                         ids=["resolved", "no-deps"])
def test_a_package_setting_that_forbids_the_only_file_is_named(index: Index, tmp_path: Path, requirements: str,
                                                               args: tuple[str, ...]) -> None:
    config = tmp_path / "orchestrate.toml"
    config.write_text('[packages.sonly]\nbinary = "binary"\n')
    result, _ = build(index, tmp_path, requirements, "--config", config, *args)
    assert result.returncode == 1
    failures = [line for line in result.stderr.splitlines() if line.startswith(("error:", "FAILED"))]
    assert len(failures) == 1, result.stderr
    # the user wrote no --only-binary: the message names what they did write
    assert 'package setting binary = "binary" allows only wheels of sonly' in failures[0]
    assert "--only-binary" not in failures[0]


def test_a_wheel_from_the_index_is_not_taken_for_a_build_of_the_same_name(index: Index, tmp_path: Path) -> None:
    """A pure-Python sdist builds a wheel of the very name the index's wheel has: placing one replaces the other."""
    config = tmp_path / "orchestrate.toml"
    config.write_text('[packages.both]\nbinary = "source"\n')
    wheel = tmp_path / "wh" / "both-1.0-py3-none-any.whl"
    for args, status in [(("--config", config), "built"), ((), "downloaded wheel"), (("--config", config), "built")]:
        result, report = build(index, tmp_path, "both==1.0\n", "--no-deps", *args)
        assert result.returncode == 0, result.stderr
        assert statuses(report) == {"both": status}
        assert (wheel.read_bytes() == index.bytes_of(wheel.name)) is (status == "downloaded wheel")
    assert index.builds("both") == 2


@pytest.mark.parametrize("resolver", ["pip", "uv"])
def test_a_run_stopped_while_resolving_leaves_no_resolver_behind(index: Index, tmp_path: Path, resolver: str) -> None:
    index.sdist("slowmeta", sleep=30.0)  # its metadata takes the resolver 30 s to learn
    (tmp_path / "requirements.txt").write_text("slowmeta\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "build", "-r", str(tmp_path / "requirements.txt"), "-w",
         str(tmp_path / "wh"), "--index-url", index.server.simple_url, "--resolver", resolver],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    resolving: list[psutil.Process] = []
    while time.monotonic() < deadline and not any(event["event"] == "start" for event in read_events(index.events)):
        time.sleep(0.05)  # until the resolver runs slowmeta's backend
    resolving = psutil.Process(process.pid).children(recursive=True)
    assert resolving, "the resolver is running"
    process.send_signal(signal.SIGTERM)  # to orchestrate alone, as a service manager sends it
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    deadline = time.monotonic() + 10
    while (alive := [proc for proc in resolving if still_runs(proc)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive, [proc.cmdline() for proc in alive]


def still_runs(process: psutil.Process) -> bool:
    """Whether ``process`` runs: an orphan that has exited runs nothing, though init may take seconds to reap it."""
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def test_records_are_written_together_and_all_of_them_by_the_time_the_lock_is_released(tmp_path: Path) -> None:
    """Rewriting the whole manifest after each build cost O(builds^2) over a run of thousands."""
    wheelhouse = Wheelhouse(tmp_path / "wh")
    wheels = {f"{i:064x}": f"p{i}-1.0-py3-none-any.whl" for i in range(50)}
    with wheelhouse.locked():
        for sha256, wheel in wheels.items():
            (wheelhouse.path / wheel).write_bytes(b"wheel")
            wheelhouse.record(sha256, wheel=wheel, source=f"{wheel}.tar.gz")
        on_disk = json.loads((wheelhouse.path / MANIFEST).read_text())
        assert 1 <= len(on_disk) < len(wheels)  # the first at once, the rest batched
    again = Wheelhouse(tmp_path / "wh")
    assert {sha256: again.built_wheel(sha256) for sha256 in wheels} == wheels


@pytest.mark.parametrize("entries", [
    {},  # nothing recorded yet: "{}"
    {"a" * 64: ("p-1.0-py3-none-any.whl", "p-1.0.tar.gz")},
    {f"{i:064x}": (f"p{i}-1.0-py3-none-any.whl", f"p{i}-1.0.tar.gz") for i in (3, 1, 2)},  # written sorted
    {"b" * 64: ("q-1.0-py3-none-any.whl", 'odd "name" é.tar.gz')},  # escaped as json escapes it
])
def test_the_manifest_is_written_as_json_wrote_it_whole(tmp_path: Path, entries: dict[str, tuple[str, str]]) -> None:
    # The manifest is written an entry at a time; the file is what json.dumps(indent=1, sort_keys=True) made of it.
    wheelhouse = Wheelhouse(tmp_path / "wh")
    with wheelhouse.locked():
        for sha256, (wheel, source) in entries.items():
            wheelhouse.record(sha256, wheel=wheel, source=source)
        wheelhouse.record("c" * 64, wheel="gone-1.0-py3-none-any.whl", source="gone-1.0.tar.gz")
        wheelhouse.forget("gone-1.0-py3-none-any.whl")  # forgetting writes the manifest at once
    expected = {sha256: {"wheel": wheel, "source": source} for sha256, (wheel, source) in entries.items()}
    assert (wheelhouse.path / MANIFEST).read_text() == json.dumps(expected, indent=1, sort_keys=True)


def test_a_manifest_entry_without_its_source_is_kept_as_it_was(tmp_path: Path) -> None:
    (tmp_path / "wh").mkdir()
    written = {"a" * 64: {"wheel": "p-1.0-py3-none-any.whl"}, "b" * 64: {"source": "q.tar.gz", "wheel": "q.whl"}}
    (tmp_path / "wh" / MANIFEST).write_text(json.dumps(written))
    (tmp_path / "wh" / "p-1.0-py3-none-any.whl").write_bytes(b"wheel")
    wheelhouse = Wheelhouse(tmp_path / "wh")
    assert wheelhouse.built_wheel("a" * 64) == "p-1.0-py3-none-any.whl"
    with wheelhouse.locked():
        wheelhouse.record("c" * 64, wheel="r.whl", source="r.tar.gz")
    written["c" * 64] = {"source": "r.tar.gz", "wheel": "r.whl"}
    assert json.loads((wheelhouse.path / MANIFEST).read_text()) == written
