"""Speed and memory of what readers run: GD steps, interactive redraws, whole chapters.

    .venv/bin/python benchmarks/run.py            # library and widget timings (~1 min)
    .venv/bin/python benchmarks/run.py --chapters # also execute every chapter (several minutes)

Prints a table and writes benchmarks/results.json. Timings are measurements of this machine, not
assertions: the tests never fail on speed.
"""
from __future__ import annotations

import argparse
import importlib
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import tdlib  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Interactive cells: (module, draw function, keyword arguments at the default and a heavy setting).
DRAWS: list[tuple[str, str, dict]] = [
    ("tdlib.zeroloss", "draw", {}),
    ("tdlib.zeroloss", "draw", {"kernel": "softmax", "D": 96, "H": 4, "N": 6, "n": 8}),
    ("tdlib.counterexample", "draw", {}),
    ("tdlib.counterexample", "draw", {"init": 5.0, "target_query": 2.0}),
    ("tdlib.query", "draw", {}),
    ("tdlib.query", "draw", {"kernel": "softmax", "ratio": 3.0, "d": 8, "init_scale": 4.0}),
    ("tdlib.experiments", "draw_curves", {"task": "pathfinder", "quantity": "test_loss", "show_seeds": True}),
]


def timed(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def bench_gd():
    rows = []
    for kernel in ("softmax", "gaussian"):
        for (N, n, D, H) in [(4, 5, 24, 2), (8, 8, 64, 2), (16, 16, 128, 4)]:
            X, Y, _ = tdlib.teacher_data(N, n, D, kernel=kernel, H=H, d=8, d_out=2, x_scale=3.0, seed=0)
            m = tdlib.AttentionLayer(D, H=H, d=8, d_out=2, kernel=kernel, seed=1)
            steps = 300
            best, _ = timed(lambda: tdlib.train(m, X, Y, lr=1e-3, steps=steps, progress=False), repeat=2)
            rows.append({"what": f"GD step ({kernel}, N={N}, n={n}, D={D}, H={H})",
                         "seconds": best / steps, "per_second": steps / best})
    return rows


def bench_draws():
    rows = []
    for module, name, kwargs in DRAWS:
        fn = getattr(importlib.import_module(module), name)
        def redraw():  # compute and render, as a slider move does
            fn(**kwargs)
            plt.gcf().canvas.draw()
            plt.close("all")

        redraw()  # warm-up (imports, caches)
        best, med = timed(redraw, repeat=3)
        rows.append({"what": f"redraw {module}.{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})",
                     "seconds": med, "best": best})
    return rows


def bench_chapters():
    import jupytext
    from nbclient import NotebookClient

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import is_notebook, source_of, toc_files

    rows = []
    for page in toc_files():
        path = source_of(page)
        if not is_notebook(path):
            continue
        nb = jupytext.read(path)
        t = time.perf_counter()
        NotebookClient(nb, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        rows.append({"what": f"execute {page}", "seconds": time.perf_counter() - t})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chapters", action="store_true", help="also execute every chapter of _toc.yml")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = bench_gd() + bench_draws()
    if args.chapters:
        rows += bench_chapters()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for r in rows:
        print(f"{r['seconds']:10.4f} s  {r['what']}")
    print(f"peak resident memory of this process: {peak_mb:.0f} MB")
    out = {"machine": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "rows": rows, "peak_rss_mb": peak_mb,
           "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    (ROOT / "benchmarks" / "results.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
