"""Sandboxed builds (issue #18): a backend that tries every way out, through the real ``orchestrate build``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
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
from toolpaths import path_without

from orchestrator.build.sandbox import (
    Probe,
    Sandbox,
    for_run,
    is_secret,
    probe,
    settle,
    wrap,
)

pytestmark = pytest.mark.usefixtures("sandboxed")

BWRAP = probe()
needs_bwrap = pytest.mark.skipif(BWRAP.sandbox.tool != "bwrap", reason=f"no working bwrap here: {BWRAP.reason}")
FULL_UNSHARE = {"read-only host", "private home and /tmp", "loopback", "no capabilities"}


@dataclass(frozen=True)
class Tool:
    """A sandbox tool, and the environment under which the probe picks it."""

    name: str
    env: dict[str, str]


@pytest.fixture(scope="session")
def no_bwrap_path() -> Iterator[str]:
    """A PATH on which ``unshare`` is found and ``bwrap`` is not, as on a machine without bubblewrap."""
    with path_without("bwrap") as path:
        yield path


@pytest.fixture(params=["bwrap", "unshare"])
def tool(request: pytest.FixtureRequest, no_bwrap_path: str, monkeypatch: pytest.MonkeyPatch) -> Tool:
    """Each sandbox tool in turn, where it makes a whole sandbox here."""
    if request.param == "bwrap":
        if BWRAP.sandbox.tool != "bwrap":
            pytest.skip(f"no working bwrap here: {BWRAP.reason}")
        return Tool("bwrap", {})
    with monkeypatch.context() as patch:
        patch.setenv("PATH", no_bwrap_path)
        found = probe()
    if found.sandbox.tool != "unshare" or not FULL_UNSHARE <= set(found.sandbox.steps):
        pytest.skip(f"unshare makes no whole sandbox here: {found.reason or found.sandbox.steps}")
    return Tool("unshare", {"PATH": no_bwrap_path})


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


def test_sandbox_stops_every_escape_and_the_wheel_is_still_built(tmp_path: Path, escapes: Escapes,
                                                                  tool: Tool) -> None:
    make_sdist(tmp_path / "sdists", "sneaky", escape=escapes.plan())
    report = tmp_path / "r.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--no-build-network",
                         "--report-json", report, env={**tool.env, **escapes.env()})
    assert result.returncode == 0, result.stderr
    attempts = _attempts(tmp_path / "wh", "sneaky")
    for name in ("home_secret", "secret_path", "outside", "connect", "env"):
        assert not attempts[name]["ok"], (name, attempts[name])
    assert "Connection refused" in attempts["connect"]["error"]
    assert not escapes.outside.exists() and escapes.connections == []
    assert _gone(escapes, within=0.5), "the daemon outlived its build"
    (record,) = json.loads(report.read_text())["builds"]
    expected = f"{tool.name}: read-only host, private home and /tmp, no secrets, pid namespace, no network"
    assert record["sandbox"] == expected
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


def test_the_cpu_of_what_a_hook_starts_is_counted_under_unshare(tmp_path: Path, no_bwrap_path: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.setenv("PATH", no_bwrap_path)
        if probe().sandbox.tool != "unshare":
            pytest.skip(f"unshare makes no sandbox here: {probe().reason}")
    make_sdist(tmp_path / "sdists", "burner", burn_s=1.5)
    report = tmp_path / "r.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--report-json", report,
                         env={"PATH": no_bwrap_path})
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(report.read_text())["builds"]
    assert record["cpu_s"] >= 1.5 and record["sandbox"].startswith("unshare: "), record


def test_without_the_sandbox_every_escape_succeeds_but_the_daemon_ends_with_its_build(tmp_path: Path,
                                                                                     escapes: Escapes) -> None:
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
    # Unsandboxed, the worker (the reaper of the build's orphans) kills what the build left: no process outlives
    # a run, sandbox or not. It used to live on.
    assert _gone(escapes, within=0.5), "the daemon outlived its unsandboxed build"
    (record,) = json.loads(report.read_text())["builds"]
    assert record["sandbox"] == "none"


def test_network_is_on_by_default_and_off_per_package(tmp_path: Path, escapes: Escapes, tool: Tool) -> None:
    make_sdist(tmp_path / "sdists", "online", escape=escapes.plan())
    make_sdist(tmp_path / "sdists", "offline", escape=escapes.plan())
    (tmp_path / "orchestrate.toml").write_text("[packages.offline]\nbuild_network = false\n")
    report = tmp_path / "r.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--report-json", report,
                         cwd=tmp_path, env={**tool.env, **escapes.env()})
    assert result.returncode == 0, result.stderr
    assert _attempts(tmp_path / "wh", "online")["connect"]["ok"]
    assert not _attempts(tmp_path / "wh", "offline")["connect"]["ok"]
    assert escapes.connections == [b"escaped\n"]
    # The rest of the sandbox holds with the network on.
    assert not _attempts(tmp_path / "wh", "online")["secret_path"]["ok"]
    records = {record["name"]: record["sandbox"] for record in json.loads(report.read_text())["builds"]}
    assert records["online"] == f"{tool.name}: read-only host, private home and /tmp, no secrets, pid namespace"
    assert records["offline"].endswith(", no network")
    assert _gone(escapes)


def test_a_failed_build_with_the_network_off_says_how_to_allow_it(tmp_path: Path, tool: Tool) -> None:
    make_sdist(tmp_path / "sdists", "needs-net", fail=True)
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh",
                         env={**tool.env, "ORCHESTRATE_BUILD_NETWORK": "0"})
    assert result.returncode == 1
    assert ("the build network was off: if needs-net needs it, set build_network = true in [packages.needs-net] "
            "of orchestrate.toml") in result.stderr


def test_without_bwrap_and_unshare_the_build_runs_unsandboxed_with_one_note(tmp_path: Path) -> None:
    # A PATH with only this interpreter's folder: neither bwrap nor unshare on it.
    bin_dir = Path(sys.executable).parent
    assert not (bin_dir / "bwrap").exists() and not (bin_dir / "unshare").exists()
    make_sdist(tmp_path / "sdists", "plain")
    report = tmp_path / "r.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--report-json", report,
                         "--installer", "pip", env={"PATH": str(bin_dir)})
    assert result.returncode == 0, result.stderr
    notes = [line.split("] ", 1)[-1] for line in result.stderr.splitlines() if "not sandboxed" in line]
    assert notes == ["builds are not sandboxed: bwrap is not on PATH (install bubblewrap); unshare is not on PATH "
                     "(util-linux) (--no-sandbox silences this note)"], result.stderr
    assert (tmp_path / "wh" / "plain-1.0-py3-none-any.whl").is_file()
    (record,) = json.loads(report.read_text())["builds"]
    assert record["sandbox"] == "none"
    quiet = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh2", "--no-sandbox", "--installer", "pip",
                        env={"PATH": str(bin_dir)})
    assert quiet.returncode == 0 and "not sandboxed" not in quiet.stderr


def test_credentials_in_urls_do_not_reach_a_sandboxed_build(tmp_path: Path, tool: Tool) -> None:
    names = ["PIP_INDEX_URL", "HTTPS_PROXY", "DOCS_URL"]
    make_sdist(tmp_path / "sdists", "curious", record_env=names)
    env = {"PIP_INDEX_URL": "https://alice:s3cret@pypi.example.org/simple",
           "HTTPS_PROXY": "http://bob@proxy.example.org:3128", "DOCS_URL": "https://example.org/a@b"}
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", env={**tool.env, **env})
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "wh").glob("curious-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        seen = json.loads(archive.read("curious/env.json"))
    assert seen == {"PIP_INDEX_URL": "https://pypi.example.org/simple",
                            "HTTPS_PROXY": "http://proxy.example.org:3128", "DOCS_URL": "https://example.org/a@b"}


@pytest.mark.parametrize("name", ["MY_API_TOKEN", "AWS_REGION", "GITHUB_TOKEN", "TWINE_USERNAME", "db_password",
                                  "SSH_AUTH_SOCK", "NETRC", "GOOGLE_APPLICATION_CREDENTIALS", "GH_HOST",
                                  # the auth words, without catching "author"
                                  "PROXY_AUTH", "NPM_AUTH_KEY", "AUTH_HEADER", "HF_AUTHTOKEN", "HTTP_AUTHORIZATION",
                                  "GITLAB_OAUTH_APP"])
def test_secret_names(name: str) -> None:
    assert is_secret(name)


@pytest.mark.parametrize("name", ["PATH", "HOME", "LANG", "CC", "MAKEFLAGS", "PYTHONPATH", "TMPDIR",
                                  # git's identity, which setuptools-scm and friends read; an author is no secret
                                  "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_AUTHOR_DATE", "AUTHOR", "PKG_AUTHORS"])
def test_ordinary_names_are_passed(name: str) -> None:
    assert not is_secret(name)


def test_no_sandbox_is_none_and_says_nothing() -> None:
    assert for_run(False, network=False) == (Sandbox(), None)
    assert Sandbox().describe() == "none"


@pytest.mark.parametrize("sandbox", [Sandbox(tool="bwrap", executable="/usr/bin/bwrap", network=False),
                                     Sandbox(tool="unshare", executable="/usr/bin/unshare", steps=("loopback",))])
def test_the_job_carries_the_sandbox_across_json(tmp_path: Path, sandbox: Sandbox) -> None:
    from orchestrator.jobs import BuildJob
    from orchestrator.settings import IndexSettings

    job = BuildJob(key="k", source=tmp_path, kind="tree", name="k", version=None, sha256=None, wheelhouse=tmp_path,
                   log_path=tmp_path / "log", index=IndexSettings(), installer="pip", env_cache=tmp_path,
                   sandbox=sandbox)
    assert BuildJob.from_json(json.loads(json.dumps(job.to_json()))) == job


@pytest.mark.parametrize(("steps", "expected"), [
    (("read-only host", "private home and /tmp", "loopback", "no capabilities"),
     "unshare: read-only host, private home and /tmp, no secrets, pid namespace, no network"),
    # no mount_setattr (before Linux 5.12): the host stays writable, and the report does not say otherwise
    (("private home and /tmp", "loopback", "no capabilities"),
     "unshare: private home and /tmp, no secrets, pid namespace, no network"),
    # capabilities kept: the build could undo its mounts, so they protect nothing
    (("read-only host", "private home and /tmp", "loopback"), "unshare: no secrets, pid namespace, no network"),
    # without loopback the network is still off
    (("read-only host", "private home and /tmp", "no capabilities"),
     "unshare: read-only host, private home and /tmp, no secrets, pid namespace, no network"),
])
def test_an_unshare_sandbox_lists_only_what_held(steps: tuple[str, ...], expected: str) -> None:
    assert Sandbox(tool="unshare", executable="/usr/bin/unshare", network=False, steps=steps).describe() == expected


HOOK = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def tried(action):
    try:
        action()
        return "ok"
    except OSError as exc:
        return exc.strerror
def mount(*args):
    if libc.mount(*args) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
def write(path):
    with open(path, "w") as f:
        f.write("x")
print(tried(lambda: mount(None, b"/", None, 32 | 4096, None)),  # MS_REMOUNT | MS_BIND: the host writable again
      tried(lambda: mount(b"none", b"/mnt", b"tmpfs", 0, None)),
      tried(lambda: write(sys.argv[1] + "/out")), tried(lambda: write(sys.argv[2] + "/out")),
      tried(lambda: write("/dev/null")), tried(lambda: write("/dev/shm/x")), os.getpid() < 10, sep=",")
sys.exit(7)
"""


def test_a_sandboxed_hook_cannot_undo_its_sandbox(tmp_path: Path, tool: Tool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", tool.env.get("PATH", os.environ["PATH"]))
    sandbox = probe().sandbox
    assert sandbox.tool == tool.name
    build = tmp_path / "build"
    build.mkdir()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as outside:  # a host folder no sandbox hides
        cmd, env = wrap([sys.executable, "-c", HOOK, str(build), outside], sandbox=sandbox, build_dir=build,
                        tmp_dir=build / "tmp", out_dir=build / "dist", env=dict(os.environ))
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert not Path(outside, "out").exists()
    assert done.returncode == 7, done.stderr  # the hook's own exit status comes out
    remount, mount, inside, host, null, shm, low_pid = done.stdout.strip().split(",")
    assert remount == mount == "Operation not permitted"
    assert (inside, host, null, shm, low_pid) == ("ok", "Read-only file system", "ok", "ok", "True")
    assert (build / "out").read_text() == "x"


@pytest.mark.parametrize(("steps", "note"), [
    (("read-only host", "private home and /tmp", "loopback", "no capabilities"), None),
    (("private home and /tmp", "loopback", "no capabilities"),
     "builds are sandboxed with /usr/bin/unshare without read-only host: this kernel refused the mounts "
     "(install bubblewrap)"),
    (("loopback",), "builds are sandboxed with /usr/bin/unshare without read-only host or private home and /tmp: "
                    "this kernel refused the mounts (install bubblewrap)"),
])
def test_a_partial_unshare_sandbox_says_what_it_lacks(steps: tuple[str, ...], note: str | None) -> None:
    found = Probe(Sandbox(tool="unshare", executable="/usr/bin/unshare", steps=steps))
    sandbox, said = settle(found, wanted=True, network=False)
    assert said == note and sandbox.tool == "unshare" and not sandbox.network


@needs_bwrap
def test_a_build_writes_only_its_own_packages_compiler_cache(tmp_path: Path) -> None:
    """With one cache for every package, an sdist could plant an object under the key of another package's
    compilation, and that package's next wheel would carry it."""
    from orchestrator.build.compilercache import find_ccache

    if find_ccache() is None:
        pytest.skip("no ccache here")
    make_sdist(tmp_path / "a", "alpha", record_env=["CCACHE_DIR"])
    first = orchestrate("build", tmp_path / "a", "-w", tmp_path / "wh")
    assert first.returncode == 0, first.stderr
    (wheel,) = (tmp_path / "wh").glob("alpha-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        alpha_cache = json.loads(archive.read("alpha/env.json"))["CCACHE_DIR"]
    planted = Path(alpha_cache, "planted.o")
    make_sdist(tmp_path / "b", "beta", write_files=["$CCACHE_DIR/beta.o", str(planted)])
    second = orchestrate("build", tmp_path / "b", "-w", tmp_path / "wh")
    assert second.returncode == 0, second.stderr
    (wheel,) = (tmp_path / "wh").glob("beta-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        writes = json.loads(archive.read("beta/writes.json"))
    assert writes["$CCACHE_DIR/beta.o"]["ok"], writes  # its own cache takes what it compiles
    assert Path(alpha_cache).is_dir()  # there on the host: hidden or read-only in beta's sandbox
    assert not writes[str(planted)]["ok"], writes
    assert not planted.exists()
