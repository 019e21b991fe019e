"""The farm's cluster: the connection to a Dask scheduler, and which of its workers may build.

At start, and whenever workers join (a lost worker's replacement), each new worker is
probed (``client.run(remote.probe)``): a worker without orchestrator (the probe cannot even
be unpickled there), or with another Python, platform or orchestrator version, is refused,
with one line saying why; the others are the farm's machines, known by their slots
(``--nthreads``) and memory, which routing by a build's need reads.
"""

from __future__ import annotations

import contextlib
import sys
import sysconfig
import threading
from dataclasses import dataclass
from typing import Any

import dask.config
import distributed
from dask.utils import parse_timedelta

import orchestrator
from orchestrator.errors import ClusterError
from orchestrator.executors import remote
from orchestrator.executors.machine import MachineLimits
from orchestrator.policy.admission import Readings

CONNECT_TIMEOUT = 10.0
"""Seconds to reach the Dask scheduler before the run fails, at most (less if Dask's
``distributed.comm.timeouts.connect`` says less)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FarmWorker:
    """A Dask worker that passed the check at start."""

    address: str
    host: str
    slots: int
    """Its ``--nthreads``: builds it runs at once."""
    total_memory: int
    available_memory: int
    cpu_count: int


def refusal(info: dict[str, Any] | BaseException) -> str | None:
    """Why a worker whose probe answered ``info`` cannot build for this run, or ``None`` if it can."""
    if isinstance(info, BaseException):
        missing = isinstance(info, ModuleNotFoundError) or "No module named 'orchestrator" in str(info)
        if missing:
            return "orchestrator is not installed there; pip install 'orchestrator[dask]' in the worker's environment"
        return f"the check failed there: {info!r}"
    here = {"implementation": sys.implementation.name, "python": "%d.%d" % sys.version_info[:2],
            "platform": sysconfig.get_platform(), "orchestrator": orchestrator.__version__}
    for field, wanted in here.items():
        if info.get(field) != wanted:
            return f"{field} {info.get(field)}, this run needs {wanted}: its wheels would not be this run's"
    return None


class Farm:
    """A connection to a Dask cluster and the workers it builds on; :meth:`connect` makes one."""

    def __init__(self, client: distributed.Client, address: str) -> None:
        self.client = client
        self.address = address
        self.workers: dict[str, FarmWorker] = {}
        self.refused: dict[str, str] = {}
        """Worker address: why it is not used."""
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, address: str, *, timeout: float = CONNECT_TIMEOUT) -> Farm:
        """Connect to the scheduler at ``address`` and check its workers; :class:`ClusterError` if unreachable."""
        try:
            timeout = min(timeout, parse_timedelta(dask.config.get("distributed.comm.timeouts.connect")))
            client = distributed.Client(address, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {address} ({exc}); start it with "
                               "`dask scheduler` or check --cluster / ORCHESTRATE_CLUSTER") from None
        farm = cls(client, address)
        try:
            farm.check_workers()
        except BaseException:
            farm.close()
            raise
        return farm

    @property
    def slots(self) -> int:
        """Builds the accepted workers run at once, together."""
        with self._lock:
            return sum(worker.slots for worker in self.workers.values())

    def check_workers(self) -> list[str]:
        """Probe the workers not checked yet; one line for each refused. :class:`ClusterError` if none is usable."""
        info = self._scheduler_workers()
        with self._lock:
            new = [address for address in info if address not in self.workers and address not in self.refused]
        if not new:
            return []
        answers = self.client.run(remote.probe, workers=new, on_error="return")
        lines = []
        with self._lock:
            for address, answer in answers.items():
                reason = refusal(answer)
                if reason is not None:
                    self.refused[address] = reason
                    lines.append(f"farm worker {address} refused: {reason}")
                    continue
                self.workers[address] = FarmWorker(
                    address=address, host=answer["host"], slots=int(info[address]["nthreads"]),
                    total_memory=answer["total_memory"], available_memory=answer["available_memory"],
                    cpu_count=answer["cpu_count"])
            if not self.workers:
                detail = "; ".join(lines) if lines else "it has no workers"
                raise ClusterError(f"the Dask cluster at {self.address} has no worker that can build: {detail}")
        return lines

    def slots_of(self, workers: list[str]) -> dict[str, int]:
        with self._lock:
            return {address: self.workers[address].slots for address in workers}

    def _scheduler_workers(self) -> dict[str, Any]:
        """The workers the scheduler has now, asked of it (the client's cached copy may lack them)."""
        scheduler = self.client.scheduler
        assert scheduler is not None, "connected"
        identity: dict[str, Any] = self.client.sync(scheduler.identity, n_workers=-1)
        return dict(identity["workers"])

    def alive(self) -> list[str]:
        """The accepted workers the scheduler still has (a lost worker is gone; its replacement is new)."""
        alive = set(self._scheduler_workers())
        with self._lock:
            return [address for address in self.workers if address in alive]

    def eligible(self, need: int, limits: MachineLimits, *, alive_only: bool = True) -> list[str]:
        """The workers (alive, unless not ``alive_only``) whose machine can ever hold a build needing ``need``."""
        alive = self.alive() if alive_only else list(self.workers)
        with self._lock:
            machines = [self.workers[address] for address in alive]
        return [machine.address for machine in machines
                if machine.total_memory - limits.kept_free(machine.total_memory) >= need]

    def largest_machine(self) -> FarmWorker | None:
        with self._lock:
            return max(self.workers.values(), key=lambda worker: worker.total_memory, default=None)

    def read(self) -> Readings:
        """The farm's machines together, as sampled when their workers were checked (a ``Probe``)."""
        with self._lock:
            hosts = {worker.host: worker for worker in self.workers.values()}.values()
            return Readings(total_memory=sum(worker.total_memory for worker in hosts),
                            available_memory=sum(worker.available_memory for worker in hosts),
                            load_1m=None, cpu_count=sum(worker.cpu_count for worker in hosts))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
