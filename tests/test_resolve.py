"""The binary policy (pure logic, checked against pip's own FormatControl) and the resolvers
(real pip, real uv, a real index on 127.0.0.1 serving wheels and sdists that declare dependencies)."""

from __future__ import annotations

import glob
import hashlib
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from index_server import IndexServer
from sdists import make_sdist, make_tree
from wheels import write_wheel

from orchestrator.build.envs import find_uv
from orchestrator.download.binary import BinaryOption, BinaryPolicy
from orchestrator.download.requirements import parse_requirements
from orchestrator.download.resolve import (
    ArtifactKind,
    Resolution,
    ResolvedDistribution,
    resolve,
)
from orchestrator.download.uv_resolve import resolve_with_uv
from orchestrator.download.wanted import Requirements, read_requirements, resolve_pins
from orchestrator.errors import ResolutionError, UsageError
from orchestrator.report import RunReport
from orchestrator.settings import IndexSettings

# --- the binary policy --------------------------------------------------------------------

W, S, B = "wheel", "sdist", "both"
"""Allowed formats: wheels only, sdists only, either."""


def _allowed(policy: BinaryPolicy, name: str) -> str:
    wheel, sdist = policy.allows_wheel(name), policy.allows_sdist(name)
    assert wheel or sdist, "a policy always allows some format"
    return B if wheel and sdist else W if wheel else S


@pytest.mark.parametrize(
    ("options", "packages", "expected"),
    [
        ([], {}, {"foo": B, "bar": B}),
        ([("--no-binary", ":all:")], {}, {"foo": S, "bar": S}),
        ([("--only-binary", ":all:")], {}, {"foo": W, "bar": W}),
        # a name beats :all:, whichever list it is in
        ([("--no-binary", ":all:"), ("--only-binary", "foo")], {}, {"foo": W, "bar": S}),
        ([("--only-binary", ":all:"), ("--no-binary", "Foo_Bar")], {}, {"foo-bar": S, "bar": W}),
        # a later :all: clears both lists
        ([("--only-binary", "foo"), ("--no-binary", ":all:")], {}, {"foo": S, "bar": S}),
        # :none: clears its own list, :all: included
        ([("--no-binary", ":all:"), ("--no-binary", ":none:")], {}, {"foo": B}),
        ([("--no-binary", "foo,bar"), ("--no-binary", ":none:")], {}, {"foo": B, "bar": B}),
        # ... and not the other one
        ([("--only-binary", ":all:"), ("--no-binary", ":none:")], {}, {"foo": W}),
        # a name moves from one list to the other; the last word wins
        ([("--no-binary", "foo"), ("--only-binary", "foo")], {}, {"foo": W, "bar": B}),
        ([("--only-binary", "foo,bar"), ("--no-binary", "foo")], {}, {"foo": S, "bar": W}),
        # within one value, items apply left to right
        ([("--no-binary", ":all:,:none:,foo")], {}, {"foo": S, "bar": B}),
        # per-package settings refine the command line, and :all: does not erase them
        ([("--no-binary", ":all:")], {"numpy": "binary"}, {"numpy": W, "foo": S}),
        ([], {"Foo": "source", "bar": "binary"}, {"foo": S, "bar": W, "baz": B}),
        # but a name on the command line beats the setting of that package
        ([("--only-binary", "foo")], {"foo": "source"}, {"foo": W}),
        # unless the command line cleared it again
        ([("--only-binary", "foo"), ("--only-binary", ":none:")], {"foo": "source"}, {"foo": S}),
    ],
)
def test_binary_policy(options: list[tuple[BinaryOption, str]], packages: dict[str, str],
                       expected: dict[str, str]) -> None:
    policy = BinaryPolicy.from_options(options, packages=packages)
    assert {name: _allowed(policy, name) for name in expected} == expected


@pytest.mark.parametrize(
    ("options", "packages", "named"),
    [
        ([("--no-binary", "")], {}, "--no-binary"),  # an empty value
        ([("--only-binary", "--prefer-binary")], {}, "--only-binary"),  # the next option taken as the value
        ([("--no-binary", ":any:")], {}, ":any:"),  # pip has no :any:
        ([("--no-binary", "foo,,bar")], {}, "foo,,bar"),  # an empty item
        ([("--only-binary", "foo bar")], {}, "foo bar"),  # not a project name
        ([], {"numpy": "prefer"}, "numpy"),  # pip has no per-package --prefer-binary
        ([], {"numpy": "wheel"}, "'wheel'"),  # the values are pip's format names
        ([], {"not a name": "binary"}, "not a name"),
    ],
)
def test_binary_policy_refuses(options: list[tuple[BinaryOption, str]], packages: dict[str, str], named: str) -> None:
    with pytest.raises(UsageError) as caught:
        BinaryPolicy.from_options(options, packages=packages)
    assert named in caught.value.message
    assert "\n" not in caught.value.message


@pytest.mark.parametrize(
    ("policy", "args"),
    [
        (BinaryPolicy(), []),
        (BinaryPolicy.from_options(prefer_binary=True), ["--prefer-binary"]),
        (
            BinaryPolicy.from_options([("--no-binary", ":all:"), ("--only-binary", "b,a")]),
            ["--no-binary", ":all:", "--only-binary", "a,b"],
        ),
        (
            BinaryPolicy.from_options([("--no-binary", "x")], packages={"y": "binary"}),
            ["--no-binary", "x", "--only-binary", "y"],
        ),
    ],
)
def test_binary_policy_pip_args(policy: BinaryPolicy, args: list[str]) -> None:
    assert policy.pip_args() == args


NAMES = ["a", "b", "c"]
_values = st.lists(st.sampled_from([":all:", ":none:", *NAMES]), min_size=1, max_size=4).map(",".join)
_options = st.lists(st.tuples(st.sampled_from(["--no-binary", "--only-binary"]), _values), max_size=6)


def _pip_formats(options: Sequence[tuple[str, str]]) -> dict[str, frozenset[str]]:
    """What pip's own FormatControl allows after the same options: the oracle."""
    from pip._internal.models.format_control import FormatControl

    control = FormatControl()
    for option, value in options:
        if option == "--no-binary":
            FormatControl.handle_mutual_excludes(value, control.no_binary, control.only_binary)
        else:
            FormatControl.handle_mutual_excludes(value, control.only_binary, control.no_binary)
    return {name: control.get_allowed_formats(name) for name in NAMES}


def _formats(policy: BinaryPolicy) -> dict[str, frozenset[str]]:
    return {
        name: frozenset(
            fmt for fmt, allowed in (("binary", policy.allows_wheel(name)), ("source", policy.allows_sdist(name)))
            if allowed
        )
        for name in NAMES
    }


@settings(max_examples=300, deadline=None)
@given(_options)
def test_binary_policy_agrees_with_pip(options: list[tuple[BinaryOption, str]]) -> None:
    policy = BinaryPolicy.from_options(options)
    assert _formats(policy) == _pip_formats(options)
    # pip reading pip_args() ends where the policy is
    args = policy.pip_args()
    assert _pip_formats(list(zip(args[::2], args[1::2]))) == _formats(policy)


# --- the resolver ---------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("hermetic_pip")


class Index:
    """The test index and the files it serves, with their sha256."""

    def __init__(self, server: IndexServer, folder: Path) -> None:
        self.server = server
        self.folder = folder
        self.sha256: dict[str, str] = {}

    def serve(self, path: Path) -> None:
        self.sha256[path.name] = self.server.add(path.name, path.read_bytes())

    @property
    def settings(self) -> IndexSettings:
        return IndexSettings(index_url=self.server.simple_url)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Index]:
    folder = tmp_path_factory.mktemp("index")
    with IndexServer() as server:
        served = Index(server, folder)
        top_requires = ["wonly", "sonly>=1", "absent; python_version < '3'"]
        for path in [
            # top needs a wheel-only and an sdist-only package, and one no Python 3 needs
            write_wheel(folder, "top", requires_dist=top_requires),
            make_sdist(folder, "top", requires_dist=top_requires),
            write_wheel(folder, "wonly"),
            make_sdist(folder, "sonly", requires_dist=["both"]),
            write_wheel(folder, "both"),
            make_sdist(folder, "both"),
            # a wheel for Python 2.7 only, beside an sdist
            write_wheel(folder, "oldtag", tag="cp27-none-any"),
            make_sdist(folder, "oldtag"),
            # a wheel for the next minor version only, beside an sdist
            write_wheel(folder, "nexttag", tag=_python_tag(_other_python_version())),
            make_sdist(folder, "nexttag"),
            # a == 1 needs c < 2, b == 1 needs c >= 2
            write_wheel(folder, "a", requires_dist=["c<2"]),
            write_wheel(folder, "b", requires_dist=["c>=2"]),
            write_wheel(folder, "c", "1.0"),
            write_wheel(folder, "c", "2.0"),
            # the newest version has only an sdist
            write_wheel(folder, "pref", "1.0"),
            make_sdist(folder, "pref", "2.0"),
        ]:
            served.serve(path)
        yield served


def _python_tag(version: tuple[int, int] | None) -> str:
    major, minor = version or (2, 6)
    return f"py{major}{minor}-none-any"


def _other_python() -> Path | None:
    """An interpreter of a newer minor version (whose ``pyXY`` tag this one does not take), if any."""
    newer = [
        (int(Path(candidate).parts[-3].split(".")[1]), Path(candidate))
        for candidate in glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3"))
        if int(Path(candidate).parts[-3].split(".")[1]) > sys.version_info.minor
    ]
    return min(newer)[1] if newer else None


def _other_python_version() -> tuple[int, int] | None:
    python = _other_python()
    if python is None:
        return None
    return (3, int(python.parts[-3].split(".")[1]))


def _requirements(tmp_path: Path, text: str, name: str = "requirements.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _kinds(resolution: Resolution) -> dict[str, tuple[str, str]]:
    return {item.name: (item.version, item.kind.value) for item in resolution.distributions}


def test_dependencies_resolve_to_wheels_and_sdists(index: Index, tmp_path: Path) -> None:
    resolution = resolve([_requirements(tmp_path, "top\n")], index=index.settings)
    assert _kinds(resolution) == {
        "top": ("1.0", "wheel"),
        "wonly": ("1.0", "wheel"),
        "sonly": ("1.0", "sdist"),
        "both": ("1.0", "wheel"),
    }
    records: dict[str, ResolvedDistribution] = {item.name: item for item in resolution.distributions}
    assert [name for name, item in records.items() if item.requested] == ["top"]
    assert records["top"].requires_dist == ("wonly", "sonly>=1", "absent; python_version < '3'")
    assert records["sonly"].requires_dist == ("both",)
    for item in resolution.distributions:
        assert item.url == index.server.file_url(item.filename)
        assert item.sha256 == index.sha256[item.filename]
        assert item.path is None and not item.is_direct
    assert records["sonly"].filename == "sonly-1.0.tar.gz"
    assert resolution.environment["python_version"] == "%d.%d" % sys.version_info[:2]
    assert all(item.extras == frozenset() for item in resolution.distributions)


def test_the_extras_asked_are_kept(index: Index, tmp_path: Path) -> None:
    resolution = resolve([_requirements(tmp_path, "top[Fast,cli]\n")], index=index.settings)
    assert {str(item.name): item.extras for item in resolution.distributions}["top"] == frozenset({"fast", "cli"})


@pytest.mark.parametrize("json_api", [True, False], ids=["json", "html"])
def test_core_metadata_spares_whole_wheels(tmp_path: Path, json_api: bool) -> None:
    """From an index with PEP 658 metadata files, pip reads wheels' METADATA and downloads no wheel."""
    with IndexServer(core_metadata=True, json_api=json_api) as server:
        for path in [write_wheel(tmp_path, "top", requires_dist=["wonly", "sonly"]), write_wheel(tmp_path, "wonly"),
                     make_sdist(tmp_path, "sonly")]:
            server.add(path.name, path.read_bytes())
        resolution = resolve(
            [_requirements(tmp_path, "top\n")], index=IndexSettings(index_url=server.simple_url)
        )
        assert _kinds(resolution) == {"top": ("1.0", "wheel"), "wonly": ("1.0", "wheel"), "sonly": ("1.0", "sdist")}
        for wheel in ("top-1.0-py3-none-any.whl", "wonly-1.0-py3-none-any.whl"):
            assert (server.downloads(wheel), server.downloads(f"{wheel}.metadata")) == (0, 1)
        assert server.downloads("sonly-1.0.tar.gz") == 1  # an sdist's metadata takes the sdist


def test_a_compatible_wheel_is_chosen_over_the_sdist(index: Index, tmp_path: Path) -> None:
    resolution = resolve([_requirements(tmp_path, "both\n")], index=index.settings)
    assert [(item.filename, item.kind) for item in resolution.distributions] == [
        ("both-1.0-py3-none-any.whl", ArtifactKind.WHEEL)
    ]


def test_an_incompatible_wheel_leaves_the_sdist(index: Index, tmp_path: Path) -> None:
    resolution = resolve([_requirements(tmp_path, "oldtag\n")], index=index.settings)
    assert [item.filename for item in resolution.distributions] == ["oldtag-1.0.tar.gz"]


@pytest.mark.skipif(_other_python() is None, reason="no interpreter of another minor version")
def test_the_target_interpreter_decides_which_wheel_fits(index: Index, tmp_path: Path) -> None:
    requirements = _requirements(tmp_path, "nexttag\n")
    version = _other_python_version()
    assert version is not None
    here = resolve([requirements], index=index.settings)
    there = resolve([requirements], index=index.settings, python=_other_python())
    assert [item.kind for item in here.distributions] == [ArtifactKind.SDIST]
    assert [item.filename for item in there.distributions] == [f"nexttag-1.0-{_python_tag(version)}.whl"]
    assert there.environment["python_version"] == "%d.%d" % version


def test_no_binary_all_names_the_wheel_only_dependency(index: Index, tmp_path: Path) -> None:
    with pytest.raises(ResolutionError) as caught:
        resolve(
            [_requirements(tmp_path, "top\n")],
            index=index.settings,
            binary=BinaryPolicy.from_options([("--no-binary", ":all:")]),
        )
    message = caught.value.message
    assert "wonly" in message and "--no-binary :all: allows only sdists of wonly" in message
    assert str(tmp_path / "requirements.txt") in message
    assert "\n" not in message and "Traceback" not in message
    assert "No matching distribution found for wonly" in caught.value.output


def test_only_binary_all_names_the_sdist_only_dependency(index: Index, tmp_path: Path) -> None:
    with pytest.raises(ResolutionError) as caught:
        resolve(
            [_requirements(tmp_path, "top\n")],
            index=index.settings,
            binary=BinaryPolicy.from_options([("--only-binary", ":all:")]),
        )
    message = caught.value.message
    assert "sonly>=1 (from top)" in message and "--only-binary :all: allows only wheels of sonly" in message
    assert "\n" not in message


def test_a_package_setting_lets_one_wheel_into_a_farm(index: Index, tmp_path: Path) -> None:
    policy = BinaryPolicy.from_options([("--no-binary", ":all:")], packages={"wonly": "binary"})
    resolution = resolve([_requirements(tmp_path, "top\n")], index=index.settings, binary=policy)
    assert _kinds(resolution) == {
        "top": ("1.0", "sdist"),
        "wonly": ("1.0", "wheel"),
        "sonly": ("1.0", "sdist"),
        "both": ("1.0", "sdist"),
    }


def test_prefer_binary_takes_an_older_wheel(index: Index, tmp_path: Path) -> None:
    requirements = [_requirements(tmp_path, "pref\n")]
    newest = resolve(requirements, index=index.settings)
    preferred = resolve(requirements, index=index.settings, binary=BinaryPolicy.from_options(prefer_binary=True))
    assert _kinds(newest) == {"pref": ("2.0", "sdist")}
    assert _kinds(preferred) == {"pref": ("1.0", "wheel")}


def test_a_conflict_names_both_requirements(index: Index, tmp_path: Path) -> None:
    with pytest.raises(ResolutionError) as caught:
        resolve([_requirements(tmp_path, "a==1.0\nb==1.0\n")], index=index.settings)
    message = caught.value.message
    assert "a 1.0 depends on c<2" in message and "b 1.0 depends on c>=2" in message
    assert "\n" not in message and "Traceback" not in message
    assert pickle.loads(pickle.dumps(caught.value)).output == caught.value.output


def test_an_sdist_whose_metadata_fails_is_named(index: Index, tmp_path: Path) -> None:
    index.serve(make_sdist(index.folder, "broken", fail=True))
    with pytest.raises(ResolutionError) as caught:
        resolve([_requirements(tmp_path, "broken\n")], index=index.settings)
    message = caught.value.message
    assert message.endswith("generating package metadata: broken") and "\n" not in message
    assert "fake backend asked to fail" in caught.value.output


def test_a_marker_excludes_a_requirement(index: Index, tmp_path: Path) -> None:
    # "absent" (required by top only for Python 2) and "missing" are on no index
    resolution = resolve([_requirements(tmp_path, "top\nmissing; python_version < '3'\n")], index=index.settings)
    assert "absent" not in _kinds(resolution) and "missing" not in _kinds(resolution)
    assert "top" in _kinds(resolution)


def test_a_constraints_file_bounds_a_dependency(index: Index, tmp_path: Path) -> None:
    requirements = [_requirements(tmp_path, "c\n")]
    constraints = [_requirements(tmp_path, "c<2\n", "constraints.txt")]
    assert _kinds(resolve(requirements, index=index.settings)) == {"c": ("2.0", "wheel")}
    assert _kinds(resolve(requirements, constraint_files=constraints, index=index.settings)) == {"c": ("1.0", "wheel")}


def test_no_deps_resolves_what_is_listed(index: Index, tmp_path: Path) -> None:
    resolution = resolve([_requirements(tmp_path, "top\n")], index=index.settings, no_deps=True)
    assert _kinds(resolution) == {"top": ("1.0", "wheel")}


def test_require_hashes_is_passed_to_pip(index: Index, tmp_path: Path) -> None:
    right = index.sha256["wonly-1.0-py3-none-any.whl"]
    resolution = resolve(
        [_requirements(tmp_path, f"wonly==1.0 --hash=sha256:{right}\n")], index=index.settings, require_hashes=True
    )
    assert [item.sha256 for item in resolution.distributions] == [right]
    with pytest.raises(ResolutionError) as caught:
        resolve([_requirements(tmp_path, "wonly==1.0\n")], index=index.settings, require_hashes=True)
    assert "missing for wonly==1.0" in caught.value.message and "\n" not in caught.value.message
    with pytest.raises(ResolutionError) as caught:
        resolve([_requirements(tmp_path, f"wonly==1.0 --hash=sha256:{'0' * 64}\n")], index=index.settings)
    message = caught.value.message
    assert f"wonly==1.0 from {index.server.file_url('wonly-1.0-py3-none-any.whl')}" in message
    assert "\n" not in message


def test_local_files_and_folders(index: Index, tmp_path: Path) -> None:
    wheel = write_wheel(tmp_path, "localwheel", requires_dist=["wonly"])
    sdist = make_sdist(tmp_path / "dist", "localsdist")
    tree = make_tree(tmp_path / "src" / "localtree", "localtree")
    resolution = resolve([_requirements(tmp_path, f"{wheel}\n{sdist}\n{tree}\n")], index=index.settings)
    records: dict[str, ResolvedDistribution] = {item.name: item for item in resolution.distributions}
    assert {name: (item.kind, item.path, item.is_direct) for name, item in records.items()} == {
        "localwheel": (ArtifactKind.WHEEL, wheel, True),
        "localsdist": (ArtifactKind.SDIST, sdist, True),
        "localtree": (ArtifactKind.TREE, tree, True),
        "wonly": (ArtifactKind.WHEEL, None, False),
    }
    assert records["localwheel"].sha256 == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert records["localtree"].sha256 is None


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_vcs_requirement(tmp_path: Path) -> None:
    repository = make_tree(tmp_path / "repository", "fromgit")
    git = ["git", "-C", str(repository), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "fromgit 1.0"]):
        subprocess.run([*git, *args], check=True)
    requirement = f"fromgit @ git+{repository.as_uri()}\n"
    resolution = resolve([_requirements(tmp_path, requirement)], index=IndexSettings(no_index=True))
    [record] = resolution.distributions
    assert (record.name, record.kind, record.url, record.path, record.is_direct) == (
        "fromgit", ArtifactKind.VCS, repository.as_uri(), None, True
    )


def test_find_links_wheels_are_local_files(tmp_path: Path) -> None:
    links = tmp_path / "links"
    links.mkdir()
    wheel = write_wheel(links, "linked", requires_dist=["other"])
    sdist = make_sdist(links, "other")
    resolution = resolve(
        [_requirements(tmp_path, "linked\n")], index=IndexSettings(no_index=True, find_links=(str(links),))
    )
    assert {item.name: (item.kind, item.path, item.is_direct) for item in resolution.distributions} == {
        "linked": (ArtifactKind.WHEEL, wheel, False),
        "other": (ArtifactKind.SDIST, sdist, False),
    }


@pytest.mark.parametrize("text", ["", "# nothing\n", "top; python_version < '3'\n"])
def test_nothing_to_resolve_is_a_usage_error(index: Index, tmp_path: Path, text: str) -> None:
    requirements = _requirements(tmp_path, text)
    with pytest.raises(UsageError) as caught:
        resolve([requirements], index=index.settings)
    assert str(requirements) in caught.value.message and "\n" not in caught.value.message


def test_pip_settings_of_the_user_apply(index: Index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's pip configuration is theirs: an index given only through PIP_INDEX_URL is used."""
    monkeypatch.setenv("PIP_INDEX_URL", index.server.simple_url)
    assert _kinds(resolve([_requirements(tmp_path, "wonly\n")])) == {"wonly": ("1.0", "wheel")}


def test_pip_refusing_an_option_is_one_line(tmp_path: Path) -> None:
    requirements = _requirements(tmp_path, "wonly\n--no-such-option\n")
    with pytest.raises(ResolutionError) as caught:
        resolve([requirements], index=IndexSettings(no_index=True))
    assert "no-such-option" in caught.value.message and "\n" not in caught.value.message


def test_a_missing_pip_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """orchestrate installed as a tool (``uv tool install``) may have no pip beside it."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "nopip")], check=True)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "nopip" / "bin" / "python"))
    with pytest.raises(ResolutionError) as caught:
        resolve([_requirements(tmp_path, "wonly\n")], index=IndexSettings(no_index=True))
    assert f"pip is not installed for {sys.executable}" in caught.value.message


# --- uv's resolver ------------------------------------------------------------------------

needs_uv = pytest.mark.skipif(find_uv() is None, reason="uv is not installed")


@needs_uv
def test_uv_pins_the_dependencies_and_keeps_what_the_files_say(index: Index, tmp_path: Path) -> None:
    sha = "a" * 64
    requirements = _requirements(tmp_path, f"top[cli]\nboth==1.0 --hash=sha256:{sha}\n")
    pins = {str(pin.name): pin for pin in resolve_with_uv([requirements], binary=BinaryPolicy(), index=index.settings,
                                                         python=Path(sys.executable))}
    assert {name: pin.version for name, pin in pins.items()} == {
        "top": "1.0", "wonly": "1.0", "sonly": "1.0", "both": "1.0"}
    assert pins["top"].origin == f"{requirements}:1" and pins["top"].extras == frozenset({"cli"})
    assert pins["both"].origin == f"{requirements}:2" and pins["both"].hashes == frozenset({sha})
    assert pins["wonly"].origin == f"{requirements} (a dependency)" and pins["wonly"].hashes == frozenset()
    assert all(pin.url is None and pin.path is None for pin in pins.values())  # the finder chooses each file


@needs_uv
@pytest.mark.parametrize(
    ("text", "options", "named"),
    [
        ("top\n", [("--no-binary", ":all:")], "wonly"),
        ("top\n", [("--only-binary", ":all:")], "sonly"),
        ("a==1.0\nb==1.0\n", [], "c"),
    ],
    ids=["no-binary-all", "only-binary-all", "conflict"],
)
def test_uv_failures_are_one_line_naming_the_requirement(
    index: Index, tmp_path: Path, text: str, options: list[tuple[BinaryOption, str]], named: str
) -> None:
    with pytest.raises(ResolutionError) as caught:
        resolve_with_uv([_requirements(tmp_path, text)], binary=BinaryPolicy.from_options(options),
                        index=index.settings, python=Path(sys.executable))
    message = caught.value.message
    assert message.startswith(f"cannot resolve {tmp_path / 'requirements.txt'}: ")
    assert "\n" not in message and named in message, message
    assert "×" not in message and "╰" not in message


@needs_uv
@pytest.mark.parametrize("where", ["command line", "file"])
def test_uv_failing_on_a_dead_extra_index_names_it_and_what_to_do(
        index: Index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    # pip warns about an extra index that does not answer and goes on; uv's resolver stops, and its message
    # ("Failed to fetch: ... Connection refused") said neither that the index is an extra one nor what to do.
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")  # uv's retries would take 10 s
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://user:secret@127.0.0.1:{closed.getsockname()[1]}/simple"
    option = f"--extra-index-url {dead}\n" if where == "file" else ""
    requirements = _requirements(tmp_path, f"{option}top\n")
    extra = () if where == "file" else (dead,)
    settings = IndexSettings(index_url=index.server.simple_url,  # merged with the file's, as the commands do
                             extra_index_urls=(*extra, *parse_requirements([requirements]).index.extra_index_urls))
    with pytest.raises(ResolutionError) as caught:
        resolve_with_uv([requirements], binary=BinaryPolicy(), index=settings, python=Path(sys.executable))
    message = caught.value.message
    assert "\n" not in message and "secret" not in message, message
    shown = dead.replace("user:secret@", "user:****@")
    assert f"the extra index {shown} did not answer" in message, message
    assert message.endswith("fix or drop that --extra-index-url, or use --resolver pip (and, to build, "
                            "--installer pip), which warn and go on")


@pytest.mark.parametrize(
    ("options", "args"),
    [
        ([], []),
        ([("--no-binary", ":all:"), ("--only-binary", "foo,bar")],
         ["--no-binary", ":all:", "--only-binary", "bar", "--only-binary", "foo"]),
        ([("--no-binary", "x,y")], ["--no-binary", "x", "--no-binary", "y"]),
        ([("--only-binary", ":all:")], ["--only-binary", ":all:"]),
    ],
)
def test_uv_binary_arguments(options: list[tuple[BinaryOption, str]], args: list[str]) -> None:
    assert BinaryPolicy.from_options(options).uv_args() == args


def _read(path: Path, resolver: Literal["auto", "pip", "uv"], constraints: tuple[Path, ...] = (),
          pre: bool = False) -> Requirements:
    requirements = read_requirements((path,), verb="build", require_hashes=False, constraints=constraints,
                                     no_deps=False, no_binary=(), only_binary=(), prefer_binary=False,
                                     pre=pre, resolver=resolver, overrides={})
    assert requirements is not None
    return requirements


@needs_uv
def test_a_requirement_continued_on_the_next_line_is_resolved_as_pip_reads_it(index: Index, tmp_path: Path) -> None:
    # uv 0.13 refuses `name \` then `>=1.0` ("Couldn't parse requirement"), which pip joins: real files have them.
    path = _requirements(tmp_path, "top \\\n    >=1.0\n")
    events: list[str] = []
    pins, _ = resolve_pins(_read(path, "auto"), index.settings, RunReport(started_at=0.0), events.append)
    assert {str(pin.name): pin.version for pin in pins} == {"top": "1.0", "wonly": "1.0", "sonly": "1.0", "both": "1.0"}
    assert any(event.startswith("resolved 4 distributions with pip ") for event in events), events
    with pytest.raises(UsageError, match=rf"^{re.escape(str(path))}:1: uv's resolver does not read a requirement "
                                         r"continued on the next line \(`\\`\); join the lines, or use "
                                         r"--resolver pip$"):
        resolve_pins(_read(path, "uv"), index.settings, RunReport(started_at=0.0), events.append)
    # The same in a constraints file, named in the file or on the command line: uv reads those too.
    (tmp_path / "constraints.txt").write_text("sonly \\\n    <=1.0\n")
    path = _requirements(tmp_path, "-c constraints.txt\ntop\n", name="constrained.txt")
    pins, _ = resolve_pins(_read(path, "auto"), index.settings, RunReport(started_at=0.0), events.append)
    assert {str(pin.name): pin.version for pin in pins} == {"top": "1.0", "wonly": "1.0", "sonly": "1.0", "both": "1.0"}
    on_the_command_line = _read(_requirements(tmp_path, "top\n"), "auto", constraints=(tmp_path / "constraints.txt",))
    assert on_the_command_line.chosen_resolver() == "pip"


@pytest.mark.parametrize("resolver", ["pip", pytest.param("uv", marks=needs_uv)])
def test_pre_in_a_file_or_given_lets_the_resolver_take_a_pre_release(tmp_path: Path,
                                                                    resolver: Literal["pip", "uv"]) -> None:
    # `--pre` is a pip option real files carry; it was refused: "unsupported option --pre". The command
    # line had no --pre at all.
    with IndexServer() as server:
        for version in ("1.0", "2.0b1"):
            server.add(f"early-{version}-py3-none-any.whl", write_wheel(tmp_path, "early", version).read_bytes())
        settings = IndexSettings(index_url=server.simple_url)
        for text, pre, version in (("early\n", False, "1.0"), ("--pre\nearly\n", False, "2.0b1"),
                                   ("early\n", True, "2.0b1")):
            path = _requirements(tmp_path, text)
            pins, _ = resolve_pins(_read(path, resolver, pre=pre), settings, RunReport(started_at=0.0),
                                   lambda event: None)
            assert [(str(pin.name), pin.version) for pin in pins] == [("early", version)], (text, pre)
