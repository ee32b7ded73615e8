"""Task-throughput workloads run on Dask distributed, for comparison with Rask.

Runs the same workloads, under the same names, as `rask-bench tasks`, on a
two-worker LocalCluster (one thread per worker, one process per worker), and
writes the figures as JSON (--json) and as a table on stderr.

Each run is a new Python process that starts a fresh cluster (timed as
`cluster_start`) and runs every selected workload on it once; the reported
figure of a workload is the median over runs, with
every run's value kept under "runs". Between workloads the script waits until
the scheduler has forgotten all tasks, so one workload's clean-up is not
counted in the next one.

Use the interpreter from setup_venv.sh, which has the pinned Dask installed:

    PY=$(bash benches/compare/setup_venv.sh | tail -1)
    "$PY" benches/compare/dask_tasks.py --quick --runs 1 --json out.json
"""

import argparse
import ctypes
import ctypes.util
import gc
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid

import dask
import psutil
from distributed import Client, LocalCluster

N_WORKERS = 2
THREADS_PER_WORKER = 1

# Full-size task counts; --quick divides them by QUICK_FACTOR.
QUICK_FACTOR = 10
SIZES = {
    "independent_10000": 10_000,
    "independent_100000": 100_000,
    "round_trip_1000": 1_000,
    "chain_5000": 5_000,
    "tree_10000": 10_000,
    "scheduler_memory_100000": 100_000,
    "skewed_20": 20,
}
# Run order within one run. scheduler_memory_100000 comes first so that its
# RSS delta is measured before other workloads have grown and fragmented the
# heap (freed memory that gets reused would hide part of the cost).
WORKLOADS = [
    "cluster_start",
    "scheduler_memory_100000",
    "round_trip_1000",
    "independent_10000",
    "independent_100000",
    "chain_5000",
    "tree_10000",
    "skewed_20",
]
# Workloads too slow on Dask to run by default (~500 tasks/s here, so 100,000
# tasks take ~200 s per run); they run only with --full.
FULL_ONLY = {"independent_100000"}

SETTLE_TIMEOUT_S = 300.0


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def sleep_for(seconds):
    time.sleep(seconds)
    return seconds


def start_cluster():
    """Start the cluster and a client; return (cluster, client, seconds)."""
    t0 = time.perf_counter()
    cluster = LocalCluster(
        n_workers=N_WORKERS,
        threads_per_worker=THREADS_PER_WORKER,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)
    client.wait_for_workers(N_WORKERS)
    return cluster, client, time.perf_counter() - t0


def settle(cluster):
    """Wait until the scheduler holds no task (released futures forgotten)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while cluster.scheduler.tasks:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"scheduler still holds {len(cluster.scheduler.tasks)} tasks "
                f"after {SETTLE_TIMEOUT_S:.0f} s"
            )
        time.sleep(0.01)


def warm_up(client, cluster):
    """Run a few tasks on every worker so one-off costs (function
    deserialisation, first connections) are not counted in a workload."""
    client.gather(client.map(inc, range(8 * N_WORKERS), pure=False))
    settle(cluster)


def run_independent(client, cluster, n):
    t0 = time.perf_counter()
    futures = client.map(inc, range(n), pure=False)
    client.gather(futures)
    seconds = time.perf_counter() - t0
    return {"tasks_per_s": n / seconds, "seconds": seconds}


def run_skewed(client, cluster, n):
    """Sleeps of 100 ms and 1 ms in turn (durations 100x apart), as rask-bench's
    skewed_20: the seconds to every result, and the ideal (the work split evenly)."""
    durations = [0.1 if i % 2 == 0 else 0.001 for i in range(n)]
    t0 = time.perf_counter()
    futures = client.map(sleep_for, durations, pure=False)
    client.gather(futures)
    return {
        "seconds": time.perf_counter() - t0,
        "ideal_seconds": sum(durations) / N_WORKERS,
    }


def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def run_round_trip(client, cluster, n):
    latencies_us = []
    for i in range(n):
        t0 = time.perf_counter()
        client.submit(inc, i, pure=False).result()
        latencies_us.append((time.perf_counter() - t0) * 1e6)
    latencies_us.sort()
    return {
        "median_us": statistics.median(latencies_us),
        "p99_us": percentile(latencies_us, 99),
    }


def run_graph(client, graph, final_key, tasks):
    """Submit a whole graph in one message and wait for its final result."""
    t0 = time.perf_counter()
    client.get(graph, final_key, sync=False).result()
    seconds = time.perf_counter() - t0
    return {"tasks_per_s": tasks / seconds, "seconds": seconds}


def run_chain(client, cluster, n):
    # chain-0 = inc(0), chain-i = inc(chain-{i-1}).
    prefix = f"chain-{uuid.uuid4().hex}"
    graph = {f"{prefix}-0": (inc, 0)}
    for i in range(1, n):
        graph[f"{prefix}-{i}"] = (inc, f"{prefix}-{i - 1}")
    return run_graph(client, graph, f"{prefix}-{n - 1}", n)


def tree_graph(leaves):
    """Binary reduction: leaves inc(i), then pairwise add (an odd one out is
    carried up a level) until one key remains. Returns (graph, root key)."""
    prefix = f"tree-{uuid.uuid4().hex}"
    graph = {}
    level = []
    for i in range(leaves):
        key = f"{prefix}-0-{i}"
        graph[key] = (inc, i)
        level.append(key)
    depth = 0
    while len(level) > 1:
        depth += 1
        parents = []
        for j in range(0, len(level) - 1, 2):
            key = f"{prefix}-{depth}-{j // 2}"
            graph[key] = (add, level[j], level[j + 1])
            parents.append(key)
        if len(level) % 2:
            parents.append(level[-1])
        level = parents
    return graph, level[0]


def run_tree(client, cluster, leaves):
    graph, root = tree_graph(leaves)
    return run_graph(client, graph, root, len(graph))


def trim_heap():
    """Collect garbage and hand free heap pages back to the OS (glibc), so
    the RSS baseline holds only memory actually in use."""
    gc.collect()
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        libc = ctypes.CDLL(libc_name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)


def run_scheduler_memory(client, cluster, n):
    # With processes=True the scheduler runs inside this (the client's)
    # process, so its memory is this process's RSS. The tasks depend on a
    # root restricted to a resource no worker has: the root stays in the
    # scheduler's no-worker state and the n tasks stay waiting on it, so
    # nothing runs and no worker holds them (Dask config left at defaults).
    process = psutil.Process()
    trim_heap()
    rss_before = process.memory_info().rss
    root = client.submit(inc, 0, resources={"unavailable": 1}, pure=False)
    futures = client.map(add, range(n), [root] * n, pure=False)
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while len(cluster.scheduler.tasks) < n + 1:
        if time.monotonic() > deadline:
            raise RuntimeError("graph not registered with the scheduler in time")
        time.sleep(0.01)
    gc.collect()
    rss_after = process.memory_info().rss
    # Dropping the futures releases the tasks. (client.cancel would too, but
    # cancelling many dependents of one task takes time quadratic in n.)
    del futures, root
    return {"bytes_per_task": (rss_after - rss_before) / n}


RUNNERS = {
    "independent_10000": run_independent,
    "independent_100000": run_independent,
    "round_trip_1000": run_round_trip,
    "chain_5000": run_chain,
    "tree_10000": run_tree,
    "scheduler_memory_100000": run_scheduler_memory,
    "skewed_20": run_skewed,
}


def sizes_for(args):
    """Task count per workload after --quick and --max-independent."""
    sizes = {}
    for name, size in SIZES.items():
        if args.quick and not name.startswith("skewed_"):
            size //= QUICK_FACTOR
        if name.startswith("independent_"):
            size = min(size, args.max_independent)
        sizes[name] = size
    return sizes


def count_field(name, size):
    """The size field reported with a workload's figures."""
    if name == "round_trip_1000":
        return {"n": size}
    if name == "tree_10000":
        # size leaves plus size - 1 pairwise additions.
        return {"tasks": 2 * size - 1}
    if name == "cluster_start":
        return {}
    return {"tasks": size}


def summarise(name, runs, size, scaled):
    """Median of every figure over the runs, plus the runs themselves."""
    result = {"workload": name}
    for field in runs[0]:
        result[field] = statistics.median(run[field] for run in runs)
    result.update(count_field(name, size))
    if scaled:
        result["scaled"] = True
    if name == "scheduler_memory_100000":
        result["note"] = (
            "RSS delta of the process running both client and scheduler "
            "(LocalCluster keeps the scheduler in the client's process)"
        )
    result["runs"] = runs
    return result


def print_table(results):
    rows = []
    for r in results:
        if "skipped" in r:
            rows.append((r["workload"], "skipped: " + r["skipped"]))
            continue
        figures = [
            f"{field}={r[field]:,.1f}"
            for field in ("tasks_per_s", "median_us", "p99_us", "seconds",
                          "bytes_per_task")
            if field in r
        ]
        if "scaled" in r:
            figures.append("(scaled)")
        rows.append((r["workload"], "  ".join(figures)))
    width = max(len(name) for name, _ in rows)
    print(f"{'workload':<{width}}  dask", file=sys.stderr)
    for name, text in rows:
        print(f"{name:<{width}}  {text}", file=sys.stderr)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3,
                        help="runs per workload, each on a fresh cluster "
                             "(default 3); the median is reported")
    parser.add_argument("--quick", action="store_true",
                        help=f"divide sizes by {QUICK_FACTOR} (smoke test)")
    parser.add_argument("--full", action="store_true",
                        help="also run the slow workloads: "
                             + ", ".join(sorted(FULL_ONLY)))
    parser.add_argument("--max-independent", type=int, default=100_000,
                        help="cap on the task count of independent_* "
                             "workloads (default 100000)")
    parser.add_argument("--only", type=lambda s: [w for w in s.split(",") if w],
                        help="comma-separated workload names to run")
    parser.add_argument("--json", metavar="PATH", help="write results here")
    # Internal: run once and print that run's figures as JSON on stdout.
    parser.add_argument("--one-run", action="store_true",
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.max_independent < 1:
        parser.error("--max-independent must be at least 1")
    unknown = [w for w in args.only or [] if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; "
                     f"known: {', '.join(WORKLOADS)}")
    return args


def one_run(to_run, sizes):
    """Start a fresh cluster, run each workload once; return name -> figures."""
    figures = {}
    cluster, client, seconds = start_cluster()
    try:
        if "cluster_start" in to_run:
            figures["cluster_start"] = {"seconds": seconds}
        warm_up(client, cluster)
        for name in to_run:
            if name == "cluster_start":
                continue
            print(f"  {name} ({sizes[name]:,})", file=sys.stderr)
            figures[name] = RUNNERS[name](client, cluster, sizes[name])
            settle(cluster)
    finally:
        client.close()
        cluster.close()
    return figures


def main():
    args = parse_args()
    selected = [w for w in WORKLOADS if args.only is None or w in args.only]
    sizes = sizes_for(args)
    skipped = {}
    if not args.full:
        for name in FULL_ONLY:
            skipped[name] = ("runs only with --full: Dask manages ~500 tasks/s "
                             "here, so 100,000 tasks take minutes per run")
    to_run = [w for w in selected if w not in skipped]

    if args.one_run:
        print(json.dumps(one_run(to_run, sizes)))
        return

    # Each run is a new Python process: a run then never reuses heap memory
    # freed by an earlier one, which would hide part of the RSS growth that
    # scheduler_memory_100000 measures, and the cluster starts from cold.
    runs = {name: [] for name in to_run}
    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs}", file=sys.stderr)
        child = subprocess.run(
            [sys.executable, os.path.abspath(__file__), *sys.argv[1:],
             "--one-run"],
            stdout=subprocess.PIPE, text=True, check=True,
        )
        for name, figures in json.loads(child.stdout).items():
            runs[name].append(figures)

    results = []
    for name in selected:
        if name in skipped:
            results.append({"workload": name, "skipped": skipped[name]})
            continue
        size = sizes.get(name, 0)
        scaled = name in SIZES and size != SIZES[name]
        results.append(summarise(name, runs[name], size, scaled))

    report = {
        "peer": "dask",
        "version": dask.__version__,
        "python": platform.python_version(),
        "config": {
            "n_workers": N_WORKERS,
            "threads_per_worker": THREADS_PER_WORKER,
            "processes": True,
        },
        "results": results,
    }
    print_table(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
