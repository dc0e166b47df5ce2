"""One runner for every sweep of independent runs: in this process, on the cores of this machine
(a Dask ``LocalCluster``), or on an existing Dask cluster given by its address.

A sweep is a module-level function ``fn`` and a list of tasks, each a dict of keyword arguments
(JSON-serialisable, with its own seed). :func:`run` computes ``fn(**task)`` for every task and
returns the results in the order of the tasks. A task's result depends only on its arguments:
every task runs with one torch (and BLAS) thread wherever it runs, and its result goes through
JSON (NumPy and torch numbers become Python numbers, a NaN becomes ``None``), so a sweep run
serially, on two local workers or on a remote cluster gives the same bits.

Three modes (the command lines ``python -m tdlib.phase`` and ``python -m tdlib.experiments``
offer them as ``--workers`` and ``--scheduler``):

* ``workers=1``: serial, in this process (for debugging; Dask is not imported);
* default: a ``LocalCluster`` with one worker process per core, one thread each;
* ``scheduler="tcp://HOST:PORT"``, or the environment variable ``TDLIB_SCHEDULER``: the tasks go
  to the Dask scheduler at that address (started with ``dask scheduler`` and ``dask worker``, or
  by ``dask-jobqueue`` on a batch system); its workers need the same tdlib and torch.

With ``checkpoint=FOLDER`` every finished task is written at once (atomically, through
:func:`tdlib.book.save_json`) to ``FOLDER/<key>.part``, ``key`` being the SHA-256 of the
function's name and the task; a sweep started again after a crash or Ctrl-C reads the tasks
already done (made by the same tdlib code, see :func:`code_fingerprint`) and runs only the
others. The caller writes its final file from the returned list, which exists only when every
task is in.

Before any task runs, :func:`run` checks the function (importable by name), the tasks (dicts,
JSON-serialisable, no task twice), an optional ``check`` of every task, and with
``memory_per_task`` that the workers running at once fit in the memory available.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

from . import book

SCHEDULER_ENV = "TDLIB_SCHEDULER"
"""Environment variable holding the address of a Dask scheduler (``tcp://HOST:PORT``): when it is
set and neither ``workers`` nor ``scheduler`` is given, :func:`run` sends the tasks there."""

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
"""Set to 1 in every local worker process (and torch's thread count to 1 inside every task)."""

LOCAL_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.tick.limit": "30s",
    "distributed.worker.memory.monitor-interval": "2s",
    "distributed.admin.system-monitor.interval": "5s",
}
"""Dask settings of the local cluster (:func:`start_local`). A sweep's tasks are many small
torch calls driven from Python, and Dask's background work competes with them for the
interpreter and the cores: the statistical profiler samples every running task's stack every
10 ms, the event loop ticks every 20 ms, the memory and system monitors poll every 0.1 and
0.5 s. Here the profiler is off and the rest poll rarely (``benchmarks/sweep.py`` measures the
difference). A cluster reached by address keeps its own settings."""

DROPPED_ENV = ("MALLOC_TRIM_THRESHOLD_",)
"""Variables Dask sets in its worker processes that the local cluster leaves out: Dask sets
glibc's trim threshold to 64 KiB so that freed memory goes back to the system early, which
makes the many small allocations of a sweep's tasks slower (``benchmarks/sweep.py``)."""

PART_SUFFIX = ".part"


# ---------------------------------------------------------------------------------------------
# tasks, keys and checks
# ---------------------------------------------------------------------------------------------

def fn_name(fn: Callable) -> str:
    """``"module:qualname"`` of a module-level function, checked to import back to ``fn`` (a
    worker process finds the function by this name)."""
    if not callable(fn):
        raise TypeError(f"fn: expected a module-level function, got {type(fn).__name__}")
    module, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<" in qual:
        raise ValueError(f"fn: expected a function defined at the top level of an importable "
                         f"module (workers import it by name), got {module}:{qual or fn!r}")
    obj = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part, None)
    if obj is not fn:
        raise ValueError(f"fn: {module}:{qual} does not import back to the function given")
    return f"{module}:{qual}"


def _canonical(task) -> str:
    return json.dumps(task, sort_keys=True, separators=(",", ":"), allow_nan=False)


def task_key(name: str, task: dict) -> str:
    """The key of a task: SHA-256 (hex) of the function's name and the task in canonical JSON
    (sorted keys), so that the same task has the same key in every run."""
    return hashlib.sha256(f"{name}\n{_canonical(task)}".encode()).hexdigest()


def check_tasks(tasks, check: Optional[Callable] = None) -> List[dict]:
    """The tasks as a list of dicts, each JSON-serialisable (strings as keys, finite numbers)
    and distinct; with ``check``, ``check(**task)`` is called on every task first (it raises on
    a bad one). Errors name the task by its index."""
    if isinstance(tasks, (dict, str, bytes)) or not hasattr(tasks, "__iter__"):
        raise TypeError(f"tasks: expected a list of dicts of keyword arguments, got "
                        f"{type(tasks).__name__}")
    tasks = list(tasks)
    seen = {}
    for i, t in enumerate(tasks):
        if not isinstance(t, dict) or not all(isinstance(k, str) for k in t):
            raise TypeError(f"tasks[{i}]: expected a dict with string keys (keyword "
                            f"arguments), got {t!r:.80}")
        try:
            c = _canonical(t)
        except (TypeError, ValueError) as err:
            raise ValueError(f"tasks[{i}]: expected JSON-serialisable arguments (numbers, "
                             f"strings, lists, dicts; finite), got {t!r:.80} ({err})") from None
        if c in seen:
            raise ValueError(f"tasks[{i}]: the same task as tasks[{seen[c]}] ({c:.80}); each "
                             f"task must appear once")
        seen[c] = i
        if check is not None:
            try:
                check(**t)
            except (TypeError, ValueError) as err:
                raise ValueError(f"tasks[{i}] {c:.80}: {err}") from None
    return tasks


def available_memory() -> Optional[int]:
    """Bytes of memory available to new processes on this machine (None if unknown)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None


def check_memory(memory_per_task: Optional[float], concurrent: int,
                 available: Optional[int] = None) -> None:
    """Refuse a sweep whose ``concurrent`` tasks of ``memory_per_task`` bytes each would not
    fit in the memory available (``available``, default :func:`available_memory`)."""
    if memory_per_task is None:
        return
    if not memory_per_task >= 0:
        raise ValueError(f"memory_per_task: expected a number of bytes >= 0, got "
                         f"{memory_per_task!r}")
    avail = available_memory() if available is None else available
    need = memory_per_task * concurrent
    if avail is not None and need > avail:
        raise MemoryError(f"the sweep needs about {need / 2**30:.2f} GiB ({concurrent} tasks at "
                          f"once, {memory_per_task / 2**30:.2f} GiB each) but "
                          f"{avail / 2**30:.2f} GiB are available; use fewer workers or a "
                          f"smaller grid")


_CODE: dict = {}


def code_fingerprint() -> str:
    """SHA-256 of the source files of tdlib (read once per process): a part written by other
    code is not reused."""
    if "sha" not in _CODE:
        h = hashlib.sha256()
        for p in sorted(Path(__file__).resolve().parent.glob("*.py")):
            h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
        _CODE["sha"] = h.hexdigest()
    return _CODE["sha"]


# ---------------------------------------------------------------------------------------------
# one task
# ---------------------------------------------------------------------------------------------

def call(fn: Callable, task: dict, threads: int = 1):
    """``fn(**task)`` with ``threads`` torch threads (default one), its result passed through
    JSON (what a worker runs; the same in every mode)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = fn(**task)
    finally:
        torch.set_num_threads(before)
    try:
        return json.loads(json.dumps(book._plain(result), allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{fn.__module__}:{fn.__qualname__}({_canonical(task):.80}): expected "
                         f"a JSON-serialisable result with finite numbers ({err})") from None


def timed_call(fn: Callable, task: dict, threads: int = 1) -> dict:
    """:func:`call` with its wall and CPU time: ``{"result", "seconds", "cpu_seconds"}``."""
    t, c = time.perf_counter(), time.process_time()
    result = call(fn, task, threads)
    return {"result": result, "seconds": time.perf_counter() - t,
            "cpu_seconds": time.process_time() - c}


def _part_path(folder: Path, key: str) -> Path:
    return folder / f"{key}{PART_SUFFIX}"


def _read_part(path: Path, name: str, task: dict) -> Optional[dict]:
    """The part of this task (a :func:`timed_call` dict) if it is sound and was made by this
    code, else None."""
    if not path.exists():
        return None
    try:
        doc = book.load_json(path, validate=False)
    except (ValueError, OSError):
        return None
    ok = (isinstance(doc, dict) and doc.get("fn") == name and "result" in doc
          and doc.get("code") == code_fingerprint()
          and _canonical(doc.get("task")) == _canonical(task))
    return doc if ok else None


def _write_part(folder: Path, key: str, name: str, task: dict, done: dict):
    book.save_json(_part_path(folder, key), {"fn": name, "task": task, "code": code_fingerprint(),
                                              **done})


def clear(checkpoint) -> int:
    """Remove the parts in a checkpoint folder (and the folder, when it is then empty); returns
    how many parts were removed. Call it after the final file is written."""
    folder = Path(checkpoint)
    if not folder.is_dir():
        return 0
    parts = list(folder.glob(f"*{PART_SUFFIX}"))
    for p in parts:
        p.unlink()
    try:
        folder.rmdir()
    except OSError:
        pass
    return len(parts)


# ---------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------

def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def resolve(workers=None, scheduler=None) -> tuple:
    """``(mode, workers, scheduler)`` with mode ``"serial"``, ``"local"`` or ``"cluster"``:
    ``workers=1`` is serial; a ``scheduler`` address (or ``$TDLIB_SCHEDULER`` when neither is
    given) is a cluster; otherwise a local cluster of ``workers`` processes (default: one per
    core; serial on a single core)."""
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers: expected a whole number >= 1, got {workers!r}")
        if scheduler is not None:
            raise ValueError(f"workers and scheduler: expected one of them (a cluster at "
                             f"{scheduler} has its own workers), got both")
    if scheduler is None and workers is None:
        scheduler = os.environ.get(SCHEDULER_ENV) or None
    if scheduler is not None:
        if not isinstance(scheduler, str) or "://" not in scheduler:
            raise ValueError(f"scheduler: expected an address such as tcp://HOST:PORT, got "
                             f"{scheduler!r}")
        return "cluster", None, scheduler
    workers = cores() if workers is None else workers
    return ("serial" if workers == 1 else "local"), workers, None


def _in_book_build() -> bool:
    # the book's Sphinx extension sets this for the kernels it starts (_ext/book_site.py)
    return os.environ.get("TDLIB_STATIC_WIDGETS") == "1"


def _bar(total: int, initial: int, quiet: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="task", mininterval=1.0,
                disable=quiet or _in_book_build(), leave=False, file=sys.stderr)


def start_local(workers: int, tuned: bool = True):
    """A Dask ``LocalCluster`` of ``workers`` processes with one thread each, every process with
    the thread variables of :data:`THREAD_VARS` set to 1, its web port chosen free, quiet logs;
    with ``tuned`` (default) also the settings of :data:`LOCAL_CONFIG` and without the variables
    of :data:`DROPPED_ENV` (``tuned=False``: Dask's defaults, for the benchmark). Dask's nanny
    writes the workers' variables into this process's environment as it starts them; the
    environment is put back as it was, so that one cluster does not leak into the next."""
    import dask
    from distributed import LocalCluster

    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    env.update({v: "1" for v in THREAD_VARS})
    settings = {"distributed.nanny.pre-spawn-environ": env}
    if tuned:
        env.update({v: None for v in DROPPED_ENV})  # None: Dask leaves the variable out
        settings.update(LOCAL_CONFIG)
    before = dict(os.environ)
    try:
        with dask.config.set(settings):
            return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                dashboard_address=":0", silence_logs=logging.ERROR)
    finally:
        for k in set(os.environ) - set(before):
            del os.environ[k]
        os.environ.update(before)


def run(fn: Callable, tasks, *, workers: Optional[int] = None, scheduler: Optional[str] = None,
        checkpoint=None, quiet: bool = False, check: Optional[Callable] = None,
        memory_per_task: Optional[float] = None, info: Optional[dict] = None,
        desc: Optional[str] = None, threads: int = 1) -> list:
    """``[fn(**task) for task in tasks]``, each result passed through JSON, computed serially
    (``workers=1``), on a local Dask cluster (default: one worker process per core, one thread
    each) or on the Dask cluster at ``scheduler`` (or ``$TDLIB_SCHEDULER``).

    ``checkpoint``: a folder where every finished task is written at once and from where a
    rerun takes the tasks already done. ``quiet``: no progress bar (there is none in the book's
    build either). ``check``: called as ``check(**task)`` on every task before any runs.
    ``memory_per_task``: bytes one task needs; a sweep whose tasks at once would not fit in the
    available memory is refused before it starts. ``info``: a dict that receives ``mode``,
    ``workers``, ``scheduler``, ``tasks``, ``resumed`` (tasks read from the checkpoint),
    ``wall_seconds`` and ``cpu_seconds`` (summed over the tasks, where they ran), for a
    result's provenance, and with Dask ``start_seconds`` and ``close_seconds`` (starting or
    reaching the cluster, and closing it). ``threads``: torch threads inside every task
    (default 1; a task's last bits can depend on it). A task that raises stops the sweep with its error, which
    names the task (the tasks finished by then stay in the checkpoint)."""
    t0 = time.perf_counter()
    name = fn_name(fn)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads: expected a whole number >= 1, got {threads!r}")
    tasks = check_tasks(tasks, check)
    mode, workers, scheduler = resolve(workers, scheduler)
    keys = [task_key(name, t) for t in tasks]
    folder = None if checkpoint is None else Path(checkpoint)
    if folder is not None:
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"checkpoint: expected a folder, got the file {folder}")
        book.check_writable(folder / f"probe{PART_SUFFIX}")
    results: list = [None] * len(tasks)
    cpu = [0.0] * len(tasks)
    todo = []
    for i, (k, t) in enumerate(zip(keys, tasks)):
        part = _read_part(_part_path(folder, k), name, t) if folder else None
        if part is not None:
            results[i], cpu[i] = part["result"], float(part.get("cpu_seconds") or 0.0)
        else:
            todo.append(i)
    concurrent = 1 if mode == "serial" else min(workers or 1, max(len(todo), 1))
    if mode != "cluster":
        check_memory(memory_per_task, concurrent)
    if info is not None:
        info.update(mode=mode, workers=workers, scheduler=scheduler, tasks=len(tasks),
                    resumed=len(tasks) - len(todo))

    def finish(i, done):
        results[i], cpu[i] = done["result"], done["cpu_seconds"]
        if folder is not None:
            _write_part(folder, keys[i], name, tasks[i], done)

    bar = _bar(len(tasks), len(tasks) - len(todo), quiet, desc or name.split(":")[-1])
    try:
        if mode == "serial" or not todo:
            for i in todo:
                try:
                    done = timed_call(fn, tasks[i], threads)
                except Exception as exc:
                    raise _named(exc, i, tasks[i])
                finish(i, done)
                bar.update()
        else:
            timing: dict = {}
            seen = _run_dask(fn, tasks, keys, todo, mode, workers, scheduler,
                             memory_per_task, finish, bar, threads, timing)
            if info is not None:
                info.update(timing)
                if mode == "cluster":
                    info["workers"] = seen
    finally:
        bar.close()
    if info is not None:
        info.update(wall_seconds=time.perf_counter() - t0, cpu_seconds=sum(cpu))
    return results


def _named(exc: BaseException, i: int, task: dict) -> BaseException:
    """``exc`` with a note naming the task that raised it."""
    if hasattr(exc, "add_note"):
        exc.add_note(f"in tasks[{i}] {_canonical(task):.200}")
    return exc


def _run_dask(fn, tasks, keys, todo, mode, workers, scheduler, memory_per_task, finish, bar,
              threads, timing):
    """Submit the tasks ``todo`` to a local cluster or the one at ``scheduler``; ``finish`` is
    called in this process on each result as it arrives. Returns the number of workers;
    ``timing`` receives the seconds spent starting (and connecting) and closing."""
    from distributed import Client, as_completed

    t0 = time.perf_counter()
    cluster = start_local(workers) if mode == "local" else None
    try:
        client = Client(cluster if cluster is not None else scheduler, timeout="30s",
                        set_as_default=False)
    except BaseException:
        if cluster is not None:
            cluster.close()
        raise
    try:
        info = client.scheduler_info()["workers"]
        timing["start_seconds"] = time.perf_counter() - t0
        if mode == "cluster" and memory_per_task is not None:
            limits = [w.get("memory_limit") or 0 for w in info.values()]
            small = [m for m in limits if 0 < m < memory_per_task]
            if small:
                raise MemoryError(f"the cluster at {scheduler} has workers with "
                                  f"{min(small) / 2**30:.2f} GiB, less than the "
                                  f"{memory_per_task / 2**30:.2f} GiB a task needs")
        # one message for all tasks (client.map), each under the key of its task
        submitted = client.map(timed_call, [fn] * len(todo), [tasks[i] for i in todo],
                               [threads] * len(todo),
                               key=[f"{fn.__name__}-{keys[i]}" for i in todo], pure=False,
                               retries=0)
        futures = dict(zip(submitted, todo))
        try:
            # results are fetched on Dask's event loop as they come (with_results)
            for f, r in as_completed(futures, loop=client.loop, with_results=True,
                                     raise_errors=False):
                i = futures[f]
                if f.status == "error":
                    raise _named(r[1] if isinstance(r, tuple) else f.exception(), i, tasks[i])
                finish(i, r)
                bar.update()
        finally:
            client.cancel(list(futures))
        return len(info)
    finally:
        t1 = time.perf_counter()
        client.close()
        if cluster is not None:
            cluster.close()
        timing["close_seconds"] = time.perf_counter() - t1


def probe(seed: int, steps: int = 50, size: int = 32) -> dict:
    """A small task for testing and timing the runner: ``steps`` of gradient descent with step
    ``1 / ||A||_2^2`` on the least-squares loss ``1/2 ||A w - b||^2`` of a random
    ``size x size`` problem drawn from ``seed`` (float64). Returns the seed and the losses."""
    import torch

    g = torch.Generator().manual_seed(int(seed))
    A = torch.randn(size, size, generator=g, dtype=torch.float64)
    b = torch.randn(size, generator=g, dtype=torch.float64)
    w = torch.zeros(size, dtype=torch.float64)
    lr = 1.0 / torch.linalg.matrix_norm(A, 2) ** 2
    losses = []
    for _ in range(int(steps)):
        r = A @ w - b
        losses.append(0.5 * float(r @ r))
        w = w - lr * (A.T @ r)
    return {"seed": int(seed), "losses": losses}


# ---------------------------------------------------------------------------------------------
# command-line options shared by the commands that sweep
# ---------------------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    """Add ``--workers``, ``--serial``, ``--scheduler`` and ``--checkpoint`` to an argparse
    parser (see :func:`options`)."""
    g = parser.add_argument_group("where the runs go (tdlib.sweep)")
    g.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default: one per core; 1 = in this process)")
    g.add_argument("--serial", action="store_true", help="run in this process (--workers 1)")
    g.add_argument("--scheduler", default=None,
                   help=f"address tcp://HOST:PORT of a running Dask scheduler (default: "
                        f"${SCHEDULER_ENV} if set)")
    g.add_argument("--checkpoint", default=None,
                   help="folder for the finished runs (default: beside the output); a rerun "
                        "of the same command resumes from it; removed once the output is "
                        "written")


def options(args, default_checkpoint) -> dict:
    """The keyword arguments of :func:`run` from parsed :func:`add_arguments` options
    (``workers``, ``scheduler``, ``checkpoint``), resolved as :func:`resolve` does (so that
    exactly one of ``workers`` and ``scheduler`` is set), checked: raises ``ValueError`` for
    contradictory ones."""
    workers = args.workers
    if args.serial:
        if workers not in (None, 1):
            raise ValueError(f"--serial and --workers {workers}: expected one of them")
        workers = 1
    if workers is not None and args.scheduler:
        raise ValueError(f"--workers {workers} and --scheduler {args.scheduler}: expected one "
                         f"of them (a cluster has its own workers)")
    _, workers, scheduler = resolve(workers, args.scheduler)
    return {"workers": workers, "scheduler": scheduler,
            "checkpoint": Path(args.checkpoint or default_checkpoint)}


def record(info: dict) -> dict:
    """The fields of a result's provenance that say how its sweep ran: ``workers`` (processes
    that ran tasks), ``mode``, ``tasks``, ``resumed`` and ``wall_seconds``."""
    return {k: info.get(k) for k in ("mode", "workers", "tasks", "resumed", "wall_seconds")}


def command(prog: str, argv=None) -> str:
    """The command line of a result's provenance: ``prog`` (``"python -m tdlib.zoo"``) and
    its arguments ``argv`` (default ``sys.argv[1:]``), joined by spaces."""
    return prog + " " + " ".join(sys.argv[1:] if argv is None else argv)


def out_folder(args, file: str = "results.json") -> tuple:
    """For a command that writes ``OUT/file`` (``OUT`` = ``args.out``, a folder): checks that
    ``OUT`` is a folder and ``OUT/file`` writable, and returns ``(OUT/file, keywords)``, the
    keywords of :func:`run` from :func:`options` with the checkpoint ``OUT/.sweep-parts``.
    Raises ``ValueError`` (or ``OSError``) for a bad ``--out`` or contradictory options."""
    out = Path(args.out)
    if out.suffix in (".json", ".npz") or out.is_file():
        raise ValueError(f"--out: expected a folder ({file} is written inside it), got "
                         f"{args.out}")
    book.check_writable(out / file)
    return out / file, options(args, out / ".sweep-parts")


def save(path, doc: dict, where: dict) -> Path:
    """Write ``doc`` to ``path`` (:func:`tdlib.book.save_json`), then remove the finished
    runs kept in ``where["checkpoint"]`` (:func:`clear`); returns the path written."""
    path = book.save_json(path, doc)
    clear(where["checkpoint"])
    return path


def start(parser, args, check: Optional[Callable] = None) -> tuple:
    """Everything a sweep command does before its runs: :func:`out_folder` of the parsed
    ``args`` and ``check()`` (the command's own checks of its options), a bad one refused
    by ``parser.error("bad configuration: ...")`` before any work; then the code's git
    state is recorded and torch set to one thread. Returns ``(OUT/results.json,
    keywords of run)``."""
    import torch

    try:
        path, where = out_folder(args)
        if check is not None:
            check()
    except (ValueError, TypeError, OSError) as err:
        parser.error(f"bad configuration: {err}")
    book.git_state()  # the code this process runs, read before any long work
    torch.set_num_threads(1)
    return path, where
