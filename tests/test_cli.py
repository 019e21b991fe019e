"""The command line: usage errors in one style, options refused where they would do nothing, stage errors that fail
the run. In-process with CliRunner when nothing is built; runs that build are real ``orchestrate`` processes, with
one stage function replaced by a failing one where a fault is needed."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import orchestrate
from sdists import make_sdist
from wheels import write_wheel

from orchestrator.cli import main


def run(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], env=env)


def orchestrate_with_fault(tmp_path: Path, fault: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the real command in a process of its own, after ``fault`` (Python source) has replaced a function."""
    script = tmp_path / "faulty_orchestrate.py"
    script.write_text(textwrap.dedent(fault) + "\nfrom orchestrator.cli import main\nmain(prog_name='orchestrate')\n")
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=240)


def one_error_line(stderr: str) -> str:
    """The whole of a usage error's output: one ``error:`` line."""
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["build", ".", "--max-builds", "0"], "'--max-builds'"),  # click's range check
        (["build", ".", "--installer", "conda"], "'conda' is not one of"),  # click's choice
        (["build", ".", "--no-such-option"], "--no-such-option"),  # click's parser
        (["install", "--into", "venv"], "nothing to install"),  # ours: wheels or -r
        (["frobnicate"], "No such command 'frobnicate'"),  # click's group
        (["build", "-w", "wh"], "nothing to build"),  # ours
        (["build", "missing.tar.gz"], "missing.tar.gz: no such file or folder"),  # ours
        (["build", ".", "-i", "pypi.org/simple"], "'--index-url' / '-i' (env var: 'ORCHESTRATE_INDEX_URL'): "
                                                  "pypi.org/simple is neither a URL nor a folder; give its scheme"),
        (["download", "-r", "r.txt", "-d", "d", "--extra-index-url", "x.example"], "'--extra-index-url' (env var: "
         "'ORCHESTRATE_EXTRA_INDEX_URL'): x.example is neither a URL nor a folder; give its scheme (https://x.example)"),
        # Sizes: the option is named, whichever of them is wrong, before any work.
        (["build", ".", "--memory-limit", "12XB"],
         "'--memory-limit' (env var: 'ORCHESTRATE_MEMORY_LIMIT'): invalid size '12XB'"),
        (["build", ".", "--min-free-memory", "200%"], "'--min-free-memory' (env var: 'ORCHESTRATE_MIN_FREE_MEMORY'): "
                                                     "invalid size '200%': a percentage cannot exceed 100%"),
        (["build", ".", "--memory-per-build", "50%"], "'--memory-per-build' (env var: 'ORCHESTRATE_MEMORY_PER_BUILD'): "
                                                     "invalid size '50%': a percentage needs a known total"),
        (["build", ".", "--compiler-cache-size", "lots"], "'--compiler-cache-size' (env var: "
                                                          "'ORCHESTRATE_COMPILER_CACHE_SIZE'): invalid size 'lots'"),
    ],
)
def test_every_usage_error_is_one_error_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = orchestrate(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in one_error_line(result.stderr)


def test_help_and_version_still_exit_0() -> None:
    assert run("build", "--help").exit_code == 0
    version = run("--version")
    assert version.exit_code == 0 and "orchestrate" in version.stdout


INSTALL_ONLY = [
    (["--install-after-build"], {}, "--install-after-build"),
    (["--reinstall"], {}, "--reinstall"),
    (["--no-compile"], {}, "--compile/--no-compile"),
    (["--compile"], {}, "--compile/--no-compile"),
    (["--install-timeout", "30"], {}, "--install-timeout"),
    (["--max-installs", "2"], {}, "--max-installs"),
    (["--max-installs", "2"], {"ORCHESTRATE_INSTALL_INTO": ""}, "--max-installs"),  # an empty variable is no target
]


@pytest.mark.parametrize(("args", "env", "option"), INSTALL_ONLY)
def test_install_options_without_install_into_are_usage_errors(
    tmp_path: Path, args: list[str], env: dict[str, str], option: str
) -> None:
    sdist = make_sdist(tmp_path, "lonely")
    result = run("build", sdist, "-w", tmp_path / "wh", *args, env=env)
    assert result.exit_code == 2
    assert one_error_line(result.stderr) == (
        f"error: {option} needs --install-into: add --install-into VENV|PYTHON or drop it")
    assert not (tmp_path / "wh").exists()


def test_install_variables_do_not_trouble_build(tmp_path: Path) -> None:
    """Variables are shared by ``build`` and ``install``: one set for installs is no usage error of ``build``."""
    env = {"ORCHESTRATE_MAX_INSTALLS": "2", "ORCHESTRATE_REINSTALL": "1"}
    result = run("build", tmp_path / "missing-1.0.tar.gz", "-w", tmp_path / "wh", env=env)
    assert result.exit_code == 2
    assert one_error_line(result.stderr).startswith(f"error: {tmp_path / 'missing-1.0.tar.gz'}")


def test_several_install_options_are_named_together(tmp_path: Path) -> None:
    result = run("build", make_sdist(tmp_path, "lonely"), "--reinstall", "--max-installs", "2")
    assert result.exit_code == 2
    assert one_error_line(result.stderr) == (
        "error: --max-installs, --reinstall need --install-into: add --install-into VENV|PYTHON or drop them")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--memory-limit", "0"], {}, "error: --memory-limit 0 leaves no memory for builds; give a size such as "
         "4G or 50%"),
        (["--memory-limit", "0%"], {}, "error: --memory-limit 0% leaves no memory for builds"),
        ([], {"ORCHESTRATE_MEMORY_LIMIT": "0"}, "error: --memory-limit 0 leaves no memory"),
        (["--memory-limit", "512M"], {}, "error: --memory-limit 512M (512.0 MiB) is below --memory-per-build "
         "1.0 GiB; lower --memory-per-build or raise --memory-limit"),
        (["--memory-limit", "1G", "--memory-per-build", "2G"], {}, "error: --memory-limit 1G (1.0 GiB) is below "
         "--memory-per-build 2.0 GiB"),
    ],
)
def test_a_memory_limit_no_build_fits_under_is_a_usage_error(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = run("build", make_sdist(tmp_path, "lonely"), "-w", tmp_path / "wh", *args, env=env)
    assert result.exit_code == 2
    assert one_error_line(result.stderr).startswith(message)


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["build", "SDIST", "-w", "wh", "--state-dir", "a-file/state"], "--state-dir"),
        (["build", "SDIST", "-w", "wh", "--log-dir", "a-file/logs"], "--log-dir"),
        (["build", "SDIST", "-w", "wh", "--sdist-dir", "a-file/sdists"], "--sdist-dir"),
        (["download", "-r", "reqs.txt", "--no-index", "--dest", "a-file/sdists"], "--dest"),
        (["download", "-r", "reqs.txt", "--no-index", "--state-dir", "a-file/state"], "--state-dir"),
        (["download", "-r", "reqs.txt", "--no-index", "--cache-dir", "a-file/cache"], "--cache-dir"),
        (["build", "-r", "reqs.txt", "--no-index", "-w", "wh", "--cache-dir", "a-file/cache"], "--cache-dir"),
    ],
)
def test_a_folder_that_cannot_be_made_is_named_before_the_run(tmp_path: Path, args: list[str], option: str) -> None:
    """Each build failed without it (an unusable --log-dir), the download cache was silently left out, or the
    command ended in a traceback."""
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "reqs.txt").write_text("lonely==1.0\n")
    sdist = make_sdist(tmp_path, "lonely")
    result = orchestrate(*[str(sdist) if arg == "SDIST" else arg for arg in args], cwd=tmp_path)
    assert result.returncode == 2
    folder = args[args.index(option) + 1]
    assert one_error_line(result.stderr) == (
        f"error: {option} {folder if option != '--state-dir' else tmp_path / folder}: cannot make the folder "
        "(Not a directory); name a folder you can write to")
    assert not (tmp_path / "wh").exists()


def test_a_memory_limit_that_fits_one_build_is_accepted(tmp_path: Path) -> None:
    result = orchestrate("build", make_sdist(tmp_path, "fits"), "-w", tmp_path / "wh", "--memory-limit", "512M",
                         "--memory-per-build", "256M")
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr.lower()
    assert [p.name for p in (tmp_path / "wh").glob("*.whl")] == ["fits-1.0-py3-none-any.whl"]


def failure_lines(stderr: str, name: str) -> list[str]:
    """The lines naming ``name`` that say something failed, without the event timestamps."""
    return [re.sub(r"^\[ *\d+\.\ds\] ", "", line) for line in stderr.splitlines() if name in line and "FAILED" in line]


FAILING_INSTALL = """
    from orchestrator.install.installer import WheelInstaller
    real_install = WheelInstaller.install
    def install(self, wheel):
        if wheel.name.startswith("breaks"):
            raise RuntimeError("the target vanished")
        return real_install(self, wheel)
    WheelInstaller.install = install
"""


def test_an_exception_in_an_install_fails_the_run(tmp_path: Path) -> None:
    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(target)
    for name in ("breaks", "works"):
        make_sdist(tmp_path / "sdists", name)
    result = orchestrate_with_fault(tmp_path, FAILING_INSTALL, "build", "sdists", "-w", "wh", "--install-into", target)
    assert result.returncode == 1, result.stderr
    wheel = "breaks-1.0-py3-none-any.whl"
    assert failure_lines(result.stderr, "breaks") == [
        f"{wheel}: install FAILED: RuntimeError: the target vanished",  # as it happens
        f"FAILED install of {wheel}: RuntimeError: the target vanished",  # in the summary
    ]
    assert "works-1.0: installed" in result.stderr
    assert re.search(r"\n2 built, 0 skipped, 0 failed; 1 installed, 0 skipped, 0 failed; 1 stage error in ",
                     result.stderr)


def _target_and_wheelhouse(tmp_path: Path, names: tuple[str, ...]) -> Path:
    """An empty virtualenv, and ``tmp_path/wh`` holding a wheel of each of ``names``: the venv."""
    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(target)
    (tmp_path / "wh").mkdir()
    for name in names:
        write_wheel(tmp_path / "wh", name)
    return target


def test_install_command_reports_an_exception_of_one_wheel(tmp_path: Path) -> None:
    target = _target_and_wheelhouse(tmp_path, ("breaks", "works"))
    result = orchestrate_with_fault(tmp_path, FAILING_INSTALL, "install", "wh", "--into", target)
    assert result.returncode == 1
    assert failure_lines(result.stderr, "breaks") == [
        "breaks-1.0-py3-none-any.whl: install FAILED: RuntimeError: the target vanished",
        "FAILED install of breaks-1.0-py3-none-any.whl: RuntimeError: the target vanished",
    ]
    assert re.search(r"\n1 installed, 0 skipped, 0 failed; 1 stage error in ", result.stderr)


def test_ctrl_c_during_installs_says_what_became_of_them(tmp_path: Path) -> None:
    # It said "interrupted: running builds were stopped" for an install (and a download) too.
    target = _target_and_wheelhouse(tmp_path, ("first", "second"))
    fault = """
        import os, signal, time
        from orchestrator.install.installer import WheelInstaller
        real_install = WheelInstaller.install
        def install(self, wheel):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while this one is under way
            time.sleep(0.5)
            return real_install(self, wheel)
        WheelInstaller.install = install
    """
    result = orchestrate_with_fault(tmp_path, fault, "install", "wh", "--into", target, "--max-installs", "1")
    assert result.returncode == 130, result.stderr
    assert "interrupted: no other install was started; those under way were completed\n" in result.stderr
    assert [info.name for info in target.glob("lib/python3.*/site-packages/*.dist-info")] == ["first-1.0.dist-info"]


def test_an_exception_handing_a_download_to_the_builds_fails_the_run(tmp_path: Path) -> None:
    for name in ("unqueued", "queued"):
        make_sdist(tmp_path / "sdists", name)
    (tmp_path / "req.txt").write_text("./sdists/unqueued-1.0.tar.gz\n./sdists/queued-1.0.tar.gz\n")
    fault = """
        from orchestrator import pipeline
        real_sdist_source = pipeline.sdist_source
        def sdist_source(path, *, sha256=None):
            if path.name.startswith("unqueued"):
                raise PermissionError(13, "Permission denied", str(path))
            return real_sdist_source(path, sha256=sha256)
        pipeline.sdist_source = sdist_source
    """
    result = orchestrate_with_fault(tmp_path, fault, "build", "-r", "req.txt", "--no-deps", "-w", "wh")
    assert result.returncode == 1, result.stderr
    error = f"PermissionError: [Errno 13] Permission denied: '{tmp_path / 'sdists' / 'unqueued-1.0.tar.gz'}'"
    assert failure_lines(result.stderr, "unqueued") == [
        f"unqueued-1.0: download FAILED: {error}", f"FAILED download of unqueued-1.0: {error}"]
    assert [p.name for p in (tmp_path / "wh").glob("*.whl")] == ["queued-1.0-py3-none-any.whl"]


def test_an_exception_in_an_estimate_fails_the_run(tmp_path: Path) -> None:
    make_sdist(tmp_path, "looked")
    fault = """
        from orchestrator import pipeline
        def compiles(source):
            raise MemoryError("listing the sdist")
        pipeline.compiles = compiles
    """
    result = orchestrate_with_fault(tmp_path, fault, "build", "looked-1.0.tar.gz", "-w", "wh", "--no-history")
    assert result.returncode == 1, result.stderr
    assert failure_lines(result.stderr, "looked") == [
        "looked-1.0: estimate FAILED: MemoryError: listing the sdist",
        "FAILED estimate of looked-1.0: MemoryError: listing the sdist",
    ]
    assert [p.name for p in (tmp_path / "wh").glob("*.whl")] == ["looked-1.0-py3-none-any.whl"]
