"""How long ``orchestrate report`` takes on a farm's history, in each of its forms.

Writes a history of --packages packages built nightly for --nights nights (``history_report.py``'s synthetic
history, through the real schema), then runs the real ``orchestrate report --last 10`` as text, ``--json``,
``--html FILE`` and ``--package NAME``, --rounds times each in turn, and prints the median wall and CPU seconds
(the command's own, from ``getrusage``: steadier than the wall clock on a shared machine) and the output's size.
Also times SQLite's ``PRAGMA quick_check`` on the file, which opening the history ran at every run's and report's
start until stop 24::

    python benchmarks/report_speed.py [--packages 3000] [--nights 40] [--rounds 3]
        [--json benchmarks/results/report_speed.json]

No tool does the same, so nothing is compared; to compare two versions of the code, run the script with the
other checkout first on ``PYTHONPATH`` (the command runs in a temporary folder, so the current one's code does not
come first).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from history_report import write_history  # noqa: E402

import orchestrator  # noqa: E402

FORMS = {"text": [], "json": ["--json"], "html": ["--html", "{folder}/report.html"], "package": ["--package", "pkg-7"]}


def child_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_form(state: Path, extra: list[str]) -> dict[str, float]:
    command = [sys.executable, "-m", "orchestrator", "report", "--state-dir", str(state), "--last", "10", *extra]
    cpu, began = child_cpu_s(), time.perf_counter()
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, cwd=state.parent)
    return {"wall_s": time.perf_counter() - began, "cpu_s": child_cpu_s() - cpu, "stdout_bytes": len(done.stdout)}


def quick_check_s(path: Path, rounds: int) -> float:
    seconds = []
    with sqlite3.connect(path) as db:
        for _ in range(rounds):
            began = time.perf_counter()
            db.execute("PRAGMA quick_check").fetchone()
            seconds.append(time.perf_counter() - began)
    return round(statistics.median(seconds), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packages", type=int, default=3000)
    parser.add_argument("--nights", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "report_speed.json")
    args = parser.parse_args()
    samples: dict[str, list[dict[str, float]]] = {form: [] for form in FORMS}
    with tempfile.TemporaryDirectory() as folder:
        state = Path(folder) / "state"
        write_history(state / "history.sqlite3", args.packages, args.nights)
        history_bytes = (state / "history.sqlite3").stat().st_size
        run_form(state, [])  # once unmeasured: the file in the page cache, the bytecode written
        for _ in range(args.rounds):
            for form, extra in FORMS.items():
                samples[form].append(run_form(state, [part.format(folder=folder) for part in extra]))
        html_bytes = (Path(folder) / "report.html").stat().st_size
        check_s = quick_check_s(state / "history.sqlite3", args.rounds)
    results: dict[str, Any] = {
        form: {"median_wall_s": round(statistics.median(s["wall_s"] for s in runs), 3),
               "median_cpu_s": round(statistics.median(s["cpu_s"] for s in runs), 3),
               "stdout_bytes": runs[-1]["stdout_bytes"], "runs": runs}
        for form, runs in samples.items()}
    print(f"orchestrate report --last 10: {args.packages} packages x {args.nights} nights, "
          f"{history_bytes / 2**20:.1f} MiB, {args.rounds} rounds; shared machine (load {os.getloadavg()[0]:.1f})")
    print(f"{'form':>8} {'wall s':>7} {'CPU s':>6} {'output KiB':>11}")
    for form, figures in results.items():
        size = html_bytes if form == "html" else figures["stdout_bytes"]
        print(f"{form:>8} {figures['median_wall_s']:>7.2f} {figures['median_cpu_s']:>6.2f} {size / 1024:>11.0f}")
    print(f"PRAGMA quick_check on the file: {check_s:.3f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "packages": args.packages, "nights": args.nights, "rounds": args.rounds, "history_bytes": history_bytes,
        "html_bytes": html_bytes, "quick_check_s": check_s, "code": str(Path(orchestrator.__file__).parent),
        "load_average": os.getloadavg(), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
        "machine": platform.machine(), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
