"""The install journal: what a dead install left is undone, only that, and never a live install's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from wheels import write_wheel

from orchestrator.install.installer import WheelInstaller
from orchestrator.install.journal import Journal, Recovery
from orchestrator.install.results import InstallStatus
from orchestrator.install.rollback import Aside
from orchestrator.install.target import Target

# Writes a journal in another process, then waits for a line on stdin (while it
# holds the lock) and dies without removing it, as a killed install would.
_WRITER = """\
import json, os, sys
from pathlib import Path
from orchestrator.install.journal import Journal
folder, name, entries = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
journal = Journal.acquire(folder, name)
journal.begin(wheel=name + "-2.0-py3-none-any.whl", created=entries["created"], moved=entries["moved"],
              folders=entries["folders"])
if entries.get("committed"):
    journal.commit()
print("holding", flush=True)
sys.stdin.readline()
os._exit(9)
"""


@pytest.fixture
def target(tmp_path: Path) -> Target:
    venv.create(tmp_path / "venv", with_pip=False, symlinks=True)
    return Target.from_path(tmp_path / "venv")


def site_packages(target: Target) -> Path:
    return Path(target.scheme["purelib"])


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {
        os.fspath(path.relative_to(root)): (path.read_bytes() if path.is_file() else None)
        for path in sorted(root.rglob("*"))
    }


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def start_writer(folder: Path, name: str, entries: dict[str, object]) -> subprocess.Popen[str]:
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, os.fspath(folder), name, json.dumps(entries)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert writer.stdout is not None and writer.stdout.readline() == "holding\n"
    return writer


def left_by_a_dead_install(folder: Path, name: str, entries: dict[str, object]) -> None:
    writer = start_writer(folder, name, entries)
    writer.communicate("\n", timeout=60)
    assert writer.returncode == 9


def upgrade_killed_midway(site: Path) -> dict[str, object]:
    """pkg 1.0 half replaced by 2.0: one old file aside, two new files written, one never written."""
    aside = site / ".orchestrate-old-0123456789abcdef"
    write(aside / "pkg" / "old.py", "old")
    created = [write(site / "pkg" / "__init__.py", "new"), write(site / "pkg" / "sub" / "mod.py", "new")]
    return {
        "created": [*map(os.fspath, created), os.fspath(site / "pkg" / "never.py")],
        "moved": [[os.fspath(site / "pkg" / "old.py"), os.fspath(aside / "pkg" / "old.py")]],
        "folders": [os.fspath(aside)],
    }


def test_a_dead_installs_journal_is_undone_and_only_its_files_are_touched(target: Target) -> None:
    site = site_packages(target)
    write(site / "pkg" / "notes.txt", "not listed: stays")
    write(site / "other" / "mod.py", "another distribution")
    before = snapshot(site)
    left_by_a_dead_install(site, "pkg", upgrade_killed_midway(site))

    (recovery,) = WheelInstaller(target).recover()

    assert recovery == Recovery(name="pkg", wheel="pkg-2.0-py3-none-any.whl", committed=False, removed=2, restored=1)
    assert str(recovery) == (
        "recovered an interrupted install of pkg (pkg-2.0-py3-none-any.whl): removed 2 files,"
        " restored 1 files of the version it replaced"
    )
    assert snapshot(site) == {**before, "pkg/old.py": b"old"}


def test_a_committed_journal_is_finished_not_undone(target: Target) -> None:
    site = site_packages(target)
    entries = upgrade_killed_midway(site)
    new_files = snapshot(site / "pkg")
    left_by_a_dead_install(site, "pkg", {**entries, "committed": True})

    (recovery,) = WheelInstaller(target).recover()

    assert (recovery.committed, recovery.removed, recovery.restored) == (True, 1, 0)
    assert str(recovery).startswith("finished an interrupted install of pkg")
    assert snapshot(site / "pkg") == new_files
    assert sorted(path.name for path in site.iterdir()) == ["pkg"]


def test_a_journal_held_by_a_live_process_is_left_alone(target: Target, tmp_path: Path) -> None:
    site = site_packages(target)
    writer = start_writer(site, "pkg", upgrade_killed_midway(site))
    try:
        before = snapshot(site)
        assert WheelInstaller(target).recover() == []
        result = WheelInstaller(target).install(write_wheel(tmp_path, "pkg"))
        assert result.status is InstallStatus.FAILED
        assert result.error is not None and "another process is installing pkg into this target" in result.error
        assert snapshot(site) == before
    finally:
        writer.communicate("\n", timeout=60)
    # Once it is dead, the next installer undoes it.
    assert [recovery.removed for recovery in WheelInstaller(target).recover()] == [2]


def test_a_last_line_cut_short_is_ignored(target: Target) -> None:
    site = site_packages(target)
    announced = write(site / "pkg" / "a.py", "")
    unannounced = write(site / "pkg" / "b.py", "")
    (site / ".orchestrate-install-pkg.journal").write_text(
        json.dumps({"name": "pkg", "wheel": "pkg-1.0-py3-none-any.whl", "pid": 1}) + "\n"
        + json.dumps({"create": [os.fspath(announced)]}) + "\n"
        + json.dumps({"create": [os.fspath(unannounced)]})[:-7]
    )
    assert [recovery.removed for recovery in WheelInstaller(target).recover()] == [1]
    assert sorted(path.name for path in site.rglob("*")) == ["b.py", "pkg"]


def test_an_empty_journal_is_removed_quietly(target: Target) -> None:
    site = site_packages(target)
    (site / ".orchestrate-install-pkg.journal").touch()
    assert WheelInstaller(target).recover() == []
    assert list(site.iterdir()) == []


def test_a_failed_rollback_keeps_the_journal_for_the_next_run(
    target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = site_packages(target)
    for version in ("1.0", "2.0"):
        (tmp_path / version).mkdir()
        write_wheel(tmp_path / version, "pkg", version, files={"pkg/__init__.py": f"V = {version!r}\n"},
                    corrupt="hash-last" if version == "2.0" else None)
    installed = WheelInstaller(target).install(tmp_path / "1.0" / "pkg-1.0-py3-none-any.whl")
    assert installed.status is InstallStatus.INSTALLED
    before = snapshot(site)

    def restore_fails(self: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(Aside, "restore", restore_fails)
    result = WheelInstaller(target).install(tmp_path / "2.0" / "pkg-2.0-py3-none-any.whl")
    assert result.status is InstallStatus.FAILED
    assert (site / ".orchestrate-install-pkg.journal").is_file()
    monkeypatch.undo()

    (recovery,) = WheelInstaller(target).recover()
    assert recovery.restored > 0
    assert snapshot(site) == before


def test_the_journal_lists_every_file_before_it_is_written(
    target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan matches installer's own placement: nothing is journaled late."""
    late: list[str] = []
    real_add = Journal.add

    def add(self: Journal, created: list[str]) -> None:
        late.extend(created)
        real_add(self, created)

    monkeypatch.setattr(Journal, "add", add)
    journaled: list[str] = []
    real_begin = Journal.begin

    def begin(self: Journal, **kwargs: list[str]) -> None:
        journaled.extend(kwargs["created"])
        real_begin(self, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Journal, "begin", begin)
    wheel = write_wheel(
        tmp_path, "rich",
        files={"rich/__init__.py": "", "rich/sub/mod.py": "X = 1\n", "rich/data.json": "{}", "top.py": ""},
        console_scripts={"rich-cli": "rich:main"},
        data_files={"scripts/rich.sh": "#!/bin/sh\n", "headers/rich.h": "", "data/share/rich.txt": "",
                    "purelib/rich_extra.py": "", "platlib/rich_native.py": ""},
    )
    result = WheelInstaller(target).install(wheel)

    assert result.status is InstallStatus.INSTALLED, result.error
    assert late == []
    record = (site_packages(target) / "rich-1.0.dist-info" / "RECORD").read_text()
    written = {os.path.normpath(site_packages(target) / line.split(",")[0]) for line in record.splitlines()}
    assert written == set(journaled)
