#!/usr/bin/env bash
# Where the cores go during `rask-bench tasks`: a scheduler and two worker processes on
# this host, the harness warmed up by one run, then `perf sched record` around RUNS more
# runs of WORKLOAD. Prints each process's busy time, the cores' idle time, and how many
# 2 ms spans had the scheduler running alone (everything else waiting on it); writes the
# spans, one a line, to timeline.txt in the current directory (C the harness, S the
# scheduler, W and w the workers, x their executor threads, o anything else; each
# figure the percent of the span that process ran, up to 100 per core).
#
# Run from the repository after `cargo build --release --bins`, as root (or with
# kernel.perf_event_paranoid at -1); BIN=dir takes the binaries from another build.
# Needs `perf` (Debian: linux-perf) and python3.
set -euo pipefail
workload=${WORKLOAD:-independent_10000}
runs=${RUNS:-5}
rask=${BIN:-target/release}/rask
bench=${BIN:-target/release}/rask-bench
out=$PWD/timeline.txt
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
"$rask" scheduler --port 0 --scheduler-file "$tmp/sched" --no-dashboard 2>/dev/null &
s=$!
while [ ! -s "$tmp/sched" ]; do sleep 0.05; done
addr=$(head -1 "$tmp/sched")
"$rask" worker "$addr" --nthreads 1 --name a --quiet 2>/dev/null &
a=$!
"$rask" worker "$addr" --nthreads 1 --name b --quiet 2>/dev/null &
b=$!
"$bench" tasks --scheduler "$addr" --only "$workload" --runs 1 --no-peer >/dev/null 2>&1
perf sched record -o "$tmp/sched.data" -- \
    "$bench" tasks --scheduler "$addr" --only "$workload" --runs "$runs" --no-peer 2>/dev/null |
    grep -E "^$workload +tasks_per_s"
kill "$a" "$b" "$s" 2>/dev/null || true
wait "$a" "$b" "$s" 2>/dev/null || true
perf sched timehist -i "$tmp/sched.data" 2>/dev/null | tail -n +4 >"$tmp/runs.txt"
python3 - "$tmp/runs.txt" "$out" "$s" "$a" "$b" <<'PY'
import collections, sys

runs, out, sched, wa, wb = sys.argv[1:6]
names = {sched: "S", wa: "W", wb: "w"}
spans = []
for line in open(runs):
    f = line.split()
    if len(f) < 6:
        continue
    try:
        end, ran = float(f[0]), float(f[-1]) / 1000
    except ValueError:
        continue
    spans.append((end - ran, end, f[2]))


def who(name):
    if name.startswith("<idle>"):
        return None
    if name.startswith(("rask-bench", "rask-client")):
        return "C"
    if name.startswith("rask-exec"):
        return "x"
    if name.startswith("rask["):
        return names.get(name.split("[")[1].rstrip("]"), "o")
    return "o"


t0 = min(s for s, _, _ in spans)
t1 = max(e for _, e, _ in spans)
width = 0.002
busy = [collections.Counter() for _ in range(int((t1 - t0) / width) + 1)]
for start, end, name in spans:
    label = who(name)
    if label is None:
        continue
    i = int((start - t0) / width)
    while start < end and i < len(busy):
        stop = min(end, t0 + (i + 1) * width)
        busy[i][label] += stop - start
        start, i = stop, i + 1
total = collections.Counter()
for b in busy:
    total.update(b)
idle = sum(max(0.0, 2 * width - sum(b.values())) for b in busy)
alone = sum(
    1
    for b in busy
    if b["S"] > 0.9 * width and sum(v for k, v in b.items() if k != "S") < 0.1 * width
)
print(f"span {(t1 - t0) * 1000:.0f} ms; busy ms", {k: round(v * 1000) for k, v in sorted(total.items())})
print(f"idle core-ms {idle * 1000:.0f} ({idle / (2 * (t1 - t0)) * 100:.0f} % of 2 cores)")
print(f"2 ms spans with the scheduler alone: {alone} of {len(busy)}")
with open(out, "w") as f:
    for i, b in enumerate(busy):
        cells = " ".join(f"{k}{v / width * 100:4.0f}" for k, v in sorted(b.items()))
        f.write(f"{i * 2:6d} ms {cells}\n")
PY
echo "spans: $out"
