"""What the book's pages need from tdlib: glued numbers and stored results.

* :func:`glue` and :func:`glue_all` store computed values for ``{glue:text}`` roles in the prose.
  Inside a Jupyter Book build they call myst-nb; in a plain notebook (Binder, Colab) they do
  nothing, so the chapters run everywhere.
* Stored results (the heavier runs, under ``book/data/``) are read and written here and nowhere
  else: :func:`data_path` locates them, :func:`stored` reads one (once per session),
  :func:`save_json` / :func:`save_npz` write them atomically, and :func:`provenance` is the one
  record of how a result was made that every producer stores under the key ``"provenance"``.
"""
from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Mapping

import numpy as np

DATA_ENV = "TDLIB_DATA"
"""Environment variable that moves the stored-results folder (default: ``book/data``)."""


# ---------------------------------------------------------------------------------------------
# Glue
# ---------------------------------------------------------------------------------------------

def glue(name: str, value, display: bool = False):
    """Store ``value`` under ``name`` for the page's prose and return it."""
    try:
        from myst_nb import glue as _glue
    except ImportError:  # plain Jupyter: nothing to glue into
        return value
    _glue(name, value, display=display)
    return value


def glue_all(prefix: str, values: Mapping[str, object]) -> dict:
    """Glue every ``values[key]`` under the name ``f"{prefix}_{key}"``; returns ``values``.

    ``glue_all("text", {"steps": 2000, "batch": 32})`` makes ``{glue:text}`` ``text_steps`` and
    ``text_batch`` available to the prose. NumPy scalars are glued as plain Python numbers.
    """
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"glue_all: expected a non-empty string prefix, got {prefix!r}")
    for key, value in values.items():
        if isinstance(value, np.generic):
            value = value.item()
        glue(f"{prefix}_{key}", value)
    return dict(values)


# ---------------------------------------------------------------------------------------------
# Stored results
# ---------------------------------------------------------------------------------------------

def data_path(*parts: str) -> Path:
    """``book/data/<parts...>`` of the repository (or of ``$TDLIB_DATA`` when it is set)."""
    root = os.environ.get(DATA_ENV)
    base = Path(root) if root else Path(__file__).resolve().parents[1] / "book" / "data"
    return base.joinpath(*parts)


def versions() -> dict:
    """The software and machine a result was computed with (Python, torch, NumPy, tdlib,
    platform, torch threads)."""
    import torch

    from . import __version__

    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "tdlib": __version__, "platform": platform.platform(),
            "threads": torch.get_num_threads()}


def provenance(command: str | None = None, **extra) -> dict:
    """How a stored result was made: the command that remakes it, the time it was written and
    :func:`versions`; ``extra`` adds fields such as ``wall_seconds``. Every producer stores
    this dict under the key ``"provenance"`` of its result file."""
    record = {"command": command,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **versions()}
    record.update(extra)
    return record


def _atomic_write(path: Path, write) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then move it over ``path``:
    a crash or a full disk leaves the previous file as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _plain(x):
    """JSON-ready copy of ``x``: NumPy and torch numbers become Python numbers, and a missing
    (NaN) number becomes ``None`` (``null``)."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, np.generic):
        return _plain(x.item())
    if hasattr(x, "tolist") and callable(x.tolist):  # torch tensors
        return _plain(x.tolist())
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def save_json(path, doc) -> Path:
    """Write ``doc`` as JSON to ``path`` atomically (the previous file survives a failed write).

    NaN (a number that does not exist, such as the training loss before the first step) is
    stored as ``null``; read it back with ``np.asarray(values, dtype=float)``. Infinite numbers
    have no JSON form: they are rejected with the path in the message.
    """
    path = Path(path)
    try:
        text = json.dumps(_plain(doc), indent=1, allow_nan=False)
    except ValueError as err:
        raise ValueError(f"{path}: the result holds an infinite number, which JSON cannot "
                         f"store ({err})") from None
    return _atomic_write(path, lambda fh: fh.write(text.encode()))


def save_npz(path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write arrays to a ``.npz`` file atomically."""
    return _atomic_write(Path(path), lambda fh: np.savez(fh, **arrays))


def _read(path, reader, kind: str):
    """``reader(path)``, with errors that name the file and say how to remake it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no stored result {path}; the chapter that uses it gives the "
                                f"command that makes it")
    try:
        return reader(path)
    except Exception as err:  # JSONDecodeError, zipfile.BadZipFile, ValueError, OSError, ...
        raise ValueError(f"{path}: not a valid {kind} result file ({type(err).__name__}: "
                         f"{err}); remake it with the command recorded in the chapter") from None


def load_json(path) -> dict:
    """Read a JSON result file; a missing or damaged file raises an error that names it."""
    return _read(path, lambda p: json.loads(p.read_text()), "JSON")


def _npz_arrays(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def load_npz(path) -> dict:
    """Read a ``.npz`` result file into a dict of arrays, naming the file if it is damaged."""
    return _read(path, _npz_arrays, ".npz")


_STORED: dict = {}


def stored(*parts: str) -> dict:
    """The stored result ``book/data/<parts...>`` (JSON or ``.npz``), read once per session.

    ``stored("experiments", "text-curves.json")``; ``stored("phase-diagram", "results.json")``.
    """
    f = data_path(*parts)
    key = (str(f), f.stat().st_mtime_ns if f.exists() else None)
    if key not in _STORED:
        _STORED[key] = load_npz(f) if f.suffix == ".npz" else load_json(f)
    return _STORED[key]

