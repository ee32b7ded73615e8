"""Worker-to-worker transfer bandwidth on Dask distributed, for comparison
with Rask.

On a two-worker LocalCluster (one thread per worker, one process per
worker, 127.0.0.1) it creates a numpy uint8 array of each size on worker A,
then times a task that takes the array as input and returns its `nbytes`:
once on worker B, which must first fetch the array from A, and once on A,
which already holds it. `seconds` is the time from submit to result on B;
`gb_per_s` is size / (t_B - t_A), the transfer with the cost of a task round
trip taken out (null if t_B <= t_A). Figures are medians over runs; each run
uses a new array.

Prints JSON on stdout (and writes it to --json PATH if given) and a table on
stderr. p2p_peers.py runs it once per size. Use the interpreter from
setup_venv.sh, which has the pinned Dask installed:

    PY=$(bash benches/compare/setup_venv.sh | tail -1)
    "$PY" benches/compare/dask_p2p.py --sizes 1048576,67108864 --runs 3
"""

import argparse
import json
import logging
import platform
import statistics
import sys
import time

import dask
import numpy as np
from distributed import Client, LocalCluster, wait

N_WORKERS = 2
THREADS_PER_WORKER = 1
# Any one step (cluster start, creating an array, one task) that takes longer
# than this fails the run instead of hanging.
STEP_TIMEOUT_S = 60.0


def nbytes(array):
    return array.nbytes


def settle(cluster):
    """Wait until the scheduler holds no task, so the arrays of the previous
    run are released before the next is created."""
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while cluster.scheduler.tasks:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"scheduler still holds {len(cluster.scheduler.tasks)} tasks "
                f"after {STEP_TIMEOUT_S:.0f} s")
        time.sleep(0.01)


def timed_task(client, data, worker):
    t0 = time.perf_counter()
    future = client.submit(nbytes, data, workers=[worker], pure=False)
    n = future.result(timeout=STEP_TIMEOUT_S)
    seconds = time.perf_counter() - t0
    del future
    return n, seconds


def one_run(client, cluster, size, a, b):
    """Create an array of `size` bytes on a; return (t_local, t_remote)."""
    data = client.submit(np.ones, size, dtype=np.uint8, workers=[a],
                         pure=False)
    wait(data, timeout=STEP_TIMEOUT_S)
    if data.status != "finished":
        raise RuntimeError(f"creating the array failed: {data.status}")
    n_local, t_local = timed_task(client, data, a)
    n_remote, t_remote = timed_task(client, data, b)
    if n_local != size or n_remote != size:
        raise RuntimeError(f"expected {size} bytes, got {n_local}, {n_remote}")
    del data
    settle(cluster)
    return t_local, t_remote


def bandwidth(size, t_local, t_remote):
    transfer = t_remote - t_local
    return size / transfer / 1e9 if transfer > 0 else None


def measure(client, cluster, size, runs, a, b):
    per_run = []
    for _ in range(runs):
        t_local, t_remote = one_run(client, cluster, size, a, b)
        per_run.append({"seconds": t_remote, "seconds_local": t_local,
                        "gb_per_s": bandwidth(size, t_local, t_remote)})
    # Bandwidth from the median transfer time (t_B - t_A per run), so a run
    # whose difference is not positive still counts.
    transfer = statistics.median(r["seconds"] - r["seconds_local"]
                                 for r in per_run)
    return {
        "size": size,
        "gb_per_s": size / transfer / 1e9 if transfer > 0 else None,
        "seconds": statistics.median(r["seconds"] for r in per_run),
        "seconds_local": statistics.median(r["seconds_local"]
                                           for r in per_run),
        "runs": per_run,
    }


def print_table(results):
    print(f"{'size':>12}  {'GB/s':>8}  {'t_B (s)':>9}  {'t_A (s)':>9}",
          file=sys.stderr)
    for r in results:
        gb = "n/a" if r["gb_per_s"] is None else f"{r['gb_per_s']:.3f}"
        print(f"{r['size']:>12}  {gb:>8}  {r['seconds']:>9.4f}  "
              f"{r['seconds_local']:>9.4f}", file=sys.stderr)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", required=True,
                        type=lambda s: [int(x) for x in s.split(",") if x],
                        help="comma-separated array sizes in bytes")
    parser.add_argument("--runs", type=int, default=5,
                        help="runs per size (default 5); medians reported")
    parser.add_argument("--json", metavar="PATH", help="also write JSON here")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not args.sizes or min(args.sizes) < 1:
        parser.error("--sizes must list positive sizes")
    return args


def main():
    args = parse_args()
    cluster = LocalCluster(
        n_workers=N_WORKERS,
        threads_per_worker=THREADS_PER_WORKER,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    try:
        client = Client(cluster)
        try:
            client.wait_for_workers(N_WORKERS, timeout=STEP_TIMEOUT_S)
            a, b = sorted(client.scheduler_info()["workers"])
            # Warm-up: a small transfer each way, so function shipping and
            # the first worker-to-worker connection are not timed.
            for src, dst in ((a, b), (b, a)):
                x = client.submit(np.ones, 1024, dtype=np.uint8,
                                  workers=[src], pure=False)
                client.submit(nbytes, x, workers=[dst],
                              pure=False).result(timeout=STEP_TIMEOUT_S)
                del x
            settle(cluster)
            results = []
            for size in args.sizes:
                print(f"  dask {size} bytes x {args.runs}", file=sys.stderr)
                results.append(measure(client, cluster, size, args.runs, a, b))
        finally:
            client.close()
    finally:
        cluster.close()

    report = {
        "peer": "dask",
        "version": dask.__version__,
        "python": platform.python_version(),
        "config": {"n_workers": N_WORKERS,
                   "threads_per_worker": THREADS_PER_WORKER,
                   "processes": True},
        "results": results,
    }
    print_table(results)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
