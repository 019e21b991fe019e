"""What a long build history costs, before and after pruning it (``policy/history_prune.py``).

Writes a history of --packages packages built nightly for each of --nights nights (``history_report.py``'s
synthetic history, through the real schema), then measures, over --rounds rounds (the median): the file's size,
opening it (``History``: its quick check), the queries a run makes as it queues every package (learned peaks,
expected duration, whether it compiled), and the real ``orchestrate report --last 10``. Then prunes it as a run
would with ``--prune-unused-after`` --age (once: timed, with the longest wait of a writer recording builds
meanwhile), measures again, and times the prune of the next night (the steady state of a nightly farm)::

    python benchmarks/history_size.py [--packages 3000] [--nights 40 365] [--age 40] [--rounds 3]
        [--json benchmarks/results/history_size.json]

No tool does the same, so nothing is compared.
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from history_report import write_history  # noqa: E402

from orchestrator.policy.history import History  # noqa: E402

DAY = 86400.0
FIRST_NIGHT = 1.7e9
"""When ``write_history``'s first run starts; a night apart after that."""
PYTHON = "cpython-3.11"


def median_s(work: Callable[[], object], rounds: int) -> float:
    seconds = []
    for _ in range(rounds):
        began = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - began)
    return round(statistics.median(seconds), 3)


def queue_all(path: Path, packages: int) -> None:
    """What a run asks of the history as it queues every package (``pipeline.py``, ``predict.py``)."""
    with History(path) as history:
        for index in range(packages):
            history.recent_peaks(f"pkg-{index}", python=PYTHON, version="1.0")
            history.expected_duration(f"pkg-{index}", python=PYTHON, version="1.0")
            history.compiled(f"pkg-{index}", python=PYTHON)


def measure(state: Path, packages: int, rounds: int) -> dict[str, Any]:
    path = state / "history.sqlite3"
    with sqlite3.connect(path) as db:
        (builds,) = db.execute("SELECT COUNT(*) FROM builds").fetchone()
    report = [sys.executable, "-m", "orchestrator", "report", "--state-dir", str(state), "--last", "10", "--json"]
    return {"builds": builds, "file_bytes": path.stat().st_size,
            "open_s": median_s(lambda: History(path).close(), rounds),
            "queue_all_s": median_s(lambda: queue_all(path, packages), rounds),
            "report_last_10_s": median_s(lambda: subprocess.run(report, check=True, stdout=subprocess.DEVNULL),
                                         rounds)}


def timed_prune(path: Path, unused_since: float) -> dict[str, Any]:
    """Prune ``path`` while another connection writes every 10 ms (as a run records builds): the prune's time, what
    went, and the writer's longest wait."""
    waits: list[float] = []
    done = threading.Event()

    def record() -> None:
        with sqlite3.connect(path, timeout=60, isolation_level=None) as db:
            # Its own table: the same write lock as a build's record, and the report's runs stay the history's.
            db.execute("CREATE TABLE IF NOT EXISTS bench_writes (at REAL)")
            while not done.is_set():
                began = time.perf_counter()
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO bench_writes VALUES (?)", (time.time(),))
                db.execute("COMMIT")
                waits.append(time.perf_counter() - began)
                time.sleep(0.01)

    writer = threading.Thread(target=record)
    writer.start()
    try:
        began = time.perf_counter()
        with History(path) as history:
            pruned = history.prune(unused_since=unused_since)
        seconds = time.perf_counter() - began
    finally:
        done.set()
        writer.join()
    return {"prune_s": round(seconds, 3), "builds_pruned": pruned.builds, "runs_pruned": pruned.runs,
            "writer_longest_wait_s": round(max(waits), 3), "writer_commits": len(waits)}


def add_night(path: Path, night: int, packages: int) -> None:
    """One more nightly run of every package, ``night`` nights after the first."""
    started = FIRST_NIGHT + night * DAY
    with sqlite3.connect(path) as db:
        run = db.execute("INSERT INTO runs (started_at, finished_at, command_line, tool_version, python)"
                         " VALUES (?, ?, '', 'bench', ?)", (started, started + 3600, PYTHON)).lastrowid
        db.executemany("INSERT INTO builds (name, version, python, peak_rss_bytes, wall_s, status, started_at,"
                       " finished_at, outcome, run_id) VALUES (?, '1.0', ?, ?, 10, 'success', ?, ?, 'built', ?)",
                       [(f"pkg-{index}", PYTHON, 2**27, started, started + 10, run) for index in range(packages)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packages", type=int, default=3000)
    parser.add_argument("--nights", type=int, nargs="+", default=[40, 365])
    parser.add_argument("--age", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "history_size.json")
    args = parser.parse_args()
    results = []
    for nights in args.nights:
        with tempfile.TemporaryDirectory() as folder:
            state = Path(folder) / "state"
            path = state / "history.sqlite3"
            write_history(path, args.packages, nights)
            before = measure(state, args.packages, args.rounds)
            pruning = timed_prune(path, FIRST_NIGHT + (nights - 1 - args.age) * DAY)
            after = measure(state, args.packages, args.rounds)
            add_night(path, nights, args.packages)
            steady = timed_prune(path, FIRST_NIGHT + (nights - args.age) * DAY)
            results.append({"nights": nights, "before": before, "prune": pruning, "after": after,
                            "next_night_prune": steady})
    print(f"{args.packages} packages built nightly; pruned with --prune-unused-after {args.age}; shared machine")
    print(f"{'nights':>6} {'':>6} {'builds':>9} {'MiB':>7} {'open s':>7} {'queue s':>8} {'report s':>9}"
          f" {'prune s':>8} {'writer wait s':>14}")
    for result in results:
        for label, figures, prune in (("before", result["before"], result["prune"]),
                                      ("after", result["after"], result["next_night_prune"])):
            print(f"{result['nights']:>6} {label:>6} {figures['builds']:>9} {figures['file_bytes'] / 2**20:>7.1f}"
                  f" {figures['open_s']:>7.3f} {figures['queue_all_s']:>8.2f} {figures['report_last_10_s']:>9.2f}"
                  f" {prune['prune_s']:>8.2f} {prune['writer_longest_wait_s']:>14.3f}")
    print("prune s, writer wait s: on the 'before' line the first prune; on the 'after' line the next night's")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "packages": args.packages, "age_days": args.age, "rounds": args.rounds, "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version, "machine": platform.machine(), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
