"""Sandboxed builds (issue #18): a backend that tries every way out, through the real ``orchestrate build``."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import orchestrate
from sdists import make_sdist

from orchestrator.build.sandbox import Sandbox, for_run, is_secret, probe

pytestmark = pytest.mark.usefixtures("sandboxed")

BWRAP = probe()
needs_bwrap = pytest.mark.skipif(BWRAP.reason is not None, reason=f"no working bwrap here: {BWRAP.reason}")


@dataclass
class Escapes:
    """The targets of the escape attempts, and the TCP server on 127.0.0.1 they connect to."""

    home: Path
    secret: Path
    outside: Path
    port: int
    token: str
    connections: list[bytes]

    def plan(self) -> dict[str, Any]:
        return {"secret_path": str(self.secret), "outside": str(self.outside), "port": self.port,
                "env": "MY_API_TOKEN", "daemon": self.token}

    def env(self) -> dict[str, str]:
        return {"HOME": str(self.home), "MY_API_TOKEN": "s3cret-token"}

    def daemons(self) -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["cmdline"]):
            if self.token in (process.info["cmdline"] or []):
                found.append(process)
        return found


@pytest.fixture
def escapes(tmp_path: Path) -> Iterator[Escapes]:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    secret = home / ".ssh" / "id_rsa"
    secret.write_text("PRIVATE KEY\n")
    (tmp_path / "outside").mkdir()
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    connections: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                connections.append(conn.recv(100))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    found = Escapes(home=home, secret=secret, outside=tmp_path / "outside" / "escaped.txt",
                    port=server.getsockname()[1], token=f"orchestrate-daemon-{uuid.uuid4().hex}",
                    connections=connections)
    yield found
    stop.set()
    thread.join()
    server.close()
    for daemon in found.daemons():  # only a failed test leaves one: do not let it outlive the test
        daemon.kill()


def _attempts(wheelhouse: Path, name: str) -> dict[str, dict[str, Any]]:
    (wheel,) = wheelhouse.glob(f"{name}-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        result: dict[str, dict[str, Any]] = json.loads(archive.read(f"{name}/escape.json"))
    return result


def _gone(escapes: Escapes, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while escapes.daemons():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@needs_bwrap
def test_sandbox_stops_every_escape_and_the_wheel_is_still_built(tmp_path: Path, escapes: Escapes) -> None:
    make_sdist(tmp_path / "sdists", "sneaky", escape=escapes.plan())
    report = tmp_path / "r.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--no-build-network",
                         "--report-json", report, env=escapes.env())
    assert result.returncode == 0, result.stderr
    attempts = _attempts(tmp_path / "wh", "sneaky")
    for name in ("home_secret", "secret_path", "outside", "connect", "env"):
        assert not attempts[name]["ok"], (name, attempts[name])
    assert "Connection refused" in attempts["connect"]["error"]
    assert not escapes.outside.exists() and escapes.connections == []
    assert _gone(escapes, within=0.5), "the daemon outlived its build"
    (record,) = json.loads(report.read_text())["builds"]
    assert record["sandbox"] == "bwrap: read-only host, private home and /tmp, no secrets, pid namespace, no network"
    assert "sandboxed" not in result.stderr


@needs_bwrap
@pytest.mark.parametrize("sandbox", ["--sandbox", "--no-sandbox"])
def test_the_cpu_of_what_a_hook_starts_is_counted(tmp_path: Path, sandbox: str) -> None:
    # The hook's child burns 1.5 CPU seconds, as a compiler would; in the sandbox it runs in a PID
    # namespace whose init bubblewrap does not wait for.
    make_sdist(tmp_path / "sdists", "burner", burn_s=1.5)
    report = tmp_path / "r.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", sandbox, "--report-json", report)
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(report.read_text())["builds"]
    assert record["cpu_s"] >= 1.5, record


def test_without_the_sandbox_every_escape_succeeds(tmp_path: Path, escapes: Escapes) -> None:
    make_sdist(tmp_path / "sdists", "sneaky", escape=escapes.plan())
    report = tmp_path / "r.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--no-sandbox", "--no-build-network",
                         "--report-json", report, env=escapes.env())
    assert result.returncode == 0, result.stderr
    attempts = _attempts(tmp_path / "wh", "sneaky")
    assert all(attempt["ok"] for attempt in attempts.values()), attempts
    assert attempts["home_secret"]["got"] == attempts["secret_path"]["got"] == "PRIVATE KEY\n"
    assert attempts["env"]["got"] == "s3cret-token"
    assert escapes.outside.read_text() == "escaped\n" and escapes.connections == [b"escaped\n"]
    assert escapes.daemons(), "the daemon should outlive an unsandboxed build"
    (record,) = json.loads(report.read_text())["builds"]
    assert record["sandbox"] == "none"


@needs_bwrap
def test_network_is_on_by_default_and_off_per_package(tmp_path: Path, escapes: Escapes) -> None:
    make_sdist(tmp_path / "sdists", "online", escape=escapes.plan())
    make_sdist(tmp_path / "sdists", "offline", escape=escapes.plan())
    (tmp_path / "orchestrate.toml").write_text("[packages.offline]\nbuild_network = false\n")
    report = tmp_path / "r.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--report-json", report,
                         cwd=tmp_path, env=escapes.env())
    assert result.returncode == 0, result.stderr
    assert _attempts(tmp_path / "wh", "online")["connect"]["ok"]
    assert not _attempts(tmp_path / "wh", "offline")["connect"]["ok"]
    assert escapes.connections == [b"escaped\n"]
    # The rest of the sandbox holds with the network on.
    assert not _attempts(tmp_path / "wh", "online")["secret_path"]["ok"]
    records = {record["name"]: record["sandbox"] for record in json.loads(report.read_text())["builds"]}
    assert records["online"] == "bwrap: read-only host, private home and /tmp, no secrets, pid namespace"
    assert records["offline"].endswith(", no network")
    assert _gone(escapes)


@needs_bwrap
def test_a_failed_build_with_the_network_off_says_how_to_allow_it(tmp_path: Path) -> None:
    make_sdist(tmp_path / "sdists", "needs-net", fail=True)
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", env={"ORCHESTRATE_BUILD_NETWORK": "0"})
    assert result.returncode == 1
    assert ("the build network was off: if needs-net needs it, set build_network = true in [packages.needs-net] "
            "of orchestrate.toml") in result.stderr


def test_without_bwrap_the_build_runs_unsandboxed_with_one_note(tmp_path: Path) -> None:
    # A PATH with only this interpreter's folder: no bwrap on it.
    bin_dir = Path(sys.executable).parent
    assert not (bin_dir / "bwrap").exists()
    make_sdist(tmp_path / "sdists", "plain")
    report = tmp_path / "r.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--report-json", report,
                         "--installer", "pip", env={"PATH": str(bin_dir)})
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "not sandboxed" in line]
    assert len(notes) == 1 and "bwrap is not on PATH (install bubblewrap)" in notes[0], result.stderr
    assert (tmp_path / "wh" / "plain-1.0-py3-none-any.whl").is_file()
    (record,) = json.loads(report.read_text())["builds"]
    assert record["sandbox"] == "none"
    quiet = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh2", "--no-sandbox", "--installer", "pip",
                        env={"PATH": str(bin_dir)})
    assert quiet.returncode == 0 and "not sandboxed" not in quiet.stderr


@pytest.mark.parametrize("name", ["MY_API_TOKEN", "AWS_REGION", "GITHUB_TOKEN", "TWINE_USERNAME", "db_password",
                                  "SSH_AUTH_SOCK", "NETRC", "GOOGLE_APPLICATION_CREDENTIALS", "GH_HOST"])
def test_secret_names(name: str) -> None:
    assert is_secret(name)


@pytest.mark.parametrize("name", ["PATH", "HOME", "LANG", "CC", "MAKEFLAGS", "PYTHONPATH", "TMPDIR"])
def test_ordinary_names_are_passed(name: str) -> None:
    assert not is_secret(name)


def test_no_sandbox_is_none_and_says_nothing() -> None:
    assert for_run(False, network=False) == (Sandbox(), None)
    assert Sandbox().describe() == "none"


def test_the_job_carries_the_sandbox_across_json(tmp_path: Path) -> None:
    from orchestrator.jobs import BuildJob
    from orchestrator.settings import IndexSettings

    job = BuildJob(key="k", source=tmp_path, kind="tree", name="k", version=None, sha256=None, wheelhouse=tmp_path,
                   log_path=tmp_path / "log", index=IndexSettings(), installer="pip", env_cache=tmp_path,
                   sandbox=Sandbox(tool="bwrap", executable="/usr/bin/bwrap", network=False))
    assert BuildJob.from_json(json.loads(json.dumps(job.to_json()))) == job
