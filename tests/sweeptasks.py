"""Task functions for tests/test_sweep.py that worker processes import by name (the tests
folder is on their path)."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tdlib import sweep


def slow_probe(seed: int, pause: float = 0.0, steps: int = 30) -> dict:
    """:func:`tdlib.sweep.probe` after a pause of ``pause`` seconds (to finish out of order)."""
    time.sleep(pause)
    return sweep.probe(seed, steps=steps)


def fragile_probe(seed: int, marker: str = "", steps: int = 30) -> dict:
    """:func:`tdlib.sweep.probe`; the first time it runs with a ``marker`` path that does not
    exist yet, it creates the file and kills its own worker process (SIGKILL) mid-task."""
    if marker and not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.2)
    return sweep.probe(seed, steps=steps)


def failing(seed: int) -> dict:
    """Raises for an odd seed."""
    if seed % 2:
        raise ArithmeticError(f"seed {seed} is odd")
    return {"seed": seed}


def with_nan(seed: int) -> dict:
    return {"seed": seed, "x": float("nan")}


def with_inf(seed: int) -> dict:
    return {"seed": seed, "x": float("inf")}


def worker_settings(seed: int) -> dict:
    """The Dask settings and thread variables the process running this task sees."""
    import dask

    return {"seed": seed, "pid": os.getpid(),
            "profile": dask.config.get("distributed.worker.profile.enabled"),
            "tick": dask.config.get("distributed.admin.tick.interval"),
            "trim": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
            "omp": os.environ.get("OMP_NUM_THREADS")}
