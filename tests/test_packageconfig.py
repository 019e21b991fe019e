from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestrator.errors import UsageError
from orchestrator.packageconfig import (
    PackageOverrides,
    find_config,
    load_package_config,
)

G = 1024**3


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_orchestrate_toml(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "orchestrate.toml",
        """
        [packages.SciPy]
        memory = "6G"
        timeout = 3600

        [packages."zope.interface"]
        timeout = 90.5

        [packages.tiny]
        memory = 1048576
        binary = "source"

        [packages.certifi]
        binary = "binary"
        """,
    )
    assert load_package_config(path) == {
        "scipy": PackageOverrides(memory=6 * G, timeout=3600.0),
        "zope-interface": PackageOverrides(timeout=90.5),
        "tiny": PackageOverrides(memory=1024**2, binary="source"),
        "certifi": PackageOverrides(binary="binary"),
    }


def test_pyproject_toml(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pyproject.toml",
        """
        [project]
        name = "mine"

        [tool.orchestrate]
        max-builds = 4  # other settings are not this module's business

        [tool.orchestrate.packages.numpy]
        memory = "1.5GiB"
        """,
    )
    assert load_package_config(path) == {"numpy": PackageOverrides(memory=3 * G // 2)}


def test_orchestrate_toml_also_takes_the_pyproject_form(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "orchestrate.toml",
        """
        [packages.scipy]
        memory = "6G"

        [tool.orchestrate.packages.numpy]
        memory = "2G"
        timeout = 60
        """,
    )
    assert load_package_config(path) == {
        "scipy": PackageOverrides(memory=6 * G),
        "numpy": PackageOverrides(memory=2 * G, timeout=60.0),
    }


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("orchestrate.toml", ""),  # empty file
        ("orchestrate.toml", "[tool.orchestrate]\n"),  # the pyproject form, no packages table
        ("pyproject.toml", "[project]\nname = 'x'\n"),  # no tool table
        ("pyproject.toml", "[tool.orchestrate]\n"),  # no packages table
        ("pyproject.toml", "[packages.numpy]\nmemory = '1G'\n"),  # wrong place in pyproject
    ],
)
def test_no_overrides(tmp_path: Path, name: str, text: str) -> None:
    assert load_package_config(write(tmp_path, name, text)) == {}


def test_other_file_names_read_like_orchestrate_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "ci.toml", "[packages.numpy]\nmemory = '2G'\n")
    assert load_package_config(path) == {"numpy": PackageOverrides(memory=2 * G)}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # A typo in a key is an error, not silently ignored.
        ("[packages.numpy]\nmemroy = '4G'\n", r"unknown key 'memroy' in \[packages.numpy\]"),
        ("[packages.numpy]\nbinary = 'yes'\n", r"\[packages.numpy\] binary must be \"binary\" \(a wheel only\) or"),
        # A size that does not parse names the key and explains the format.
        (
            "[packages.numpy]\nmemory = '4X'\n",
            r"\[packages.numpy\] memory: invalid size '4X': use a number with K, M, G or T",
        ),
        # A percentage has nothing to be a percentage of.
        (
            "[packages.numpy]\nmemory = '50%'\n",
            r"\[packages.numpy\] memory: .*needs a known total",
        ),
        # Wrong types.
        ("[packages.numpy]\nmemory = true\n", r"\[packages.numpy\] memory must be a size"),
        ("[packages.numpy]\nmemory = 1.5\n", r"\[packages.numpy\] memory must be a size"),
        ("[packages.numpy]\ntimeout = '10m'\n", r"\[packages.numpy\] timeout must be a number"),
        ("[packages.numpy]\ntimeout = true\n", r"\[packages.numpy\] timeout must be a number"),
        ("[packages.numpy]\ntimeout = 0\n", r"\[packages.numpy\] timeout must be a number"),
        ("[packages.numpy]\ntimeout = -5\n", r"\[packages.numpy\] timeout must be a number"),
        # Tables where tables belong.
        ("packages = 3\n", r"packages must be a table"),
        ("[packages]\nnumpy = '4G'\n", r"packages.numpy must be a table"),
        ("tool = 3\n", r"tool must be a table"),
        ("[tool.orchestrate]\npackages = 3\n", r"tool.orchestrate.packages must be a table"),
        # Anything else at the top level is a typo or a misplaced setting, not silently ignored.
        (
            "[other]\nx = 1\n",
            (
                r"unknown top-level key 'other'; it holds \[packages.NAME\] or"
                r" \[tool.orchestrate.packages.NAME\] tables"
            ),
        ),
        ("[package.numpy]\nmemory = '4G'\n", r"unknown top-level key 'package'"),
        ("memory = '4G'\n", r"unknown top-level key 'memory'"),
        ("[tool.orchestrat.packages.numpy]\n", r"unknown key 'tool.orchestrat'"),
        # Errors in the pyproject form name its full key.
        ("[tool.orchestrate.packages.numpy]\nx = 1\n", r"unknown key 'x' in \[tool.orchestrate.packages.numpy\]"),
        # Project names must be valid and unique once canonicalised.
        ("[packages.'-bad-']\n", r"\[packages.-bad-\] does not name a valid project"),
        (
            "[packages.Foo_Bar]\n[packages.foo-bar]\n",
            r"\[packages.Foo_Bar\] and \[packages.foo-bar\] name the same project",
        ),
        (
            "[packages.numpy]\n[tool.orchestrate.packages.NumPy]\n",
            r"\[packages.numpy\] and \[tool.orchestrate.packages.NumPy\] name the same project; keep one",
        ),
        # Not TOML at all.
        ("[packages.numpy\n", r"is not valid TOML"),
    ],
)
def test_invalid(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "orchestrate.toml", text)
    with pytest.raises(UsageError, match=message) as info:
        load_package_config(path)
    assert str(path) in str(info.value)  # every message names the file
    assert "\n" not in str(info.value)


def test_invalid_pyproject_names_the_full_key(tmp_path: Path) -> None:
    path = write(tmp_path, "pyproject.toml", "[tool.orchestrate.packages.numpy]\nx = 1\n")
    with pytest.raises(UsageError, match=r"in \[tool.orchestrate.packages.numpy\]"):
        load_package_config(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read config file .*orchestrate.toml"):
        load_package_config(tmp_path / "orchestrate.toml")


def test_find_config_prefers_orchestrate_toml(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", "[tool.orchestrate]\n")
    expected = write(tmp_path, "orchestrate.toml", "")
    assert find_config(tmp_path) == expected


def test_find_config_pyproject_with_our_table(tmp_path: Path) -> None:
    expected = write(tmp_path, "pyproject.toml", "[tool.orchestrate.packages.numpy]\n")
    assert find_config(tmp_path) == expected


@pytest.mark.parametrize(
    "text",
    [
        "[project]\nname = 'x'\n",  # somebody's project, not configured for us
        "[tool.black]\nline-length = 99\n",  # other tools only
    ],
)
def test_find_config_ignores_other_pyprojects(tmp_path: Path, text: str) -> None:
    write(tmp_path, "pyproject.toml", text)
    assert find_config(tmp_path) is None


def test_find_config_nothing(tmp_path: Path) -> None:
    assert find_config(tmp_path) is None


def test_find_config_broken_pyproject(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", "[tool\n")
    with pytest.raises(UsageError, match="pyproject.toml is not valid TOML"):
        find_config(tmp_path)
