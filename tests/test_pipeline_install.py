"""``orchestrate install`` and ``build --install-into``: wheels land in a real virtualenv and run there."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest
from conftest import backend_index_args, orchestrate
from sdists import make_sdist
from wheels import write_wheel

EXAMPLES = Path(__file__).parent.parent / "examples" / "sdists"


@pytest.fixture()
def target(tmp_path: Path) -> Path:
    folder = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(folder)
    return folder


def run_in(target: Path, *args: str) -> str:
    return subprocess.run([str(target / "bin" / args[0]), *args[1:]], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.real_backend
def test_build_install_into_runs_the_c_extension_and_scripts(tmp_path: Path, target: Path) -> None:
    report = tmp_path / "report.json"
    result = orchestrate("build", EXAMPLES, "-w", tmp_path / "wh", "--install-into", target, "--max-installs", "2",
                         "--report-json", report, *backend_index_args())
    assert result.returncode == 0, result.stderr
    assert run_in(target, "hello-ext").strip() == "hello-ext: 2 + 3 = 5"
    assert run_in(target, "hello-hatch").strip() == "hello from hatch"
    assert run_in(target, "python", "-c", "import hello_flit; print(hello_flit.GREETING)").strip() == "hello from flit"
    installs = json.loads(report.read_text())["installs"]
    assert sorted(i["name"] for i in installs) == ["hello-ext", "hello-flit", "hello-hatch"]
    assert {i["status"] for i in installs} == {"installed"}


@pytest.mark.parametrize("after", [False, True])
def test_installs_stream_or_wait_for_all_builds(tmp_path: Path, target: Path, after: bool) -> None:
    make_sdist(tmp_path / "sdists", "aquick")
    make_sdist(tmp_path / "sdists", "bslow", sleep=3)
    report = tmp_path / "report.json"
    extra = ["--install-after-build"] if after else []
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "-j", "2", "--install-into", target,
                         "--report-json", report, *extra)
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    last_build_end = max(b["finished_at"] for b in data["builds"])
    first_install_start = min(i["started_at"] for i in data["installs"])
    assert (first_install_start >= last_build_end) is after
    assert run_in(target, "python", "-c", "import aquick, bslow; print(bslow.VERSION)").strip() == "1.0"


def test_install_command_skips_then_reinstalls(tmp_path: Path, target: Path) -> None:
    (tmp_path / "wh").mkdir()
    for i in range(4):
        write_wheel(tmp_path / "wh", f"wheel{i}")
    report = tmp_path / "r.json"
    first = orchestrate("install", tmp_path / "wh", "--into", target, "--max-installs", "2", "--report-json", report)
    assert first.returncode == 0, first.stderr
    assert {i["status"] for i in json.loads(report.read_text())["installs"]} == {"installed"}
    again = orchestrate("install", tmp_path / "wh", "--into", target / "bin" / "python", "--report-json", report)
    assert again.returncode == 0
    assert {i["reason"] for i in json.loads(report.read_text())["installs"]} == {"already installed"}
    forced = orchestrate("install", tmp_path / "wh", "--into", target, "--reinstall", "--report-json", report)
    assert forced.returncode == 0
    assert {i["reason"] for i in json.loads(report.read_text())["installs"]} == {"reinstalled"}


def test_install_conflict_writes_nothing(tmp_path: Path, target: Path) -> None:
    (tmp_path / "wh").mkdir()
    write_wheel(tmp_path / "wh", "one", files={"shared/mod.py": b"A = 1\n"})
    write_wheel(tmp_path / "wh", "two", files={"shared/mod.py": b"A = 2\n"})
    before = sorted(p.name for p in target.rglob("*"))
    result = orchestrate("install", tmp_path / "wh", "--into", target)
    assert result.returncode == 1
    assert "conflict" in result.stderr and "shared/mod.py" in result.stderr
    assert sorted(p.name for p in target.rglob("*")) == before


def test_install_into_a_non_python_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "wh").mkdir()
    write_wheel(tmp_path / "wh", "lonely")
    (tmp_path / "notavenv").mkdir()
    result = orchestrate("install", tmp_path / "wh", "--into", tmp_path / "notavenv")
    assert result.returncode == 2
    assert "notavenv" in result.stderr and "Traceback" not in result.stderr


def test_interrupted_install_starts_no_more_wheels(tmp_path: Path, target: Path) -> None:
    wheelhouse = tmp_path / "wh"
    wheelhouse.mkdir()
    for i in range(300):
        write_wheel(wheelhouse, f"pkg{i}", files={f"pkg{i}/__init__.py": "X = 1\n" * 2000})
    process = subprocess.Popen([sys.executable, "-m", "orchestrator", "install", str(wheelhouse), "--into", str(target),
                                "--max-installs", "1", "--report-json", str(tmp_path / "r.json")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    site = next(target.glob("lib/python*/site-packages"))
    deadline = time.monotonic() + 60
    while not list(site.glob("pkg*.dist-info")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    assert process.returncode == 130
    installed = len(list(site.glob("pkg*.dist-info")))
    assert 0 < installed < 300
    # Every wheel that was started is complete; the report says which.
    installs = json.loads((tmp_path / "r.json").read_text())["installs"]
    assert sorted(i["name"] for i in installs if i["status"] == "installed") == sorted(
        path.name.split("-")[0] for path in site.glob("pkg*.dist-info"))
