"""Run a build's PEP 517 hooks: in its sandbox, through its compiler cache and jobserver, forked by its hook server.

``HookRunner`` is what ``build.ProjectBuilder`` calls for each hook (``pyproject_hooks``' runner
protocol: the command ``python _in_process.py HOOK CONTROL_DIR``, a folder, more environment). The
first hook starts the build's hook server (``build/hookserver.py``) in the build's environment and
sandbox; that hook and the next are forks of it, and what ``get_requires_for_build_wheel`` asked for
being installed starts a new server. A hook runs as its own command, as before, when the server could
not start. The hooks' environments differ only in what no interpreter reads as it starts (the
jobserver's ``MAKEFLAGS`` and ``PATH``, the compiler cache's variables): the server's start is theirs.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO

from orchestrator.build import preload, sandbox
from orchestrator.build.jobserver import BIN_NAME, FIFO_NAME, hook_environ
from orchestrator.jobs import BuildJob

HOOK_SERVER = Path(__file__).with_name("hookserver.py")
HOOK_SCRIPT_NAME = "_in_process.py"
"""pyproject_hooks' hook script, which the server forks: a command running another is run as it is."""
Wrapper = Callable[[Sequence[str], Mapping[str, str], str | None], tuple[list[str], dict[str, str]]]
"""The command and environment that run a command (in a folder) inside the build's sandbox."""
_CLOSE_GRACE = 10.0
"""Seconds a hook server has to exit once its build closes it (it has no hook running then)."""


class HookServer:
    """A running hook server: one hook at a time, each a fork of it."""

    def __init__(self, process: subprocess.Popen[bytes], requests: IO[bytes], replies: IO[bytes], *,
                 environ: Mapping[str, str]) -> None:
        self._process, self._requests, self._replies = process, requests, replies
        self._environ = dict(environ)
        self.imported: dict[str, None] = {}
        """The standard-library modules its hooks imported, as each reported them (``build/preload.py``)."""

    @classmethod
    def start(cls, python: str, script: str, *, env: Mapping[str, str], cwd: str | None, log: IO[str],
              sandboxed: bool, wrap: Wrapper, preload: Sequence[str] | None = None) -> HookServer | None:
        """The server, in ``python`` for hooks of ``script``, ready; ``None`` (said in ``log``) if it did not start.
        ``preload``: what its hooks imported before (``None``: nothing learned, the server's own list)."""
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        # No collection while the server imports (it made only what lives as long as it does): each hook gets the
        # collector back, with what the server made frozen (hookserver.serve).
        boot = (f"import gc; gc.disable(); import sys; sys.path.insert(0, {str(HOOK_SERVER.parent)!r}); "
                "import hookserver; "
                f"sys.path.remove({str(HOOK_SERVER.parent)!r}); "
                f"hookserver.serve({script!r}, {request_read}, {reply_write}, own_namespace={sandboxed}, "
                f"preload={None if preload is None else tuple(preload)!r})")
        cmd, environ = wrap([python, "-c", boot], env, cwd)
        replies = os.fdopen(reply_read, "rb")
        try:
            process = subprocess.Popen(cmd, cwd=cwd, env=environ, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, pass_fds=(request_read, reply_write))
        except OSError as exc:
            log.write(f"=== orchestrate: no hook server ({exc}); each hook starts its own interpreter ===\n")
            os.close(request_write)
            replies.close()
            return None
        finally:
            os.close(request_read)
            os.close(reply_write)
        if replies.readline() != b"ready\n":
            process.wait()
            log.write(f"=== orchestrate: the hook server did not start (exit status {process.returncode}); "
                      "each hook starts its own interpreter ===\n")
            os.close(request_write)
            replies.close()
            return None
        return cls(process, os.fdopen(request_write, "wb"), replies, environ=environ)

    def run(self, argv: Sequence[str], *, cwd: str | None, env: Mapping[str, str]) -> int:
        """Run the hook script with ``argv`` in a fork; its exit status (negative: the signal that ended it)."""
        request = {"argv": list(argv), "cwd": cwd or os.getcwd(),
                   "set": {name: value for name, value in env.items() if self._environ.get(name) != value},
                   "unset": [name for name in self._environ if name not in env]}
        try:
            self._requests.write((json.dumps(request) + "\n").encode())
            self._requests.flush()
            reply = self._replies.readline()
            if reply.startswith(b"imported "):
                self.imported.update(dict.fromkeys(reply.decode().split()[1:]))
                reply = self._replies.readline()
        except BrokenPipeError:
            reply = b""
        if reply:
            return int(reply)
        # The server itself ended (killed with its build, or crashed): that is how the hook ended.
        return self._process.wait() or 1

    def close(self) -> None:
        """Let the server exit, and wait for it (kill it if it does not)."""
        with contextlib.suppress(OSError):
            self._requests.close()
        self._replies.close()
        try:
            self._process.wait(_CLOSE_GRACE)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


class HookRunner:
    """Runs each hook, inside the job's sandbox (``build/sandbox.py``) when it has one, through the
    job's compiler cache while :attr:`use_cache`, and with the run's jobserver while :attr:`use_jobserver`;
    forked by the build's hook server where it can be. :meth:`close` once the build's hooks are done.
    ``scratch``: the build's folder on a tmpfs (its environment's view, pyproject_hooks' control folders, its
    jobserver's FIFO), writable in the sandbox as the build's own folder is."""

    def __init__(self, log: IO[str], job: BuildJob, work_dir: Path, *, scratch: Path | None = None) -> None:
        self._log, self._job, self._work_dir, self._scratch = log, job, work_dir, scratch
        self.use_cache = job.compiler_cache is not None
        # A MAKEFLAGS of the user's own stays as it is.
        self.use_jobserver = job.jobserver and "MAKEFLAGS" in job.environ
        self._server: HookServer | None = None
        self._server_tried = False
        self._requires: tuple[str, ...] = ()
        self._learned_file: Path | None = None
        self._learned: tuple[str, ...] | None = None

    def __call__(self, cmd: Sequence[str], cwd: str | None = None,
                 extra_environ: Mapping[str, str] | None = None) -> None:
        job, work_dir = self._job, self._work_dir
        env = self._environ(extra_environ)

        def wrap(command: Sequence[str], environ: Mapping[str, str], folder: str | None) -> tuple[list[str],
                                                                                                  dict[str, str]]:
            # With --keep-build-envs the run's store is a symlink to the shared one: its target is read too.
            readable = [job.env_cache, (job.env_cache / "envs").resolve()]
            # A source tree is built in place (setuptools writes build/ there): it is the build's own folder too.
            writable = [job.source] if job.kind == "tree" else []
            if self._scratch is not None:
                writable.append(self._scratch)
            if job.compiler_cache is not None and self.use_cache:
                readable += [job.compiler_cache.wrapper_dir, Path(job.compiler_cache.executable)]
                writable.append(job.compiler_cache.package_dir(job.name))
            return sandbox.wrap(command, sandbox=job.sandbox, build_dir=work_dir, tmp_dir=work_dir / "tmp",
                                out_dir=work_dir / "dist", env=environ, cwd=folder, readable=readable,
                                writable=writable)

        self._log.flush()
        server = self._hook_server(cmd, env, cwd, wrap)
        if server is not None:
            hook_env = sandbox.environ(env, sandbox=job.sandbox, build_dir=work_dir, tmp_dir=work_dir / "tmp")
            code = server.run(cmd[2:], cwd=cwd, env=hook_env)
            if code:
                raise subprocess.CalledProcessError(code, list(cmd))
            return
        wrapped, wrapped_env = wrap(cmd, env, cwd)
        subprocess.run(wrapped, cwd=cwd, env=wrapped_env, stdout=self._log, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, check=True)

    def backend_requires(self, requires: Iterable[str]) -> None:
        """Say what the backend's ``build-system.requires`` are: with its name, what the imports its hooks
        report are learned for (``build/preload.py``)."""
        self._requires = tuple(requires)

    def close(self) -> None:
        """Stop the build's hook server, if one started; the next hook starts another. Keep what its hooks
        imported for the next build of the backend."""
        if self._server is not None:
            self._server.close()
            if self._learned_file is not None and self._server.imported:
                try:
                    self._learned = preload.save(self._learned_file, self._learned, self._server.imported)
                except OSError as exc:
                    self._log.write(f"=== orchestrate: what the hooks imported is not kept: {exc} ===\n")
            self._server = None
        self._server_tried = False

    def _environ(self, extra_environ: Mapping[str, str] | None) -> dict[str, str]:
        job, work_dir = self._job, self._work_dir
        env: dict[str, str] = {**os.environ, **job.environ, **(extra_environ or {})}
        if job.compiler_cache is not None and self.use_cache:
            env.update(job.compiler_cache.environ(env, build_dir=work_dir, package=job.name))
        fifo = (self._scratch or work_dir) / FIFO_NAME
        if self.use_jobserver and fifo.exists():  # made by the run at admission: for build_wheel only
            try:
                env = hook_environ(env, fifo=fifo, bin_root=job.env_cache, set_by_run=job.environ)
                first = Path(env["PATH"].split(os.pathsep)[0])
                ours = first.parent == job.env_cache and first.name.startswith(BIN_NAME)
                shadowed = sorted(path.name for path in first.iterdir()) if ours else []
                self._log.write(f"=== orchestrate: jobserver: MAKEFLAGS={env['MAKEFLAGS']}"
                                f"{'; first on PATH: ' + ', '.join(shadowed) if shadowed else ''} ===\n")
            except OSError as exc:
                self._log.write(f"=== orchestrate: no jobserver for this build: {exc} ===\n")
                self.use_jobserver = False
        return env

    def _hook_server(self, cmd: Sequence[str], env: Mapping[str, str], cwd: str | None,
                     wrap: Wrapper) -> HookServer | None:
        """The build's hook server, started by its first hook; ``None`` for a command that is no hook
        (``python SCRIPT HOOK CONTROL_DIR``)."""
        if len(cmd) != 4 or Path(cmd[1]).name != HOOK_SCRIPT_NAME:
            return None
        if not self._server_tried:
            self._server_tried = True
            contained = self._job.sandbox.tool != "none" and self._job.sandbox.executable is not None
            self._server = HookServer.start(cmd[0], cmd[1], env=env, cwd=cwd, log=self._log, sandboxed=contained,
                                            wrap=wrap, preload=self._preload(env))
        return self._server

    def _preload(self, env: Mapping[str, str]) -> tuple[str, ...] | None:
        """What the build's hook server is to preload: what hooks of the backend named in the hook's ``env``
        imported before, read at the build's first hook; ``None`` if nothing was learned."""
        backend = env.get("_PYPROJECT_HOOKS_BUILD_BACKEND")  # pyproject_hooks' hook script reads it there
        if self._learned_file is None and backend is not None:
            self._learned_file = preload.learned_path(self._job.env_cache, backend, self._requires)
            self._learned = preload.load(self._learned_file)
            self._log.write("=== orchestrate: the hook server preloads "
                            + ("its own list (nothing learned for this backend yet) ===\n" if self._learned is None
                               else f"the {len(self._learned)} modules this backend's hooks imported before ===\n"))
        return self._learned
