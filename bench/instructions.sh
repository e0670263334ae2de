#!/bin/bash
# Instructions per view of the client page (or the caseload), counted by valgrind's callgrind: unlike time on a
# shared machine, the count is the same from run to run, so two versions of the code compare exactly.
#
#   bash bench/instructions.sh [client|caseload] [views] [checkout]   # default: client 10 .
#
# Needs valgrind (apt-get install valgrind). Seeding runs uninstrumented; only the measured views are counted. About
# 30 s. To compare with an earlier commit: git worktree add /tmp/before <commit>; bash bench/instructions.sh client
# 10 /tmp/before (the checkout's code runs with this virtualenv).
set -euo pipefail
page=${1:-client}
views=${2:-10}
root=$(cd "${3:-.}" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flag=$work/flag
cd "$root"
PYTHONPATH=$root valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/out" \
    "$python" "$root/bench/instructions_view.py" "$page" "$flag" "$views" >/dev/null 2>"$work/err" &
pid=$!
until [ -f "$flag.ready" ]; do sleep 0.2; kill -0 $pid 2>/dev/null || { cat "$work/err"; exit 1; }; done
callgrind_control -i on $pid >/dev/null 2>&1
touch "$flag.go"
until [ -f "$flag.done" ]; do sleep 0.2; done
callgrind_control -i off $pid >/dev/null 2>&1
touch "$flag.end"
wait $pid
total=$(grep -m1 '^totals:' "$work/out" | awk '{print $2}')
echo "$page page: $((total / views)) instructions per view ($views views, $root)"
