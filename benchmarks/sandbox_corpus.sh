#!/usr/bin/env bash
# The corpus built with each sandbox in turn: bwrap, unshare (a PATH without bwrap), none (--no-sandbox).
# One line per run: wall seconds, the hooks' seconds summed (get_requires + build_wheel), builds, protections.
#   benchmarks/sandbox_corpus.sh [ROUNDS] [CORPUS]      (PYTHON: the interpreter with orchestrator installed)
set -u
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
CORPUS=${2:-../shared/corpus}
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d /var/tmp/orchestrate-bench-XXXX)  # not under /tmp: the sandboxes hide /tmp
trap 'rm -rf "$WORK"' EXIT
NO_BWRAP=""
IFS=: read -ra parts <<< "$PATH"
for i in "${!parts[@]}"; do
  dir=${parts[$i]}
  if [ -e "$dir/bwrap" ]; then
    mkdir -p "$WORK/bin$i"
    for file in "$dir"/*; do [ "$(basename "$file")" = bwrap ] || ln -s "$file" "$WORK/bin$i/"; done
    dir="$WORK/bin$i"
  fi
  NO_BWRAP="$NO_BWRAP${NO_BWRAP:+:}$dir"
done
for round in $(seq "$ROUNDS"); do
  for tool in bwrap unshare none; do
    state=$(mktemp -d "$WORK/state-XXXX")
    case $tool in
      bwrap) path=$PATH flag=--sandbox ;;
      unshare) path=$NO_BWRAP flag=--sandbox ;;
      none) path=$PATH flag=--no-sandbox ;;
    esac
    start=$(date +%s.%N)
    PATH=$path PIP_CONFIG_FILE=/dev/null "$PYTHON" -m orchestrator build "$CORPUS/public/sdists" -w "$state/wh" \
      --no-index --find-links "$CORPUS/backends" -j 2 --state-dir "$state" "$flag" --report-json "$state/r.json" \
      > "$state/out.txt" 2>&1
    status=$?
    wall=$(echo "$(date +%s.%N) - $start" | bc)
    summary=$("$PYTHON" -c "import json, sys
builds = json.load(open(sys.argv[1]))['builds']
hooks = sum(b['phases'].get('backend', 0) + b['phases'].get('get_requires', 0) for b in builds)
print(f\"hooks {hooks:.1f} s, built {sum(b['status'] == 'built' for b in builds)}, {sorted({b['sandbox'] for b in builds})}\")" "$state/r.json")
    printf 'round %s %-8s exit %s  wall %.1f s  %s  load %s\n' "$round" "$tool" "$status" "$wall" "$summary" \
      "$(cut -d' ' -f1 /proc/loadavg)"
    rm -rf "$state"
  done
done
