"""Safe sdist extraction: hostile members, bombs, corrupt input, and valid sdists."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import random
import stat
import tarfile
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from orchestrator.build import extract
from orchestrator.build.extract import extract_sdist
from orchestrator.errors import SourceError, UnsafeArchiveError

# -- archive builders ---------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One member to put in a test archive."""

    name: str
    kind: str = "file"  # file, dir, symlink, hardlink, chr, blk, fifo
    data: bytes = b""
    mode: int = 0o644
    link: str = ""


def write_tar(path: Path, entries: Iterable[Entry], mode: str = "w:gz") -> Path:
    types = {
        "file": tarfile.REGTYPE,
        "dir": tarfile.DIRTYPE,
        "symlink": tarfile.SYMTYPE,
        "hardlink": tarfile.LNKTYPE,
        "chr": tarfile.CHRTYPE,
        "blk": tarfile.BLKTYPE,
        "fifo": tarfile.FIFOTYPE,
    }
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = types[entry.kind]
            info.mode = entry.mode
            info.linkname = entry.link
            info.mtime = 1_700_000_000
            if entry.kind in ("chr", "blk"):
                info.devmajor, info.devminor = 1, 3
            if entry.kind == "file":
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
            else:
                tar.addfile(info)
    return path


def write_tar_lzma(path: Path, entries: Iterable[Entry]) -> Path:
    """A tar in the legacy ``.lzma`` format (no magic bytes; pip reads it as ``.tlz``/``.tar.lzma``)."""
    plain = write_tar(path.with_name(path.name + ".plain"), entries, "w")
    path.write_bytes(lzma.compress(plain.read_bytes(), format=lzma.FORMAT_ALONE))
    plain.unlink()
    return path


def write_zip(path: Path, entries: Iterable[Entry]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are part of the game
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for entry in entries:
                info = zipfile.ZipInfo(entry.name, date_time=(2024, 1, 2, 3, 4, 6))
                info.create_system = 3
                file_type = {
                    "file": stat.S_IFREG,
                    "dir": stat.S_IFDIR,
                    "symlink": stat.S_IFLNK,
                    "chr": stat.S_IFCHR,
                    "fifo": stat.S_IFIFO,
                }[entry.kind]
                info.external_attr = (file_type | entry.mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                data = entry.link.encode() if entry.kind == "symlink" else entry.data
                archive.writestr(info, data)
    return path


def snapshot(root: Path, skip: Path) -> set[str]:
    """Every path under ``root`` except those under ``skip``, links not followed."""
    found: set[str] = set()
    for folder, dirs, files in os.walk(root):
        if Path(folder) == skip or skip in Path(folder).parents:
            continue
        found.update(os.path.join(folder, name) for name in dirs + files)
    return found


def assert_inside(dest: Path) -> None:
    """Everything under ``dest`` (and every symlink target) stays inside it."""
    real_dest = os.path.realpath(dest)
    for folder, dirs, files in os.walk(dest):
        for name in dirs + files:
            path = os.path.join(folder, name)
            assert os.path.commonpath([real_dest, os.path.realpath(path)]) == real_dest, path
            st_mode = os.lstat(path).st_mode
            assert stat.S_ISDIR(st_mode) or stat.S_ISREG(st_mode) or stat.S_ISLNK(st_mode), path
            assert not st_mode & (stat.S_ISUID | stat.S_ISGID), path


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, Path]:
    """``tmp_path/dest`` (empty) plus a sibling file a hostile member could aim at."""
    dest = tmp_path / "dest"
    dest.mkdir()
    (tmp_path / "secret").write_text("do not copy me")
    return tmp_path, dest


# -- hostile members ----------------------------------------------------------

P = "pkg-1.0"
HOSTILE_TAR = [
    # absolute path: tar's data filter would strip the '/', we refuse outright
    pytest.param([Entry("{tmp}/pwned")], "{tmp}/pwned", "absolute path", id="absolute"),
    # plain traversal
    pytest.param([Entry("../pwned")], "../pwned", "outside the extraction folder", id="dotdot"),
    # nested traversal that climbs back out of a folder it entered
    pytest.param([Entry(f"{P}/../../pwned")], f"{P}/../../pwned", "outside", id="nested-dotdot"),
    # '..' that stays inside is still refused: with symlinks it need not stay inside
    pytest.param([Entry(f"{P}/a/../b")], f"{P}/a/../b", "'..' path component", id="inner-dotdot"),
    # backslash traversal, for archives written on Windows
    pytest.param([Entry("..\\pwned")], "..\\pwned", "outside", id="backslash-dotdot"),
    # drive letter
    pytest.param([Entry("C:/pwned")], "C:/pwned", "absolute path", id="drive-letter"),
    # symlink to an absolute path
    pytest.param([Entry(f"{P}/etc", "symlink", link="/etc")], f"{P}/etc", "absolute path", id="symlink-etc"),
    # symlink climbing out
    pytest.param(
        [Entry(f"{P}/up", "symlink", link="../../pwned")], f"{P}/up", "outside", id="symlink-dotdot"
    ),
    # symlink cancelling a symlink component: 's -> .' then 'l -> s/..' is the parent of dest
    pytest.param(
        [Entry("s", "symlink", link="."), Entry("l", "symlink", link="s/..")],
        "l",
        "'..' after a folder name",
        id="symlink-cancel",
    ),
    # write through an (inside) symlink
    pytest.param(
        [Entry(f"{P}/d", "symlink", link="."), Entry(f"{P}/d/x", data=b"x")],
        f"{P}/d/x",
        "through the symlink",
        id="write-through-symlink",
    ),
    # a file replacing a symlink (open() would follow it)
    pytest.param(
        [Entry(f"{P}/f", "symlink", link="g"), Entry(f"{P}/f", data=b"x")],
        f"{P}/f",
        "would replace",
        id="file-over-symlink",
    ),
    # hardlinks outside
    pytest.param(
        [Entry(f"{P}/secret", "hardlink", link="../secret")], f"{P}/secret", "outside", id="hardlink-dotdot"
    ),
    pytest.param(
        [Entry(f"{P}/passwd", "hardlink", link="/etc/passwd")], f"{P}/passwd", "absolute", id="hardlink-abs"
    ),
    # hardlink to something that is not an earlier file of the archive
    pytest.param(
        [Entry(f"{P}/x", "hardlink", link=f"{P}/missing")], f"{P}/x", "not a file extracted", id="hardlink-dangling"
    ),
    # special files
    pytest.param([Entry(f"{P}/null", "chr")], f"{P}/null", "character device", id="chardev"),
    pytest.param([Entry(f"{P}/sda", "blk")], f"{P}/sda", "block device", id="blockdev"),
    pytest.param([Entry(f"{P}/pipe", "fifo")], f"{P}/pipe", "FIFO", id="fifo"),
]


@pytest.mark.parametrize("data_filter", ["with-data-filter", "without-data-filter"])
@pytest.mark.parametrize(("entries", "member", "problem"), HOSTILE_TAR)
def test_hostile_tar_member_is_refused(
    workspace: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    entries: list[Entry],
    member: str,
    problem: str,
    data_filter: str,
) -> None:
    if data_filter == "without-data-filter":  # as on Python < 3.11.4
        monkeypatch.setattr(extract, "_DATA_FILTER", None)
    tmp, dest = workspace
    entries = [
        Entry(e.name.format(tmp=tmp), e.kind, e.data, e.mode, e.link) for e in entries
    ]
    archive = write_tar(tmp / "evil-1.0.tar.gz", [Entry(f"{P}/setup.py", data=b"ok")] + entries)
    before = snapshot(tmp, dest)

    with pytest.raises(UnsafeArchiveError) as caught:
        extract_sdist(archive, dest)

    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("evil-1.0.tar.gz: ")
    assert repr(member.format(tmp=tmp)) in message
    assert problem.format(tmp=tmp) in message
    assert list(dest.iterdir()) == []
    assert snapshot(tmp, dest) == before


HOSTILE_ZIP = [
    # zip slip
    pytest.param([Entry(f"{P}/../../pwned")], f"{P}/../../pwned", "outside", id="zip-slip"),
    pytest.param([Entry("../pwned")], "../pwned", "outside", id="zip-dotdot"),
    pytest.param([Entry("..\\..\\pwned")], "..\\..\\pwned", "outside", id="zip-backslash"),
    # absolute names and drive letters
    pytest.param([Entry("{tmp}/pwned")], "{tmp}/pwned", "absolute path", id="zip-absolute"),
    pytest.param([Entry("C:\\pwned")], "C:\\pwned", "absolute path", id="zip-drive"),
    pytest.param([Entry("\\\\server\\share\\x")], "\\\\server\\share\\x", "absolute", id="zip-unc"),
    # unix symlink entries pointing outside
    pytest.param(
        [Entry(f"{P}/etc", "symlink", link="/etc", mode=0o777)], f"{P}/etc", "absolute", id="zip-symlink-abs"
    ),
    pytest.param(
        [Entry(f"{P}/up", "symlink", link="../../secret", mode=0o777)],
        f"{P}/up",
        "outside",
        id="zip-symlink-dotdot",
    ),
    pytest.param(
        [Entry(f"{P}/up", "symlink", link="..\\..\\secret", mode=0o777)],
        f"{P}/up",
        "outside",
        id="zip-symlink-backslash",
    ),
    # a symlink, then a member written through it
    pytest.param(
        [Entry(f"{P}/d", "symlink", link="..", mode=0o777), Entry(f"{P}/d/x", data=b"x")],
        f"{P}/d/x",
        "through the symlink",
        id="zip-write-through-symlink",
    ),
    # unix special files in external_attr
    pytest.param([Entry(f"{P}/null", "chr")], f"{P}/null", "character device", id="zip-chardev"),
    pytest.param([Entry(f"{P}/pipe", "fifo")], f"{P}/pipe", "FIFO", id="zip-fifo"),
]


@pytest.mark.parametrize(("entries", "member", "problem"), HOSTILE_ZIP)
def test_hostile_zip_member_is_refused(
    workspace: tuple[Path, Path], entries: list[Entry], member: str, problem: str
) -> None:
    tmp, dest = workspace
    entries = [
        Entry(e.name.format(tmp=tmp), e.kind, e.data, e.mode, e.link) for e in entries
    ]
    archive = write_zip(tmp / "evil-1.0.zip", [Entry(f"{P}/setup.py", data=b"ok")] + entries)
    before = snapshot(tmp, dest)

    with pytest.raises(UnsafeArchiveError) as caught:
        extract_sdist(archive, dest)

    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("evil-1.0.zip: ")
    assert repr(member.format(tmp=tmp)) in message
    assert problem in message
    assert list(dest.iterdir()) == []
    assert snapshot(tmp, dest) == before


def test_data_filter_refusal_becomes_unsafe_archive_error(
    workspace: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Our own checks are stricter, so only a future, stricter tarfile filter could
    # refuse what they let through; its FilterError must still come out as ours.
    def refuse(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
        raise tarfile.OutsideDestinationError(member, "/elsewhere")

    monkeypatch.setattr(extract, "_DATA_FILTER", refuse)
    tmp, dest = workspace
    archive = write_tar(tmp / "f-1.0.tar.gz", [Entry(f"{P}/setup.py", data=b"ok")])
    refused = rf"^f-1\.0\.tar\.gz: member '{P}/setup.py' is refused by tarfile's 'data' filter"
    with pytest.raises(UnsafeArchiveError, match=refused):
        extract_sdist(archive, dest)
    assert list(dest.iterdir()) == []


def test_member_below_a_file_is_a_source_error(workspace: tuple[Path, Path]) -> None:
    tmp, dest = workspace
    archive = write_tar(tmp / "f-1.0.tar.gz", [Entry(f"{P}/a", data=b"x"), Entry(f"{P}/a/b", data=b"y")])
    with pytest.raises(SourceError, match=rf"member '{P}/a/b' would be written inside '{P}/a', which is a file"):
        extract_sdist(archive, dest)
    assert list(dest.iterdir()) == []


def test_setuid_and_setgid_bits_are_dropped(workspace: tuple[Path, Path]) -> None:
    tmp, dest = workspace
    archive = write_tar(
        tmp / "suid-1.0.tar.gz",
        [Entry(f"{P}/run", data=b"#!/bin/sh\n", mode=0o6777), Entry(f"{P}/ro", data=b"x", mode=0o400)],
    )
    root = extract_sdist(archive, dest)
    assert stat.S_IMODE((root / "run").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "ro").stat().st_mode) == 0o600


# -- decompression bombs and member counts ------------------------------------


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_highly_compressible_member_above_max_bytes_is_refused(
    workspace: tuple[Path, Path], fmt: str
) -> None:
    tmp, dest = workspace
    entries = [Entry(f"{P}/setup.py", data=b"ok"), Entry(f"{P}/zeros", data=bytes(2 * 1024 * 1024))]
    if fmt == "tar":
        archive = write_tar(tmp / "bomb-1.0.tar.gz", entries)
    else:
        archive = write_zip(tmp / "bomb-1.0.zip", entries)
    assert archive.stat().st_size < 64 * 1024

    with pytest.raises(UnsafeArchiveError) as caught:
        extract_sdist(archive, dest, max_bytes=1024 * 1024)

    assert archive.name in str(caught.value)
    assert f"'{P}/zeros'" in str(caught.value)
    assert "1048576 bytes" in str(caught.value)
    assert list(dest.iterdir()) == []


def test_bytes_are_counted_across_members_as_they_stream(workspace: tuple[Path, Path]) -> None:
    tmp, dest = workspace
    # Each member alone fits; together they do not. Hardlink copies count too.
    archive = write_tar(
        tmp / "many-1.0.tar.gz",
        [
            Entry(f"{P}/a", data=bytes(400_000)),
            Entry(f"{P}/b", "hardlink", link=f"{P}/a"),
            Entry(f"{P}/c", "hardlink", link=f"{P}/a"),
        ],
    )
    with pytest.raises(UnsafeArchiveError, match=rf"member '{P}/c' takes the uncompressed size"):
        extract_sdist(archive, dest, max_bytes=1_000_000)
    assert list(dest.iterdir()) == []


def test_lying_zip_header_cannot_smuggle_bytes(workspace: tuple[Path, Path]) -> None:
    tmp, dest = workspace
    archive = write_zip(tmp / "liar-1.0.zip", [Entry(f"{P}/zeros", data=bytes(100_000))])
    data = bytearray(archive.read_bytes())
    # Shrink the declared uncompressed size in the central directory to 10 bytes.
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(data))

    with pytest.raises(SourceError) as caught:
        extract_sdist(archive, dest, max_bytes=50_000)
    assert "liar-1.0.zip" in str(caught.value)
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_too_many_members_is_refused(workspace: tuple[Path, Path], fmt: str) -> None:
    tmp, dest = workspace
    entries = [Entry(f"{P}/f{i}", data=b"x") for i in range(5)]
    archive = write_tar(tmp / "x-1.0.tar", entries, "w") if fmt == "tar" else write_zip(tmp / "x-1.0.zip", entries)
    with pytest.raises(UnsafeArchiveError, match=rf"member '{P}/f3' is past the limit of 3 members"):
        extract_sdist(archive, dest, max_members=3)
    assert list(dest.iterdir()) == []


def test_oversized_pax_header_is_refused_before_it_is_read(workspace: tuple[Path, Path]) -> None:
    tmp, dest = workspace
    archive = tmp / "pax-1.0.tar.gz"
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"{P}/setup.py")
        info.pax_headers = {"comment": "x" * (2 * 1024 * 1024)}
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(UnsafeArchiveError, match="pax or GNU metadata header"):
        extract_sdist(archive, dest)
    assert list(dest.iterdir()) == []


# -- corrupt and unreadable input ---------------------------------------------


def _valid_targz() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = random.Random(0).randbytes(50_000)
        info = tarfile.TarInfo(f"{P}/blob")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _valid_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{P}/blob", random.Random(0).randbytes(50_000))
    return buffer.getvalue()


def _encrypted_zip() -> bytes:
    # zipfile cannot write encrypted members: set the "encrypted" flag by hand
    # in the local header (offset 6) and the central directory entry (offset 8).
    data = bytearray(_valid_zip())
    data[6] |= 0x1
    data[data.rfind(b"PK\x01\x02") + 8] |= 0x1
    return bytes(data)


CORRUPT: list[object] = [
    # a gzip stream cut in half
    pytest.param("a-1.0.tar.gz", lambda: _valid_targz()[: len(_valid_targz()) // 2], "truncated or corrupt",
                 id="truncated-gzip"),
    # valid gzip whose content is not a tar
    pytest.param("b-1.0.tar.gz", lambda: gzip.compress(b"hello" * 200), "truncated or corrupt", id="gzip-not-tar"),
    # a bzip2 stream cut short
    pytest.param("c-1.0.tar.bz2", lambda: bz2.compress(bytes(5000) + b"x" * 5000)[:40], "truncated or corrupt",
                 id="truncated-bz2"),
    # bytes from nowhere
    pytest.param("d-1.0.tar.gz", lambda: b"\x00\x01" + random.Random(1).randbytes(4096), "not a tar or zip archive",
                 id="random-bytes"),
    pytest.param("e-1.0.tar.gz", lambda: b"", "is empty", id="empty"),
    pytest.param("f-1.0.zip", lambda: b"<html>404 Not Found</html>\n", "not a tar or zip archive", id="html"),
    # a zip missing its central directory
    pytest.param("g-1.0.zip", lambda: _valid_zip()[:1000], "truncated or corrupt", id="truncated-zip"),
    # a zip whose member data was damaged (CRC check)
    pytest.param(
        "h-1.0.zip",
        lambda: _valid_zip()[:200] + bytes(100) + _valid_zip()[300:],
        "truncated or corrupt",
        id="damaged-zip",
    ),
    pytest.param("i-1.0.zip", _encrypted_zip, "is encrypted", id="encrypted-zip"),
]


@pytest.mark.parametrize(("filename", "content", "problem"), CORRUPT)
def test_corrupt_archive_is_a_source_error(
    workspace: tuple[Path, Path], filename: str, content: Callable[[], bytes], problem: str
) -> None:
    tmp, dest = workspace
    archive = tmp / filename
    archive.write_bytes(content())

    with pytest.raises(SourceError) as caught:
        extract_sdist(archive, dest)

    assert type(caught.value) is SourceError
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{filename}: ")
    assert problem in message
    assert list(dest.iterdir()) == []


def test_missing_archive_is_a_source_error(workspace: tuple[Path, Path]) -> None:
    tmp, dest = workspace
    with pytest.raises(SourceError, match=r"^nope-1\.0\.tar\.gz: cannot be read: No such file"):
        extract_sdist(tmp / "nope-1.0.tar.gz", dest)


def test_folder_as_archive_is_a_source_error(workspace: tuple[Path, Path]) -> None:
    tmp, dest = workspace
    (tmp / "dir-1.0.tar.gz").mkdir()
    with pytest.raises(SourceError, match=r"^dir-1\.0\.tar\.gz: cannot be read"):
        extract_sdist(tmp / "dir-1.0.tar.gz", dest)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_archive_is_a_source_error(workspace: tuple[Path, Path]) -> None:
    tmp, dest = workspace
    archive = tmp / "locked-1.0.tar.gz"
    archive.write_bytes(_valid_targz())
    archive.chmod(0)
    with pytest.raises(SourceError, match=r"^locked-1\.0\.tar\.gz: cannot be read: Permission denied"):
        extract_sdist(archive, dest)


def test_dest_must_be_an_empty_folder(workspace: tuple[Path, Path]) -> None:
    tmp, dest = workspace
    archive = tmp / "a-1.0.tar.gz"
    archive.write_bytes(_valid_targz())
    (dest / "keep").write_text("caller's file")
    with pytest.raises(ValueError, match="is not empty"):
        extract_sdist(archive, dest)
    assert (dest / "keep").read_text() == "caller's file"


# -- valid sdists -------------------------------------------------------------

VALID = [
    Entry(f"{P}/", "dir", mode=0o755),
    Entry(f"{P}/setup.py", data=b"from setuptools import setup\nsetup()\n"),
    Entry(f"{P}/README.md", data=b"# pkg\n"),
    Entry(f"{P}/scripts/build.sh", data=b"#!/bin/sh\necho hi\n", mode=0o755),
    Entry(f"{P}/docs/README", "symlink", link="../README.md", mode=0o777),
]


@pytest.mark.parametrize(
    ("filename", "write"),
    [
        ("pkg-1.0.tar.gz", lambda p, e: write_tar(p, e, "w:gz")),
        ("pkg-1.0.tgz", lambda p, e: write_tar(p, e, "w:gz")),
        ("pkg-1.0.tar.bz2", lambda p, e: write_tar(p, e, "w:bz2")),
        ("pkg-1.0.tar.xz", lambda p, e: write_tar(p, e, "w:xz")),
        ("pkg-1.0.tar", lambda p, e: write_tar(p, e, "w")),
        ("pkg-1.0.tar.lzma", write_tar_lzma),
        ("pkg-1.0.zip", write_zip),
        # the content decides, not the suffix
        ("pkg-1.0.zip", lambda p, e: write_tar(p, e, "w:gz")),
        ("pkg-1.0.tar.gz", write_zip),
        ("download", lambda p, e: write_tar(p, e, "w:xz")),
    ],
)
def test_valid_sdist_is_extracted(
    workspace: tuple[Path, Path], filename: str, write: Callable[[Path, list[Entry]], Path]
) -> None:
    tmp, dest = workspace
    archive = write(tmp / filename, VALID)
    before = snapshot(tmp, dest)

    root = extract_sdist(archive, dest)

    assert root == dest / P
    assert sorted(p.name for p in dest.iterdir()) == [P]
    assert (root / "setup.py").read_bytes() == b"from setuptools import setup\nsetup()\n"
    assert stat.S_IMODE((root / "scripts/build.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "setup.py").stat().st_mode) == 0o644
    assert (root / "docs/README").is_symlink()
    assert os.readlink(root / "docs/README") == "../README.md"
    assert (root / "docs/README").read_text() == "# pkg\n"
    assert_inside(dest)
    assert snapshot(tmp, dest) == before


def test_mtime_is_restored(workspace: tuple[Path, Path]) -> None:
    tmp, dest = workspace
    root = extract_sdist(write_tar(tmp / "pkg-1.0.tar.gz", VALID), dest)
    assert (root / "setup.py").stat().st_mtime == 1_700_000_000


def test_several_top_level_entries_return_dest(workspace: tuple[Path, Path]) -> None:
    tmp, dest = workspace
    archive = write_tar(
        tmp / "flat-1.0.tar.gz",
        [Entry("./", "dir"), Entry("./setup.py", data=b"x"), Entry("pkg/__init__.py", data=b"")],
    )
    assert extract_sdist(archive, dest) == dest
    assert (dest / "setup.py").read_bytes() == b"x"
    assert (dest / "pkg/__init__.py").exists()


def test_single_top_level_file_returns_dest(workspace: tuple[Path, Path]) -> None:
    tmp, dest = workspace
    archive = write_zip(tmp / "one-1.0.zip", [Entry("setup.py", data=b"x")])
    assert extract_sdist(archive, dest) == dest


def test_inside_hardlink_becomes_a_copy_and_duplicates_keep_the_last(
    workspace: tuple[Path, Path],
) -> None:
    tmp, dest = workspace
    archive = write_tar(
        tmp / "links-1.0.tar.gz",
        [
            Entry(f"{P}/a", data=b"first"),
            Entry(f"{P}/a", data=b"second", mode=0o755),
            Entry(f"{P}/b", "hardlink", link=f"{P}/a", mode=0o755),
            Entry(f"{P}/here", "symlink", link="."),
        ],
    )
    root = extract_sdist(archive, dest)
    assert (root / "a").read_bytes() == (root / "b").read_bytes() == b"second"
    assert os.stat(root / "a").st_ino != os.stat(root / "b").st_ino
    assert stat.S_IMODE((root / "b").stat().st_mode) == 0o755
    assert_inside(dest)


# -- the invariant, for arbitrary hostile names -------------------------------

TOKENS = ["..", "/", ".", "\\", "a", "b", "C:", "<ABS>"]
hostile_path = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=8).map("".join)
member = st.tuples(
    st.sampled_from(["file", "dir", "symlink", "hardlink"]),
    hostile_path,
    hostile_path,
    st.sampled_from([0o644, 0o755, 0o4755, 0o777]),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(["tar", "zip"]),
    members=st.lists(member, min_size=1, max_size=6),
)
def test_extraction_never_escapes(fmt: str, members: list[tuple[str, str, str, int]]) -> None:
    root_listing = set(os.listdir("/"))
    with tempfile.TemporaryDirectory() as sandbox_name:
        sandbox = Path(sandbox_name)
        dest = sandbox / "dest"
        dest.mkdir()
        (sandbox / "outside").mkdir()
        (sandbox / "outside" / "secret").write_text("secret")

        def expand(path: str) -> str:
            return path.replace("<ABS>", str(sandbox / "outside"))

        entries = []
        for kind, name, link, mode in members:
            if fmt == "zip" and kind == "hardlink":
                kind = "file"
            entries.append(Entry(expand(name), kind, b"data", mode, expand(link)))
        if fmt == "tar":
            archive = write_tar(sandbox / "h-1.0.tar.gz", entries)
        else:
            archive = write_zip(sandbox / "h-1.0.zip", entries)
        before = snapshot(sandbox, dest)

        try:
            root = extract_sdist(archive, dest)
        except SourceError as exc:
            event(f"refused: {type(exc).__name__}")
            assert str(exc).startswith(archive.name + ": ")
            assert "\n" not in str(exc)
            assert list(dest.iterdir()) == []
        else:
            event("extracted")
            assert root == dest or root.parent == dest
            assert_inside(dest)
        assert snapshot(sandbox, dest) == before
        assert (sandbox / "outside" / "secret").read_text() == "secret"
    assert set(os.listdir("/")) == root_listing
