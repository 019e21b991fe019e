"""What each command imports: the help loads none of the run's machinery, a build of local sdists none of
the download or install stages', a build worker nothing its fork server could have imported for it.

No timing: each test runs the real ``orchestrate`` in a subprocess and reads which modules it had loaded by
the time it exited (an ``atexit`` hook writes ``sys.modules``). What is listed is what the command need not
load: ``benchmarks/startup.py`` measures what that saves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import psutil
import pytest
from sdists import make_sdist
from wheels import write_wheel

PROBE = """\
import atexit, json, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
from orchestrator.cli import main
main(prog_name="orchestrate")
"""

NETWORK = ("httpx2", "httpcore2", "unearth")
"""The download stage's HTTP and index libraries."""
INSTALLER = ("installer", "orchestrator.install.installer")
"""pypa installer, and the install stage's algorithm."""
FARM = ("distributed", "dask", "orchestrator.executors.dask")
RUN = ("rich", "psutil", "sqlite3", "filelock", "platformdirs", "virtualenv", "orchestrator.pipeline",
       "orchestrator.display", "orchestrator.scheduler", "orchestrator.report", "orchestrator.cli.run")
"""What a run needs and the help does not: the terminal output, the process table, the history, the stages."""


def loaded(*args: str | os.PathLike[str], cwd: Path, expect: int = 0) -> set[str]:
    """The modules ``orchestrate ARGS`` had loaded when it exited (it must exit with ``expect``)."""
    out = cwd / "modules.json"
    done = subprocess.run([sys.executable, "-c", PROBE, str(out), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == expect, done.stderr
    return set(json.loads(out.read_text()))


def among(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` (packages or modules) were loaded."""
    return sorted(name for name in names if name in modules)


@pytest.mark.parametrize("args", [
    [],  # orchestrate alone: the usage, exit 2
    ["--help"],
    ["--version"],
    ["build", "--help"],
    ["download", "--help"],
    ["install", "--help"],
    ["report", "--help"],
])
def test_the_help_loads_none_of_the_run_machinery(tmp_path: Path, args: list[str]) -> None:
    modules = loaded(*args, cwd=tmp_path, expect=2 if not args else 0)
    assert "orchestrator.cli.build" in modules  # the probe did see the commands being declared
    assert among(modules, NETWORK + INSTALLER + FARM + RUN) == []


def test_a_bad_option_is_one_line_without_loading_the_run(tmp_path: Path) -> None:
    out = tmp_path / "modules.json"
    done = subprocess.run([sys.executable, "-c", PROBE, str(out), "build", "--max-builds", "none"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert among(set(json.loads(out.read_text())), NETWORK + INSTALLER + FARM + ("orchestrator.pipeline",)) == []


def test_a_build_of_local_sdists_loads_neither_downloads_nor_installs(tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path, "quick")
    args: list[str | os.PathLike[str]] = [sdist, "-w", tmp_path / "wh", "--compiler-cache", "off"]
    modules = loaded("build", *args, cwd=tmp_path)
    assert [wheel.name for wheel in (tmp_path / "wh").glob("*.whl")] == ["quick-1.0-py3-none-any.whl"]
    assert "orchestrator.pipeline" in modules
    assert among(modules, NETWORK + INSTALLER + FARM) == []
    # Nothing to do the second time: the wheel is in the wheelhouse; the fork server, which never forked, is
    # killed rather than waited for, and no process of the run is left (each ran in this test's folder).
    assert among(loaded("build", *args, cwd=tmp_path), NETWORK + INSTALLER + FARM) == []
    assert [process.info for process in psutil.process_iter(["pid", "cmdline", "cwd"])
            if process.info["cwd"] == str(tmp_path)] == []


def test_report_loads_neither_the_stages_nor_the_network(tmp_path: Path) -> None:
    state = tmp_path / "state"
    subprocess.run([sys.executable, "-m", "orchestrator", "build", make_sdist(tmp_path, "quick"), "-w",
                    tmp_path / "wh", "--state-dir", state, "--compiler-cache", "off"], cwd=tmp_path,
                   capture_output=True, check=True, timeout=120)
    modules = loaded("report", "--state-dir", state, cwd=tmp_path)
    assert "orchestrator.report.show" in modules
    assert among(modules, NETWORK + INSTALLER + FARM + ("orchestrator.pipeline", "orchestrator.scheduler")) == []


def test_install_loads_neither_the_build_stage_nor_the_network(tmp_path: Path) -> None:
    target = tmp_path / "venv"
    venv.create(target, with_pip=False, symlinks=True)
    wheel = write_wheel(tmp_path, "tiny")
    modules = loaded("install", wheel, "--into", target, "--no-compile", cwd=tmp_path)
    assert list((target / "lib").glob("python*/site-packages/tiny-1.0.dist-info"))
    assert "orchestrator.install.installer" in modules
    assert among(modules, NETWORK + FARM + ("orchestrator.pipeline", "orchestrator.scheduler")) == []


SITECUSTOMIZE = """\
import os, sys
if "--fork-server" in sys.argv:  # the run's fork server: each fork records what it imports from then on
    class _Recorder:
        forked = False

        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if cls.forked:
                with open(os.environ["IMPORTS_AFTER_FORK"], "a") as log:
                    log.write(f"{os.getpid()} {name}\\n")
            return None

    def _forked():
        _Recorder.forked = True
        with open(os.environ["IMPORTS_AFTER_FORK"], "a") as log:
            log.write(f"{os.getpid()} -\\n")

    os.register_at_fork(after_in_child=_forked)
    sys.meta_path.insert(0, _Recorder)
"""


def test_a_build_worker_imports_nothing_its_fork_server_preloads(tmp_path: Path) -> None:
    """Builds get the build machinery from the fork server's preload (pypa installer for the wheel's check
    included), not by importing it after their fork; only the build that makes the run's empty environment
    imports virtualenv."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / "imports-after-fork.log"
    sdists = [make_sdist(tmp_path, name) for name in ("one", "two", "three")]
    path = os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "IMPORTS_AFTER_FORK": str(log)}
    subprocess.run([sys.executable, "-m", "orchestrator", "build", *sdists, "-w", tmp_path / "wh", "-j", "1",
                    "--compiler-cache", "off"], cwd=tmp_path, env=env, capture_output=True, check=True, timeout=120)
    assert len(list((tmp_path / "wh").glob("*.whl"))) == 3
    by_worker: dict[str, set[str]] = {}
    for line in log.read_text().splitlines():
        pid, name = line.split()
        by_worker.setdefault(pid, set()).update([name] if name != "-" else [])
    assert len(by_worker) >= 3  # the recorder ran in each build's fork
    preloaded = ("orchestrator", "installer", "packaging", "build", "pyproject_hooks", "tarfile", "gzip", "zipfile",
                 "importlib", "encodings")
    assert sorted(name for names in by_worker.values() for name in names if name.split(".")[0] in preloaded) == []
    assert [sorted(names) for names in by_worker.values() if names and "virtualenv" not in names] == []
