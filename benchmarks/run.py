"""Speed and memory of what readers run: GD steps, interactive redraws, whole chapters.

    .venv/bin/python benchmarks/run.py            # library and widget timings (~1 min)
    .venv/bin/python benchmarks/run.py --chapters # also execute every chapter (several minutes)
    .venv/bin/python benchmarks/run.py --attention-only  # only the 1024-token training steps

The attention part times one Adam step of the experiments' classifier on 1024 tokens (32x32
Pathfinder: batch 32, D = 64, 2 blocks, 2 heads) for both kernels, through the fused attention
(the default) and the plain kernels, and relates it to this machine's float32 matrix-product
rate measured in the same run, between the steps (the machine may be shared: the load average
is recorded with every measurement).
    .venv/bin/python benchmarks/run.py --frames   # also what the static-page frames cost (~2 min)
    .venv/bin/python benchmarks/run.py --build    # also a clean book build: frames and page sizes
    .venv/bin/python benchmarks/run.py --build --baseline  # and one without frames, to compare

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
    ("tdlib.query", "draw", {"kernel": "gaussian", "ratio": 3.0, "d": 8, "init_scale": 4.0, "seed": 0}),
    ("tdlib.experiments", "draw_curves", {"task": "pathfinder", "quantity": "test_loss", "show_seeds": True}),
]


def timed(fn, repeat=3):
    times, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return min(times), statistics.median(times), statistics.median(cpu)


def bench_gd():
    rows = []
    for kernel in ("softmax", "gaussian"):
        for (N, n, D, H) in [(4, 5, 24, 2), (8, 8, 64, 2), (16, 16, 128, 4)]:
            X, Y, _ = tdlib.teacher_data(N, n, D, kernel=kernel, H=H, d=8, d_out=2, x_scale=3.0, seed=0)
            m = tdlib.AttentionLayer(D, H=H, d=8, d_out=2, kernel=kernel, seed=1)
            steps = 300
            best, _, _ = timed(lambda: tdlib.train(m, X, Y, lr=1e-3, steps=steps, progress=False), repeat=2)
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
        best, med, cpu = timed(redraw, repeat=5)
        rows.append({"what": f"redraw {module}.{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})",
                     "seconds": med, "best": best, "cpu_seconds": cpu})
    return rows


def matmul_rate(size=1024, repeat=5):
    """Best float32 matrix-product rate (FLOP/s) of ``size x size`` products, this process."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = min(timed(lambda: a @ b, repeat=repeat))
    return 2 * size ** 3 / best


def step_flops(B=32, n=1024, D=64, hidden=128, layers=2):
    """Model FLOPs of one training step (forward + backward = 3 x forward): the products of
    the linear layers and of the attention (``Q K^T`` and ``S V``); what the fused kernels
    recompute or the Gaussian's two extra coordinates are not counted."""
    T = B * n
    linear = 2 * T * (D * 3 * D + D * D + 2 * D * hidden)
    attention = 2 * 2 * B * n * n * D  # all heads together: H * d = D
    return 3 * layers * (linear + attention)


def bench_attention(repeat=3, B=32, n=1024, reference=True):
    """One Adam step at ``n`` tokens for both kernels, fused and (optionally) plain; each
    step is bracketed by matrix-product rate measurements."""
    import os

    from tdlib.transformer import Classifier, MultiHeadKernelAttention

    torch.manual_seed(0)
    x, y = torch.randint(0, 256, (B, n)), torch.randint(0, 2, (B,))
    flops = step_flops(B, n)
    rows = []
    for fused in ((True, False) if reference else (True,)):
        for kernel in ("softmax", "gaussian"):
            MultiHeadKernelAttention.fused = fused
            m = Classifier(max_len=n, kernel=kernel, pad_id=None)
            opt = torch.optim.Adam(m.parameters())

            def step():
                loss = torch.nn.functional.cross_entropy(m(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()

            step()  # warm-up
            times, rates, loads = [], [], []
            for _ in range(repeat if fused else 1):
                rates.append(matmul_rate())
                loads.append(os.getloadavg()[0])
                times.append(min(timed(step, repeat=2)))
                rates.append(matmul_rate())
            MultiHeadKernelAttention.fused = True
            rate = statistics.median(rates)
            t = statistics.median(times)
            rows.append({"what": f"training step, {'fused' if fused else 'plain'} {kernel}, "
                                 f"B={B}, n={n}", "kernel": kernel, "fused": fused,
                         "seconds": t, "step_seconds_all": times, "matmul_flops_per_s": rate,
                         "matmul_all": rates, "model_flops": flops,
                         "share_of_matmul_rate": flops / t / rate, "load_1min": loads})
    soft = next(r for r in rows if r["fused"] and r["kernel"] == "softmax")
    gauss = next(r for r in rows if r["fused"] and r["kernel"] == "gaussian")
    rows.append({"what": "gaussian / softmax step time (fused)", "seconds": gauss["seconds"],
                 "ratio": gauss["seconds"] / soft["seconds"]})
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


def bench_frames():
    """What the precomputed frames add to a build, without building: every explorer cell of the
    book run in static mode (as in a build), after the import lines, upper-case constants and
    function definitions of the cells before it. Time of each call and the size of its frames."""
    import ast
    import os
    import tempfile

    import jupytext

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import source_of, toc_files

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "frames.jsonl"
        os.environ.update(TDLIB_STATIC_WIDGETS="1", TDLIB_FRAMES_LOG=str(log))
        try:
            for page in toc_files():
                path = source_of(page)
                if path.suffix != ".md" or "explorer(" not in path.read_text():
                    continue
                ns: dict = {"__name__": "__main__"}
                for cell in jupytext.read(path).cells:
                    if cell.cell_type != "code":
                        continue
                    if "explorer(" in cell.source:
                        t, c = time.perf_counter(), time.process_time()
                        exec(cell.source, ns)
                        rows.append({"what": f"frames of {page}", "seconds": time.perf_counter() - t,
                                     "cpu_seconds": time.process_time() - c})
                        continue
                    try:
                        tree = ast.parse(cell.source)
                    except SyntaxError:     # IPython magics: nothing to define
                        continue
                    for node in tree.body:
                        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef)) or (
                                isinstance(node, ast.Assign) and all(
                                    isinstance(t, ast.Name) and t.id.isupper() for t in node.targets)):
                            try:
                                exec(compile(ast.Module([node], []), str(path), "exec"), ns)
                            except NameError:   # needs the chapter's state: not for the explorer
                                pass
                    plt.close("all")
        finally:
            os.environ.pop("TDLIB_STATIC_WIDGETS")
            os.environ.pop("TDLIB_FRAMES_LOG")
        logged = [json.loads(line) for line in log.read_text().splitlines()]
    for row, r in zip(rows, logged):
        # the page holds the frames base64-encoded in its widget state: 4 bytes per 3
        row.update(frames=r["frames"], png_bytes=r["png_bytes"],
                   page_bytes_added=4 * ((r["png_bytes"] + 2) // 3))
        row["what"] += f" ({r['draw']}: {r['frames']} frames, {r['png_bytes'] / 1e6:.2f} MB of PNG)"
    return rows


def bench_build(baseline: bool, keep: str | None = None):
    """A clean build of the whole book (as CI does) into a temporary folder: its wall time, what
    the precomputed frames of every interactive figure cost (logged by tdlib.widgets) and the size
    of every page holding one. With ``baseline``, a second clean build without frames."""
    import os
    import subprocess
    import tempfile

    jb = str(Path(sys.executable).parent / "jupyter-book")
    rows, out = [], {}
    for frames in ([True, False] if baseline else [True]):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = keep if (keep and frames) else tmp
            log = Path(tmp) / "frames.jsonl"
            env = dict(os.environ, TDLIB_STATIC_WIDGETS="1" if frames else "0", TDLIB_FRAMES_LOG=str(log))
            t, c = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([jb, "build", str(ROOT), "--path-output", tmp, "-W", "-n", "--keep-going"],
                           env=env, cwd=ROOT, check=True, capture_output=True)
            c2 = resource.getrusage(resource.RUSAGE_CHILDREN)
            label = "with frames" if frames else "without frames"
            rows.append({"what": f"clean book build, {label}", "seconds": time.perf_counter() - t,
                         "cpu_seconds": (c2.ru_utime + c2.ru_stime) - (c.ru_utime + c.ru_stime)})
            if not frames:
                continue
            for line in log.read_text().splitlines():
                r = json.loads(line)
                rows.append({"what": f"frames of {r['draw']}: {r['frames']} frames, {r['png_bytes'] / 1e6:.2f} MB PNG",
                             "seconds": r["wall_seconds"], "cpu_seconds": r["cpu_seconds"],
                             "frames": r["frames"], "png_bytes": r["png_bytes"]})
            html = Path(tmp) / "_build" / "html"
            for page in sorted(html.rglob("*.html")):
                text = page.read_text(errors="replace")
                if "tdlib-explorer" in text:
                    rows.append({"what": f"page size {page.relative_to(html)}", "seconds": 0.0,
                                 "bytes": page.stat().st_size})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chapters", action="store_true", help="also execute every chapter of _toc.yml")
    ap.add_argument("--attention-only", action="store_true", help="only the 1024-token steps")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions of the 1024-token steps")
    ap.add_argument("--frames", action="store_true",
                    help="also the frames of every interactive figure, as a build makes them")
    ap.add_argument("--draws-only", action="store_true", help="only the redraws (and --frames): no GD or attention steps")
    ap.add_argument("--build", action="store_true",
                    help="also a clean book build: frame cost of every interactive figure, page sizes")
    ap.add_argument("--baseline", action="store_true", help="with --build: also a build without frames")
    ap.add_argument("--keep", metavar="DIR", help="with --build: build into DIR (empty) and keep it")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import os

    load_before = os.getloadavg()
    rows = [] if args.draws_only else bench_attention(repeat=args.repeat)
    if not args.attention_only:
        rows += ([] if args.draws_only else bench_gd()) + bench_draws()
    if args.frames:
        rows += bench_frames()
    if args.chapters:
        rows += bench_chapters()
    if args.build:
        rows += bench_build(args.baseline, args.keep)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for r in rows:
        extra = (f"  ({100 * r['share_of_matmul_rate']:.0f} % of the f32 matmul rate "
                 f"{r['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s)" if "share_of_matmul_rate" in r
                 else f"  (ratio {r['ratio']:.2f})" if "ratio" in r else "")
        extra += (f" (cpu {r['cpu_seconds']:.3f} s)" if "cpu_seconds" in r else "") + (
            f" {r['bytes'] / 1e6:.2f} MB" if "bytes" in r else "")
        print(f"{r['seconds']:10.4f} s  {r['what']}{extra}")
    print(f"peak resident memory of this process: {peak_mb:.0f} MB")
    out = {"machine": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "rows": rows, "peak_rss_mb": peak_mb,
           "date": time.strftime("%Y-%m-%d %H:%M:%S"), "load_average_before": load_before,
           "load_average_after": os.getloadavg(), "cpus": os.cpu_count()}
    name = "results-attention.json" if args.attention_only else "results.json"
    (ROOT / "benchmarks" / name).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
