from __future__ import annotations

import gzip
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from index_server import IndexServer, index_server_fixture  # noqa: F401  (the index_server fixture)
from packaging.tags import sys_tags

from orchestrator.download.binary import BinaryOption, BinaryPolicy
from orchestrator.download.fetch import (
    Downloader,
    DownloadResult,
    DownloadSettings,
    DownloadStatus,
    _Stalled,
    _StallWatch,
    download_all,
)
from orchestrator.download.requirements import PinnedRequirement, parse_requirements
from orchestrator.download.results import DOWNLOADS
from orchestrator.errors import UsageError
from orchestrator.settings import IndexSettings
from orchestrator.stages import StageProgress

pytestmark = pytest.mark.timeout(60)


def sdist(name: str, version: str) -> bytes:
    return gzip.compress(f"{name}-{version} sdist".encode(), mtime=0)


def pin(name: str, version: str | None = "1.0", **kwargs: object) -> PinnedRequirement:
    return PinnedRequirement(name=name, version=version, origin="requirements.txt:7", **kwargs)  # type: ignore[arg-type]


def settings_for(server: IndexServer, tmp_path: Path, **kwargs: object) -> DownloadSettings:
    values: dict[str, object] = {
        "index": IndexSettings(index_url=server.simple_url),
        "cache_dir": tmp_path / "cache",
        "timeout": 5.0,
        "backoff": 0.01,
    }
    values.update(kwargs)
    return DownloadSettings(**values)  # type: ignore[arg-type]


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "dest"


def fetch(settings: DownloadSettings, dest: Path, requirement: PinnedRequirement) -> DownloadResult:
    with Downloader(settings, dest) as downloader:
        return downloader.fetch(requirement)


@pytest.fixture(params=[True, False], ids=["json", "html"])
def any_index(request: pytest.FixtureRequest) -> Iterator[IndexServer]:
    """The index answering in PEP 691 JSON, then in PEP 503 HTML."""
    with IndexServer(json_api=request.param) as server:
        yield server


def test_fetch_from_index(any_index: IndexServer, tmp_path: Path, dest: Path) -> None:
    content = sdist("foo", "1.0")
    sha256 = any_index.add("foo-1.0.tar.gz", content)
    any_index.add("foo-2.0.tar.gz", sdist("foo", "2.0"))
    any_index.add("foo-1.0-py3-none-any.whl", b"a wheel")
    before = time.time()
    source_only = BinaryPolicy.from_options([("--no-binary", "foo")])
    result = fetch(settings_for(any_index, tmp_path, binary=source_only), dest, pin("foo", "1.0"))
    assert result.status is DownloadStatus.DOWNLOADED, result.error
    assert result.path == dest / "foo-1.0.tar.gz"
    assert result.path.read_bytes() == content
    assert (result.sha256, result.bytes, result.error) == (sha256, len(content), None)
    assert result.url == any_index.file_url("foo-1.0.tar.gz")
    assert before <= result.started_at <= result.finished_at <= time.time()
    assert any_index.downloads("foo-1.0.tar.gz") == 1
    assert any_index.downloads("foo-1.0-py3-none-any.whl") == 0
    assert files_in(dest) == ["foo-1.0.tar.gz"]
    assert json.loads(json.dumps(result.to_json())) == {
        "name": "foo",
        "version": "1.0",
        "url": any_index.file_url("foo-1.0.tar.gz"),
        "sha256": sha256,
        "bytes": len(content),
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "status": "downloaded",
        "error": None,
        "path": str(dest / "foo-1.0.tar.gz"),
        "yanked": None,
    }


def test_a_yanked_file_pinned_is_taken_with_a_warning(any_index: IndexServer, tmp_path: Path, dest: Path) -> None:
    # pip takes a yanked version a pin names, and warns with the index's reason; nothing said it here.
    any_index.add("foo-1.0.tar.gz", sdist("foo", "1.0"))
    reason = "Yanked due to CVE-2024-35195 & <a regression>"
    any_index.yank("foo-1.0.tar.gz", reason)
    result = fetch(settings_for(any_index, tmp_path), dest, pin("foo", "1.0"))
    assert (result.status, result.yanked) == (DownloadStatus.DOWNLOADED, reason)
    line = DOWNLOADS.outcome(result).line
    assert line is not None and line.endswith(f"B); warning: yanked on the index: {reason}"), line


def test_max_downloads_bounds_files_in_flight(tmp_path: Path, dest: Path) -> None:
    with IndexServer(delay=0.2) as server:
        names = [f"pkg{i}" for i in range(6)]
        for name in names:
            server.add(f"{name}-1.0.tar.gz", sdist(name, "1.0"))
        seen: list[str] = []
        results = download_all(
            [pin(name) for name in names],
            settings_for(server, tmp_path),
            dest,
            max_downloads=2,
            on_result=lambda result: seen.append(result.name),
        )
        assert server.max_in_flight == 2
        assert server.in_flight == 0
    assert [r.name for r in results] == names
    assert sorted(seen) == names
    assert all(r.status is DownloadStatus.DOWNLOADED for r in results)


def test_progress_counts_files_and_bytes(tmp_path: Path, dest: Path) -> None:
    with IndexServer(delay=0.2) as server:
        sizes = [len(sdist(f"pkg{i}", "1.0")) for i in range(5)]
        for i in range(5):
            server.add(f"pkg{i}-1.0.tar.gz", sdist(f"pkg{i}", "1.0"))
        seen: list[StageProgress] = []
        results = download_all(
            [pin(f"pkg{i}") for i in range(5)] + [pin("absent")],
            settings_for(server, tmp_path),
            dest,
            max_downloads=2,
            on_progress=seen.append,
        )
    assert [r.status for r in results].count(DownloadStatus.FAILED) == 1
    assert seen[0] == StageProgress(total=6, in_flight=0, done=0, failed=0, bytes_done=0)
    assert seen[-1] == StageProgress(total=6, in_flight=0, done=5, failed=1, bytes_done=sum(sizes))
    assert max(progress.in_flight for progress in seen) == 2  # never more than max_downloads
    assert len(seen) == 1 + 6 + 6  # the start, then each fetch's start and end


def test_on_result_is_called_in_the_calling_thread(index_server: IndexServer, tmp_path: Path, dest: Path) -> None:
    index_server.add("foo-1.0.tar.gz", sdist("foo", "1.0"))
    threads: list[threading.Thread] = []
    download_all(
        [pin("foo")],
        settings_for(index_server, tmp_path),
        dest,
        max_downloads=4,
        on_result=lambda result: threads.append(threading.current_thread()),
    )
    assert threads == [threading.current_thread()]


def test_an_interrupt_starts_no_more_fetches_and_closing_the_client_ends_those_in_flight(
    index_server: IndexServer, tmp_path: Path, dest: Path
) -> None:
    index_server.add("fast-1.0.tar.gz", sdist("fast", "1.0"))
    for name in ("trickles", "slow", "queued"):
        index_server.add(f"{name}-1.0.tar.gz", sdist(name, "1.0") * 100)  # about 4 KB: minutes at 10 B/s
        index_server.trickle(f"{name}-1.0.tar.gz", 10)

    def interrupt(result: DownloadResult) -> None:
        deadline = time.monotonic() + 30
        while not index_server.downloads("trickles-1.0.tar.gz") and time.monotonic() < deadline:
            time.sleep(0.01)
        raise KeyboardInterrupt  # as Ctrl-C would, in the calling thread, with "trickles" under way

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        download_all([pin("trickles"), pin("fast"), pin("slow"), pin("queued")],
                     settings_for(index_server, tmp_path, retries=0), dest, max_downloads=2, on_result=interrupt)
    assert time.monotonic() - started < 4  # not the 5 s the stall rule would take
    assert index_server.downloads("trickles-1.0.tar.gz") == 1
    assert index_server.downloads("queued-1.0.tar.gz") == 0  # both threads were busy until the interrupt
    assert files_in(dest) == ["fast-1.0.tar.gz"]


def test_fetches_ended_by_closing_the_client_are_stopped_not_failed(
    index_server: IndexServer, tmp_path: Path, dest: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Ctrl-C during downloads closes the client: what was under way, and a look-up that starts just after, were
    # counted as failures (one with a traceback: "Cannot send a request, as the client has been closed").
    index_server.add("trickles-1.0.tar.gz", sdist("trickles", "1.0") * 100)
    index_server.trickle("trickles-1.0.tar.gz", 10)
    index_server.add("later-1.0.tar.gz", sdist("later", "1.0"))
    downloader = Downloader(settings_for(index_server, tmp_path, retries=0), dest)
    results: list[DownloadResult] = []
    under_way = threading.Thread(target=lambda: results.append(downloader.fetch(pin("trickles"))))
    under_way.start()
    deadline = time.monotonic() + 30
    while not index_server.downloads("trickles-1.0.tar.gz") and time.monotonic() < deadline:
        time.sleep(0.01)
    downloader.close()
    under_way.join(10)
    results.append(downloader.fetch(pin("later")))
    assert [(result.name, result.status, result.error) for result in results] == [
        ("trickles", DownloadStatus.STOPPED, None), ("later", DownloadStatus.STOPPED, None)]
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
    assert files_in(dest) == []


def test_max_downloads_must_be_positive(tmp_path: Path, dest: Path) -> None:
    settings = DownloadSettings(index=IndexSettings(no_index=True), cache_dir=None)
    with pytest.raises(UsageError, match="max_downloads must be at least 1, not 0"):
        download_all([], settings, dest, max_downloads=0)


def test_server_errors_are_retried(index_server: IndexServer, tmp_path: Path, dest: Path) -> None:
    content = sdist("foo", "1.0")
    index_server.add("foo-1.0.tar.gz", content)
    index_server.fail_first("foo-1.0.tar.gz", 2)
    result = fetch(settings_for(index_server, tmp_path, retries=3), dest, pin("foo"))
    assert result.status is DownloadStatus.DOWNLOADED, result.error
    assert result.path is not None and result.path.read_bytes() == content
    assert index_server.downloads("foo-1.0.tar.gz") == 3


def test_index_page_errors_are_retried(index_server: IndexServer, tmp_path: Path, dest: Path) -> None:
    index_server.add("foo-1.0.tar.gz", sdist("foo", "1.0"))
    index_server.fail_page("foo", 2)
    result = fetch(settings_for(index_server, tmp_path, retries=2), dest, pin("foo"))
    assert result.status is DownloadStatus.DOWNLOADED, result.error
    assert index_server.requests["/simple/foo/"] == 3

    index_server.fail_page("foo", 3)
    result = fetch(settings_for(index_server, tmp_path, retries=2, cache_dir=None), dest, pin("foo"))
    assert result.error is not None
    assert result.error.startswith(f"foo 1.0: looking it up on {index_server.simple_url} failed 3 time(s)")


def test_server_errors_exhaust_retries(index_server: IndexServer, tmp_path: Path, dest: Path) -> None:
    index_server.add("foo-1.0.tar.gz", sdist("foo", "1.0"))
    index_server.fail_first("foo-1.0.tar.gz", 10, status=503)
    result = fetch(settings_for(index_server, tmp_path, retries=2), dest, pin("foo"))
    assert result.status is DownloadStatus.FAILED
    assert result.error is not None and "\n" not in result.error
    assert result.error.startswith("foo 1.0: downloading http://127.0.0.1:")
    assert "failed 3 time(s), last with _ServerError: HTTP 503" in result.error
    assert index_server.downloads("foo-1.0.tar.gz") == 3
    assert files_in(dest) == []


def test_early_close_is_retried(index_server: IndexServer, tmp_path: Path, dest: Path) -> None:
    content = sdist("foo", "1.0") * 100
    index_server.add("foo-1.0.tar.gz", content)
    index_server.close_early("foo-1.0.tar.gz", 2)
    result = fetch(settings_for(index_server, tmp_path), dest, pin("foo"))
    assert result.status is DownloadStatus.DOWNLOADED, result.error
    assert result.path is not None and result.path.read_bytes() == content
    assert index_server.downloads("foo-1.0.tar.gz") == 3
    assert files_in(dest) == ["foo-1.0.tar.gz"]


def test_early_close_without_retries_fails(index_server: IndexServer, tmp_path: Path, dest: Path) -> None:
    index_server.add("foo-1.0.tar.gz", sdist("foo", "1.0") * 100)
    index_server.close_early("foo-1.0.tar.gz", 1)
    result = fetch(settings_for(index_server, tmp_path, retries=0), dest, pin("foo"))
    assert result.status is DownloadStatus.FAILED
    assert result.error is not None and "RemoteProtocolError" in result.error
    assert files_in(dest) == []


def test_wrong_bytes_against_the_index_hash(any_index: IndexServer, tmp_path: Path, dest: Path) -> None:
    bad_sha = any_index.add("bad-1.0.tar.gz", sdist("bad", "1.0"))
    any_index.serve_wrong_bytes("bad-1.0.tar.gz")
    actual = hashlib.sha256(b"tampered " + sdist("bad", "1.0")).hexdigest()
    for name in ("good", "fine"):
        any_index.add(f"{name}-1.0.tar.gz", sdist(name, "1.0"))
    results = download_all(
        [pin("good"), pin("bad"), pin("fine")], settings_for(any_index, tmp_path), dest, max_downloads=2
    )
    good, bad, fine = results
    assert (good.status, fine.status) == (DownloadStatus.DOWNLOADED, DownloadStatus.DOWNLOADED)
    assert bad.status is DownloadStatus.FAILED
    assert bad.error == (
        f"bad 1.0: bad-1.0.tar.gz has sha256 {actual} but the index lists {bad_sha}; "
        "the file was not kept; the index or the transfer is corrupt"
    )
    assert any_index.downloads("bad-1.0.tar.gz") == 1  # a mismatch is not retried
    assert files_in(dest) == ["fine-1.0.tar.gz", "good-1.0.tar.gz"]
    assert sorted(Path(p).name for p in files_in(tmp_path / "cache")) == ["fine-1.0.tar.gz", "good-1.0.tar.gz"]


def test_wrong_bytes_against_the_requirement_hash(index_server: IndexServer, tmp_path: Path, dest: Path) -> None:
    actual = index_server.add("foo-1.0.tar.gz", sdist("foo", "1.0"))
    expected = "0" * 64
    result = fetch(settings_for(index_server, tmp_path), dest, pin("foo", hashes=frozenset({expected})))
    assert result.status is DownloadStatus.FAILED
    assert result.error == (
        f"foo 1.0: foo-1.0.tar.gz has sha256 {actual} but requirements.txt:7 expects {expected}; "
        "the file was not kept; check the pin or the source"
    )
    assert files_in(dest) == []
    assert files_in(tmp_path / "cache") == []


def test_missing_package(index_server: IndexServer, tmp_path: Path, dest: Path) -> None:
    index_server.add("foo-2.0.tar.gz", sdist("foo", "2.0"))
    settings = settings_for(index_server, tmp_path)
    with Downloader(settings, dest) as downloader:
        absent = downloader.fetch(pin("nothere"))
        other_version = downloader.fetch(pin("foo", "1.0"))
    where = index_server.simple_url
    assert absent.error == f"nothere 1.0 not found on {where}; check the pin and the index options"
    assert other_version.error == f"foo 1.0 not found on {where}; check the pin and the index options"
    assert absent.status is other_version.status is DownloadStatus.FAILED


def test_a_compatible_wheel_is_taken_before_the_sdist(any_index: IndexServer, tmp_path: Path, dest: Path) -> None:
    any_index.add("foo-1.0.tar.gz", sdist("foo", "1.0"))
    any_index.add("foo-1.0-cp27-none-any.whl", b"a wheel for Python 2")
    any_index.add("foo-1.0-py2.py3-none-any.whl", b"a universal wheel")
    interpreter = next(iter(sys_tags()))  # the tag this interpreter ranks first
    any_index.add(f"foo-1.0-{interpreter}.whl", b"the best wheel")
    result = fetch(settings_for(any_index, tmp_path), dest, pin("foo"))
    assert result.status is DownloadStatus.DOWNLOADED, result.error
    assert result.path == dest / f"foo-1.0-{interpreter}.whl"
    assert result.path.read_bytes() == b"the best wheel"
    assert any_index.downloads("foo-1.0.tar.gz") == 0


def test_an_incompatible_wheel_leaves_the_sdist(index_server: IndexServer, tmp_path: Path, dest: Path) -> None:
    index_server.add("foo-1.0.tar.gz", sdist("foo", "1.0"))
    index_server.add("foo-1.0-cp27-cp27mu-manylinux1_x86_64.whl", b"a wheel for Python 2")
    result = fetch(settings_for(index_server, tmp_path), dest, pin("foo"))
    assert result.status is DownloadStatus.DOWNLOADED, result.error
    assert result.path == dest / "foo-1.0.tar.gz"


@pytest.mark.parametrize(
    ("files", "policy", "error"),
    [
        # Only a wheel, and the policy wants a build.
        (["foo-1.0-py3-none-any.whl"], [("--no-binary", ":all:")],
         "foo 1.0: --no-binary :all: allows only sdists of foo, and {where} has foo-1.0-py3-none-any.whl;"
         " change the policy for it"),
        # Only an sdist, and the policy wants a wheel.
        (["foo-1.0.tar.gz"], [("--only-binary", "foo")],
         "foo 1.0: --only-binary foo allows only wheels of foo, and {where} has foo-1.0.tar.gz;"
         " change the policy for it"),
        # Only a wheel for another Python: nothing to take, nothing to build.
        (["foo-1.0-cp27-none-any.whl"], [],
         "no wheel of foo 1.0 on {where} fits this interpreter (foo-1.0-cp27-none-any.whl) and there is no sdist"
         " to build; publish one or pin a URL to one"),
    ],
    ids=["wheel-only-no-binary", "sdist-only-only-binary", "incompatible-wheel-only"],
)
def test_what_cannot_be_taken_is_named(
    index_server: IndexServer, tmp_path: Path, dest: Path, files: list[str],
    policy: list[tuple[BinaryOption, str]], error: str,
) -> None:
    for filename in files:
        index_server.add(filename, b"content")
    settings = settings_for(index_server, tmp_path, binary=BinaryPolicy.from_options(policy))
    result = fetch(settings, dest, pin("foo"))
    assert result.status is DownloadStatus.FAILED
    assert result.error == error.format(where=index_server.simple_url)
    assert files_in(dest) == []


def test_direct_url(index_server: IndexServer, tmp_path: Path, dest: Path) -> None:
    sha256 = index_server.add("foo-1.0.tar.gz", sdist("foo", "1.0"))
    url = index_server.file_url("foo-1.0.tar.gz")
    result = fetch(settings_for(index_server, tmp_path), dest, pin("foo", url=url, hashes=frozenset({sha256})))
    assert result.status is DownloadStatus.DOWNLOADED, result.error
    assert index_server.requests == {"/files/foo-1.0.tar.gz": 1}  # no index page needed


def test_direct_url_not_found_is_not_retried(index_server: IndexServer, tmp_path: Path, dest: Path) -> None:
    url = f"{index_server.url}/files/foo-1.0.tar.gz"
    result = fetch(settings_for(index_server, tmp_path), dest, pin("foo", url=url))
    assert result.error == f"foo 1.0: {url} answered 404 Not Found; check the pin and the index"
    assert index_server.requests == {"/files/foo-1.0.tar.gz": 1}


def test_unpinned_requirements_are_refused(index_server: IndexServer, tmp_path: Path, dest: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("foo>=1\n")
    with pytest.raises(UsageError, match=rf"^{requirements}:1: foo>=1 does not pin exactly one version"):
        parse_requirements([requirements]).pins()
    result = fetch(settings_for(index_server, tmp_path), dest, pin("foo", None))
    assert result.status is DownloadStatus.FAILED
    assert result.error is not None
    assert result.error.startswith("requirements.txt:7: foo is not pinned to a version")
    assert not index_server.requests


def test_cache_avoids_a_second_download(index_server: IndexServer, tmp_path: Path) -> None:
    content = sdist("foo", "1.0")
    sha256 = index_server.add("foo-1.0.tar.gz", content)
    settings = settings_for(index_server, tmp_path)
    first = fetch(settings, tmp_path / "one", pin("foo"))
    assert first.status is DownloadStatus.DOWNLOADED, first.error
    assert files_in(tmp_path / "cache") == [f"sha256/{sha256[:2]}/{sha256}/foo-1.0.tar.gz"]

    # No hashes in the requirement: the index page is read, its hash finds the file.
    second = fetch(settings, tmp_path / "two", pin("foo"))
    assert second.status is DownloadStatus.CACHED, second.error
    assert second.path == tmp_path / "two" / "foo-1.0.tar.gz"
    assert second.path.read_bytes() == content
    assert (second.sha256, second.bytes) == (sha256, len(content))
    assert index_server.downloads("foo-1.0.tar.gz") == 1

    # Hashes in the requirement: the network is not touched at all.
    requests = sum(index_server.requests.values())
    third = fetch(settings, tmp_path / "three", pin("foo", hashes=frozenset({sha256})))
    assert third.status is DownloadStatus.CACHED, third.error
    assert sum(index_server.requests.values()) == requests


def test_corrupt_cache_entry_is_fetched_again(index_server: IndexServer, tmp_path: Path, dest: Path) -> None:
    content = sdist("foo", "1.0")
    sha256 = index_server.add("foo-1.0.tar.gz", content)
    entry = tmp_path / "cache" / "sha256" / sha256[:2] / sha256 / "foo-1.0.tar.gz"
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"rotten")
    result = fetch(settings_for(index_server, tmp_path), dest, pin("foo", hashes=frozenset({sha256})))
    assert result.status is DownloadStatus.DOWNLOADED, result.error
    assert entry.read_bytes() == content
    assert index_server.downloads("foo-1.0.tar.gz") == 1


def test_unreadable_cache_entry_is_fetched_instead(
    index_server: IndexServer, tmp_path: Path, dest: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sha256 = index_server.add("foo-1.0.tar.gz", sdist("foo", "1.0"))
    entry = tmp_path / "cache" / "sha256" / sha256[:2] / sha256 / "foo-1.0.tar.gz"
    entry.mkdir(parents=True)  # a folder where the file should be: opening it fails
    result = fetch(settings_for(index_server, tmp_path), dest, pin("foo", hashes=frozenset({sha256})))
    assert result.status is DownloadStatus.DOWNLOADED, result.error
    assert index_server.downloads("foo-1.0.tar.gz") == 1
    assert f"cannot read the cache entry {entry}" in caplog.text
    assert "cannot save" not in caplog.text
    assert entry.is_dir()  # not deleted: unreadable is not corrupt
    assert files_in(dest) == ["foo-1.0.tar.gz"]


def test_no_cache(index_server: IndexServer, tmp_path: Path, dest: Path) -> None:
    index_server.add("foo-1.0.tar.gz", sdist("foo", "1.0"))
    settings = settings_for(index_server, tmp_path, cache_dir=None)
    assert fetch(settings, dest, pin("foo")).status is DownloadStatus.DOWNLOADED
    # another folder: the one above holds the file already, and would keep it
    assert fetch(settings, tmp_path / "other", pin("foo")).status is DownloadStatus.DOWNLOADED
    assert index_server.downloads("foo-1.0.tar.gz") == 2
    assert not (tmp_path / "cache").exists()


def test_require_hashes_refuses_unhashed_requirements(index_server: IndexServer, tmp_path: Path, dest: Path) -> None:
    sha256 = index_server.add("foo-1.0.tar.gz", sdist("foo", "1.0"))
    settings = settings_for(index_server, tmp_path, require_hashes=True)
    refused = fetch(settings, dest, pin("foo"))
    assert refused.status is DownloadStatus.FAILED
    assert refused.error == (
        "foo 1.0: hashes are required but requirements.txt:7 gives none; add "
        "--hash=sha256:... (`uv pip compile --generate-hashes`) or drop the hashes"
    )
    assert not index_server.requests
    accepted = fetch(settings, dest, pin("foo", hashes=frozenset({sha256})))
    assert accepted.status is DownloadStatus.DOWNLOADED, accepted.error


@pytest.mark.timeout(20)
def test_timeout_on_a_hanging_server(index_server: IndexServer, tmp_path: Path, dest: Path) -> None:
    index_server.add("foo-1.0.tar.gz", sdist("foo", "1.0"))
    index_server.hang("foo-1.0.tar.gz")
    timeout, retries = 0.5, 2
    settings = settings_for(index_server, tmp_path, timeout=timeout, retries=retries)
    start = time.monotonic()
    result = fetch(settings, dest, pin("foo"))
    elapsed = time.monotonic() - start
    assert result.status is DownloadStatus.FAILED
    assert result.error is not None and "failed 3 time(s), last with ReadTimeout" in result.error
    assert timeout * (retries + 1) <= elapsed < timeout * (retries + 1) + 1.0
    assert index_server.downloads("foo-1.0.tar.gz") == retries + 1
    assert files_in(dest) == []


def _first_stall(segments: list[tuple[int, int]], min_speed: int) -> int | None:
    """Feed a :class:`_StallWatch` (10 s window) one arrival a second; the second it stalls, if any."""
    now = 0
    watch = _StallWatch(min_speed, 10.0, clock=lambda: now)
    for seconds, bytes_per_second in segments:
        for _ in range(seconds):
            now += 1
            try:
                watch.received(bytes_per_second)
            except _Stalled:
                return now
    return None


@pytest.mark.parametrize(
    ("segments", "min_speed", "stalls_at"),
    [
        # steady above the floor, for many windows
        ([(60, 200)], 100, None),
        # steady under the floor: cut once a whole window has passed
        ([(60, 50)], 100, 10),
        # fast, then a trickle from second 20: cut a window later
        ([(20, 1000), (40, 10)], 100, 30),
        # a dip shorter than the window is averaged out
        ([(20, 1000), (8, 1), (30, 1000)], 100, None),
        # slowing down, but not under the floor
        ([(10, 10_000), (50, 150)], 100, None),
        # min_speed 0 turns the rule off
        ([(60, 1)], 0, None),
    ],
)
def test_stall_watch(segments: list[tuple[int, int]], min_speed: int, stalls_at: int | None) -> None:
    assert _first_stall(segments, min_speed) == stalls_at


@pytest.mark.timeout(30)
def test_trickling_download_is_cut(index_server: IndexServer, tmp_path: Path, dest: Path) -> None:
    index_server.add("foo-1.0.tar.gz", sdist("foo", "1.0") * 100)
    index_server.trickle("foo-1.0.tar.gz", 10)  # 10 B/s: never a read timeout, far under 1 KiB/s
    timeout, retries = 1.0, 1
    settings = settings_for(index_server, tmp_path, timeout=timeout, retries=retries)
    start = time.monotonic()
    result = fetch(settings, dest, pin("foo"))
    elapsed = time.monotonic() - start
    assert result.status is DownloadStatus.FAILED
    assert result.error == (
        f"foo 1.0: downloading {index_server.file_url('foo-1.0.tar.gz')} failed 2 time(s), "
        "last stalled under 1.0 KiB/s for 1 s; check the index or raise --download-timeout"
    )
    # Each attempt is cut between one window and 9/8 of one, plus a trickle step.
    assert timeout * (retries + 1) <= elapsed < (timeout * 9 / 8 + 0.1) * (retries + 1) + 1.0
    assert index_server.downloads("foo-1.0.tar.gz") == retries + 1
    assert files_in(dest) == []
    assert files_in(tmp_path / "cache") == []


@pytest.mark.timeout(30)
def test_slow_but_steady_download_is_not_cut(index_server: IndexServer, tmp_path: Path, dest: Path) -> None:
    content = bytes(range(256)) * 80  # 20 KiB at 8 KiB/s: 2.5 s, longer than the timeout
    index_server.add("foo-1.0.tar.gz", content)
    index_server.trickle("foo-1.0.tar.gz", 8 * 1024)
    start = time.monotonic()
    result = fetch(settings_for(index_server, tmp_path, timeout=1.0, retries=0), dest, pin("foo"))
    assert result.status is DownloadStatus.DOWNLOADED, result.error
    assert time.monotonic() - start >= 2.0
    assert result.path is not None and result.path.read_bytes() == content
    assert index_server.downloads("foo-1.0.tar.gz") == 1


def test_find_links_folder_without_index(tmp_path: Path, dest: Path) -> None:
    links = tmp_path / "links"
    links.mkdir()
    content = sdist("foo", "1.0")
    (links / "foo-1.0.tar.gz").write_bytes(content)
    (links / "foo-1.0-py3-none-any.whl").write_bytes(b"wheel")
    settings = DownloadSettings(
        index=IndexSettings(no_index=True, find_links=(str(links),)), cache_dir=None
    )
    result = fetch(settings, dest, pin("foo"))
    assert result.status is DownloadStatus.DOWNLOADED, result.error
    assert result.path is not None and result.path.read_bytes() == b"wheel"
    assert result.url == (links / "foo-1.0-py3-none-any.whl").as_uri()
    source = fetch(replace(settings, binary=BinaryPolicy.from_options([("--no-binary", ":all:")])), dest, pin("foo"))
    assert source.path is not None and source.path.read_bytes() == content
    assert source.url == (links / "foo-1.0.tar.gz").as_uri()


def test_no_index_and_no_find_links(tmp_path: Path, dest: Path) -> None:
    settings = DownloadSettings(index=IndexSettings(no_index=True), cache_dir=None)
    result = fetch(settings, dest, pin("foo"))
    assert result.error == (
        "foo 1.0: --no-index is set and no --find-links is given; there is nowhere to download from"
    )


def test_local_requirements_are_used_in_place(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "foo-1.0.tar.gz"
    archive.write_bytes(sdist("foo", "1.0"))
    sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    folder = tmp_path / "src"
    folder.mkdir()
    settings = DownloadSettings(index=IndexSettings(no_index=True), cache_dir=None)
    with Downloader(settings, dest) as downloader:
        file_result = downloader.fetch(pin("foo", path=archive, hashes=frozenset({sha256})))
        folder_result = downloader.fetch(pin("bar", None, path=folder))
        mismatch = downloader.fetch(pin("foo", path=archive, hashes=frozenset({"1" * 64})))
        missing = downloader.fetch(pin("baz", path=tmp_path / "baz-1.0.tar.gz"))
    assert (file_result.status, file_result.path, file_result.sha256) == (DownloadStatus.LOCAL, archive, sha256)
    assert file_result.bytes == archive.stat().st_size
    assert (folder_result.status, folder_result.path, folder_result.sha256) == (DownloadStatus.LOCAL, folder, None)
    assert mismatch.status is DownloadStatus.FAILED
    assert mismatch.error is not None
    assert f"has sha256 {sha256} but requirements.txt:7 expects {'1' * 64}" in mismatch.error
    assert missing.error is not None and missing.error.startswith("baz 1.0: cannot read ")
    assert files_in(dest) == []


def test_local_folder_cannot_be_hash_checked(tmp_path: Path, dest: Path) -> None:
    settings = DownloadSettings(index=IndexSettings(no_index=True), cache_dir=None, require_hashes=True)
    result = fetch(settings, dest, pin("bar", None, path=tmp_path))
    assert result.error is not None and "is a folder, which cannot be hash-checked" in result.error


def test_find_links_legacy_sdist(tmp_path: Path, dest: Path) -> None:
    links = tmp_path / "links"
    links.mkdir()
    (links / "old-0.9.tar.bz2").write_bytes(b"an old release")
    settings = DownloadSettings(index=IndexSettings(no_index=True, find_links=(str(links),)), cache_dir=None)
    result = fetch(settings, dest, pin("old", "0.9"))
    assert result.status is DownloadStatus.DOWNLOADED, result.error
    assert result.path == dest / "old-0.9.tar.bz2"


def test_sdist_in_a_format_nothing_reads_is_not_chosen(tmp_path: Path, dest: Path) -> None:
    links = tmp_path / "links"
    links.mkdir()
    (links / "foo-1.0.tar.lz").write_bytes(b"LZIP")  # lzip: unearth lists it, but nothing here can unpack it
    settings = DownloadSettings(index=IndexSettings(no_index=True, find_links=(str(links),)), cache_dir=None)
    refused = fetch(settings, dest, pin("foo"))
    assert refused.status is DownloadStatus.FAILED
    assert refused.error == (
        f"no sdist of foo 1.0 on {links} in a format this tool reads (.tar.gz, .zip, .tar.bz2, .tar.xz, .tgz, "
        ".tbz, .txz, .tlz, .tar.lzma, .tar); only foo-1.0.tar.lz; pin a URL to one it reads"
    )
    assert files_in(dest) == []
    (links / "foo-1.0.tar.xz").write_bytes(b"readable")
    chosen = fetch(settings, dest, pin("foo"))
    assert chosen.status is DownloadStatus.DOWNLOADED, chosen.error
    assert files_in(dest) == ["foo-1.0.tar.xz"]
