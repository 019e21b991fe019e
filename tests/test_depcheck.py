"""The dependency check of a set: the pure checker, its readers (real wheels, a real venv), target environments."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from packaging.markers import Marker, default_environment
from packaging.utils import canonicalize_name
from packaging.version import Version
from wheels import write_wheel

from orchestrator.errors import UsageError, WheelError
from orchestrator.wheels import distributions
from orchestrator.wheels.depcheck import Distribution, Problem, check
from orchestrator.wheels.distributions import (
    check_installed,
    check_wheels,
    installed_distributions,
    target_environment,
    wheel_distributions,
)
from orchestrator.wheels.wheelfile import WheelMetadata, read_wheel

# Complete, fixed marker environments, so the table does not depend on the interpreter running it.
LINUX_311 = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.7",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_release": "6.1.0",
    "platform_system": "Linux",
    "platform_version": "#1 SMP",
    "python_full_version": "3.11.7",
    "platform_python_implementation": "CPython",
    "python_version": "3.11",
    "sys_platform": "linux",
}
LINUX_38 = {**LINUX_311, "implementation_version": "3.8.18", "python_full_version": "3.8.18", "python_version": "3.8"}


def dist(spec: str, *requires: str, extras: tuple[str, ...] = ()) -> Distribution:
    name, version = spec.split()
    return Distribution(name=name, version=Version(version), requires_dist=requires,
                        extras=frozenset(map(canonicalize_name, extras)))


CHECKER_CASES = [
    pytest.param([dist("app 1.0", "urllib3>=2"), dist("urllib3 2.1")], [], LINUX_311, [], id="met"),
    pytest.param([dist("app 1.0", "urllib3>=2")], [], LINUX_311, ["app 1.0 requires urllib3>=2 (missing)"],
                 id="missing"),
    pytest.param([dist("app 1.0", "urllib3<2"), dist("urllib3 2.1")], [], LINUX_311,
                 ["app 1.0 requires urllib3<2 (urllib3 2.1 is in the set)"], id="wrong-version"),
    # Names compare canonicalised; the message keeps each side's spelling.
    pytest.param([dist("app 1.0", "Zope.Interface>=5"), dist("zope-interface 6.0")], [], LINUX_311, [],
                 id="name-canonicalised"),
    pytest.param([dist("app 1.0", 'pywin32>=300; sys_platform == "win32"')], [], LINUX_311, [],
                 id="marker-excludes"),
    # The target's python_version decides, not the running interpreter's (see the test below).
    pytest.param([dist("app 1.0", 'tomli>=1; python_version < "3.11"')], [], LINUX_38,
                 ['app 1.0 requires tomli>=1; python_version < "3.11" (missing)'], id="marker-target-3.8"),
    pytest.param([dist("app 1.0", 'tomli>=1; python_version < "3.11"')], [], LINUX_311, [],
                 id="marker-target-3.11"),
    pytest.param(
        [dist("app 1.0", "requests[socks]"), dist("requests 2.31", "urllib3", 'PySocks>=1.5.6; extra == "socks"'),
         dist("urllib3 2.1")],
        [], LINUX_311, ['requests[socks] 2.31 requires PySocks>=1.5.6; extra == "socks" (missing)'],
        id="extra-pulled",
    ),
    pytest.param(
        [dist("app 1.0", "requests"), dist("requests 2.31", "urllib3", 'PySocks>=1.5.6; extra == "socks"'),
         dist("urllib3 2.1")],
        [], LINUX_311, [], id="extra-not-pulled",
    ),
    pytest.param(
        [dist("requests 2.31", 'PySocks>=1.5.6; extra == "socks"', extras=("socks",))],
        [], LINUX_311, ['requests[socks] 2.31 requires PySocks>=1.5.6; extra == "socks" (missing)'],
        id="extra-asked-from-outside",
    ),
    # PEP 685: SOCKS_Proxy, socks.proxy and socks-proxy are one extra.
    pytest.param(
        [dist("app 1.0", "requests[SOCKS_Proxy]"), dist("requests 2.31", 'PySocks; extra == "socks.proxy"')],
        [], LINUX_311, ['requests[socks-proxy] 2.31 requires PySocks; extra == "socks.proxy" (missing)'],
        id="extra-canonicalised",
    ),
    # An extra's marker can also exclude: not on this target.
    pytest.param(
        [dist("app 1.0", "requests[socks]"),
         dist("requests 2.31", 'win-inet-pton; extra == "socks" and sys_platform == "win32"')],
        [], LINUX_311, [], id="extra-marker-excludes",
    ),
    # A requirement of the distribution itself is reported once, not again under each extra.
    pytest.param(
        [dist("app 1.0", "requests[socks]"), dist("requests 2.31", "urllib3>=9"), dist("urllib3 2.1")],
        [], LINUX_311, ["requests 2.31 requires urllib3>=9 (urllib3 2.1 is in the set)"], id="extra-no-repeat",
    ),
    # Nor when its marker holds with and without the extra.
    pytest.param(
        [dist("app 1.0", "requests[socks]"), dist("urllib3 2.1"),
         dist("requests 2.31", 'urllib3>=9; python_version >= "3" or extra == "socks"')],
        [], LINUX_311,
        ['requests 2.31 requires urllib3>=9; python_version >= "3" or extra == "socks" (urllib3 2.1 is in the set)'],
        id="extra-no-repeat-marker",
    ),
    # A distribution both checked and available (a run's wheel, in the wheelhouse) counts once.
    pytest.param([dist("app 1.0", "helper>=2"), dist("helper 1.0")], [dist("app 1.0", "helper>=2"), dist("helper 1.0")],
                 LINUX_311, ["app 1.0 requires helper>=2 (helper 1.0 is in the set)"], id="checked-and-available"),
    # pip check: a pre-release that is present satisfies a specifier that holds it...
    pytest.param([dist("app 1.0", "foo>=1.0,<3"), dist("foo 2.0b1")], [], LINUX_311, [], id="prerelease-present"),
    # ...but "<2" excludes 2.0's own pre-releases (PEP 440).
    pytest.param([dist("app 1.0", "foo<2"), dist("foo 2.0b1")], [], LINUX_311,
                 ["app 1.0 requires foo<2 (foo 2.0b1 is in the set)"], id="prerelease-outside"),
    pytest.param([dist("app 1.0", "urllib3<2")], [dist("urllib3 2.1"), dist("urllib3 1.26")], LINUX_311, [],
                 id="several-versions-one-satisfies"),
    pytest.param([dist("app 1.0", "urllib3>=3")], [dist("urllib3 1.26"), dist("urllib3 2.1")], LINUX_311,
                 ["app 1.0 requires urllib3>=3 (urllib3 1.26, 2.1 are in the set)"], id="several-versions-none"),
    # Available distributions satisfy requirements; their own are not checked.
    pytest.param([dist("app 1.0", "old")], [dist("old 1.0", "gone")], LINUX_311, [], id="available-not-checked"),
    # An extra is pulled from the run's satisfying distribution first...
    pytest.param(
        [dist("app 1.0", "foo[x]>=1"), dist("foo 1.0", 'a; extra == "x"')], [dist("foo 2.0", 'b; extra == "x"')],
        LINUX_311, ['foo[x] 1.0 requires a; extra == "x" (missing)'], id="extra-from-run-first",
    ),
    # ...else from the newest satisfying one available.
    pytest.param(
        [dist("app 1.0", "foo[x]>=2"), dist("foo 1.0", 'a; extra == "x"')],
        [dist("foo 2.0", 'b; extra == "x"'), dist("foo 3.0", 'c; extra == "x"')],
        LINUX_311, ['foo[x] 3.0 requires c; extra == "x" (missing)'], id="extra-from-newest-available",
    ),
    # Extras that pull each other end.
    pytest.param(
        [dist("app 1.0", "foo[a]"), dist("foo 1.0", 'foo[b]; extra == "a"', 'foo[a]; extra == "b"', 'z; extra == "b"')],
        [], LINUX_311, ['foo[b] 1.0 requires z; extra == "b" (missing)'], id="extras-cycle",
    ),
    pytest.param([dist("app 1.0", "foo @ https://example.org/foo-1.0.tar.gz"), dist("foo 1.0")], [], LINUX_311, [],
                 id="url-met"),
    pytest.param([dist("app 1.0", "foo @ https://example.org/foo-1.0.tar.gz")], [], LINUX_311,
                 ["app 1.0 requires foo @ https://example.org/foo-1.0.tar.gz (missing)"], id="url-missing"),
    # Of a distribution that requires nothing, the check keeps a name and version until a requirement names it:
    # the same findings as from whole distributions.
    pytest.param([dist("app 1.0", "lib<2"), dist("Lib 2.0")], [dist("lib 3.0")], LINUX_311,
                 ["app 1.0 requires lib<2 (Lib 2.0, 3.0 are in the set)"], id="conflict-among-kept-names"),
    pytest.param([dist("app 1.0", "lib<2"), dist("lib 2.0")], [dist("lib 2.0.0")], LINUX_311,
                 ["app 1.0 requires lib<2 (lib 2.0 is in the set)"], id="equal-versions-counted-once"),
    pytest.param([dist("app 1.0", "lib[fast]>=1"), dist("lib 1.0")],  # the run's, though the wheelhouse's is newer
                 [dist("lib 1.5", 'speedup; extra == "fast"')], LINUX_311, [], id="extra-from-the-run-kept-as-name"),
    pytest.param([dist("app 1.0", "lib[fast]>=1.2"), dist("lib 1.0")],
                 [dist("lib 1.5", 'speedup; extra == "fast"')], LINUX_311,
                 ['lib[fast] 1.5 requires speedup; extra == "fast" (missing)'], id="extra-from-the-wheelhouse"),
    pytest.param([dist("app 1.0", "lib[fast]>=1"), dist("lib 1.0", 'speedup; extra == "fast"')],
                 [dist("lib 1.5")], LINUX_311,
                 ['lib[fast] 1.0 requires speedup; extra == "fast" (missing)'], id="extra-from-the-run-first"),
]


@pytest.mark.parametrize(("checked", "available", "environment", "expected"), CHECKER_CASES)
def test_check(
    checked: list[Distribution], available: list[Distribution], environment: dict[str, str], expected: list[str]
) -> None:
    assert [str(unmet) for unmet in check(checked, environment, available=available)] == expected


def test_markers_are_evaluated_for_the_target_not_the_running_interpreter() -> None:
    marker = 'python_version < "3.9"'
    running = target_environment()  # packaging's default_environment(), as plain strings
    assert not Marker(marker).evaluate(), "this test needs a running Python >= 3.9"
    target = {**running, "python_version": "3.8", "python_full_version": "3.8.18"}
    [unmet] = check([dist("app 1.0", f"tomli; {marker}")], target)
    assert (unmet.problem, unmet.requirement) == (Problem.MISSING, f"tomli; {marker}")
    assert check([dist("app 1.0", f"tomli; {marker}")], running) == ()


def test_a_finding_holds_who_needs_what_and_why() -> None:
    [unmet] = check([dist("app 2.0", "requests[socks]"), dist("requests 2.31", 'pysocks<2; extra == "socks"'),
                     dist("PySocks 2.1")], LINUX_311)
    assert (unmet.requirer, unmet.requirer_version, unmet.extra) == ("requests", Version("2.31"), "socks")
    assert (unmet.problem, unmet.requirement) == (Problem.CONFLICT, 'pysocks<2; extra == "socks"')
    assert [(d.name, d.version) for d in unmet.present] == [("PySocks", Version("2.1"))]


@pytest.mark.parametrize("requirement", ["bad >>> 1", "foo; python_version ~= 'x.y'"])
def test_an_invalid_requirement_is_a_finding(requirement: str) -> None:
    # Reported once, not again under the extra asked of it.
    [unmet] = check([dist("app 1.0", requirement, extras=("socks",))], LINUX_311)
    assert unmet.problem is Problem.INVALID and unmet.detail and unmet.extra is None
    assert str(unmet).startswith(f"app 1.0 requires {requirement} (not a valid requirement: ")


# Readers: real wheel files.


def test_read_wheel(tmp_path: Path) -> None:
    path = write_wheel(tmp_path, "My.App", "1.0rc1", requires_dist=['urllib3>=2; python_version >= "3.8"', "idna"])
    wheel = read_wheel(path)
    assert (wheel.name, wheel.version) == ("My.App", Version("1.0rc1"))
    assert wheel.requires_dist == ('urllib3>=2; python_version >= "3.8"', "idna")
    assert {str(tag) for tag in wheel.tags} == {"py3-none-any"}
    assert wheel.requires_python is None


def test_a_wheel_whose_metadata_contradicts_its_file_name_is_refused(tmp_path: Path) -> None:
    path = write_wheel(tmp_path, "app", "1.0")
    renamed = path.rename(tmp_path / "app-2.0-py3-none-any.whl")
    with pytest.raises(WheelError) as caught:
        read_wheel(renamed)
    assert str(caught.value).startswith(f"{renamed}: METADATA says app 1.0 but the file name says app 2.0;")


@pytest.mark.parametrize(
    ("file_name", "fault", "message"),
    [
        ("app-1.0-py3-none-any.whl", "truncate", "cannot read the wheel"),
        ("app-1.0.whl", None, "not a wheel's file name"),
        ("app-1.0-py3-none-any.whl", "no-metadata", "no *.dist-info/METADATA in the wheel"),
    ],
)
def test_an_unreadable_wheel_is_named(tmp_path: Path, file_name: str, fault: str | None, message: str) -> None:
    path = write_wheel(tmp_path, "app", "1.0", corrupt="truncate" if fault == "truncate" else None)
    if fault == "no-metadata":
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(tmp_path / "stripped.whl", "w") as stripped:
            for member in source.namelist():
                if not member.endswith("/METADATA"):
                    stripped.writestr(member, source.read(member))
        (tmp_path / "stripped.whl").replace(path)
    path = path.rename(tmp_path / file_name)
    with pytest.raises(WheelError) as caught:
        read_wheel(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


def test_check_wheels_of_a_run_against_a_wheelhouse_with_several_versions(tmp_path: Path) -> None:
    house = tmp_path / "house"
    house.mkdir()
    write_wheel(house, "urllib3", "1.26.18")
    write_wheel(house, "urllib3", "2.1.0")
    write_wheel(house, "stale", "0.1", requires_dist=["gone"])  # not part of this run: not checked
    run = [
        write_wheel(house, "app", "1.0", requires_dist=["urllib3<2", "idna>=3", "helper"]),
        write_wheel(house, "helper", "1.0", requires_dist=['certifi; extra == "tls"']),
    ]
    found = check_wheels(run, LINUX_311, wheelhouse=house)
    assert [str(unmet) for unmet in found] == ["app 1.0 requires idna>=3 (missing)"]
    # Extras asked from outside (a requirements file's helper[TLS]) are canonicalised.
    found = check_wheels(run, LINUX_311, wheelhouse=house, extras={"Helper": ["TLS"]})
    assert [str(unmet) for unmet in found] == [
        "app 1.0 requires idna>=3 (missing)", 'helper[tls] 1.0 requires certifi; extra == "tls" (missing)',
    ]
    # Without the wheelhouse only the run counts.
    assert [str(unmet) for unmet in check_wheels(run, LINUX_311)] == [
        "app 1.0 requires urllib3<2 (missing)", "app 1.0 requires idna>=3 (missing)",
    ]


def test_check_wheels_reads_each_wheel_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's wheels are in the wheelhouse too: a run's end read each of them twice."""
    house = tmp_path / "house"
    house.mkdir()
    other = write_wheel(house, "helper", "1.0")
    run = [write_wheel(house, "app", "1.0", requires_dist=["helper"]), write_wheel(house, "tool", "2.0")]
    opened: list[str] = []

    def counted(path: Path) -> WheelMetadata:
        opened.append(path.name)
        return read_wheel(path)

    monkeypatch.setattr(distributions, "read_wheel", counted)
    assert check_wheels(run, LINUX_311, wheelhouse=house) == ()
    assert sorted(opened) == sorted(path.name for path in (*run, other))


def test_wheel_distributions_keep_the_metadata_spelling(tmp_path: Path) -> None:
    [found] = wheel_distributions([write_wheel(tmp_path, "Zope.Interface", "6.0", requires_dist=["setuptools"])])
    assert found == Distribution(name="Zope.Interface", version=Version("6.0"), requires_dist=("setuptools",))


# Readers: a real virtualenv, wheels installed by pip.


def _site_packages(python: Path) -> list[Path]:
    script = "import json, sysconfig; p = sysconfig.get_paths(); print(json.dumps([p['purelib'], p['platlib']]))"
    out = subprocess.run([python, "-I", "-c", script], capture_output=True, text=True, check=True).stdout
    return [Path(path) for path in json.loads(out)]


def test_check_installed_reads_what_pip_installed(tmp_path: Path) -> None:
    env = tmp_path / "env"
    venv.create(env, with_pip=False, symlinks=os.name != "nt")
    python = env / "bin" / "python"
    wheels = [
        write_wheel(tmp_path, "app", "1.0", requires_dist=["urllib3>=2", "idna<3", 'pywin32; sys_platform == "win32"']),
        write_wheel(tmp_path, "idna", "3.6"),
        write_wheel(tmp_path, "lib", "2.0", requires_dist=["idna"]),
    ]
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "-q", "--no-index", "--no-deps", *map(str, wheels)], check=True, timeout=120)

    installed = installed_distributions(_site_packages(python))
    assert {(d.name, str(d.version)) for d in installed} == {("app", "1.0"), ("idna", "3.6"), ("lib", "2.0")}
    found = check_installed(_site_packages(python), target_environment(python))
    assert [str(unmet) for unmet in found] == [
        "app 1.0 requires urllib3>=2 (missing)", "app 1.0 requires idna<3 (idna 3.6 is in the set)",
    ]
    # pip check, reading the same folders, finds the same two.
    pip_check = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=120)
    assert pip_check.returncode == 1
    assert sorted(line.split(",")[0] for line in pip_check.stdout.splitlines()) == [
        "app 1.0 has requirement idna<3", "app 1.0 requires urllib3",
    ]


def test_installed_distributions_read_dist_info_and_egg_info(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    (site / "app-1.0.dist-info").mkdir(parents=True)
    (site / "app-1.0.dist-info" / "METADATA").write_text("Name: app\nVersion: 1.0\nRequires-Dist: legacy[socks]>=2\n")
    (site / "legacy-2.0.egg-info").mkdir()
    (site / "legacy-2.0.egg-info" / "PKG-INFO").write_text("Name: legacy\nVersion: 2.0\n")
    (site / "legacy-2.0.egg-info" / "requires.txt").write_text("six\n\n[socks]\nPySocks\n")
    assert [str(unmet) for unmet in check_installed([site, site], LINUX_311)] == [
        "legacy 2.0 requires six (missing)", 'legacy[socks] 2.0 requires PySocks; extra == "socks" (missing)',
    ]


def test_an_installed_distribution_in_two_folders_is_the_first_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folders = [tmp_path / "purelib", tmp_path / "platlib"]
    for folder, version in zip(folders, ["2.0", "1.0"]):
        (folder / f"App-{version}.dist-info").mkdir(parents=True)
        (folder / f"App-{version}.dist-info" / "METADATA").write_text(f"Name: App\nVersion: {version}\n")
    assert [str(d.version) for d in installed_distributions(folders)] == ["2.0"]
    assert f"{folders[1] / 'App-1.0.dist-info'} is shadowed by {folders[0] / 'App-2.0.dist-info'}" in caplog.text


@pytest.mark.parametrize("metadata", ["", "Name: app\n", "Name: app\nVersion: one\n"])
def test_an_installed_distribution_without_name_and_version_is_named(tmp_path: Path, metadata: str) -> None:
    info = tmp_path / "app-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(metadata)
    with pytest.raises(WheelError) as caught:
        installed_distributions([tmp_path])
    assert str(caught.value).startswith(f"{info} has no valid Name and Version; ")


# The target interpreter's marker environment.


def test_target_environment_of_this_interpreter_is_packagings() -> None:
    assert target_environment(sys.executable) == default_environment()
    assert target_environment() == default_environment()


OTHER_PYTHONS = [Path("/root/.pyenv/versions/3.12.1/bin/python3"), Path("/root/.pyenv/versions/3.8.18/bin/python3")]


@pytest.mark.parametrize("python", OTHER_PYTHONS, ids=lambda path: path.parts[-3])
def test_target_environment_of_another_interpreter(python: Path) -> None:
    if not python.exists():
        pytest.skip(f"{python} is not installed here")
    full_version = python.parts[-3]
    if full_version.startswith(f"{sys.version_info[0]}.{sys.version_info[1]}."):
        pytest.skip("the same minor version as the running interpreter")
    environment = target_environment(python)
    assert environment.keys() == default_environment().keys()
    assert environment["python_full_version"] == full_version
    assert environment["python_version"] == ".".join(full_version.split(".")[:2])
    assert environment["python_version"] != default_environment()["python_version"]
    requirement = f'tomli; python_version == "{environment["python_version"]}"'
    assert [unmet.problem for unmet in check([dist("app 1.0", requirement)], environment)] == [Problem.MISSING]
    assert check([dist("app 1.0", requirement)], target_environment()) == ()


@pytest.mark.parametrize("python", ["false", "missing"])
def test_target_environment_of_a_broken_interpreter_is_a_usage_error(tmp_path: Path, python: str) -> None:
    path = shutil.which("false") if python == "false" else str(tmp_path / "no-such-python")
    assert path is not None
    with pytest.raises(UsageError) as caught:
        target_environment(path)
    assert str(caught.value).startswith(f"{path}: cannot read its marker environment (")
