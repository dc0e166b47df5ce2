"""What the sweep runner (tdlib.sweep) costs and gains on this machine.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sweep.py          # about 3-5 min on 2 cores
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sweep.py --quick  # a smaller grid

Measured in one run, on a fixed phase sub-grid (default 256 runs in 32 tasks):

* the wall time serially (in this process) and on 2 local workers (a fresh LocalCluster, its
  start included, and an already running one reached by address, start excluded): the speed-up;
* the start of a 2-worker LocalCluster (ready, then warm: every worker has imported tdlib and
  torch and answered a task);
* the scheduling overhead per task on the running cluster, for many near-empty tasks: the
  wall time per task (what each task adds to a sweep) and ``(wall * workers - serial work) /
  tasks`` (the worker time a task costs beyond its own computation), with and without the
  per-task checkpoint write;
* the bit-for-bit equality of the sub-grid's results serially, on local workers and by address.

The machine may be shared: the load average (1 minute) is recorded before and after every
measurement. Writes benchmarks/results-sweep.json and prints a table. Timings are measurements,
not assertions: no test fails on them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tdlib import phase, sweep  # noqa: E402

GRID = dict(ratios=[0.5, 1.0, 1.5, 2.0], ds=[1, 2, 4, 8], init_scales=[1.0], instances=4,
            steps=250, max_steps=1000, N=3, n=4, audit=1)
QUICK = dict(GRID, ratios=[1.0, 2.0], steps=125, max_steps=500)


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

    cluster, t_start = measure(f"LocalCluster start, {W} workers (ready)",
                               lambda: sweep.start_local(W), rows)
    try:
        address = cluster.scheduler_address
        with Client(address, set_as_default=False) as c:
            # (a spawned worker imports this script's imports, tdlib and torch, as it starts)
            _, t_warm = measure("  ... first task on every worker",
                                lambda: c.run(lambda: __import__("tdlib.phase")), rows)
        addr_info: dict = {}
        by_address, t_addr = measure(f"cluster by address, {W} workers (already running)",
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
    # CPU time of the same tasks: serially, and summed over workers running side by side
    # (more when the cores share caches and memory bandwidth, or other jobs run)
    cpu_ratio = addr_info["cpu_seconds"] / serial_info["cpu_seconds"]
    print(f"CPU time of the tasks on {W} workers / serially: {cpu_ratio:.2f} (speed-up bound "
          f"{W / cpu_ratio:.2f}x)")

    same = (json.dumps(serial, sort_keys=True) == json.dumps(local, sort_keys=True)
            == json.dumps(by_address, sort_keys=True))
    overhead = (t_noop * W - t_work) / len(noop)
    overhead_ck = (t_noop_ck * W - t_work) / len(noop)
    out = {
        "grid": {k: getattr(cfg, k) for k in GRID}, "runs": n_runs, "tasks": len(tasks),
        "workers": W, "cores": sweep.cores(), "cpus": os.cpu_count(),
        "speedup_local_with_start": round(t_serial / t_local, 3),
        "speedup_by_address_without_start": round(t_serial / t_addr, 3),
        "cluster_start_seconds": round(t_start, 3), "cluster_warm_seconds": round(t_warm, 3),
        "cpu_seconds_serial": round(serial_info["cpu_seconds"], 3),
        "cpu_seconds_on_workers": round(addr_info["cpu_seconds"], 3),
        "speedup_bound_from_cpu_time": round(W / cpu_ratio, 3),
        "local_run_start_seconds": round(local_info["start_seconds"], 3),
        "local_run_close_seconds": round(local_info["close_seconds"], 3),
        "wall_ms_per_near_empty_task": round(1e3 * t_noop / len(noop), 3),
        "overhead_ms_per_task": round(1e3 * overhead, 3),
        "overhead_ms_per_task_with_checkpoint": round(1e3 * overhead_ck, 3),
        "bit_identical_serial_local_address": same, "rows": rows,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": platform.platform(), "python": platform.python_version(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    print(f"speed-up on {W} workers: {out['speedup_local_with_start']:.2f}x with the cluster's "
          f"start, {out['speedup_by_address_without_start']:.2f}x without")
    print(f"scheduling overhead per task: {out['wall_ms_per_near_empty_task']:.2f} ms of wall "
          f"time; {out['overhead_ms_per_task']:.2f} ms of worker time "
          f"({out['overhead_ms_per_task_with_checkpoint']:.2f} ms with the checkpoint write)")
    print(f"local cluster start: {t_start:.2f} s ready, {t_warm:.2f} s more until warm")
    print(f"bit-identical serial / local / by address: {same}")
    name = "results-sweep-quick.json" if args.quick else "results-sweep.json"
    (ROOT / "benchmarks" / name).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
