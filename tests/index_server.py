"""A real package index on 127.0.0.1 for tests and benchmarks.

It serves PEP 503 HTML simple pages, or PEP 691 JSON ones when the ``Accept``
header asks, with ``#sha256=`` fragments (``hashes`` in JSON), and the files under
``/files/``. Each file can be made to misbehave: delayed, failing with 500 a number
of times, closing the connection mid-body, hanging until the server closes,
trickling its body at a given rate, or serving other bytes than the ones its
advertised hash describes. ``delay`` slows every file; :meth:`IndexServer.slow`
slows one more; :meth:`IndexServer.hold` holds one until a condition of the test's is met.
The server counts requests and downloads in flight. With
``core_metadata``, it also serves each wheel's METADATA as ``FILE.metadata`` and
says so on the simple pages (PEP 658/714), as PyPI does.

Use it as a context manager, or through the ``index_server`` fixture::

    with IndexServer() as index:
        index.add("foo-1.0.tar.gz", b"...")
        ...  # index.simple_url is "http://127.0.0.1:PORT/simple/"
"""

from __future__ import annotations

import collections
import hashlib
import html
import io
import json
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import pytest
from packaging.utils import (
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

JSON_TYPE = "application/vnd.pypi.simple.v1+json"


class IndexServer:
    """A threaded HTTP simple index; start it with ``with`` or :meth:`start`."""

    def __init__(self, *, json_api: bool = True, delay: float = 0.0, core_metadata: bool = False) -> None:
        self.json_api = json_api
        """Answer with PEP 691 JSON when the client's ``Accept`` header asks for it."""
        self.core_metadata = core_metadata
        """Serve wheels' METADATA as ``FILE.metadata`` and advertise it (PEP 658/714)."""
        self.delay = delay
        """Seconds each file response waits before its first byte."""
        self.requests: collections.Counter[str] = collections.Counter()
        """Requests received, by path."""
        self.in_flight = 0
        """File responses being served right now."""
        self.max_in_flight = 0
        """The most file responses ever served at once."""
        self._files: dict[str, _File] = {}
        self._page_failures: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.index = self
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long close() waits for the loop
            name="index-server",
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def simple_url(self) -> str:
        return f"{self.url}/simple/"

    def file_url(self, filename: str) -> str:
        return f"{self.url}/files/{filename}"

    def add(
        self, filename: str, content: bytes, *, advertised_sha256: str | None = None, metadata: bytes | None = None
    ) -> str:
        """Serve ``content`` as ``filename``; return its sha256.

        ``advertised_sha256`` overrides the hash the simple page lists; ``metadata``, with
        ``core_metadata``, is served as the wheel's METADATA instead of its own (an index that lies).
        """
        if filename.endswith(".whl"):
            project = parse_wheel_filename(filename)[0]
        else:
            project = parse_sdist_filename(filename)[0]
        sha256 = hashlib.sha256(content).hexdigest()
        metadata = (metadata or _wheel_metadata(filename, content)) if self.core_metadata else None
        with self._lock:
            self._files[filename] = _File(
                project=project, content=content, advertised=advertised_sha256 or sha256, metadata=metadata
            )
        return sha256

    def fail_first(self, filename: str, times: int, status: int = 500) -> None:
        """Answer ``status`` to the next ``times`` requests for ``filename``."""
        with self._lock:
            self._files[filename].failures = times
            self._files[filename].failure_status = status

    def fail_page(self, project: str, times: int) -> None:
        """Answer 500 to the next ``times`` requests for ``project``'s simple page."""
        with self._lock:
            self._page_failures[canonicalize_name(project)] = times

    def close_early(self, filename: str, times: int = 1) -> None:
        """Send half of ``filename`` after a full Content-Length, then close, ``times`` times."""
        with self._lock:
            self._files[filename].early_closes = times

    def serve_wrong_bytes(self, filename: str) -> None:
        """Serve other bytes than the ones the index's hash describes."""
        with self._lock:
            self._files[filename].wrong_bytes = True

    def slow(self, filename: str, seconds: float) -> None:
        """Wait ``seconds`` (on top of ``delay``) before each response for ``filename``."""
        with self._lock:
            self._files[filename].delay = seconds

    def hold(self, filename: str, until: Callable[[], bool], timeout: float = 60.0) -> None:
        """Answer requests for ``filename`` once ``until()`` is true (asked every 20 ms), or ``timeout`` s later."""
        with self._lock:
            self._files[filename].held = (until, timeout)

    def hang(self, filename: str) -> None:
        """Never answer requests for ``filename`` (until the server closes)."""
        with self._lock:
            self._files[filename].hangs = True

    def trickle(self, filename: str, bytes_per_second: int) -> None:
        """Send ``filename``'s body at ``bytes_per_second``, a tenth of a second's worth at a time."""
        with self._lock:
            self._files[filename].bytes_per_second = bytes_per_second

    def yank(self, filename: str, reason: str) -> None:
        """List ``filename`` as yanked, for ``reason`` (PEP 592: ``data-yanked``, ``"yanked"`` in JSON)."""
        with self._lock:
            self._files[filename].yanked = reason

    def downloads(self, filename: str) -> int:
        """How many times ``filename`` was requested."""
        return self.requests[f"/files/{filename}"]

    def start(self) -> IndexServer:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, wake hanging responses, drop open connections, join threads."""
        self._stop.set()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.drop_connections()
        self._server.server_close()

    def __enter__(self) -> IndexServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # Called from handler threads.

    def _project_files(self, project: str) -> list[tuple[str, _File]]:
        with self._lock:
            return sorted(
                ((name, file) for name, file in self._files.items() if file.project == project),
                key=lambda item: item[0],
            )

    def _enter_download(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave_download(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _count(self, path: str) -> None:
        with self._lock:
            self.requests[path] += 1


@dataclass(kw_only=True)
class _File:
    """One served file and how it misbehaves; mutated under ``IndexServer._lock``."""

    project: str
    content: bytes
    advertised: str
    failures: int = 0
    failure_status: int = 500
    early_closes: int = 0
    wrong_bytes: bool = False
    hangs: bool = False
    delay: float = 0.0
    held: tuple[Callable[[], bool], float] | None = None
    """Answer once this condition is true, or this many seconds later."""
    bytes_per_second: int = 0
    """Trickle the body at this rate; 0 sends it at once."""
    metadata: bytes | None = None
    """A wheel's METADATA, served as ``FILE.metadata`` when the index has ``core_metadata``."""
    yanked: str | None = None
    """The reason the simple page gives for yanking the file (PEP 592); ``None``: not yanked."""


def _wheel_metadata(filename: str, content: bytes) -> bytes | None:
    """The ``.dist-info/METADATA`` of a wheel; ``None`` for an sdist or a wheel broken on purpose."""
    if not filename.endswith(".whl"):
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            names = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
            return archive.read(names[0]) if len(names) == 1 else None
    except (zipfile.BadZipFile, OSError):
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True
    index: IndexServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def drop_connections(self) -> None:
        """Wake handler threads waiting on idle keep-alive connections."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or give up leave broken pipes behind; that is expected.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's algorithm
        # and the client's delayed ACK add ~40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        self.server.track(self.connection, open_=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        index = self.server.index
        path = self.path.split("?", 1)[0]
        index._count(path)
        parts = [part for part in path.split("/") if part]
        if parts == ["simple"]:
            self._send_root()
        elif len(parts) == 2 and parts[0] == "simple":
            self._send_project(parts[1])
        elif len(parts) == 2 and parts[0] == "files":
            self._send_file(parts[1])
        else:
            self._send(404, b"not found", "text/plain")

    def do_HEAD(self) -> None:
        """What a GET of a file would answer, without the body (uv asks before it fetches); not counted."""
        parts = [part for part in self.path.split("?", 1)[0].split("/") if part]
        index = self.server.index
        with index._lock:
            file = index._files.get(parts[1]) if len(parts) == 2 and parts[0] == "files" else None
        self.send_response(200 if file is not None else 404)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(file.content) if file is not None else 0))
        self.end_headers()

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_root(self) -> None:
        index = self.server.index
        with index._lock:
            projects = sorted({file.project for file in index._files.values()})
        links = "".join(f'<a href="{p}/">{p}</a>\n' for p in projects)
        self._send(200, f"<html><body>\n{links}</body></html>".encode(), "text/html")

    def _send_project(self, name: str) -> None:
        index = self.server.index
        project = canonicalize_name(name)
        with index._lock:
            failing = index._page_failures[project] > 0
            index._page_failures[project] -= int(failing)
        if failing:
            self._send(500, b"server error", "text/plain")
            return
        files = index._project_files(project)
        if not files:
            self._send(404, b"no such project", "text/plain")
            return
        if index.json_api and JSON_TYPE in self.headers.get("Accept", ""):
            data = {
                "meta": {"api-version": "1.0"},
                "name": project,
                "files": [
                    {
                        "filename": filename,
                        "url": f"../../files/{filename}",
                        "hashes": {"sha256": file.advertised},
                        **({"core-metadata": {"sha256": hashlib.sha256(file.metadata).hexdigest()}}
                           if file.metadata is not None else {}),
                        **({"yanked": file.yanked} if file.yanked is not None else {}),
                    }
                    for filename, file in files
                ],
            }
            self._send(200, json.dumps(data).encode(), JSON_TYPE)
            return
        links = "".join(
            f'<a href="../../files/{html.escape(filename)}#sha256={file.advertised}"{_metadata_attribute(file)}'
            f"{_yanked_attribute(file)}>"
            f"{html.escape(filename)}</a>\n"
            for filename, file in files
        )
        self._send(200, f"<html><body>\n{links}</body></html>".encode(), "text/html")

    def _send_file(self, filename: str) -> None:
        index = self.server.index
        with index._lock:
            file = index._files.get(filename)
            described = index._files.get(filename.removesuffix(".metadata"))
        if file is None and filename.endswith(".metadata") and described and described.metadata is not None:
            self._send(200, described.metadata, "application/octet-stream")
            return
        if file is None:
            self._send(404, b"no such file", "text/plain")
            return
        index._enter_download()
        try:
            if index.delay or file.delay:
                index._stop.wait(index.delay + file.delay)
            if file.held is not None:
                until, timeout = file.held
                deadline = time.monotonic() + timeout
                while not until() and time.monotonic() < deadline and not index._stop.wait(0.02):
                    pass
            if file.hangs:
                index._stop.wait()
                self.close_connection = True
                return
            with index._lock:
                failing = file.failures > 0
                file.failures -= int(failing)
                closing = not failing and file.early_closes > 0
                file.early_closes -= int(closing)
            if failing:
                self._send(file.failure_status, b"server error", "text/plain")
                return
            content = file.content
            if file.wrong_bytes:
                content = b"tampered " + content
            if closing:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content[: len(content) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if file.bytes_per_second:
                self._trickle(content, file.bytes_per_second)
                return
            self._send(200, content, "application/octet-stream")
        finally:
            index._leave_download()

    def _trickle(self, content: bytes, bytes_per_second: int) -> None:
        """Send ``content`` a tenth of a second's worth at a time, until done or the server closes."""
        stop = self.server.index._stop
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        step = max(1, bytes_per_second // 10)
        for start in range(0, len(content), step):
            self.wfile.write(content[start : start + step])
            if stop.wait(step / bytes_per_second):
                self.close_connection = True
                return


def _yanked_attribute(file: _File) -> str:
    return "" if file.yanked is None else f' data-yanked="{html.escape(file.yanked)}"'


def _metadata_attribute(file: _File) -> str:
    if file.metadata is None:
        return ""
    return f' data-core-metadata="sha256={hashlib.sha256(file.metadata).hexdigest()}"'


@pytest.fixture(name="index_server")
def index_server_fixture() -> Iterator[IndexServer]:
    """A running :class:`IndexServer`, closed after the test; import it to use ``index_server``."""
    with IndexServer() as server:
        yield server
