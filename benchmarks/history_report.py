"""Size and time of ``orchestrate report`` over a large synthetic build history.

Writes a history of --packages packages built in each of --runs nightly runs (seeded: wall
times and peaks that wander a little, 2% of builds failing) through the real schema, then
runs the real ``orchestrate report --html`` for each --last, --rounds times, and prints the
HTML size and the median seconds::

    python benchmarks/history_report.py [--packages 1000] [--runs 365] [--last 10 30]
        [--rounds 3] [--json benchmarks/results/history_report.json]

No tool does the same, so nothing is compared: the figures say whether a farm's year of
history stays readable (the page's size) and quick to report on.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestrator.policy.history import History


def write_history(path: Path, packages: int, runs: int, seed: int = 1) -> None:
    History(path).close()  # the current schema
    rng = random.Random(seed)
    day, started = 86400.0, 1.7e9
    connection = sqlite3.connect(path)
    for run in range(1, runs + 1):
        connection.execute(
            "INSERT INTO runs (id, started_at, finished_at, command_line, tool_version, python, built, failed)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (run, started, started + 3600, "orchestrate build -r lock.txt", "bench", "cpython-3.11", packages, 0))
        rows = []
        for package in range(packages):
            wall = 10 + package % 50 + rng.random() * 3
            ok = rng.random() > 0.02
            start = started + rng.random() * 3000
            rows.append((f"pkg-{package}", "1.0", "cpython-3.11", int((100 + package % 300) * 2**20 * (
                1 + rng.random() * 0.1)), wall, wall, "success" if ok else "boom", start, start + wall,
                "built" if ok else "failed", run, 2**30))
        connection.executemany(
            "INSERT INTO builds (name, version, python, peak_rss_bytes, wall_s, cpu_s, status, started_at,"
            " finished_at, outcome, run_id, predicted_rss_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        started += day
    connection.commit()
    connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packages", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=365)
    parser.add_argument("--last", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "history_report.json")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        state = Path(folder) / "state"
        write_history(state / "history.sqlite3", args.packages, args.runs)
        history_bytes = (state / "history.sqlite3").stat().st_size
        for last in args.last:
            page = Path(folder) / f"last{last}.html"
            seconds = []
            for _ in range(args.rounds):
                begin = time.perf_counter()
                subprocess.run([sys.executable, "-m", "orchestrator", "report", "--state-dir", str(state), "--last",
                                str(last), "--html", str(page)], check=True, stdout=subprocess.DEVNULL)
                seconds.append(time.perf_counter() - begin)
            results.append({"last": last, "html_bytes": page.stat().st_size,
                            "median_s": round(statistics.median(seconds), 3), "seconds": seconds})
    print(f"history: {args.packages} packages x {args.runs} runs, {history_bytes / 2**20:.1f} MiB")
    print(f"{'--last':>7} {'HTML KiB':>9} {'median s':>9}")
    for result in results:
        print(f"{result['last']:>7} {result['html_bytes'] / 1024:>9.0f} {result['median_s']:>9.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "packages": args.packages, "runs": args.runs, "history_bytes": history_bytes, "rounds": args.rounds,
        "python": platform.python_version(), "machine": platform.machine(), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
