#!/usr/bin/env bash
# What the scheduler's journal costs: `rask-bench tasks` against a scheduler with no
# journal and one with `--journal` (fsync every second), two worker processes each,
# rounds alternating. Run from the repository after `cargo build --release --bins`;
# BIN=dir takes the binaries from another build (to set one beside another).
set -euo pipefail
rask=${BIN:-target/release}/rask
bench=${BIN:-target/release}/rask-bench
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
round() {
    local mode=$1 n=$2
    local file="$tmp/sched-$mode-$n" extra=()
    if [ "$mode" = journal ]; then extra=(--journal "$tmp/journal-$n" --journal-fsync 1); fi
    "$rask" scheduler --port 0 --scheduler-file "$file" --no-dashboard "${extra[@]}" 2>/dev/null &
    local s=$!
    while [ ! -s "$file" ]; do sleep 0.05; done
    local addr
    addr=$(head -1 "$file")
    "$rask" worker "$addr" --nthreads 1 --name a --quiet 2>/dev/null &
    local a=$!
    "$rask" worker "$addr" --nthreads 1 --name b --quiet 2>/dev/null &
    local b=$!
    echo "## $mode (round $n)"
    "$bench" tasks --scheduler "$addr" --only independent_10000,chain_5000,round_trip_1000 \
        --runs "${RUNS:-3}" --no-peer --markdown 2>/dev/null | grep -E '^\| (independent|chain|round)'
    if [ "$mode" = journal ]; then echo "journal: $(stat -c %s "$tmp/journal-$n") bytes"; fi
    kill "$a" "$b" "$s" 2>/dev/null || true
    wait "$a" "$b" "$s" 2>/dev/null || true
}
for n in 1 2 3; do
    round none "$n"
    round journal "$n"
done
