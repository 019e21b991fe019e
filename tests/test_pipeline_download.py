"""``orchestrate download`` and ``orchestrate build -r``: a real index on 127.0.0.1 feeding real builds."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import orchestrate
from index_server import IndexServer, index_server  # noqa: F401 - the fixture
from sdists import make_sdist, read_events


def serve(server: IndexServer, tmp_path: Path, name: str, **behaviour: object) -> tuple[str, str]:
    """Serve a fake sdist; return its filename and sha256."""
    path = make_sdist(tmp_path / "made", name, **behaviour)
    return path.name, server.add(path.name, path.read_bytes())


def test_builds_start_while_downloads_continue(tmp_path: Path, index_server: IndexServer) -> None:
    events = tmp_path / "events.log"
    index_server.delay = 1.0
    lines = []
    for i in range(4):
        _, sha = serve(index_server, tmp_path, f"streamed{i}", sleep=0.5, events=str(events))
        lines.append(f"streamed{i}==1.0 --hash=sha256:{sha}")
    (tmp_path / "req.txt").write_text("\n".join(lines) + "\n")
    report = tmp_path / "report.json"
    result = orchestrate("build", "-r", tmp_path / "req.txt", "-w", tmp_path / "wh", "--index-url",
                         index_server.simple_url, "--max-downloads", "2", "--max-builds", "2",
                         "--report-json", report)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "wh").glob("*.whl"))) == 4
    data = json.loads(report.read_text())
    assert [d["status"] for d in data["downloads"]] == ["downloaded"] * 4
    assert index_server.max_in_flight == 2
    first_build_start = min(e["t"] for e in read_events(events) if e["event"] == "start")
    last_download_end = max(d["finished_at"] for d in data["downloads"])
    assert first_build_start < last_download_end
    assert data["stages"]["download"]["count"] == 4 and data["stages"]["build"]["count"] == 4


def test_wrong_hash_is_refused_and_others_build(tmp_path: Path, index_server: IndexServer) -> None:
    good, good_sha = serve(index_server, tmp_path, "fine")
    _, bad_sha = serve(index_server, tmp_path, "tampered")
    wrong = hashlib.sha256(b"something else").hexdigest()
    (tmp_path / "req.txt").write_text(f"fine==1.0 --hash=sha256:{good_sha}\ntampered==1.0 --hash=sha256:{wrong}\n")
    result = orchestrate("build", "-r", tmp_path / "req.txt", "-w", tmp_path / "wh", "-i", index_server.simple_url,
                         "--sdist-dir", tmp_path / "sdists")
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
    result = orchestrate("build", "-r", tmp_path / "req.txt", "-w", tmp_path / "wh", "--no-index")
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_missing_package_is_a_clear_failure(tmp_path: Path, index_server: IndexServer) -> None:
    serve(index_server, tmp_path, "present")
    (tmp_path / "req.txt").write_text("present==1.0\nabsent==2.0\n")
    result = orchestrate("build", "-r", tmp_path / "req.txt", "-w", tmp_path / "wh", "-i", index_server.simple_url)
    assert result.returncode == 1
    failure = next(line for line in result.stderr.splitlines() if "FAILED download of absent" in line)
    assert "absent" in failure and "2.0" in failure
    assert [p.name for p in (tmp_path / "wh").glob("*.whl")] == ["present-1.0-py3-none-any.whl"]


def test_download_command_caps_and_caches(tmp_path: Path, index_server: IndexServer) -> None:
    index_server.delay = 0.5
    names = []
    for i in range(5):
        filename, _ = serve(index_server, tmp_path, f"dl{i}")
        names.append(filename)
    (tmp_path / "req.txt").write_text("".join(f"dl{i}==1.0\n" for i in range(5)))
    args = ("download", "-r", tmp_path / "req.txt", "-i", index_server.simple_url, "--max-downloads", "2")
    first = orchestrate(*args, "-d", tmp_path / "one", "--report-json", tmp_path / "r.json")
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == names
    assert index_server.max_in_flight == 2
    second = orchestrate(*args, "-d", tmp_path / "two", "--report-json", tmp_path / "r.json")
    assert second.returncode == 0, second.stderr
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == names
    assert all(index_server.downloads(name) == 1 for name in names)
    assert {d["status"] for d in json.loads((tmp_path / "r.json").read_text())["downloads"]} == {"cached"}


def test_hanging_download_times_out_and_others_build(tmp_path: Path, index_server: IndexServer) -> None:
    stuck, _ = serve(index_server, tmp_path, "stuck")
    serve(index_server, tmp_path, "flows")
    index_server.hang(stuck)
    (tmp_path / "req.txt").write_text("stuck==1.0\nflows==1.0\n")
    result = orchestrate("build", "-r", tmp_path / "req.txt", "-w", tmp_path / "wh", "-i", index_server.simple_url,
                         "--download-timeout", "1", "--download-retries", "0", timeout=60)
    assert result.returncode == 1
    assert "FAILED download of stuck" in result.stderr
    assert [p.name for p in (tmp_path / "wh").glob("*.whl")] == ["flows-1.0-py3-none-any.whl"]
