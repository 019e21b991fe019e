"""A build job as the JSON a worker reads: every field, nested values included, and back."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.build.ceiling import MemoryCeiling
from orchestrator.build.compilercache import CompilerCache
from orchestrator.build.sandbox import Sandbox
from orchestrator.jobs import BuildJob, BuildResult, PhaseSpan, Status
from orchestrator.settings import IndexSettings


def _job() -> BuildJob:
    return BuildJob(
        key="demo-1.0", source=Path("/src/demo-1.0.tar.gz"), kind="sdist", name="demo", version="1.0",
        sha256="ab" * 32, wheelhouse=Path("/wh"), log_path=Path("/logs/demo-1.0.log"),
        index=IndexSettings(index_url="http://127.0.0.1:1/simple", extra_index_urls=("http://x/simple",),
                            find_links=("/links",), no_index=False),
        installer="uv", env_cache=Path("/envs"), environ={"MAX_JOBS": "1"},
        sandbox=Sandbox(tool="unshare", executable="/usr/bin/unshare", network=False, steps=("read-only host",)),
        memory_ceiling=MemoryCeiling(parent="/cg/run", home="/cg", limit=2**30),
        compiler_cache=CompilerCache(executable="/usr/bin/ccache", cache_dir=Path("/cc"), wrapper_dir=Path("/cc/bin"),
                                     max_size_bytes=2**31),
        nice=True, jobserver=True,
    )


def test_job_json_holds_every_field_as_plain_json() -> None:
    assert json.loads(json.dumps(_job().to_json())) == {
        "key": "demo-1.0", "source": "/src/demo-1.0.tar.gz", "kind": "sdist", "name": "demo", "version": "1.0",
        "sha256": "ab" * 32, "wheelhouse": "/wh", "log_path": "/logs/demo-1.0.log",
        "index": {"index_url": "http://127.0.0.1:1/simple", "extra_index_urls": ["http://x/simple"],
                  "find_links": ["/links"], "no_index": False},
        "installer": "uv", "env_cache": "/envs", "environ": {"MAX_JOBS": "1"},
        "sandbox": {"tool": "unshare", "executable": "/usr/bin/unshare", "network": False,
                    "steps": ["read-only host"]},
        "memory_ceiling": {"parent": "/cg/run", "home": "/cg", "limit": 2**30},
        "compiler_cache": {"tool": "ccache", "executable": "/usr/bin/ccache", "cache_dir": "/cc",
                           "wrapper_dir": "/cc/bin", "max_size_bytes": 2**31},
        "nice": True, "jobserver": True,
    }


def test_job_json_round_trips_and_is_a_copy() -> None:
    job = _job()
    data = job.to_json()
    assert BuildJob.from_json(json.loads(json.dumps(data))) == job
    data["environ"]["MAX_JOBS"] = "9"  # what a caller does with the JSON does not reach the job
    assert job.environ == {"MAX_JOBS": "1"}
    bare = BuildJob(key="a-1", source=Path("/a-1.tar.gz"), kind="sdist", name="a", version=None, sha256=None,
                    wheelhouse=Path("/wh"), log_path=Path("/a.log"), index=IndexSettings(), installer="pip",
                    env_cache=Path("/envs"))
    assert BuildJob.from_json(json.loads(json.dumps(bare.to_json()))) == bare


def test_result_json_holds_every_field_and_the_derived_times() -> None:
    result = BuildResult(
        name="demo", version="1.0", source="/src/demo-1.0.tar.gz", status=Status.BUILT,
        wheel="demo-1.0-py3-none-any.whl", started_at=100.0, finished_at=112.5,
        phases={"extract": 0.25, "backend": 10.0}, peak_rss_bytes=2**20, cpu_s=9.5, log="/logs/demo.log", error=None,
        predicted_rss_bytes=2**30, cpu_wait_s=1.5, expected_s=11.0, attempts=2, memory_requeues=1,
        waits={"queue": 1.0, "cpu": 0.0004, "memory_limit": 2.0}, wait_reason="waiting: memory",
        wheel_sha256="cd" * 32, wheel_tag="py3-none-any", sandbox="none", queued_at=97.0,
        spans=(PhaseSpan(phase="extract", start=100.0, end=100.25), PhaseSpan(phase="backend", start=101.0, end=111.0)),
        compiler_calls=3, compiler_hits=1, compiler_misses=2, host="node1",
    )
    data = result.to_json()
    assert json.loads(json.dumps(data)) == {
        "name": "demo", "version": "1.0", "source": "/src/demo-1.0.tar.gz", "status": "built",
        "wheel": "demo-1.0-py3-none-any.whl", "started_at": 100.0, "finished_at": 112.5,
        "phases": {"extract": 0.25, "backend": 10.0}, "peak_rss_bytes": 2**20, "cpu_s": 9.5, "log": "/logs/demo.log",
        "error": None, "predicted_rss_bytes": 2**30, "cpu_wait_s": 1.5, "expected_s": 11.0, "attempts": 2,
        "memory_requeues": 1,
        "waits": {"queue": 1.0, "memory_limit": 2.0}, "wait_reason": "waiting: memory",  # under a millisecond: none
        "wheel_sha256": "cd" * 32, "wheel_tag": "py3-none-any", "sandbox": "none", "queued_at": 97.0,
        "spans": [{"phase": "extract", "start": 100.0, "end": 100.25},
                  {"phase": "backend", "start": 101.0, "end": 111.0}],
        "compiler_calls": 3, "compiler_hits": 1, "compiler_misses": 2, "host": "node1",
        "wall_s": 12.5, "overhead_s": 2.5, "waited_s": 3.0,
    }
    data["phases"]["extract"] = 9.0  # what a caller does with the JSON does not reach the result
    assert result.phases["extract"] == 0.25
