"""``orchestrate install -r LOCK --find-links DIR``: the pinned wheel for the target, and the environment checked after.

End to end: real virtualenvs made here, real wheels, the real command in a
subprocess; what got installed is read from the target's ``.dist-info``
folders, not through orchestrator. The choice among wheels and the tags probe
are also tested on their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from conftest import orchestrate
from packaging.tags import sys_tags
from packaging.utils import NormalizedName, canonicalize_name
from wheels import write_wheel

from orchestrator.errors import UsageError
from orchestrator.install.select import WheelFile, choose
from orchestrator.install.tags import supported_tags

PYTHON_312 = Path("/root/.pyenv/versions/3.12.1/bin/python3")
PYTHON_36 = Path("/root/.pyenv/versions/3.6.15/bin/python3")
THIS_PYTHON = f"cp{sys.version_info.major}{sys.version_info.minor}"


def make_venv(folder: Path, python: Path | None = None) -> Path:
    """A real virtualenv at ``folder``, of this interpreter or of ``python``."""
    if python is None:
        venv.EnvBuilder(with_pip=False, symlinks=True).create(folder)
    else:
        subprocess.run([os.fspath(python), "-m", "venv", "--without-pip", os.fspath(folder)], check=True, timeout=120)
    return folder


@pytest.fixture()
def target(tmp_path: Path) -> Path:
    return make_venv(tmp_path / "venv")


@pytest.fixture()
def wheelhouse(tmp_path: Path) -> Path:
    folder = tmp_path / "wheelhouse"
    folder.mkdir()
    return folder


def site_packages(target: Path) -> Path:
    (folder,) = target.glob("lib/python3.*/site-packages")
    return folder


def installed(target: Path) -> dict[str, str]:
    """Name -> version of each ``.dist-info`` folder in the target, read from its METADATA."""
    found: dict[str, str] = {}
    for info in site_packages(target).glob("*.dist-info"):
        fields = dict(line.split(": ", 1) for line in (info / "METADATA").read_text().splitlines() if ": " in line)
        assert canonicalize_name(fields["Name"]) not in found, f"two versions of {fields['Name']} installed"
        found[canonicalize_name(fields["Name"])] = fields["Version"]
    return found


def installed_tag(target: Path, name: str) -> str:
    """The ``Tag`` line of the installed distribution's WHEEL file: which wheel was taken."""
    (info,) = site_packages(target).glob(f"{name}-*.dist-info")
    return next(line.split(": ", 1)[1] for line in (info / "WHEEL").read_text().splitlines() if line.startswith("Tag"))


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {os.fspath(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


def lock(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "lock.txt"
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def error_line(stderr: str) -> str:
    (line,) = [line for line in stderr.splitlines() if line.startswith("error: ")]
    return line


# --- which wheel a pin takes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["--find-links", "-f", "ORCHESTRATE_FIND_LINKS"])
def test_the_pinned_version_is_installed_out_of_several(tmp_path: Path, target: Path, wheelhouse: Path,
                                                        how: str) -> None:
    for version in ("1.0", "2.0", "3.0"):
        write_wheel(wheelhouse, "foo", version)
    args: list[str | Path] = [] if how == "ORCHESTRATE_FIND_LINKS" else [how, wheelhouse]
    env = {"ORCHESTRATE_FIND_LINKS": str(wheelhouse)} if how == "ORCHESTRATE_FIND_LINKS" else {}
    result = orchestrate("install", "-r", lock(tmp_path, "foo==2.0"), *args, "--into", target, env=env)
    assert result.returncode == 0, result.stderr
    assert installed(target) == {"foo": "2.0"}
    assert (site_packages(target) / "foo" / "__init__.py").read_text() == "VERSION = '2.0'\n"


def test_find_links_repeat_and_pep440_equal_versions_match(tmp_path: Path, target: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    write_wheel(tmp_path / "one", "foo", "2.0.0")
    write_wheel(tmp_path / "two", "Bar_Baz", "1.0")
    result = orchestrate("install", "-r", lock(tmp_path, "foo==2.0", "bar-baz==1.0"), "-f", tmp_path / "one",
                         "--find-links", tmp_path / "two", "--into", target)
    assert result.returncode == 0, result.stderr
    assert installed(target) == {"foo": "2.0.0", "bar-baz": "1.0"}


def test_the_tag_the_target_ranks_first_is_taken(tmp_path: Path, target: Path, wheelhouse: Path) -> None:
    write_wheel(wheelhouse, "foo", "2.0", tag="py3-none-any")
    write_wheel(wheelhouse, "foo", "2.0", tag=f"{THIS_PYTHON}-none-any")  # this interpreter's own: pip's first
    write_wheel(wheelhouse, "foo", "2.0", tag="py2-none-any")
    result = orchestrate("install", "-r", lock(tmp_path, "foo==2.0"), "-f", wheelhouse, "--into", target)
    assert result.returncode == 0, result.stderr
    assert installed_tag(target, "foo") == f"{THIS_PYTHON}-none-any"


def test_a_missing_pin_installs_nothing_and_names_what_is_there(tmp_path: Path, target: Path,
                                                                wheelhouse: Path) -> None:
    write_wheel(wheelhouse, "bar", "1.0")
    write_wheel(wheelhouse, "foo", "1.0")
    write_wheel(wheelhouse, "foo", "2.0", tag="cp27-none-any")
    before = snapshot(site_packages(target))
    result = orchestrate("install", "-r", lock(tmp_path, "bar==1.0", "foo==2.0"), "-f", wheelhouse, "--into", target)
    assert result.returncode == 1
    line = error_line(result.stderr)
    assert "lock.txt:2: no wheel of foo 2.0 for the target" in line
    assert f"in {wheelhouse}/: only foo-1.0-py3-none-any.whl, foo-2.0-cp27-none-any.whl" in line
    assert snapshot(site_packages(target)) == before  # bar, which is there, is not installed either


def test_direct_urls_of_the_lock_are_met_from_the_wheelhouse(tmp_path: Path, target: Path, wheelhouse: Path) -> None:
    # `build -r` of a file with `name @ URL` puts its wheel into the wheelhouse (placed, or built from the sdist);
    # install -r of that same file refused every URL: "put it into the wheelhouse first".
    write_wheel(wheelhouse, "foo", "1.0")
    write_wheel(wheelhouse, "bar", "2.0")
    write_wheel(wheelhouse, "bar", "3.0")
    write_wheel(wheelhouse, "baz", "1.0", tag="py2.py3-none-any")  # baz 1.0, but not the file its URL names
    wheel_url = "https://files.example.invalid/packages/d9/foo-1.0-py3-none-any.whl#sha256=" + "a" * 64
    urls = lock(tmp_path, f"foo @ {wheel_url}", "bar @ https://files.example.invalid/bar-2.0.tar.gz")
    result = orchestrate("install", "-r", urls, "-f", wheelhouse, "--into", target)
    assert result.returncode == 0, result.stderr
    assert installed(target) == {"foo": "1.0", "bar": "2.0"}
    other = lock(tmp_path, "baz @ https://files.example.invalid/baz-1.0-py3-none-any.whl")
    result = orchestrate("install", "-r", other, "-f", wheelhouse, "--into", target)
    assert result.returncode == 1
    assert "lock.txt:1: no wheel of baz 1.0 for the target" in error_line(result.stderr)


def test_a_wheel_of_an_incompatible_tag_only_is_refused(tmp_path: Path, target: Path, wheelhouse: Path) -> None:
    write_wheel(wheelhouse, "foo", "2.0", tag="cp27-cp27mu-manylinux1_x86_64")
    before = snapshot(site_packages(target))
    result = orchestrate("install", "-r", lock(tmp_path, "foo==2.0"), "-f", wheelhouse, "--into", target)
    assert result.returncode == 1
    assert "only foo-2.0-cp27-cp27mu-manylinux1_x86_64.whl" in error_line(result.stderr)
    assert snapshot(site_packages(target)) == before


def test_every_missing_pin_is_named_at_once(tmp_path: Path, target: Path, wheelhouse: Path) -> None:
    write_wheel(wheelhouse, "other", "1.0")
    result = orchestrate("install", "-r", lock(tmp_path, "foo==1.0", "bar==2.0"), "-f", wheelhouse, "--into", target)
    assert result.returncode == 1
    line = error_line(result.stderr)
    assert "lock.txt:1: no wheel of foo 1.0" in line and "none of foo" in line
    assert "lock.txt:2: no wheel of bar 2.0" in line


def test_a_pin_already_installed_needs_no_wheel(tmp_path: Path, target: Path, wheelhouse: Path) -> None:
    write_wheel(wheelhouse, "foo", "2.0")
    assert orchestrate("install", wheelhouse, "--into", target).returncode == 0
    (wheelhouse / "foo-2.0-py3-none-any.whl").unlink()  # the wheelhouse was pruned since
    again = orchestrate("install", "-r", lock(tmp_path, "foo==2.0"), "-f", wheelhouse, "--into", target)
    assert again.returncode == 0, again.stderr
    assert "foo 2.0: already installed" in again.stderr
    forced = orchestrate("install", "-r", lock(tmp_path, "foo==2.0"), "-f", wheelhouse, "--into", target,
                         "--reinstall")
    assert forced.returncode == 1 and "no wheel of foo 2.0" in forced.stderr


def test_a_local_wheel_path_in_the_lock_is_taken_as_it_is(tmp_path: Path, target: Path, wheelhouse: Path) -> None:
    write_wheel(wheelhouse, "foo", "1.0", tag="cp27-none-any")  # as with a wheel named on the command line
    result = orchestrate("install", "-r", lock(tmp_path, "./wheelhouse/foo-1.0-cp27-none-any.whl"), "--into", target)
    assert result.returncode == 0, result.stderr
    assert installed(target) == {"foo": "1.0"}


# --- wheels given and pins together ---------------------------------------------------------------------------


def test_given_wheels_and_pins_are_installed_together(tmp_path: Path, target: Path, wheelhouse: Path) -> None:
    (tmp_path / "given").mkdir()
    given = write_wheel(tmp_path / "given", "tool", "0.5")
    write_wheel(wheelhouse, "foo", "1.0")
    write_wheel(wheelhouse, "foo", "2.0")
    result = orchestrate("install", given, "-r", lock(tmp_path, "foo==2.0"), "-f", wheelhouse, "--into", target)
    assert result.returncode == 0, result.stderr
    assert installed(target) == {"tool": "0.5", "foo": "2.0"}


def test_a_given_wheel_of_the_pinned_version_meets_the_pin(tmp_path: Path, target: Path, wheelhouse: Path) -> None:
    (tmp_path / "given").mkdir()
    given = write_wheel(tmp_path / "given", "foo", "2.0", files={"foo/__init__.py": "FROM = 'given'\n"})
    write_wheel(wheelhouse, "foo", "2.0")
    result = orchestrate("install", given, "-r", lock(tmp_path, "foo==2.0"), "-f", wheelhouse, "--into", target)
    assert result.returncode == 0, result.stderr
    assert (site_packages(target) / "foo" / "__init__.py").read_text() == "FROM = 'given'\n"


def test_two_versions_asked_for_are_a_usage_error(tmp_path: Path, target: Path, wheelhouse: Path) -> None:
    (tmp_path / "given").mkdir()
    given = write_wheel(tmp_path / "given", "foo", "1.0")
    write_wheel(wheelhouse, "foo", "2.0")
    before = snapshot(site_packages(target))
    result = orchestrate("install", given, "-r", lock(tmp_path, "foo==2.0"), "-f", wheelhouse, "--into", target)
    assert result.returncode == 2
    assert "lock.txt:1: foo==2.0 and" in error_line(result.stderr) and "two versions of foo" in result.stderr
    assert snapshot(site_packages(target)) == before


def test_a_folder_argument_with_two_versions_still_conflicts(target: Path, wheelhouse: Path) -> None:
    write_wheel(wheelhouse, "foo", "1.0")
    write_wheel(wheelhouse, "foo", "2.0")
    before = snapshot(site_packages(target))
    result = orchestrate("install", wheelhouse, "--into", target)
    assert result.returncode == 1
    assert "both install distribution foo" in error_line(result.stderr)
    assert snapshot(site_packages(target)) == before


# --- usage errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "extra", "message"),
    [
        (["foo==1.0", "bar>=2"], [], "lock.txt:2: bar>=2 does not pin exactly one version"),  # a loose line
        (["foo==1.0", "requests"], [], "lock.txt:2: requests does not pin exactly one version"),  # a bare name
        (["foo @ https://example.invalid/archive/main.zip"], [],
         "lock.txt:1: https://example.invalid/archive/main.zip: its file name carries no version"),  # which wheel?
        (["./src-1.0.tar.gz"], [], "src-1.0.tar.gz is not a wheel"),  # an sdist path: build it first
        ([], [], "lock.txt: nothing to install: they list no requirement"),
        (["foo==1.0 ; python_version < '3'"], [], "a marker excludes every line here (1 skipped)"),
        (["foo==1.0"], ["--find-links", "https://example.invalid/wheels/"], "install reads wheels from local folders"),
        (["foo==1.0"], ["--find-links", "no-such-folder"], "--find-links no-such-folder: no such folder"),
        (["foo==1.0"], ["--no-find-links-here"], "--no-find-links-here"),  # click's own
    ],
)
def test_usage_errors_are_one_line_and_exit_2(tmp_path: Path, target: Path, wheelhouse: Path, lines: list[str],
                                              extra: list[str], message: str) -> None:
    (tmp_path / "src-1.0.tar.gz").write_bytes(b"")
    write_wheel(wheelhouse, "foo", "1.0")
    find_links: list[str | Path] = [] if extra else ["-f", wheelhouse]
    result = orchestrate("install", "-r", lock(tmp_path, *lines), *find_links, *extra, "--into", target, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [error_line(result.stderr)]
    assert message in result.stderr
    assert installed(target) == {}


def test_a_pin_by_name_needs_find_links(tmp_path: Path, target: Path) -> None:
    result = orchestrate("install", "-r", lock(tmp_path, "foo==1.0"), "--into", target)
    assert result.returncode == 2
    assert "lock.txt:1: foo==1.0 is pinned by name: give --find-links DIR" in error_line(result.stderr)


# --- the environment is checked after installing --------------------------------------------------------------


def test_an_unmet_requirement_fails_the_install_which_stays(tmp_path: Path, target: Path, wheelhouse: Path) -> None:
    write_wheel(wheelhouse, "app", "1.0", requires_dist=["dep>=1", "other; python_version < '3'"])
    report = tmp_path / "report.json"
    result = orchestrate("install", "-r", lock(tmp_path, "app==1.0"), "-f", wheelhouse, "--into", target,
                         "--report-json", report)
    assert result.returncode == 1
    assert "the environment is incomplete: app 1.0 requires dep>=1 (missing)" in result.stderr
    assert "other" not in result.stderr  # its marker is false for the target
    assert installed(target) == {"app": "1.0"}  # as pip does, the install stays
    assert json.loads(report.read_text())["target_unmet"] == ["app 1.0 requires dep>=1 (missing)"]


def test_wheels_given_without_a_lock_are_checked_too(target: Path, wheelhouse: Path) -> None:
    write_wheel(wheelhouse, "app", "1.0", requires_dist=["dep>=2"])
    write_wheel(wheelhouse, "dep", "1.5")
    result = orchestrate("install", wheelhouse, "--into", target)
    assert result.returncode == 1
    assert "app 1.0 requires dep>=2 (dep 1.5 is in the set)" in result.stderr
    assert installed(target) == {"app": "1.0", "dep": "1.5"}


def test_met_requirements_pass(tmp_path: Path, target: Path, wheelhouse: Path) -> None:
    write_wheel(wheelhouse, "app", "1.0", requires_dist=["dep>=1"])
    write_wheel(wheelhouse, "dep", "1.0")
    write_wheel(wheelhouse, "dep", "0.5")
    result = orchestrate("install", "-r", lock(tmp_path, "app==1.0", "dep==1.0"), "-f", wheelhouse, "--into", target)
    assert result.returncode == 0, result.stderr
    assert "incomplete" not in result.stderr
    assert installed(target) == {"app": "1.0", "dep": "1.0"}


def test_the_extras_of_the_lock_are_checked(tmp_path: Path, target: Path, wheelhouse: Path) -> None:
    write_wheel(wheelhouse, "app", "1.0", requires_dist=['socksy>=1; extra == "socks"'])
    plain = orchestrate("install", "-r", lock(tmp_path, "app==1.0"), "-f", wheelhouse, "--into", target)
    assert plain.returncode == 0, plain.stderr
    asked = orchestrate("install", "-r", lock(tmp_path, "app[socks]==1.0"), "-f", wheelhouse, "--into", target)
    assert asked.returncode == 1
    assert "app[socks] 1.0 requires socksy>=1" in asked.stderr


# --- the target's own tags ------------------------------------------------------------------------------------


def test_the_probe_gives_the_tags_packaging_gives_here() -> None:
    assert supported_tags(Path(sys.executable)) == tuple(str(tag) for tag in sys_tags())


def test_a_python_that_cannot_run_the_probe_is_one_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'no such module: json' >&2\nexit 3\n")
    broken.chmod(0o755)
    with pytest.raises(UsageError, match=r"cannot tell which wheel tags it supports: .*\(no such module: json\)"):
        supported_tags(broken)


@pytest.mark.skipif(not PYTHON_312.is_file(), reason=f"needs {PYTHON_312}")
def test_a_py312_wheel_is_taken_for_312_and_refused_for_this_python(tmp_path: Path, wheelhouse: Path) -> None:
    if sys.version_info[:2] >= (3, 12):
        pytest.skip("this interpreter supports py312 itself")
    write_wheel(wheelhouse, "foo", "1.0", tag="py312-none-any")
    target_312 = make_venv(tmp_path / "venv312", PYTHON_312)
    target_this = make_venv(tmp_path / "venv")
    taken = orchestrate("install", "-r", lock(tmp_path, "foo==1.0"), "-f", wheelhouse, "--into", target_312)
    assert taken.returncode == 0, taken.stderr
    assert installed(target_312) == {"foo": "1.0"}
    refused = orchestrate("install", "-r", lock(tmp_path, "foo==1.0"), "-f", wheelhouse, "--into", target_this)
    assert refused.returncode == 1
    assert "only foo-1.0-py312-none-any.whl" in error_line(refused.stderr)
    assert installed(target_this) == {}
    # Beside a py3 wheel, each takes the one it ranks first.
    write_wheel(wheelhouse, "bar", "1.0", tag="py312-none-any")
    write_wheel(wheelhouse, "bar", "1.0", tag="py3-none-any")
    for target, tag in ((target_312, "py312-none-any"), (target_this, "py3-none-any")):
        result = orchestrate("install", "-r", lock(tmp_path, "bar==1.0"), "-f", wheelhouse, "--into", target)
        assert result.returncode == 0, result.stderr
        assert installed_tag(target, "bar") == tag


@pytest.mark.skipif(not PYTHON_312.is_file(), reason=f"needs {PYTHON_312}")
def test_the_locks_markers_are_read_for_the_target(tmp_path: Path, wheelhouse: Path) -> None:
    if sys.version_info[:2] >= (3, 12):
        pytest.skip("this interpreter is 3.12 or newer itself")
    write_wheel(wheelhouse, "new", "1.0")
    write_wheel(wheelhouse, "old", "1.0")
    requirements = lock(tmp_path, 'new==1.0; python_version >= "3.12"\nold==1.0; python_version < "3.12"')
    venv = make_venv(tmp_path / "v", PYTHON_312)
    result = orchestrate("install", "-r", requirements, "-f", wheelhouse, "--into", venv)
    assert result.returncode == 0, result.stderr
    assert installed(tmp_path / "v") == {"new": "1.0"}


@pytest.mark.skipif(not PYTHON_36.is_file(), reason=f"needs {PYTHON_36}")
def test_a_target_too_old_for_our_packaging_is_refused_clearly(tmp_path: Path, wheelhouse: Path) -> None:
    write_wheel(wheelhouse, "foo", "1.0")
    target = make_venv(tmp_path / "venv36", PYTHON_36)
    result = orchestrate("install", "-r", lock(tmp_path, "foo==1.0"), "-f", wheelhouse, "--into", target)
    assert result.returncode == 2
    assert "cannot tell which wheel tags it supports" in error_line(result.stderr)
    assert "Traceback" not in result.stderr


# --- the choice, on its own -----------------------------------------------------------------------------------

PRIORITY = {"cp311-cp311-linux_x86_64": 0, "cp311-none-any": 1, "py3-none-any": 2}
"""A fake target's tags: these three, best first."""


def wheel(filename: str) -> WheelFile:
    parsed = WheelFile.parse(Path("wh") / filename)
    assert parsed is not None
    return parsed


@pytest.mark.parametrize(
    ("version", "files", "expected"),
    [
        ("2.0", ["foo-1.0-py3-none-any.whl", "foo-2.0-py3-none-any.whl"], "foo-2.0-py3-none-any.whl"),
        ("2", ["foo-2.0.0-py3-none-any.whl"], "foo-2.0.0-py3-none-any.whl"),  # PEP 440 equality
        # The tag ranked first wins, whatever the file order.
        ("2.0", ["foo-2.0-py3-none-any.whl", "foo-2.0-cp311-cp311-linux_x86_64.whl", "foo-2.0-cp311-none-any.whl"],
         "foo-2.0-cp311-cp311-linux_x86_64.whl"),
        # A compressed tag set counts by its best member.
        ("2.0", ["foo-2.0-cp311-none-any.whl", "foo-2.0-py2.py3-none-any.whl"], "foo-2.0-cp311-none-any.whl"),
        # Same tag: the highest build tag, as pip.
        ("2.0", ["foo-2.0-1-py3-none-any.whl", "foo-2.0-10-py3-none-any.whl", "foo-2.0-2-py3-none-any.whl"],
         "foo-2.0-10-py3-none-any.whl"),
        ("2.0", ["foo-2.0-cp27-none-any.whl"], None),  # no supported tag
        ("2.0", ["foo-2.0rc1-py3-none-any.whl", "foo-2.0.1-py3-none-any.whl"], None),  # other versions only
        ("2.0", ["foobar-2.0-py3-none-any.whl", "bar-2.0-py3-none-any.whl"], None),  # other names only
        ("2.0rc1", ["foo-2.0rc1-py3-none-any.whl"], "foo-2.0rc1-py3-none-any.whl"),  # a pinned pre-release
    ],
)
def test_choose(version: str, files: list[str], expected: str | None) -> None:
    chosen = choose(NormalizedName("foo"), version, [wheel(name) for name in files], PRIORITY)
    assert (chosen.path.name if chosen else None) == expected


def test_a_file_that_is_not_a_wheel_name_is_ignored() -> None:
    assert WheelFile.parse(Path("wh/README-for-wheels.whl")) is None
