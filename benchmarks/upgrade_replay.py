"""The upgrade night's start order replayed on what the builds really took: history's estimates and the planner
of another checkout, against this checkout's predictions and planner.

    python benchmarks/upgrade_replay.py --before /tmp/main-checkout ROUND_FOLDER...

Each ROUND_FOLDER is an orchestrate folder that ``upgrade.py`` left (``STATE/round-N/orchestrate``), holding
``previous.json`` and ``current.json``, the reports of the previous releases' build and of the current ones'.
For each, the current builds are ordered twice: as ``before`` would (its ``plan_order``, on history's
estimate: the previous release's wall time) and as this checkout does (its ``plan_order``, on the prediction
``predict.py`` makes from the previous build's record and the two sdists' compiled sources). Each order is
then simulated with the wall times the current builds really took (``planning.simulate``: K slots, no
memory limit binding), beside the best any order can do (the sum over K). The wall clock of a shared
machine moves by 2x between runs; this takes the order alone, on the same durations. Results go to
``--output`` (JSON).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from orchestrator.build.digests import source_files
from orchestrator.build.sources import sdist_source
from orchestrator.policy.admission import Limits, QueuedBuild
from orchestrator.policy.changes import predict_duration, seen_in, updated_record
from orchestrator.policy.planning import plan_order, simulate

GIB = 1024**3


def old_planner(checkout: Path) -> Any:
    """``before``'s ``policy/planning.py``, loaded on its own (it imports this checkout's admission module)."""
    spec = importlib.util.spec_from_file_location("planning_before", checkout / "orchestrator/policy/planning.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.plan_order


def replay(folder: Path, before_plan: Any, k: int) -> dict[str, Any]:
    previous = {build["name"].lower(): build for build in json.loads((folder / "previous.json").read_text())["builds"]}
    current = {build["name"].lower(): build for build in json.loads((folder / "current.json").read_text())["builds"]}
    limits = Limits(max_builds=k, memory_limit=64 * GIB, min_free_memory=0, max_load=None)
    history, predicted, actual = [], [], []
    for name in sorted(current):
        old, new = previous[name], current[name]
        files_before = source_files(sdist_source(Path(old["source"])))
        files_now = source_files(sdist_source(Path(new["source"])))
        assert files_before is not None and files_now is not None
        record = updated_record(None, version=old["version"], seen=seen_in(files_before), wall_s=old["wall_s"],
                                backend_s=old["phases"].get("backend", old["wall_s"]),
                                hits=old["compiler_hits"] or 0, misses=old["compiler_misses"] or 0)
        history.append(QueuedBuild(key=name, need=GIB, expected_duration=old["wall_s"]))
        predicted.append(QueuedBuild(key=name, need=GIB, expected_duration=predict_duration(record, files_now)))
        actual.append(QueuedBuild(key=name, need=GIB, expected_duration=new["wall_s"]))
    took = {build.key: build for build in actual}

    def on_actual(order: list[QueuedBuild]) -> float:
        return round(simulate([took[build.key] for build in order], [], limits, now=0.0), 2)

    before_order = before_plan(history, [], limits, now=0.0)
    after_order = plan_order(predicted, [], limits, now=0.0)
    return {"folder": str(folder), "bound_s": round(sum(build.expected_duration or 0.0 for build in actual) / k, 2),
            "before_s": on_actual(before_order), "after_s": on_actual(after_order),
            "before_order": [build.key for build in before_order], "after_order": [build.key for build in after_order],
            "actual_s": {build.key: build.expected_duration for build in actual},
            "history_s": {build.key: build.expected_duration for build in history},
            "predicted_s": {build.key: round(build.expected_duration or 0.0, 2) for build in predicted}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the other checkout (its folder)")
    parser.add_argument("--max-builds", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "upgrade_replay.json")
    parser.add_argument("folders", type=Path, nargs="+")
    args = parser.parse_args()
    before_plan = old_planner(args.before)
    results = [replay(folder, before_plan, args.max_builds) for folder in args.folders]
    print("| round | bound s | before: history's order s | after: predicted order s |\n|---|---|---|---|")
    for result in results:
        print(f"| {result['folder']} | {result['bound_s']} | {result['before_s']} | {result['after_s']} |")
    print(f"median of after / before: {statistics.median(r['after_s'] / r['before_s'] for r in results):.3f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"command": sys.argv, "rounds": results}, indent=1))
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
