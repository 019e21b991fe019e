"""Real build backends through the real path: setuptools with a C extension, flit_core, hatchling."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from conftest import backend_index_args, orchestrate
from toolpaths import path_without

from orchestrator.build.sandbox import probe

EXAMPLES = Path(__file__).parent.parent / "examples" / "sdists"

pytestmark = [pytest.mark.real_backend, pytest.mark.usefixtures("sandboxed")]


@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_examples_build_with_real_backends(tmp_path: Path, installer: str) -> None:
    report = tmp_path / "report.json"
    result = orchestrate("build", EXAMPLES, "-w", tmp_path / "wh", "-j", "2", "--installer", installer,
                         "--report-json", report, *backend_index_args())
    assert result.returncode == 0, result.stderr
    wheels = {path.name.split("-")[0]: path for path in (tmp_path / "wh").glob("*.whl")}
    assert set(wheels) == {"hello_ext", "hello_flit", "hello_hatch"}
    # The C extension was compiled: a platform wheel holding a shared object.
    assert "-py3-none-any" not in wheels["hello_ext"].name
    with zipfile.ZipFile(wheels["hello_ext"]) as wheel:
        assert any(name.startswith("hello_ext/_speedups") and name.endswith(".so") for name in wheel.namelist())
    records = {record["name"]: record for record in json.loads(report.read_text())["builds"]}
    # They built unchanged in the sandbox where bwrap works (the default), and the report says so.
    expected = "none" if probe().reason else "bwrap: read-only host, private home and /tmp, no secrets, pid namespace"
    assert {record["sandbox"] for record in records.values()} == {expected}
    ext = records["hello-ext"]
    assert ext["phases"]["install_requires"] > 0 and ext["phases"]["backend"] > 0
    assert ext["cpu_s"] > 0 and ext["peak_rss_bytes"] > 10 * 1024 * 1024


def test_real_backends_build_in_the_unshare_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No bubblewrap on PATH: the fallback on unshare holds the same builds.
    with path_without("bwrap") as path:
        monkeypatch.setenv("PATH", path)
        found = probe()
        if found.sandbox.tool != "unshare" or "read-only host" not in found.sandbox.protections:
            pytest.skip(f"unshare makes no whole sandbox here: {found.reason or found.sandbox.steps}")
        report = tmp_path / "report.json"
        result = orchestrate("build", EXAMPLES, "-w", tmp_path / "wh", "-j", "2", "--installer", "uv",
                             "--no-build-network", "--report-json", report, *backend_index_args())
    assert result.returncode == 0, result.stderr
    wheels = {path.name.split("-")[0]: path for path in (tmp_path / "wh").glob("*.whl")}
    assert set(wheels) == {"hello_ext", "hello_flit", "hello_hatch"}
    with zipfile.ZipFile(wheels["hello_ext"]) as wheel:
        assert any(name.startswith("hello_ext/_speedups") and name.endswith(".so") for name in wheel.namelist())
    sandboxes = {record["sandbox"] for record in json.loads(report.read_text())["builds"]}
    assert sandboxes == {"unshare: read-only host, private home and /tmp, no secrets, pid namespace, no network"}


def test_kept_build_environments_are_seen_in_the_sandbox(tmp_path: Path) -> None:
    """With --keep-build-envs a run's store is a symlink to the shared one: under /tmp (the state folder here)
    or the home folder, both hidden in the sandbox, its target must be bound back in too."""
    for run in ("first", "second"):  # the second reuses what the first kept
        result = orchestrate("build", EXAMPLES / "hello_ext-1.0.tar.gz", "-w", tmp_path / run, "--keep-build-envs",
                             "--state-dir", tmp_path / "state", *backend_index_args())
        assert result.returncode == 0, result.stderr
        assert len(list((tmp_path / run).glob("hello_ext-*.whl"))) == 1
