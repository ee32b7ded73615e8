"""Dask's side of `rask-bench deploy`: the same deployment steps, timed the same way.

- adapt: a LocalCluster (worker processes, one thread each) adapting between 0 and MAX
  workers receives a burst of TASKS tasks that each sleep SECONDS; timed: from submitting
  to MAX workers joined, to every result, and from the last result to 0 workers again.
- slurm (with --slurm-conf): dask-jobqueue's SLURMCluster (1 core, 1 GB, 1 process per
  job, the scheduler in this process on 127.0.0.1) from scale(2) to 2 workers joined,
  and from scale(0) to 0 workers.

Writes one JSON document: {"adapt": [runs...], "slurm": [runs...], "versions": {...}}.
"""

import argparse
import json
import os
import sys
import time


def wait_until(cond, timeout, step=0.02):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(step)


def adapt_run(tasks, seconds, maximum):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=0, threads_per_worker=1, processes=True, dashboard_address=None)
    cluster.adapt(minimum=0, maximum=maximum)
    client = Client(cluster)
    n_workers = lambda: len(client.scheduler_info()["workers"])
    t0 = time.monotonic()
    futures = client.map(time.sleep, [seconds] * tasks, pure=False)
    wait_until(lambda: n_workers() >= maximum, 120)
    up = time.monotonic() - t0
    client.gather(futures)
    done = time.monotonic() - t0
    del futures
    t1 = time.monotonic()
    wait_until(lambda: n_workers() == 0, 120)
    down = time.monotonic() - t1
    client.close()
    cluster.close()
    return {"to_max_s": up, "all_results_s": done, "back_to_zero_s": down}


def slurm_run(conf, log_dir):
    os.environ["SLURM_CONF"] = conf
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    cluster = SLURMCluster(
        cores=1,
        memory="1GB",
        processes=1,
        walltime="00:10:00",
        python=sys.executable,
        log_directory=log_dir,
        scheduler_options={"host": "127.0.0.1", "dashboard_address": None},
    )
    client = Client(cluster)
    t0 = time.monotonic()
    cluster.scale(2)
    client.wait_for_workers(2, timeout=120)
    up = time.monotonic() - t0
    t1 = time.monotonic()
    cluster.scale(0)
    wait_until(lambda: len(client.scheduler_info()["workers"]) == 0, 120)
    down = time.monotonic() - t1
    client.close()
    cluster.close()
    return {"scale_2_s": up, "scale_0_s": down}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--maximum", type=int, default=4)
    p.add_argument("--slurm-conf")
    p.add_argument("--log-dir", default="/tmp")
    p.add_argument("--json", required=True)
    a = p.parse_args()
    import dask
    import distributed

    doc = {"adapt": [], "slurm": [], "versions": {"dask": dask.__version__, "distributed": distributed.__version__}}
    for _ in range(a.runs):
        doc["adapt"].append(adapt_run(a.tasks, a.seconds, a.maximum))
    if a.slurm_conf:
        import dask_jobqueue

        doc["versions"]["dask_jobqueue"] = dask_jobqueue.__version__
        for _ in range(a.runs):
            doc["slurm"].append(slurm_run(a.slurm_conf, a.log_dir))
    with open(a.json, "w") as f:
        json.dump(doc, f)


if __name__ == "__main__":
    main()
