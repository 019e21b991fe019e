"""Throughput of the download stage against a local index with per-file latency.

Serves FILES sdists of SIZE bytes from tests/index_server.py, each file response
delayed by DELAY seconds (the simple pages are not delayed), and downloads them
all with ``download_all`` at several ``max_downloads``, without a cache::

    python benchmarks/downloads.py [--files 200] [--size-mb 1] [--delay 0.05]
        [--concurrency 1 4 16] [--json benchmarks/results/downloads.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from index_server import IndexServer  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402

from orchestrator.download.fetch import DownloadSettings, DownloadStatus, download_all  # noqa: E402
from orchestrator.download.requirements import PinnedRequirement  # noqa: E402
from orchestrator.settings import IndexSettings  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--size-mb", type=float, default=1.0)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds per file response")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/downloads.json")
    args = parser.parse_args()

    size = int(args.size_mb * 1024 * 1024)
    payload = os.urandom(size)
    requirements = [
        PinnedRequirement(
            name=canonicalize_name(f"pkg{i:03d}"), version="1.0", origin=f"benchmark:{i}"
        )
        for i in range(args.files)
    ]
    runs = []
    with IndexServer(delay=args.delay) as server, tempfile.TemporaryDirectory() as scratch:
        for requirement in requirements:
            # A distinct prefix gives every file its own content and hash.
            content = requirement.name.encode() + payload[: size - len(requirement.name)]
            server.add(f"{requirement.name}-1.0.tar.gz", content)
        settings = DownloadSettings(
            index=IndexSettings(index_url=server.simple_url), cache_dir=None
        )
        for concurrency in args.concurrency:
            dest = Path(scratch) / f"dest-{concurrency}"
            server.max_in_flight = 0
            start = time.perf_counter()
            results = download_all(requirements, settings, dest, max_downloads=concurrency)
            seconds = time.perf_counter() - start
            failed = [r for r in results if r.status is not DownloadStatus.DOWNLOADED]
            if failed:
                print(f"{len(failed)} downloads failed; first: {failed[0].error}", file=sys.stderr)
                return 1
            total = sum(r.bytes for r in results)
            runs.append(
                {
                    "max_downloads": concurrency,
                    "seconds": round(seconds, 3),
                    "megabytes": round(total / 1e6, 3),
                    "mb_per_s": round(total / 1e6 / seconds, 2),
                    "files_per_s": round(len(results) / seconds, 2),
                    "max_in_flight": server.max_in_flight,
                }
            )
    base = runs[0]["files_per_s"]
    for run in runs:
        run["speedup"] = round(float(run["files_per_s"]) / float(base), 2)

    print(f"{args.files} files x {args.size_mb:g} MB, {args.delay * 1000:g} ms delay per file")
    print(
        f"{'max_downloads':>13} {'seconds':>8} {'MB/s':>8} {'files/s':>8} "
        f"{'in flight':>9} {'speedup':>8}"
    )
    for run in runs:
        print(
            f"{run['max_downloads']:>13} {run['seconds']:>8.2f} {run['mb_per_s']:>8.1f} "
            f"{run['files_per_s']:>8.1f} {run['max_in_flight']:>9} {run['speedup']:>7.2f}x"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "benchmark": "downloads",
                "files": args.files,
                "file_bytes": size,
                "delay_s": args.delay,
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "runs": runs,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
