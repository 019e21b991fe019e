"""Build sources from command-line paths: sdist names in every format pip builds, folders, bounded listings."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import orchestrate
from packaging.utils import InvalidSdistFilename, canonicalize_name
from packaging.version import Version
from sdists import make_sdist, make_tree

from orchestrator.build import archive
from orchestrator.build.sources import (
    Source,
    collect_sources,
    compiles,
    parse_sdist_name,
    sdist_source,
    tree_source,
)
from orchestrator.errors import SourceError, UnsafeArchiveError, UsageError

LEGACY_FORMATS = ["tar.bz2", "tbz", "tar.xz", "txz", "tgz", "tar"]


@pytest.mark.parametrize(
    ("filename", "name", "version"),
    [
        ("foo-1.0.tar.gz", "foo", "1.0"),
        ("foo-1.0.zip", "foo", "1.0"),
        # The legacy formats of old PyPI releases, which pip still builds.
        ("Foo_Bar-2.0.1.tar.bz2", "foo-bar", "2.0.1"),
        ("foo-1.0.tbz", "foo", "1.0"),
        ("foo-1.0rc1.tar.xz", "foo", "1.0rc1"),
        ("foo-1.0.txz", "foo", "1.0"),
        ("foo-1.0.tgz", "foo", "1.0"),
        ("foo-1.0.tlz", "foo", "1.0"),
        ("foo-1.0.tar.lzma", "foo", "1.0"),
        ("foo-1.0.tar", "foo", "1.0"),
    ],
)
def test_sdist_names_in_every_format(filename: str, name: str, version: str) -> None:
    assert parse_sdist_name(filename) == (name, Version(version))


@pytest.mark.parametrize(
    ("filename", "message"),
    [
        # a wheel is not an sdist
        ("foo-1.0-py3-none-any.whl", "extension must be one of .tar.gz, .zip, .tar.bz2"),
        # lzip: pip lists the suffix but cannot unpack it, nor can Python
        ("foo-1.0.tar.lz", "extension must be one of"),
        # no version; the message names the real file, not a stand-in
        ("foo.tar.bz2", "'foo.tar.bz2'"),
        ("foo-notaversion!.tar.xz", "'foo-notaversion!.tar.xz'"),
    ],
)
def test_invalid_sdist_names(filename: str, message: str) -> None:
    with pytest.raises(InvalidSdistFilename) as caught:
        parse_sdist_name(filename)
    assert message in str(caught.value)


def test_legacy_sdists_in_a_folder_are_sources(tmp_path: Path) -> None:
    folder = tmp_path / "sdists"
    made = {fmt: make_sdist(folder, f"pkg-{fmt.replace('.', '-')}", fmt=fmt) for fmt in LEGACY_FORMATS}
    collected = collect_sources([folder])
    assert sorted(source.path for source in collected.sources) == sorted(path.resolve() for path in made.values())
    assert {source.name for source in collected.sources} == {
        "pkg-tar-bz2", "pkg-tbz", "pkg-tar-xz", "pkg-txz", "pkg-tgz", "pkg-tar"
    }
    assert (collected.notes, collected.rejected) == ([], [])


@pytest.mark.parametrize("fmt", LEGACY_FORMATS)
def test_a_path_to_a_legacy_sdist_is_a_source(tmp_path: Path, fmt: str) -> None:
    path = make_sdist(tmp_path, "old", "0.9", fmt=fmt)
    (source,) = collect_sources([path]).sources
    assert (source.kind, source.name, source.version, source.path) == ("sdist", "old", "0.9", path.resolve())
    assert sdist_source(path) == source


def test_what_a_folder_holds_besides_sdists_is_listed_as_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "sdists"
    make_sdist(folder, "good")
    (folder / "notes.txt").write_text("hello")
    (folder / "good-1.0-py3-none-any.whl").write_bytes(b"wheel")
    (folder / "nested").mkdir()
    (folder / "dangling").symlink_to(tmp_path / "nowhere")
    collected = collect_sources([folder])
    assert [source.name for source in collected.sources] == ["good"]
    assert collected.notes == [
        f"skipped {folder / 'dangling'}: not a regular file",
        f"skipped {folder / 'good-1.0-py3-none-any.whl'}: a wheel, not a source",
        f"skipped {folder / 'nested'}: a folder inside a folder of sdists; name it on its own to build it",
        f"skipped {folder / 'notes.txt'}: not an sdist "
        "(.tar.gz, .zip, .tar.bz2, .tar.xz, .tgz, .tbz, .txz, .tlz, .tar.lzma, .tar)",
    ]


@pytest.mark.parametrize(
    ("filename", "message"),
    [
        ("notes.txt", "notes.txt: not an sdist (.tar.gz, .zip, "),
        ("x-1.0-py3-none-any.whl", "x-1.0-py3-none-any.whl: a wheel, not a source; name an sdist"),
    ],
)
def test_a_named_file_that_is_not_an_sdist_is_a_usage_error(tmp_path: Path, filename: str, message: str) -> None:
    (tmp_path / filename).write_bytes(b"x")
    with pytest.raises(UsageError) as caught:
        collect_sources([tmp_path / filename])
    assert message in caught.value.message


def test_a_folder_without_sdists_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "x-1.0-py3-none-any.whl").write_bytes(b"wheel")
    with pytest.raises(UsageError, match=r"folder holds no sdist \(.tar.gz, .zip, .tar.bz2, "):
        collect_sources([tmp_path])


# -- compiles: listing within extraction's bounds -------------------------------


def _tar(path: Path, names: list[str], *, pax_comment_bytes: int = 0) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            if pax_comment_bytes:
                info.pax_headers = {"comment": "x" * pax_comment_bytes}
            tar.addfile(info, io.BytesIO(b""))
    return path


def _sdist(path: Path) -> Source:
    return Source(location=str(path), kind="sdist", name=canonicalize_name(path.name.split("-")[0]), version="1.0")


@pytest.mark.parametrize("fmt", ["tar.gz", "zip", "tar.bz2", "tar.xz", "tar"])
def test_compiles_sees_c_files_in_every_format(tmp_path: Path, fmt: str) -> None:
    with_c = make_sdist(tmp_path / "c", "native", fmt=fmt, extra_files={"src/speedups.c": b"int x;"})
    pure = make_sdist(tmp_path / "py", "pure", fmt=fmt, extra_files={"src/pure.py": b"x = 1"})
    assert compiles(sdist_source(with_c))
    assert not compiles(sdist_source(pure))


def test_compiles_in_a_tree_skips_hidden_folders(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", "treepkg")
    (tree / ".venv").mkdir()
    (tree / ".venv" / "vendored.c").write_text("int x;")
    source = Source(location=str(tree), kind="tree", name=canonicalize_name("treepkg"), version="1.0")
    assert not compiles(source)
    (tree / "fast.pyx").write_text("")
    assert compiles(source)


def test_compiles_refuses_an_oversized_pax_header(tmp_path: Path) -> None:
    # tarfile would read this 2 MiB header whole into memory; a hostile one can claim gigabytes.
    hostile = _tar(tmp_path / "hostile-1.0.tar.gz", ["hostile-1.0/ext.c"], pax_comment_bytes=2 * 1024 * 1024)
    modest = _tar(tmp_path / "modest-1.0.tar.gz", ["modest-1.0/ext.c"], pax_comment_bytes=1024)
    assert compiles(_sdist(modest))
    assert not compiles(_sdist(hostile))


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_compiles_refuses_more_members_than_extraction_allows(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"many-1.0/f{i}.py" for i in range(4)] + ["many-1.0/ext.c"]
    if fmt == "tar":
        path = _tar(tmp_path / "many-1.0.tar.gz", names)
    else:
        path = tmp_path / "many-1.0.zip"
        with zipfile.ZipFile(path, "w") as zipped:
            for name in names:
                zipped.writestr(name, b"")
    assert compiles(_sdist(path))
    monkeypatch.setattr(archive, "MAX_MEMBERS", 4)  # the fifth member, ext.c, is one too many
    assert not compiles(_sdist(path))


def test_listing_names_the_refusal(tmp_path: Path) -> None:
    path = _tar(tmp_path / "many-1.0.tar.gz", [f"many-1.0/f{i}" for i in range(3)])
    with pytest.raises(UnsafeArchiveError, match=r"member 'many-1.0/f2' is past the limit of 2 members"):
        archive.list_member_names(path, max_members=2)
    assert archive.list_member_names(path, max_members=3) == [f"many-1.0/f{i}" for i in range(3)]


def test_compiles_on_a_damaged_archive_is_false(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged-1.0.tar.gz"
    damaged.write_bytes(b"\x1f\x8b" + b"not really gzip")
    assert not compiles(_sdist(damaged))


# -- through the real command ------------------------------------------------------


def test_build_a_folder_of_legacy_sdists(tmp_path: Path) -> None:
    folder = tmp_path / "sdists"
    make_sdist(folder, "bzipped", fmt="tar.bz2")
    make_sdist(folder, "xzipped", fmt="tar.xz")
    (folder / "README.txt").write_text("these are old releases")
    result = orchestrate("build", folder, "-w", tmp_path / "wh")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "wh").glob("*.whl")) == [
        "bzipped-1.0-py3-none-any.whl", "xzipped-1.0-py3-none-any.whl"
    ]
    assert f"skipped {folder / 'README.txt'}: not an sdist (.tar.gz, .zip, " in result.stderr


def test_build_a_legacy_sdist_from_find_links(tmp_path: Path) -> None:
    links = tmp_path / "links"
    make_sdist(links, "oldrelease", "0.9", fmt="tar.bz2")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("--no-index\n--find-links ./links\noldrelease==0.9\n")
    result = orchestrate("build", "-r", requirements, "--no-deps", "-w", tmp_path / "wh", "--no-cache",
                         "--sdist-dir", tmp_path / "downloaded")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "wh").glob("*.whl")] == ["oldrelease-0.9-py3-none-any.whl"]
    assert [p.name for p in (tmp_path / "downloaded").iterdir()] == ["oldrelease-0.9.tar.bz2"]


@pytest.mark.parametrize(("pyproject", "name", "version"), [
    ('[project]\nname = "Static_Pkg"\nversion = "2.1"\n', "static-pkg", "2.1"),
    ('[project]\nname = "dyn"\ndynamic = ["version"]\n', "dyn", None),  # the backend will say
    ('[build-system]\nrequires = ["setuptools"]\n', "folder", None),  # no [project]: the folder's name
    (None, "folder", None),  # no pyproject.toml at all (setup.py)
])
def test_a_tree_is_named_by_its_static_metadata(tmp_path: Path, pyproject: str | None, name: str,
                                                version: str | None) -> None:
    (tmp_path / "folder").mkdir()
    if pyproject is not None:
        (tmp_path / "folder" / "pyproject.toml").write_text(pyproject)
    expected = Source(location=str(tmp_path / "folder"), kind="tree", name=canonicalize_name(name), version=version)
    assert tree_source(tmp_path / "folder") == expected


def test_a_tree_whose_pyproject_cannot_be_parsed_names_it(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project\n")
    with pytest.raises(SourceError, match=rf"^{tmp_path}/pyproject.toml: cannot be parsed: "):
        tree_source(tmp_path)


def test_sources_taken_come_in_order_and_are_let_go_of(tmp_path: Path) -> None:
    for name in ("beta", "alpha", "gamma"):
        make_sdist(tmp_path / "sdists", name)
    collected = collect_sources([tmp_path / "sdists"])
    listed = [source.name for source in collected.sources]
    taken = []
    for source in collected.take_sources():
        taken.append(source.name)
        assert source not in collected.sources  # the list no longer holds it once it is taken
    assert taken == listed == ["alpha", "beta", "gamma"]
    assert collected.sources == []
