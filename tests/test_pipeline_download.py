"""``orchestrate download`` and ``orchestrate build -r``: a real index on 127.0.0.1 feeding real builds."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import orchestrate
from index_server import IndexServer, index_server_fixture  # noqa: F401 - the index_server fixture
from sdists import make_sdist
from wheels import write_wheel

from orchestrator.units import format_size


def serve(server: IndexServer, tmp_path: Path, name: str, **behaviour: Any) -> tuple[str, str]:
    """Serve a fake sdist; return its filename and sha256."""
    path = make_sdist(tmp_path / "made", name, **behaviour)
    return path.name, server.add(path.name, path.read_bytes())


def test_builds_start_while_downloads_continue(tmp_path: Path, index_server: IndexServer) -> None:
    # streamed0 arrives at once; the others, two at a time, once its wheel is in the wheelhouse. A build that
    # waited for every download would start 60 s later, after them.
    built = tmp_path / "wh" / "streamed0-1.0-py3-none-any.whl"
    lines = []
    for i in range(4):
        filename, sha = serve(index_server, tmp_path, f"streamed{i}")
        if i:
            index_server.hold(filename, until=built.exists)
        lines.append(f"streamed{i}==1.0 --hash=sha256:{sha}")
    (tmp_path / "req.txt").write_text("\n".join(lines) + "\n")
    report = tmp_path / "report.json"
    result = orchestrate("build", "-r", tmp_path / "req.txt", "--no-deps", "-w", tmp_path / "wh", "--index-url",
                         index_server.simple_url, "--max-downloads", "2", "--max-builds", "2",
                         "--report-json", report)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "wh").glob("*.whl"))) == 4
    data = json.loads(report.read_text())
    assert [d["status"] for d in data["downloads"]] == ["downloaded"] * 4
    assert index_server.max_in_flight == 2
    downloads = {d["name"]: d for d in data["downloads"]}
    builds = {b["name"]: b for b in data["builds"]}
    held_downloads_end = min(d["finished_at"] for name, d in downloads.items() if name != "streamed0")
    # builds[].started_at is admission (the worker is spawned), not the backend's first hook.
    for name, build in builds.items():
        assert downloads[name]["finished_at"] <= build["started_at"]
    # Built while the others downloaded: they end only once its wheel is in, which it records a little later.
    assert builds["streamed0"]["started_at"] < held_downloads_end
    assert data["stages"]["download"]["count"] == 4 and data["stages"]["build"]["count"] == 4


def test_wrong_hash_is_refused_and_others_build(tmp_path: Path, index_server: IndexServer) -> None:
    good, good_sha = serve(index_server, tmp_path, "fine")
    _, bad_sha = serve(index_server, tmp_path, "tampered")
    wrong = hashlib.sha256(b"something else").hexdigest()
    (tmp_path / "req.txt").write_text(f"fine==1.0 --hash=sha256:{good_sha}\ntampered==1.0 --hash=sha256:{wrong}\n")
    result = orchestrate("build", "-r", tmp_path / "req.txt", "--no-deps", "-w", tmp_path / "wh", "-i",
                         index_server.simple_url, "--sdist-dir", tmp_path / "sdists")
    assert result.returncode == 1
    failure = next(line for line in result.stderr.splitlines() if "FAILED download of tampered" in line)
    assert wrong in failure and bad_sha in failure
    assert sorted(p.name for p in (tmp_path / "wh").glob("*.whl")) == ["fine-1.0-py3-none-any.whl"]
    assert sorted(p.name for p in (tmp_path / "sdists").iterdir()) == [good]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("fine>=1.0", "req.txt:1"),  # not pinned
        ("fine", "req.txt:1"),  # no version at all
        ("fine==1.0 --hash=md5:abc", "req.txt:1"),  # a hash we do not check
    ],
)
def test_bad_requirement_lines_are_usage_errors(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "req.txt").write_text(line + "\n")
    result = orchestrate("build", "-r", tmp_path / "req.txt", "--no-deps", "-w", tmp_path / "wh", "--no-index")
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_missing_package_is_a_clear_failure(tmp_path: Path, index_server: IndexServer) -> None:
    serve(index_server, tmp_path, "present")
    (tmp_path / "req.txt").write_text("present==1.0\nabsent==2.0\n")
    result = orchestrate("build", "-r", tmp_path / "req.txt", "--no-deps", "-w", tmp_path / "wh", "-i",
                         index_server.simple_url)
    assert result.returncode == 1
    message = f"absent 2.0 not found on {index_server.simple_url}; check the pin and the index options"
    # Once as it happens, once in the summary; no logger warning besides.
    event, summary = [line for line in result.stderr.splitlines() if "absent" in line]
    assert re.fullmatch(r"\[ *\d+\.\ds\] absent-2\.0: download FAILED: " + re.escape(message), event)
    assert summary == f"FAILED download of absent 2.0: {message}"
    assert [p.name for p in (tmp_path / "wh").glob("*.whl")] == ["present-1.0-py3-none-any.whl"]


@pytest.mark.parametrize(
    ("lines", "named"),
    [("a==1.0\nb==1.0\n", "c"),  # a needs c<2, b needs c>=2
     ("a==1.0\nc==9.0\n", "c")],  # no such version
    ids=["conflict", "unknown-version"])
def test_a_failed_resolution_leaves_no_wheel_of_the_pins_and_is_said_once(
        tmp_path: Path, index_server: IndexServer, lines: str, named: str) -> None:
    # The == lines are fetched while the resolver runs: their wheels must wait for its answer (pip wheel leaves
    # nothing when it cannot resolve), and a pin that is not on the index is the resolver's to report, once.
    for path in [write_wheel(tmp_path, "a", requires_dist=["c<2"]), write_wheel(tmp_path, "b", requires_dist=["c>=2"]),
                 write_wheel(tmp_path, "c", "1.0"), write_wheel(tmp_path, "c", "2.0")]:
        index_server.add(path.name, path.read_bytes())
    (tmp_path / "req.txt").write_text(lines)
    result = orchestrate("build", "-r", tmp_path / "req.txt", "-w", tmp_path / "wh", "-i", index_server.simple_url,
                         "--report-json", tmp_path / "r.json")
    assert result.returncode == 1, result.stderr
    assert list((tmp_path / "wh").glob("*.whl")) == []
    said = [line for line in result.stderr.splitlines() if "cannot resolve" in line or "FAILED" in line]
    assert len(said) == 1 and named in said[0], result.stderr
    assert json.loads((tmp_path / "r.json").read_text())["downloads"] == []


def test_a_yanked_pin_resolved_by_pip_is_taken_with_the_index_reason(tmp_path: Path, index_server: IndexServer) -> None:
    # With hashes, pip's resolver picks every file and hands the downloader its URL, without the index's yank data:
    # the warning the finder gives (the == lines fetched early, uv's path) was lost there.
    lines = []
    for path in [write_wheel(tmp_path, "old", requires_dist=["dep"]), write_wheel(tmp_path, "dep")]:
        lines.append(f"{path.name.split('-')[0]}==1.0 --hash=sha256:{index_server.add(path.name, path.read_bytes())}")
    index_server.yank("old-1.0-py3-none-any.whl", "broken on Tuesdays")
    (tmp_path / "req.txt").write_text("\n".join(lines) + "\n")
    result = orchestrate("build", "-r", tmp_path / "req.txt", "-w", tmp_path / "wh", "-i", index_server.simple_url,
                         "--report-json", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    assert "with pip" in result.stderr
    line = next(line for line in result.stderr.splitlines() if "old-1.0: downloaded" in line)
    assert line.endswith("; warning: yanked on the index: broken on Tuesdays"), line
    yanked = {d["name"]: d["yanked"] for d in json.loads((tmp_path / "r.json").read_text())["downloads"]}
    assert yanked == {"old": "broken on Tuesdays", "dep": None}


def test_a_pin_the_early_fetch_failed_is_fetched_from_the_resolvers_file(tmp_path: Path,
                                                                         index_server: IndexServer) -> None:
    # A dead --extra-index-url: pip's resolver warns and takes the file on the live index, but the early fetch of the
    # == line failed on the dead one, and its failure was the pin's result: --resolver pip did not save the run.
    path = write_wheel(tmp_path, "pinned")
    index_server.add(path.name, path.read_bytes())
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}/simple"
    (tmp_path / "req.txt").write_text("pinned==1.0\n")
    result = orchestrate("build", "-r", tmp_path / "req.txt", "-w", tmp_path / "wh", "-i", index_server.simple_url,
                         "--extra-index-url", dead, "--resolver", "pip", "--download-retries", "0",
                         env={"PIP_RETRIES": "0"})
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "wh").glob("*.whl")] == [path.name]
    assert "FAILED" not in result.stderr


def test_download_command_caps_and_caches(tmp_path: Path, index_server: IndexServer) -> None:
    index_server.delay = 0.5
    names = []
    for i in range(5):
        filename, _ = serve(index_server, tmp_path, f"dl{i}")
        names.append(filename)
    (tmp_path / "req.txt").write_text("".join(f"dl{i}==1.0\n" for i in range(5)))
    args = ("download", "-r", tmp_path / "req.txt", "--no-deps", "-i", index_server.simple_url, "--max-downloads", "2")
    first = orchestrate(*args, "-d", tmp_path / "one", "--report-json", tmp_path / "r.json")
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == names
    assert index_server.max_in_flight == 2
    second = orchestrate(*args, "-d", tmp_path / "two", "--report-json", tmp_path / "r.json")
    assert second.returncode == 0, second.stderr
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == names
    assert all(index_server.downloads(name) == 1 for name in names)
    assert {d["status"] for d in json.loads((tmp_path / "r.json").read_text())["downloads"]} == {"cached"}


def test_download_command_keeps_the_files_dest_already_holds(tmp_path: Path, index_server: IndexServer) -> None:
    # pip download: "File was already downloaded". Here the file was fetched again when the cache lacked it.
    kept, _ = serve(index_server, tmp_path, "kept")
    spoilt, _ = serve(index_server, tmp_path, "spoilt")
    (tmp_path / "req.txt").write_text("kept==1.0\nspoilt==1.0\n")  # the index lists each file's sha256
    args = ("download", "-r", tmp_path / "req.txt", "--no-deps", "-i", index_server.simple_url, "--no-cache",
            "-d", tmp_path / "dl", "--report-json", tmp_path / "r.json")
    first = orchestrate(*args)
    assert first.returncode == 0, first.stderr
    (tmp_path / "dl" / spoilt).write_bytes(b"cut short")
    second = orchestrate(*args)
    assert second.returncode == 0, second.stderr
    statuses = {d["name"]: d["status"] for d in json.loads((tmp_path / "r.json").read_text())["downloads"]}
    assert statuses == {"kept": "present", "spoilt": "downloaded"}
    assert [index_server.downloads(name) for name in (kept, spoilt)] == [1, 2]
    assert (tmp_path / "dl" / spoilt).read_bytes() == (tmp_path / "made" / spoilt).read_bytes()
    assert "1 present" in second.stderr


def test_hanging_download_times_out_and_others_build(tmp_path: Path, index_server: IndexServer) -> None:
    stuck, _ = serve(index_server, tmp_path, "stuck")
    serve(index_server, tmp_path, "flows")
    index_server.hang(stuck)
    (tmp_path / "req.txt").write_text("stuck==1.0\nflows==1.0\n")
    result = orchestrate("build", "-r", tmp_path / "req.txt", "--no-deps", "-w", tmp_path / "wh", "-i",
                         index_server.simple_url, "--download-timeout", "1", "--download-retries", "0", timeout=60)
    assert result.returncode == 1
    assert "FAILED download of stuck" in result.stderr
    assert [p.name for p in (tmp_path / "wh").glob("*.whl")] == ["flows-1.0-py3-none-any.whl"]


def downloads_lines(stderr: str) -> list[str]:
    """The plain output's download progress lines, without their timestamps."""
    return [line.split("] ", 1)[1] for line in stderr.splitlines() if "] downloads: " in line]


@pytest.mark.parametrize("command", ["download", "build"])
def test_max_downloads_from_the_environment(tmp_path: Path, index_server: IndexServer, command: str) -> None:
    index_server.delay = 0.3
    size = 0
    for i in range(6):
        filename, _ = serve(index_server, tmp_path, f"capped{i}")
        size += (tmp_path / "made" / filename).stat().st_size
    (tmp_path / "req.txt").write_text("".join(f"capped{i}==1.0\n" for i in range(6)))
    where = ("-d", tmp_path / "sdists") if command == "download" else ("-w", tmp_path / "wh")
    result = orchestrate(command, "-r", tmp_path / "req.txt", "--no-deps", *where, "-i", index_server.simple_url,
                         "--report-json", tmp_path / "r.json", env={"ORCHESTRATE_MAX_DOWNLOADS": "3"})
    assert result.returncode == 0, result.stderr
    assert index_server.max_in_flight == 3
    assert json.loads((tmp_path / "r.json").read_text())["settings"]["max_downloads"] == 3
    # Not a TTY: progress comes as lines, the last one when the last download ends.
    progress = downloads_lines(result.stderr)
    assert progress[-1] == f"downloads: 6/6 files done, 0 in flight, 0 failed, {format_size(size)}"
    assert all(re.fullmatch(r"downloads: [1-6]/6 files done, [0-3] in flight, 0 failed, .+", line) for line in progress)


@pytest.mark.parametrize(
    ("retries", "timeout"),
    [
        ("--download-retries", "--download-timeout"),  # the names `build` uses
        ("--retries", "--timeout"),  # the short aliases
    ],
)
def test_download_command_retry_and_timeout_options(
    tmp_path: Path, index_server: IndexServer, retries: str, timeout: str
) -> None:
    flaky, _ = serve(index_server, tmp_path, "flaky")
    slow, _ = serve(index_server, tmp_path, "slow")
    index_server.fail_first(flaky, 1)
    index_server.slow(slow, 3.0)
    (tmp_path / "req.txt").write_text("flaky==1.0\nslow==1.0\n")
    result = orchestrate("download", "-r", tmp_path / "req.txt", "--no-deps", "-d", tmp_path / "sdists",
                         "-i", index_server.simple_url, retries, "1", timeout, "0.5")
    assert result.returncode == 1
    assert index_server.downloads(flaky) == 2  # one retry recovered the 500
    assert index_server.downloads(slow) == 2  # and the timeout was retried once
    assert f"FAILED download of slow 1.0: slow 1.0: downloading {index_server.file_url(slow)} failed 2 time(s), " \
           "last with ReadTimeout" in result.stderr
    assert sorted(p.name for p in (tmp_path / "sdists").iterdir()) == [flaky]


def test_download_command_summary_counts_downloads(tmp_path: Path, index_server: IndexServer) -> None:
    for name in ("one", "two"):
        serve(index_server, tmp_path, name)
    (tmp_path / "req.txt").write_text("one==1.0\ntwo==1.0\nabsent==2.0\n")
    args = ("download", "-r", tmp_path / "req.txt", "--no-deps", "-i", index_server.simple_url)
    message = f"absent 2.0 not found on {index_server.simple_url}; check the pin and the index options"
    for dest, counts in (("first", "2 downloaded, 0 cached, 1 failed"), ("second", "0 downloaded, 2 cached, 1 failed")):
        result = orchestrate(*args, "-d", tmp_path / dest)
        assert result.returncode == 1
        lines = result.stderr.splitlines()
        # The counts, then where the run folder's report is.
        assert re.fullmatch(re.escape(counts) + r" in \d+\.\d s", lines[-2]), lines[-2]
        assert re.fullmatch(r"report: .*/runs/\d{8}T\d{6}Z-\d+/report\.html \(and report\.json beside it\)", lines[-1])
        assert "built" not in result.stderr
        assert [line for line in lines if "absent" in line][1:] == [f"FAILED download of absent 2.0: {message}"]
        assert downloads_lines(result.stderr)[-1].startswith("downloads: 2/3 files done, 0 in flight, 1 failed, ")


def test_interrupted_download_command_starts_no_more(tmp_path: Path, index_server: IndexServer) -> None:
    lines = []
    for i in range(8):
        filename, sha = serve(index_server, tmp_path, f"slowpkg{i}")
        index_server.slow(filename, 1.0)
        lines.append(f"slowpkg{i}==1.0 --hash=sha256:{sha}")
    (tmp_path / "req.txt").write_text("\n".join(lines) + "\n")
    process = subprocess.Popen([sys.executable, "-m", "orchestrator", "download", "-r", str(tmp_path / "req.txt"),
                                "--no-deps", "-d", str(tmp_path / "sdists"), "-i", index_server.simple_url,
                                "--max-downloads", "1", "--no-cache"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not list((tmp_path / "sdists").glob("*.tar.gz")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    started = time.monotonic()
    process.communicate(timeout=30)
    assert process.returncode == 130
    assert time.monotonic() - started < 2  # one fetch in flight at most, ended by closing the client
    assert 1 <= len(list((tmp_path / "sdists").glob("*.tar.gz"))) < 8
    assert not list((tmp_path / "sdists").glob(".*.part"))


def test_ctrl_c_ends_a_download_whose_server_never_answers(tmp_path: Path, index_server: IndexServer) -> None:
    filename, sha = serve(index_server, tmp_path, "mute")
    index_server.hang(filename)
    (tmp_path / "req.txt").write_text(f"mute==1.0 --hash=sha256:{sha}\n")
    process = subprocess.Popen([sys.executable, "-m", "orchestrator", "download", "-r", str(tmp_path / "req.txt"),
                                "--no-deps", "-d", str(tmp_path / "sdists"), "-i", index_server.simple_url,
                                "--no-cache"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not index_server.downloads(filename) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # the reply is awaited
    process.send_signal(signal.SIGINT)
    started = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert time.monotonic() - started < 3  # not the 60 s read timeout
    assert not (tmp_path / "sdists").exists() or not list((tmp_path / "sdists").iterdir())  # nor a partial file
    assert "Traceback" not in stderr


@pytest.mark.parametrize("command", ["download", "build"])
def test_trickling_download_is_cut_and_others_succeed(tmp_path: Path, index_server: IndexServer, command: str) -> None:
    trickles, _ = serve(index_server, tmp_path, "trickles")  # about 1.7 KB: minutes at 10 B/s
    flows, _ = serve(index_server, tmp_path, "flows")
    index_server.trickle(trickles, 10)
    (tmp_path / "req.txt").write_text("trickles==1.0\nflows==1.0\n")
    where = ("-d", tmp_path / "sdists") if command == "download" else \
        ("-w", tmp_path / "wh", "--sdist-dir", tmp_path / "sdists")
    started = time.monotonic()
    result = orchestrate(command, "-r", tmp_path / "req.txt", "--no-deps", *where, "-i", index_server.simple_url,
                         "--cache-dir", tmp_path / "cache", "--download-timeout", "1", "--download-retries", "1",
                         timeout=60)
    assert time.monotonic() - started < 20
    assert result.returncode == 1, result.stderr
    message = (f"trickles 1.0: downloading {index_server.file_url(trickles)} failed 2 time(s), "
               "last stalled under 1.0 KiB/s for 1 s; check the index or raise --download-timeout")
    assert f"FAILED download of trickles 1.0: {message}" in result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    assert index_server.downloads(trickles) == 2
    assert sorted(p.name for p in (tmp_path / "sdists").iterdir()) == [flows]  # no partial file either
    assert [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()] == [flows]
    if command == "build":
        assert [p.name for p in (tmp_path / "wh").glob("*.whl")] == ["flows-1.0-py3-none-any.whl"]
