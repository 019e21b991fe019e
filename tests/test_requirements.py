from __future__ import annotations

import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.download.requirements import PinnedRequirement, parse_requirements
from orchestrator.errors import UsageError
from orchestrator.settings import IndexSettings

A = "a" * 64
B = "b" * 64


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def pins(requirements: tuple[PinnedRequirement, ...]) -> list[tuple[str, str | None, str | None, set[str]]]:
    return [(r.name, r.version, r.url, set(r.hashes)) for r in requirements]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("foo==1.0", [("foo", "1.0", None, set())]),
        # Names are canonicalised; versions kept as written.
        ("Foo_Bar.baz==2.0.1", [("foo-bar-baz", "2.0.1", None, set())]),
        ("foo==1.0rc1", [("foo", "1.0rc1", None, set())]),
        # Extras do not change what is downloaded.
        ("foo[extra,other]==1.0", [("foo", "1.0", None, set())]),
        ("foo===1.0-custom", [("foo", "1.0-custom", None, set())]),
        (f"foo==1.0 --hash=sha256:{A}", [("foo", "1.0", None, {A})]),
        (f"foo==1.0 --hash sha256:{A.upper()}", [("foo", "1.0", None, {A})]),
        # uv pip compile --generate-hashes layout.
        (
            f"foo==1.0 \\\n    --hash=sha256:{A} \\\n    --hash=sha256:{B}\n    # via bar\n",
            [("foo", "1.0", None, {A, B})],
        ),
        ("# header\n\nfoo==1.0  # via bar\n   # indented\nbar==2.0\n", [
            ("foo", "1.0", None, set()),
            ("bar", "2.0", None, set()),
        ]),
        # A comment line ending in a backslash continues nothing, as in pip (it swallowed foo).
        ("# built on C:\\\nfoo==1.0\n", [("foo", "1.0", None, set())]),
        ('foo==1.0 ; python_version < "3"\nbar==2.0', [("bar", "2.0", None, set())]),
        ('foo==1.0 ; python_version >= "3"', [("foo", "1.0", None, set())]),
        # Same pin twice (different spellings of one version): hashes merge.
        (f"foo==1.0 --hash=sha256:{A}\nFOO==1.0.0 --hash=sha256:{B}", [("foo", "1.0", None, {A, B})]),
        (
            "foo @ https://example.com/f/foo-1.0.tar.gz",
            [("foo", "1.0", "https://example.com/f/foo-1.0.tar.gz", set())],
        ),
        (
            f"https://example.com/f/Foo_Bar-1.0.zip#sha256={A}",
            [("foo-bar", "1.0", f"https://example.com/f/Foo_Bar-1.0.zip#sha256={A}", {A})],
        ),
        (
            'https://example.com/f/foo-1.0.tar.gz ; python_version < "3"\nbar==2.0',
            [("bar", "2.0", None, set())],
        ),
        # Legacy sdist formats that pip still builds (old releases on PyPI have them).
        (
            "https://example.com/f/Old_Pkg-0.9.tar.bz2",
            [("old-pkg", "0.9", "https://example.com/f/Old_Pkg-0.9.tar.bz2", set())],
        ),
        (
            "old @ https://example.com/f/old-0.9.tgz",
            [("old", "0.9", "https://example.com/f/old-0.9.tgz", set())],
        ),
        # A named URL whose file name carries no version.
        (
            "foo @ https://example.com/archive/main.zip",
            [("foo", None, "https://example.com/archive/main.zip", set())],
        ),
    ],
)
def test_valid_pins(tmp_path: Path, text: str, expected: list[tuple[str, str | None, str | None, set[str]]]) -> None:
    path = write(tmp_path, "requirements.txt", text)
    parsed = parse_requirements([path])
    assert pins(parsed.requirements) == expected
    # A URL's #sha256= checks that file only; --hash turns on pip's hash-checking mode for every line.
    assert parsed.require_hashes == ("--hash" in text)


def test_origin_is_first_line_of_a_continued_line(tmp_path: Path) -> None:
    path = write(tmp_path, "r.txt", f"# c\nfoo==1.0 \\\n  --hash=sha256:{A}\nbar==2.0\n")
    foo, bar = parse_requirements([path]).requirements
    assert foo.origin == f"{path}:2"
    assert bar.origin == f"{path}:4"


def test_option_lines(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    path = write(
        tmp_path,
        "r.txt",
        "--index-url https://a.example/simple\n"
        "--extra-index-url=https://b.example/simple\n"
        "-f ./wheels\n"
        "--find-links https://c.example/links.html\n"
        "--trusted-host a.example\n"
        "-i https://d.example/simple\n"
        "--no-index\n"
        "foo==1.0\n",
    )
    parsed = parse_requirements([path])
    assert parsed.index == IndexSettings(
        index_url="https://d.example/simple",  # the last one wins, as in pip
        extra_index_urls=("https://b.example/simple",),
        find_links=(str(tmp_path / "wheels"), "https://c.example/links.html"),
        no_index=True,
    )
    assert not parsed.require_hashes


def test_require_hashes_option(tmp_path: Path) -> None:
    path = write(tmp_path, "r.txt", "--require-hashes\nfoo==1.0\n")
    assert parse_requirements([path]).require_hashes


def test_includes_are_relative_and_cycle_safe(tmp_path: Path) -> None:
    main = write(tmp_path, "main.txt", "-r sub/base.txt\nfoo==1.0\n")
    base = write(tmp_path, "sub/base.txt", "bar==2.0\n-r../main.txt\n--requirement=more.txt\n")
    write(tmp_path, "sub/more.txt", "baz==3.0\n")
    parsed = parse_requirements([main])
    assert [(r.name, r.origin) for r in parsed.requirements] == [
        ("bar", f"{base}:1"),
        ("baz", f"{tmp_path / 'sub/more.txt'}:1"),
        ("foo", f"{main}:2"),
    ]


def test_several_files_merge(tmp_path: Path) -> None:
    one = write(tmp_path, "one.txt", f"foo==1.0 --hash=sha256:{A}\n")
    two = write(tmp_path, "two.txt", f"foo==1.0 --hash=sha256:{B}\nbar==1\n")
    parsed = parse_requirements([one, two])
    assert pins(parsed.requirements) == [("foo", "1.0", None, {A, B}), ("bar", "1", None, set())]


@pytest.mark.parametrize("suffix", [".tar.bz2", ".tar.xz", ".tgz", ".tar", ".tbz", ".txz", ".tlz", ".tar.lzma"])
def test_local_legacy_sdists(tmp_path: Path, suffix: str) -> None:
    sdist = tmp_path / "dist" / f"Old-0.9{suffix}"
    sdist.parent.mkdir()
    sdist.write_bytes(b"not really an archive")
    # A bare file name counts as a path when it ends like an sdist.
    (tmp_path / f"bare-1.0{suffix}").write_bytes(b"x")
    path = write(tmp_path, "r.txt", f"./dist/Old-0.9{suffix}\nbare-1.0{suffix}\n")
    parsed = parse_requirements([path])
    assert [(r.name, r.version, r.path) for r in parsed.requirements] == [
        ("old", "0.9", sdist),
        ("bare", "1.0", tmp_path / f"bare-1.0{suffix}"),
    ]


def test_local_paths(tmp_path: Path) -> None:
    sdist = tmp_path / "dist" / "Foo-1.0.tar.gz"
    sdist.parent.mkdir()
    sdist.write_bytes(b"not really a tarball")
    static = tmp_path / "src" / "static"
    static.mkdir(parents=True)
    (static / "pyproject.toml").write_text('[project]\nname = "Static_Pkg"\nversion = "2.0"\n')
    dynamic = tmp_path / "src" / "dynamic"
    dynamic.mkdir()
    (dynamic / "pyproject.toml").write_text('[project]\nname = "dyn"\ndynamic = ["version"]\n')
    legacy = tmp_path / "src" / "legacy"
    legacy.mkdir()
    path = write(
        tmp_path,
        "r.txt",
        f"./dist/Foo-1.0.tar.gz --hash=sha256:{A}\nsrc/static\n./src/dynamic\n"
        f"legacy @ {legacy.as_uri()}\n",
    )
    parsed = parse_requirements([path])
    assert [(r.name, r.version, r.path, set(r.hashes)) for r in parsed.requirements] == [
        ("foo", "1.0", sdist, {A}),
        ("static-pkg", "2.0", static, set()),
        ("dyn", None, dynamic, set()),
        ("legacy", None, legacy, set()),
    ]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        # Not PEP 508.
        ("foo==", 1, "cannot parse 'foo=='"),
        ('foo==1.0 ; python_version <', 1, "cannot parse 'foo==1.0 ; python_version <'"),
        # Only sha256 is accepted.
        ("\n\nfoo==1.0 --hash=md5:abc", 3, "unsupported hash 'md5:abc'; use --hash=sha256:<64 hex digits>"),
        # The continuation's error points at the requirement's first line.
        ("foo==1.0 \\\n  --hash=sha256:xyz", 1, "'sha256:xyz' is not a sha256 digest"),
        # Conflicting pins.
        ("foo==1.0\nFoo==2.0", 2, "foo is pinned to ==2.0 but {path}:1 pins ==1.0; keep one pin per package"),
        # Editables belong to development installs.
        ("-e ./src", 1, "editable requirements are not built"),
        # Options this tool does not implement are not silently ignored.
        ("--use-feature=truststore", 1, "unsupported option --use-feature"),
        ("--index-url", 1, "--index-url needs a value"),
        ("--no-index=yes", 1, "--no-index takes no value"),
        # An index without its scheme was taken for a path at the first look-up: "unexpected ValueError", a traceback.
        ("--index-url pypi.org/simple", 1, "--index-url pypi.org/simple is neither a URL nor a folder; "
                                           "give its scheme (https://pypi.org/simple)"),
        ("\n--extra-index-url=example.com/simple", 2, "--extra-index-url example.com/simple is neither a URL"),
        # Index options cannot follow a requirement.
        ("foo==1.0 --index-url https://x.example/simple", 1, "--index-url must be on a line of its own"),
        # --hash alone on a line has no requirement to belong to.
        (f"--hash=sha256:{A}", 1, "--hash must follow a requirement on its line"),
        ("-r missing.txt", 1, "cannot read requirements file {dir}/missing.txt"),
        # pip fetches these; the path was mangled ("https:/host/r.txt: No such file or directory").
        ("-r https://example.com/r.txt", 1, "-r https://example.com/r.txt: requirements files are read from disk "
                                            "only; download it and give its path"),
        ("-c https://example.com/c.txt", 1, "-c https://example.com/c.txt: requirements files are read from disk"),
        ("git+https://example.com/foo.git", 1, "version-control URLs are not supported"),
        ("foo @ git+https://example.com/foo.git", 1, "version-control URLs are not supported"),
        ("https://example.com/download", 1, "cannot tell name and version from https://example.com/download"),
        ("foo @ https://example.com/bar-1.0.tar.gz", 1, "is an sdist of bar, not foo"),
        ("foo @ https://example.com/bar-1.0-py3-none-any.whl", 1, "is a wheel of bar, not foo"),
        ("ftp://example.com/foo-1.0.tar.gz", 1, "unsupported URL scheme 'ftp'"),
        ("./missing-1.0.tar.gz", 1, "{dir}/missing-1.0.tar.gz does not exist"),
        ("'unterminated", 1, "cannot parse"),
        # Paths the operating system refuses.
        ("./a\x00b-1.0.tar.gz", 1, "cannot use path"),
        ("/" + "x" * 5000, 1, "cannot use path"),
        ("-r 'unterminated", 1, "cannot split options"),
    ],
)
def test_invalid_lines(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = write(tmp_path, "r.txt", text)
    with pytest.raises(UsageError) as info:
        parse_requirements([path])
    error = str(info.value)
    assert "\n" not in error
    assert error.startswith(f"{path}:{line}: ")
    assert message.format(path=path, dir=tmp_path) in error


def test_folder_without_a_static_name(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    path = write(tmp_path, "r.txt", "./src\n")
    with pytest.raises(UsageError, match=rf"^{path}:1: cannot tell the project name of .*; write `name @ file://"):
        parse_requirements([path])


def test_folder_whose_pyproject_cannot_be_parsed(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "pyproject.toml").write_text('[project]\nname = "pkg\n')
    path = write(tmp_path, "r.txt", "./src\n")
    with pytest.raises(UsageError, match=rf"^{path}:1: cannot read {tmp_path}/src/pyproject.toml: "):
        parse_requirements([path])


def test_missing_top_level_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^cannot read requirements file .*nope\.txt"):
        parse_requirements([tmp_path / "nope.txt"])


_NAMES = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,20}[A-Za-z0-9])?", fullmatch=True)
_VERSIONS = st.lists(st.integers(0, 999), min_size=1, max_size=4).map(lambda p: ".".join(map(str, p)))
_DIGESTS = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


@given(name=_NAMES, version=_VERSIONS, hashes=st.sets(_DIGESTS, max_size=3))
def test_pins_round_trip(name: str, version: str, hashes: set[str]) -> None:
    line = f"{name}=={version}" + "".join(f" \\\n    --hash=sha256:{h}" for h in sorted(hashes))
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder), "r.txt", line + "\n")
        (requirement,) = parse_requirements([path]).requirements
    assert requirement.version == version
    assert requirement.hashes == frozenset(hashes)
    assert requirement.name == requirement.name.lower()
    assert "_" not in requirement.name and "." not in requirement.name


@given(st.text(alphabet=string.printable + "é\x00", max_size=60)
       | st.from_regex(r"\./[a-z\x00/]{0,300}", fullmatch=True))
def test_any_line_parses_or_is_a_one_line_usage_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder), "r.txt", text)
        try:
            parse_requirements([path])
        except UsageError as exc:
            assert "\n" not in str(exc)
            assert str(exc).startswith(f"{path}:") or str(exc).startswith("cannot read")


@pytest.mark.parametrize(
    ("text", "line", "shown"),
    [
        # Ranges need a resolver.
        ("foo>=1", 1, "foo>=1"),
        # No version at all.
        ("\nfoo", 2, "foo"),
        # A wildcard is a range.
        ("foo==1.*", 1, "foo==1.*"),
        # Two specifiers are not one pin.
        ("foo==1.0,<2", 1, "foo==1.0,<2"),
    ],
)
def test_loose_requirements_are_for_the_resolver_only(tmp_path: Path, text: str, line: int, shown: str) -> None:
    path = write(tmp_path, "r.txt", text)
    parsed = parse_requirements([path])
    assert [(loose.name, loose.text, loose.origin) for loose in parsed.loose] == [("foo", shown, f"{path}:{line}")]
    assert not parsed.empty
    with pytest.raises(UsageError) as info:
        parsed.pins()
    assert str(info.value) == (
        f"{path}:{line}: {shown} does not pin exactly one version; with --no-deps every line must pin one version;"
        " pin it with `uv pip compile` or `pip-compile`, or drop --no-deps"
    )


def test_resolver_options_are_read(tmp_path: Path) -> None:
    write(tmp_path, "constraints.txt", "bar<2\n")
    path = write(
        tmp_path, "r.txt",
        "-c constraints.txt\n--no-binary :all:\n--only-binary=foo,baz\n--prefer-binary\nfoo==1.0\nrequests\n",
    )
    parsed = parse_requirements([path])
    assert parsed.constraints == (tmp_path / "constraints.txt",)
    assert parsed.binary_options == (("--no-binary", ":all:"), ("--only-binary", "foo,baz"))
    assert parsed.prefer_binary
    assert [requirement.name for requirement in parsed.requirements] == ["foo"]
    assert [loose.name for loose in parsed.loose] == ["requests"]


def test_lines_a_marker_excludes_are_listed(tmp_path: Path) -> None:
    path = write(tmp_path, "r.txt",
                 "# only for Python 2\nfoo==1.0; python_version < '3'\n\nbar; sys_platform == 'nowhere'\n")
    parsed = parse_requirements([path])
    assert parsed.empty
    assert parsed.skipped == (f"{path}:2: foo==1.0; python_version < '3'", f"{path}:4: bar; sys_platform == 'nowhere'")


def test_an_empty_file_is_empty(tmp_path: Path) -> None:
    parsed = parse_requirements([write(tmp_path, "r.txt", "# nothing yet\n\n")])
    assert parsed.empty and parsed.skipped == ()


def test_wheels_are_pins(tmp_path: Path) -> None:
    wheel = tmp_path / "local-2.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel")
    path = write(
        tmp_path, "r.txt",
        f"https://example.com/foo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl#sha256={A}\n./{wheel.name}\n",
    )
    foo, local = parse_requirements([path]).pins()
    assert (foo.name, foo.version, foo.hashes) == ("foo", "1.0", frozenset({A}))
    assert (local.name, local.version, local.path) == ("local", "2.0", wheel)


def test_environment_variables_are_expanded_as_pip_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # CI files carry `--index-url https://${TOKEN}@host/simple`: pip and uv expand ${NAME}; orchestrate fetched
    # "${MY_INDEX}/six/" ("unexpected ValueError: Invalid find link").
    monkeypatch.setenv("ORCH_INDEX", "https://user:pw@example.com/simple")
    monkeypatch.setenv("ORCH_VERSION_2", "2.0")
    monkeypatch.delenv("ORCH_UNSET", raising=False)
    path = write(tmp_path, "r.txt", "--index-url ${ORCH_INDEX}\n"
                                    "foo @ https://example.com/f/foo-${ORCH_VERSION_2}.tar.gz\n"
                                    "bar @ https://example.com/${ORCH_UNSET}/bar-1.0.tar.gz\n"
                                    "baz @ https://example.com/$ORCH_INDEX/${orch_index}/baz-1.0.tar.gz\n")
    parsed = parse_requirements([path])
    assert parsed.index.index_url == "https://user:pw@example.com/simple"
    assert [(pin.name, pin.version, pin.url) for pin in parsed.requirements] == [
        ("foo", "2.0", "https://example.com/f/foo-2.0.tar.gz"),
        ("bar", "1.0", "https://example.com/${ORCH_UNSET}/bar-1.0.tar.gz"),  # unset: kept as written, as pip does
        ("baz", "1.0", "https://example.com/$ORCH_INDEX/${orch_index}/baz-1.0.tar.gz"),  # not pip's ${NAME} form
    ]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-8-sig"])
def test_a_file_with_a_byte_order_mark_is_read_as_pip_reads_it(tmp_path: Path, encoding: str) -> None:
    # Windows PowerShell's `pip freeze > requirements.txt` writes UTF-16 with a BOM: pip and uv read it; orchestrate
    # said "'utf-8' codec can't decode byte 0xff in position 0".
    path = tmp_path / "r.txt"
    bom = {"utf-16-be": "\ufeff"}.get(encoding, "")  # the -be codec writes no BOM of its own
    path.write_bytes(f"{bom}foo==1.0\r\nbar==2.0  # café\r\n".encode(encoding))
    assert pins(parse_requirements([path]).requirements) == [("foo", "1.0", None, set()), ("bar", "2.0", None, set())]
