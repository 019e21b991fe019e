"""``orchestrate install`` and ``build --install-into``: wheels land in a real virtualenv and run there."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import venv
from collections.abc import Callable
from pathlib import Path

import psutil
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
    # Streaming, bslow ends only once aquick is installed (it waits for that file); waiting for every build, it
    # sleeps long enough for a streaming install of aquick to start meanwhile.
    site = target / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    make_sdist(tmp_path / "sdists", "bslow", **({"sleep": 3} if after else {"until": str(site / "aquick")}))
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
    # Each install takes at least 50 ms, so that the signal finds most of them still queued however
    # slowly this test's own process is scheduled on a busy machine.
    slow_installs = (
        "import time\n"
        "from orchestrator.install.installer import WheelInstaller\n"
        "install = WheelInstaller.install\n"
        "WheelInstaller.install = lambda self, wheel: (time.sleep(0.05), install(self, wheel))[1]\n"
    )
    process = subprocess.Popen([sys.executable, "-c", f"{slow_installs}from orchestrator.cli import main\nmain()",
                                "install", str(wheelhouse), "--into", str(target),
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


def installed_files(site: Path) -> dict[Path, tuple[str, str]]:
    """Every file the RECORDs in ``site`` list, as path -> (hash, size)."""
    files = {}
    for record in site.glob("*.dist-info/RECORD"):
        for line in record.read_text().splitlines():
            path, digest, size = line.rsplit(",", 2)
            files[Path(os.path.normpath(site / path))] = (digest, size)
    return files


def record_hash(path: Path) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).decode().rstrip("=")


def target_processes(target: Path) -> list[psutil.Process]:
    """Processes running the target's interpreter (compilers outlive a killed installer briefly)."""
    python = str(target / "bin" / "python")
    found = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if python in (process.info["cmdline"] or []) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
    return found


def wait_until(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.002)


@pytest.mark.parametrize("upgrade", [False, True], ids=["fresh", "upgrade"])
def test_an_install_killed_mid_write_is_undone_by_the_next_run(tmp_path: Path, target: Path, upgrade: bool) -> None:
    site = next(target.glob("lib/python*/site-packages"))
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    if upgrade:
        write_wheel(old, "many", "1.0", files={f"many/old{i}.py": "X = 0\n" for i in range(300)})
        assert orchestrate("install", old, "--into", target).returncode == 0
    old_files = len(installed_files(site))  # with the bytecode and .dist-info files
    before = {path for path in target.rglob("*") if path.is_file()} - set(installed_files(site))
    # Thousands of files: writing them takes a second or more, so the kill lands mid-write.
    write_wheel(new, "many", "2.0", files={f"many/mod{i}.py": f"X = {i}\n" * 40 for i in range(3000)},
                console_scripts={"many": "many:main"})
    journal = site / ".orchestrate-install-many.journal"
    process = subprocess.Popen([sys.executable, "-m", "orchestrator", "install", str(new), "--into", str(target)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: journal.exists() and len(list((site / "many").glob("mod*.py"))) > 100)
    process.kill()
    process.wait()
    # Caught mid-write: the journal is left, RECORD is not written yet.
    assert journal.exists() and not (site / "many-2.0.dist-info" / "RECORD").exists()
    assert any(site.glob(".orchestrate-old-*")) is upgrade
    wait_until(lambda: not target_processes(target), timeout=10)  # its compilers see it gone and stop

    again = orchestrate("install", new, "--into", target)

    assert again.returncode == 0, again.stderr
    assert "recovered an interrupted install of many (many-2.0-py3-none-any.whl): removed " in again.stderr
    assert (f", restored {old_files} files of the version it replaced" in again.stderr) is upgrade
    assert "many-2.0: installed" + (" replaced 1.0" if upgrade else "") in again.stderr
    assert run_in(target, "python", "-c", "import many.mod2999; print(many.mod2999.X)").strip() == "2999"
    # RECORD lists every file there is, with its hash; nothing else was left behind.
    listed = installed_files(site)
    assert {path for path in target.rglob("*") if path.is_file()} == before | set(listed)
    assert all(record_hash(path) == digest for path, (digest, _) in listed.items() if digest)
    assert not list(site.glob(".orchestrate-*"))
    assert not list(site.glob("many/old*"))


def test_install_timeout_kills_the_hung_compiler_and_rolls_back_only_that_wheel(tmp_path: Path, target: Path) -> None:
    site = next(target.glob("lib/python*/site-packages"))
    # The compilers run `python -I -S`: this interpreter drops -S, so the target's sitecustomize
    # loads, and compiling a module named slow* hangs in the target interpreter's own compiler.
    python = target / "bin" / "python"
    real = os.path.realpath(python)
    python.unlink()
    python.write_text(f"#!{real} -IS\nimport os, sys\n"
                      f"os.execv({real!r}, [{str(python)!r}] + [arg for arg in sys.argv[1:] if arg != '-S'])\n")
    python.chmod(0o755)
    (site / "sitecustomize.py").write_text(
        "import builtins, os, time\n"
        "real_compile = builtins.compile\n"
        "def compile(source, filename, *args, **kwargs):\n"
        "    if os.path.basename(str(filename)).startswith('slow'):\n"
        "        time.sleep(3600)\n"
        "    return real_compile(source, filename, *args, **kwargs)\n"
        "builtins.compile = compile\n"
    )
    run_in(target, "python", "-I", "-c", "pass")  # sitecustomize's own bytecode, as the compilers write it
    wheelhouse = tmp_path / "wh"
    wheelhouse.mkdir()
    write_wheel(wheelhouse, "fastpkg")
    write_wheel(wheelhouse, "slowpkg", files={"slowpkg/__init__.py": "", "slowpkg/slow_module.py": "X = 1\n"})
    before = {path for path in target.rglob("*")}

    started = time.monotonic()
    result = orchestrate("install", wheelhouse, "--into", target, "--install-timeout", "2",
                         "--report-json", tmp_path / "r.json")

    assert time.monotonic() - started < 30
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    installs = {i["name"]: i for i in json.loads((tmp_path / "r.json").read_text())["installs"]}
    assert installs["fastpkg"]["status"] == "installed"
    assert installs["slowpkg"]["status"] == "failed"
    assert "failed: timed out after 2 s compiling bytecode" in installs["slowpkg"]["error"]
    assert run_in(target, "python", "-c", "import fastpkg; print(fastpkg.VERSION)").strip() == "1.0"
    left = {path for path in target.rglob("*")} - before
    assert left and all("fastpkg" in str(path.relative_to(site)) for path in left)
    assert not target_processes(target)
    assert "--install-timeout" in orchestrate("build", "--help").stdout


@pytest.mark.parametrize("command", ["build", "install"])
def test_install_timeout_option_and_its_environment_variable(tmp_path: Path, target: Path, command: str) -> None:
    text = orchestrate(command, "--help").stdout
    assert "--install-timeout SECONDS" in text and "ORCHESTRATE_INSTALL_TIMEOUT" in text
    if command == "build":
        make_sdist(tmp_path / "sdists", "pkg")
        args: list[str | Path] = ["build", tmp_path / "sdists", "-w", tmp_path / "wh", "--install-into", target]
    else:
        (tmp_path / "wh").mkdir()
        write_wheel(tmp_path / "wh", "pkg")
        args = ["install", tmp_path / "wh", "--into", target]
    site = next(target.glob("lib/python*/site-packages"))
    before = sorted(site.iterdir())

    # The variable alone, no option: a microsecond is over before the first file is written.
    result = orchestrate(*args, "--report-json", tmp_path / "r.json", env={"ORCHESTRATE_INSTALL_TIMEOUT": "0.000001"})

    assert result.returncode == 1, result.stderr
    (install,) = json.loads((tmp_path / "r.json").read_text())["installs"]
    assert install["status"] == "failed"
    assert "failed: timed out after 1e-06 s writing files; rolled back" in install["error"]
    assert sorted(site.iterdir()) == before


def test_build_install_into_checks_the_target_as_pip_check_does(tmp_path: Path, target: Path) -> None:
    make_sdist(tmp_path / "sdists", "app", requires_dist=["dep>=1"])
    make_sdist(tmp_path / "sdists", "lib")
    report = tmp_path / "report.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--install-into", target,
                         "--report-json", report)
    assert result.returncode == 1, result.stderr
    assert "the environment is incomplete: app 1.0 requires dep>=1 (missing)" in result.stderr
    data = json.loads(report.read_text())
    assert data["target_unmet"] == ["app 1.0 requires dep>=1 (missing)"]
    assert sorted(item["status"] for item in data["installs"]) == ["installed", "installed"]  # the installs stay
    # Sources alone ask for no complete set: that part is only a warning.
    assert data["unmet"] == ["app 1.0 requires dep>=1 (missing)"]
    assert "warning: the set is incomplete" in result.stderr
