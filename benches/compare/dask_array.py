"""The array workloads of `rask-bench array`, on dask.array + numpy and on numpy alone.

Operations (like dask-cuda's local_cupy benchmark), on a random square array x of
--size × --size elements in --chunk × --chunk chunks, generated inside the timed
computation (as Rask does, which has no persist yet):

  transpose_sum  (x + x.T).sum()
  dot            (x @ x.T).sum()   (numpy runs x @ x.T as SYRK: half the products;
                                    numpy's general x @ y is measured beside it)
  dot_general    (x @ y).sum(), y an independent random array of x's shape
  sum            x.sum()
  elementwise    (x * 2 + x * x - x / 3).sum()

Dask: LocalCluster(n_workers=2, threads_per_worker=1, processes=True). numpy: the same
expression in this process, with numpy's BLAS and its own threads (reported). Figures
are wall seconds per run (after one warm-up run), medians over --runs.

    PY=$(bash benches/compare/setup_venv.sh | tail -1)
    "$PY" benches/compare/dask_array.py --op dot --size 4096 --chunk 1024 --json out.json
"""

import argparse
import json
import os
import statistics
import sys
import time


def expr(x, op, y=None):
    if op == "transpose_sum":
        return (x + x.T).sum()
    if op == "dot":
        return (x @ x.T).sum()
    if op == "dot_general":
        return (x @ y).sum()
    if op == "sum":
        return x.sum()
    if op == "elementwise":
        return (x * 2 + x * x - x / 3).sum()
    raise SystemExit(f"unknown op {op}")


def flops(op, n):
    return {"dot": 2.0 * n**3, "dot_general": 2.0 * n**3, "transpose_sum": 2.0 * n * n, "sum": 1.0 * n * n,
            "elementwise": 6.0 * n * n}[op]


def timed(runs, fn):
    """Median wall seconds of `runs` calls of fn after one warm-up call, and fn's last value."""
    times = []
    for run in range(runs + 1):
        t = time.perf_counter()
        v = fn()
        dt = time.perf_counter() - t
        if run > 0:
            times.append(dt)
    return statistics.median(times), v


def blas_info(np):
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception as e:  # older numpy
        return f"unknown ({e})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--op", default="dot")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--dtype", default="f32", choices=["f32", "f64"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    import numpy as np
    import dask.array as da
    from dask.distributed import Client, LocalCluster

    dtype = np.float32 if a.dtype == "f32" else np.float64
    out = {"op": a.op, "size": a.size, "chunk": a.chunk, "dtype": a.dtype,
           "numpy_version": np.__version__, "blas": blas_info(np),
           "numpy_threads": os.environ.get("OMP_NUM_THREADS", f"default ({os.cpu_count()} cpus)")}

    # numpy alone.
    rng = np.random.default_rng(1)

    def random():
        return rng.random((a.size, a.size), dtype=dtype)

    def numpy_run():
        y = random() if a.op == "dot_general" else None
        return float(expr(random(), a.op, y))

    out["numpy_seconds"], out["numpy_value"] = timed(a.runs, numpy_run)
    print(f"numpy: {out['numpy_seconds']:.3f} s", file=sys.stderr)
    if a.op == "dot":
        # The general product of two independent arrays, for the GEMM-to-GEMM ratio.
        out["numpy_general_seconds"], _ = timed(
            a.runs, lambda: float(expr(random(), "dot_general", random())))
        print(f"numpy x @ y: {out['numpy_general_seconds']:.3f} s", file=sys.stderr)

    # dask.array on a LocalCluster.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address=None) as cluster, Client(cluster):
        def dask_run():
            g = da.random.default_rng(1)
            x = g.random((a.size, a.size), dtype=dtype, chunks=(a.chunk, a.chunk))
            y = (g.random((a.size, a.size), dtype=dtype, chunks=(a.chunk, a.chunk))
                 if a.op == "dot_general" else None)
            return float(expr(x, a.op, y).compute())

        out["dask_seconds"], out["dask_value"] = timed(a.runs, dask_run)
    print(f"dask: {out['dask_seconds']:.3f} s", file=sys.stderr)
    out["flops"] = flops(a.op, a.size)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    else:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
