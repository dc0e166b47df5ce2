"""What the sweep runner (tdlib.sweep) costs and gains on this machine.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sweep.py          # about 3-5 min on 2 cores
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sweep.py --quick  # a smaller grid

Measured in one run, on a fixed phase sub-grid (default 256 runs in 32 tasks):

* the wall time serially (in this process) and on 2 local workers (a fresh LocalCluster, its
  start included, and an already running one reached by address, start excluded): the speed-up;
  the same with the start included on a sub-grid with three times the instances (the start's
  fixed cost weighs less on a longer sweep);
* the start of a 2-worker LocalCluster (ready, then warm: every worker has imported tdlib and
  torch and answered a task);
* the scheduling overhead per task on the running cluster, for many near-empty tasks: the
  wall time per task (what each task adds to a sweep) and ``(wall * workers - serial work) /
  tasks`` (the worker time a task costs beyond its own computation), with and without the
  per-task checkpoint write;
* the bit-for-bit equality of the sub-grid's results serially, on local workers and by address;
* two controls: the same tasks on ``workers`` plain processes (``multiprocessing``, no Dask),
  which is what this machine's cores allow, and on a running cluster with Dask's default
  settings (``tdlib.sweep.start_local(tuned=False)``), which is what the settings of
  ``tdlib.sweep.LOCAL_CONFIG`` and ``DROPPED_ENV`` gain.

The machine may be shared: the load average (1 minute) is recorded before and after every
measurement. Writes benchmarks/results-sweep.json and prints a table. Timings are measurements,
not assertions: no test fails on them.
"""
from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tdlib import phase, sweep  # noqa: E402

GRID = dict(ratios=[0.5, 1.0, 1.5, 2.0], ds=[1, 2, 4, 8], init_scales=[1.0], instances=4,
            steps=250, max_steps=1000, N=3, n=4, audit=1)
QUICK = dict(GRID, ratios=[1.0, 2.0], steps=125, max_steps=500)
LONGER = 3  # the longer sweep: this many times the instances


def load() -> float:
    return round(os.getloadavg()[0], 2)


def measure(name, fn, rows):
    before = load()
    t = time.perf_counter()
    value = fn()
    wall = time.perf_counter() - t
    rows.append({"what": name, "seconds": round(wall, 3), "load_before": before,
                 "load_after": load()})
    print(f"{name:58s} {wall:8.2f} s   load {before:5.2f} -> {load():5.2f}", flush=True)
    return value, wall


def plain_processes(tasks, W):
    """The tasks on ``W`` plain processes (warm: each has run one task), without Dask: the wall
    time, the results and the CPU time the tasks took."""
    work = functools.partial(sweep.timed_call, phase._cell_runs)
    with multiprocessing.get_context("spawn").Pool(W) as pool:
        pool.map(work, tasks[:W], chunksize=1)
        t = time.perf_counter()
        done = pool.map(work, tasks, chunksize=1)
        wall = time.perf_counter() - t
    return wall, [d["result"] for d in done], sum(d["cpu_seconds"] for d in done)


def by_address(tasks, W, tuned, rows, what):
    """The tasks on a running, warm local cluster (tuned or with Dask's defaults), start
    excluded: ``(results, wall, cpu_seconds)``."""
    from distributed import Client

    cluster = sweep.start_local(W, tuned=tuned)
    try:
        with Client(cluster.scheduler_address, set_as_default=False) as c:
            c.run(sweep.call, phase._cell_runs, tasks[0])  # warm, as this process is
        info: dict = {}
        res, wall = measure(what, lambda: sweep.run(phase._cell_runs, tasks,
                                                    scheduler=cluster.scheduler_address,
                                                    quiet=True, info=info), rows)
    finally:
        cluster.close()
    return res, wall, info["cpu_seconds"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a smaller grid")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--noop-tasks", type=int, default=400)
    args = p.parse_args()
    cfg = phase.SweepConfig(**(QUICK if args.quick else GRID)).validate()
    tasks = phase._sweep_tasks(cfg)
    n_runs = (len(cfg.ratios) * len(cfg.ds) * len(cfg.init_scales) * len(cfg.teachers)
              * len(cfg.students) * cfg.instances)
    print(f"phase sub-grid: {n_runs} runs in {len(tasks)} tasks, steps {cfg.steps}.."
          f"{cfg.max_steps}; {args.workers} workers; cores {sweep.cores()}")
    rows: list = []
    W = args.workers

    # warm this process (imports, first torch calls) so that serial is not charged for them
    sweep.run(phase._cell_runs, tasks[:1], workers=1, quiet=True)
    serial_info: dict = {}
    serial, t_serial = measure("serial (in this process)", lambda: sweep.run(
        phase._cell_runs, tasks, workers=1, quiet=True, info=serial_info), rows)
    from distributed import Client

    (t_plain, plain, cpu_plain), _ = measure(
        f"{W} plain processes, no Dask (with the pool's start)",
        lambda: plain_processes(tasks, W), rows)
    print(f"  of which the tasks on the warm processes {t_plain:.2f} s")
    default, t_default, cpu_default = by_address(
        tasks, W, False, rows, f"cluster by address, {W} workers, Dask's default settings")

    cluster, t_start = measure(f"LocalCluster start, {W} workers (ready)",
                               lambda: sweep.start_local(W), rows)
    try:
        address = cluster.scheduler_address
        with Client(address, set_as_default=False) as c:
            # (a spawned worker imports this script's imports, tdlib and torch, as it starts;
            # the first task also pays torch's first calls, as the serial run's warm-up did)
            _, t_warm = measure("  ... first task on every worker",
                                lambda: c.run(sweep.call, phase._cell_runs, tasks[0]), rows)
        addr_info: dict = {}
        by_addr, t_addr = measure(f"cluster by address, {W} workers (already running)",
                                  lambda: sweep.run(phase._cell_runs, tasks,
                                                    scheduler=address, quiet=True,
                                                    info=addr_info), rows)
        noop = [{"seed": s, "steps": 0, "size": 1} for s in range(args.noop_tasks)]
        sweep.run(sweep.probe, noop[:8], scheduler=address, quiet=True)  # warm the path
        work0, t_work = measure(f"{len(noop)} near-empty tasks serially",
                                lambda: sweep.run(sweep.probe, noop, workers=1, quiet=True),
                                rows)
        _, t_noop = measure(f"{len(noop)} near-empty tasks on the cluster", lambda: sweep.run(
            sweep.probe, noop, scheduler=address, quiet=True), rows)
        with tempfile.TemporaryDirectory() as tmp:
            _, t_noop_ck = measure(f"{len(noop)} near-empty tasks on the cluster, checkpoint",
                                   lambda: sweep.run(sweep.probe, noop, scheduler=address,
                                                     quiet=True, checkpoint=tmp), rows)
    finally:
        cluster.close()
    local_info: dict = {}
    local, t_local = measure(f"local, {W} workers (LocalCluster started and stopped)",
                             lambda: sweep.run(phase._cell_runs, tasks, workers=W, quiet=True,
                                               info=local_info), rows)
    print(f"  of which starting the cluster {local_info['start_seconds']:.2f} s, closing it "
          f"{local_info['close_seconds']:.2f} s")
    long_cfg = phase.SweepConfig(**{**asdict(cfg), "instances": LONGER * cfg.instances})
    long_tasks = phase._sweep_tasks(long_cfg.validate())
    long_serial, t_long_serial = measure(f"serial, {LONGER}x the instances", lambda: sweep.run(
        phase._cell_runs, long_tasks, workers=1, quiet=True), rows)
    long_local, t_long_local = measure(
        f"local, {W} workers, {LONGER}x the instances (started and stopped)",
        lambda: sweep.run(phase._cell_runs, long_tasks, workers=W, quiet=True), rows)
    # CPU time of the same tasks: serially, and summed over workers running side by side
    # (more when the cores share caches and memory bandwidth, other jobs run, or the runner's
    # own threads compete with the tasks)
    cpu_serial = serial_info["cpu_seconds"]
    cpu_ratio = addr_info["cpu_seconds"] / cpu_serial
    for what, cpu in (("plain processes", cpu_plain), ("Dask's defaults", cpu_default),
                      ("tuned cluster", addr_info["cpu_seconds"])):
        print(f"CPU time of the tasks on {W} workers / serially, {what}: {cpu / cpu_serial:.2f}"
              f" (speed-up bound {W * cpu_serial / cpu:.2f}x)")
    same = (len({json.dumps(r, sort_keys=True) for r in (serial, local, by_addr, plain,
                                                           default)}) == 1
            and json.dumps(long_serial) == json.dumps(long_local))
    overhead = (t_noop * W - t_work) / len(noop)
    overhead_ck = (t_noop_ck * W - t_work) / len(noop)
    out = {
        "grid": {k: getattr(cfg, k) for k in GRID}, "runs": n_runs, "tasks": len(tasks),
        "workers": W, "cores": sweep.cores(), "cpus": os.cpu_count(),
        "speedup_local_with_start": round(t_serial / t_local, 3),
        "speedup_by_address_without_start": round(t_serial / t_addr, 3),
        "speedup_local_with_start_longer": round(t_long_serial / t_long_local, 3),
        "longer_runs": n_runs * LONGER, "longer_serial_seconds": round(t_long_serial, 3),
        "speedup_plain_processes": round(t_serial / t_plain, 3),
        "speedup_by_address_dask_defaults": round(t_serial / t_default, 3),
        "cluster_start_seconds": round(t_start, 3), "cluster_warm_seconds": round(t_warm, 3),
        "cpu_seconds_serial": round(serial_info["cpu_seconds"], 3),
        "cpu_seconds_on_workers": round(addr_info["cpu_seconds"], 3),
        "cpu_seconds_plain_processes": round(cpu_plain, 3),
        "cpu_seconds_dask_defaults": round(cpu_default, 3),
        "local_config": sweep.LOCAL_CONFIG, "dropped_env": list(sweep.DROPPED_ENV),
        "speedup_bound_from_cpu_time": round(W / cpu_ratio, 3),
        "local_run_start_seconds": round(local_info["start_seconds"], 3),
        "local_run_close_seconds": round(local_info["close_seconds"], 3),
        "wall_ms_per_near_empty_task": round(1e3 * t_noop / len(noop), 3),
        "overhead_ms_per_task": round(1e3 * overhead, 3),
        "overhead_ms_per_task_with_checkpoint": round(1e3 * overhead_ck, 3),
        "bit_identical_serial_local_address_plain_defaults": same, "rows": rows,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": platform.platform(), "python": platform.python_version(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    print(f"speed-up on {W} workers: {out['speedup_local_with_start']:.2f}x with the cluster's "
          f"start, {out['speedup_by_address_without_start']:.2f}x without; "
          f"{out['speedup_by_address_dask_defaults']:.2f}x with Dask's default settings, "
          f"{out['speedup_plain_processes']:.2f}x on plain processes; with the start on "
          f"{n_runs * LONGER} runs {out['speedup_local_with_start_longer']:.2f}x")
    print(f"scheduling overhead per task: {out['wall_ms_per_near_empty_task']:.2f} ms of wall "
          f"time; {out['overhead_ms_per_task']:.2f} ms of worker time "
          f"({out['overhead_ms_per_task_with_checkpoint']:.2f} ms with the checkpoint write)")
    print(f"local cluster start: {t_start:.2f} s ready, {t_warm:.2f} s more until warm")
    print(f"bit-identical serial / local / by address / plain / Dask's defaults: {same}")
    name = "results-sweep-quick.json" if args.quick else "results-sweep.json"
    (ROOT / "benchmarks" / name).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
