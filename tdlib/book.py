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

from .checks import check_flag

DATA_ENV = "TDLIB_DATA"
"""Environment variable that moves the stored-results folder (default: ``book/data``)."""


# ---------------------------------------------------------------------------------------------
# Glue
# ---------------------------------------------------------------------------------------------

def glue(name: str, value, display: bool = False):
    """Store ``value`` under ``name`` for the page's prose and return it. NumPy scalars are glued
    as plain Python numbers (their repr, ``np.float64(0.17)``, cannot be formatted in the text).
    ``None``, NaN and infinite numbers are refused (``ValueError`` naming ``name``): in the prose
    they would read as a result."""
    _check_glue(name, value)
    check_flag("display", display)
    try:
        from myst_nb import glue as _glue
    except ImportError:  # plain Jupyter: nothing to glue into
        return value
    _glue(name, value.item() if isinstance(value, np.generic) else value, display=display)
    return value


def _check_glue(name, value) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"name: expected a non-empty string to glue under, got {name!r}")
    if value is None:
        raise ValueError(f"value: expected something to show in the text for {name!r}, got None")
    one = (isinstance(value, (np.generic, np.ndarray)) and np.size(value) == 1
           or hasattr(value, "numel") and callable(value.numel) and value.numel() == 1)
    v = value.item() if one else value
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"value: expected a finite number to glue under {name!r}, got {v}")


def glue_all(prefix: str, values: Mapping[str, object]) -> dict:
    """Glue every ``values[key]`` under the name ``f"{prefix}_{key}"``; returns ``values``.

    ``glue_all("text", {"steps": 2000, "batch": 32})`` makes ``{glue:text}`` ``text_steps`` and
    ``text_batch`` available to the prose. NumPy scalars are glued as plain Python numbers.
    """
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"prefix: expected a non-empty string, got {prefix!r}")
    if not isinstance(values, Mapping):
        raise TypeError(f"values: expected a mapping of names to values, got "
                        f"{type(values).__name__}")
    for key, value in values.items():
        try:
            _check_glue(f"{prefix}_{key}", value)
        except ValueError as err:
            raise ValueError(f"values[{key!r}]: {err}") from None
    for key, value in values.items():
        if isinstance(value, np.generic):
            value = value.item()
        glue(f"{prefix}_{key}", value)
    return dict(values)


# ---------------------------------------------------------------------------------------------
# Stored results
# ---------------------------------------------------------------------------------------------

def _check_path(name: str, path) -> Path:
    """``path`` (a string or path object, not empty) as a :class:`Path`, or an error naming it."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a file or folder name, got {path!r} "
                        f"({type(path).__name__})")
    if str(path) == "":
        raise ValueError(f"{name}: expected a file or folder name, got the empty string")
    return Path(path)


def _check_arrays(arrays) -> None:
    """Arrays to store: a non-empty mapping of names to finite real (or integer) arrays."""
    if not isinstance(arrays, Mapping) or not arrays:
        raise TypeError(f"arrays: expected a non-empty mapping of names to arrays, got "
                        f"{arrays!r:.60}")
    for k, v in arrays.items():
        if not isinstance(k, str):
            raise TypeError(f"arrays: expected string names, got {k!r}")
        a = np.asarray(v)
        if a.dtype.kind not in "fiub":
            raise TypeError(f"arrays[{k!r}]: expected numbers, got dtype {a.dtype}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValueError(f"arrays[{k!r}]: expected finite numbers, got "
                             f"{int((~np.isfinite(a)).sum())} NaN/Inf")


def data_path(*parts: str) -> Path:
    """``book/data/<parts...>`` of the repository (or of ``$TDLIB_DATA`` when it is set)."""
    for p in parts:
        _check_path("parts", p)
    root = os.environ.get(DATA_ENV)
    base = Path(root) if root else Path(__file__).resolve().parents[1] / "book" / "data"
    return base.joinpath(*parts)


def versions() -> dict:
    """The software and machine a result was computed with (Python, torch, NumPy, tdlib,
    platform), torch's thread count (``threads``; two threads can give other bits than one)
    and the environment variable ``OMP_NUM_THREADS`` (``None`` when unset)."""
    import torch

    from . import __version__

    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "tdlib": __version__, "platform": platform.platform(),
            "threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


_GIT: dict = {}


def git_state() -> dict | None:
    """The code a result was made with: ``{"commit": <HEAD's hash>, "dirty": <whether tracked
    files under tdlib/ differ from that commit>}``, or ``None`` outside a git checkout (an
    installed copy). Read once per process, at the first call: a run that starts before its
    code is edited records the code it ran (the command line calls this at its start)."""
    if "state" not in _GIT:
        import subprocess

        root = Path(__file__).resolve().parents[1]

        def git(*args):
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                  text=True, timeout=30, check=True).stdout.strip()

        try:
            commit = git("rev-parse", "HEAD")
            dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "tdlib"))
            _GIT["state"] = {"commit": commit, "dirty": dirty}
        except (OSError, subprocess.SubprocessError):
            _GIT["state"] = None
    return None if _GIT["state"] is None else dict(_GIT["state"])


def provenance(command: str | None = None, **extra) -> dict:
    """How a stored result was made: the command that remakes it, the time it was written,
    :func:`versions` and :func:`git_state` (under ``"git"``); ``extra`` adds fields such as
    ``wall_seconds``. Every producer stores this dict under the key ``"provenance"`` of its
    result file."""
    if command is not None and (not isinstance(command, str) or not command):
        raise TypeError(f"command: expected the shell command that remakes the result, got "
                        f"{command!r}")
    record = {"command": command,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **versions(),
              "git": git_state()}
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
    path = _check_path("path", path)
    text = _json_text(path, doc)
    return _atomic_write(path, lambda fh: fh.write(text.encode()))


def _json_text(path: Path, doc) -> str:
    if not isinstance(doc, Mapping):
        raise TypeError(f"doc: expected a dict (a JSON object) to store in {path}, got "
                        f"{type(doc).__name__}")
    try:
        return json.dumps(_plain(doc), indent=1, allow_nan=False)
    except ValueError as err:
        raise ValueError(f"{path}: the result holds an infinite number, which JSON cannot "
                         f"store ({err}); expected finite numbers in doc") from None
    except TypeError as err:
        raise TypeError(f"doc: expected numbers, strings, lists and dicts to store in {path}, "
                        f"got {err}") from None


def save_npz(path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write arrays (finite numbers) to a ``.npz`` file atomically."""
    path = _check_path("path", path)
    _check_arrays(arrays)
    return _atomic_write(path, lambda fh: np.savez(fh, **arrays))


def _sha256(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_pair(npz_path, arrays: Mapping[str, np.ndarray], json_path, doc: dict):
    """Write a ``.npz`` of arrays and the ``.json`` that describes it as one result.

    The ``.json`` records the SHA-256 of the ``.npz`` under ``"npz_sha256"``. Both files are
    encoded in memory first (a failure there, such as an infinite number, touches nothing);
    each is then written atomically, the ``.json`` last. A crash therefore leaves the old pair,
    or, between the two writes, a new ``.npz`` whose checksum differs from the one in the old
    ``.json``, which :func:`check_stored` reports."""
    import hashlib
    import io

    npz_path, json_path = _check_path("npz_path", npz_path), _check_path("json_path", json_path)
    _check_arrays(arrays)
    if not isinstance(doc, Mapping):
        raise TypeError(f"doc: expected a dict (a JSON object) to store in {json_path}, got "
                        f"{type(doc).__name__}")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    blob = buf.getvalue()
    doc = dict(doc, npz_sha256=hashlib.sha256(blob).hexdigest())
    text = _json_text(json_path, doc)
    for path in (npz_path, json_path):
        check_writable(path)
    _atomic_write(npz_path, lambda fh: fh.write(blob))
    _atomic_write(json_path, lambda fh: fh.write(text.encode()))
    return npz_path, json_path


def check_writable(path) -> Path:
    """Make sure a result can be written to ``path`` (its folder is created if needed) before
    any work is spent on it; raises an error naming the path otherwise."""
    path = _check_path("path", path)
    if path.is_dir():
        raise IsADirectoryError(f"--out {path}: expected a file name, got a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise PermissionError(f"--out {path}: cannot write there ({err.strerror or err})") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(f"--out {path}: the existing file is read-only")
    return path


class StoredResultError(ValueError):
    """A stored result file that cannot be used as it is: the message names the file, the field
    and the command that remakes it."""


VALIDATORS = [({"config", "results"}, "tdlib.phase:check_result"),
              ({"stage1", "stage2", "grid"}, "tdlib.landscape:check_meta"),
              ({"bridge_config", "cells"}, "tdlib.icl:check_bridge")]
"""``(keys, "module:function")``: a JSON result holding all of ``keys`` is checked by that
function, which returns its problems (sentences that each name a field). Run on every load
(:func:`load_json`, :func:`stored`) and by :func:`check_file`."""


def content_problems(doc) -> list:
    """The problems of the content of a loaded JSON result: its runs (a curves file) and what
    the validator of its kind (:data:`VALIDATORS`) finds. An empty list when it is sound."""
    import importlib

    if not isinstance(doc, dict):
        return []
    problems = _check_runs(doc) if isinstance(doc.get("runs"), list) else []
    for keys, target in VALIDATORS:
        if keys <= set(doc):
            module, name = target.split(":")
            problems += getattr(importlib.import_module(module), name)(doc)
    return problems


def remake_command(path) -> str | None:
    """The command that remakes the stored result ``path``: its provenance's ``command``; for a
    file too damaged to read, the command found in its text or in the version of the file
    committed to git; ``None`` when none is found."""
    import re
    import subprocess

    path = _check_path("path", path)
    if path.suffix == ".npz":   # described by the .json written with it (save_pair)
        cmd = remake_command(path.with_suffix(".json"))
        if cmd:
            return cmd
    texts = []
    try:
        texts.append(path.read_text(errors="replace"))
    except OSError:
        pass
    try:
        root = Path(__file__).resolve().parents[1]
        rel = path.resolve().relative_to(root)
        texts.append(subprocess.run(["git", "-C", str(root), "show", f"HEAD:{rel.as_posix()}"],
                                    capture_output=True, text=True, timeout=30).stdout)
    except (ValueError, OSError, subprocess.SubprocessError):
        pass
    for text in texts:
        m = re.search(r'"command":\s*("(?:[^"\\]|\\.)*")', text)
        if m:
            try:
                return json.loads(m.group(1))
            except ValueError:
                continue
    return None


def _remake(path: Path) -> str:
    cmd = remake_command(path)
    return (f"remake it with: {cmd}" if cmd else
            "remake it with the command given in the chapter that reads it")


def _read(path, reader, kind: str):
    """``reader(path)``, with errors that name the file and say how to remake it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no stored result {path}; {_remake(path)}")
    try:
        return reader(path)
    except Exception as err:  # JSONDecodeError, zipfile.BadZipFile, ValueError, OSError, ...
        raise StoredResultError(f"{path}: not a valid {kind} result file "
                                f"({type(err).__name__}: {err}); {_remake(path)}") from None


def _strict(constant):
    raise ValueError(f"{constant} is not JSON (a missing number is stored as null)")


def load_json(path, validate: bool = True) -> dict:
    """Read a JSON result file; a missing or damaged file (including one holding ``NaN`` or
    ``Infinity``, which are not JSON, or cut short) raises an error that names it and the
    command that remakes it. With ``validate`` its content is checked too
    (:func:`content_problems`: a count above the number of instances, a missing or unknown
    field, ...), raising :class:`StoredResultError` that names the file and the field."""
    _check_path("path", path)
    check_flag("validate", validate)
    doc = _read(path, lambda p: json.loads(p.read_text(), parse_constant=_strict), "JSON")
    if validate:
        problems = content_problems(doc)
        if problems:
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise StoredResultError(f"{path}: {problems[0]}{more}; {_remake(Path(path))}")
    return doc


def _npz_arrays(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


NPZ_VALIDATORS = [("*-landscape.npz", "tdlib.landscape:check_arrays")]
"""``(pattern, "module:function")``: a ``.npz`` result whose file name matches ``pattern`` is
checked by ``function(arrays, meta)`` (``meta``: its ``.json``, or ``None``), which returns its
problems (a missing array among them). Run on every load (:func:`load_npz`) and by
:func:`check_file`."""


def npz_problems(path, arrays) -> list:
    """The problems of the arrays of the ``.npz`` result ``path`` that the validator of its
    kind (:data:`NPZ_VALIDATORS`) finds, read together with its ``.json`` when it has one."""
    import fnmatch
    import importlib

    problems = []
    for pattern, target in NPZ_VALIDATORS:
        if fnmatch.fnmatch(Path(path).name, pattern):
            meta = None
            meta_path = Path(path).with_suffix(".json")
            if meta_path.exists():
                try:
                    meta = load_json(meta_path, validate=False)
                except ValueError:
                    meta = None  # reported for the .json itself
            module, name = target.split(":")
            problems += getattr(importlib.import_module(module), name)(arrays, meta)
    return problems


def load_npz(path, validate: bool = True) -> dict:
    """Read a ``.npz`` result file into a dict of arrays, naming the file if it is damaged. With
    ``validate`` its content is checked too (:func:`npz_problems`: the shapes and grids a
    chapter reads), raising :class:`StoredResultError` that names the file and the field and
    says how to remake it."""
    _check_path("path", path)
    check_flag("validate", validate)
    arrays = _read(path, _npz_arrays, ".npz")
    if validate:
        problems = npz_problems(path, arrays)
        if problems:
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise StoredResultError(f"{path}: {problems[0]}{more}; {_remake(Path(path))}")
    return arrays


SEED_ENV = "TDLIB_SEED"
"""Environment variable that, when set to an integer, makes :func:`fresh_seed` reproducible."""

_SEED_STREAM: list = []


def fresh_seed() -> int:
    """A new random seed at every run (from the operating system's entropy, not from any
    seeded generator): the theorems' checks draw fresh instances with it and print it, so that
    any instance a reader meets can be reproduced.

    When the environment variable ``TDLIB_SEED`` holds an integer, the seeds come instead from a
    generator seeded with it, one after another: a chapter executed twice with the same value
    draws the same instances, and with another value other fresh ones (the seeds test uses this
    to run the theory chapters on several chosen streams)."""
    import random
    import secrets

    root = os.environ.get(SEED_ENV, "").strip()
    if not root:
        return secrets.randbits(31)
    try:
        value = int(root)
    except ValueError:
        raise ValueError(f"{SEED_ENV}: expected an integer, got {root!r}") from None
    if not _SEED_STREAM or _SEED_STREAM[0] != value:
        _SEED_STREAM[:] = [value, random.Random(value)]
    return _SEED_STREAM[1].getrandbits(31)


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



# ---------------------------------------------------------------------------------------------
# Checking every stored result
# ---------------------------------------------------------------------------------------------

def _check_runs(doc: dict) -> list:
    """Problems of a curves file (a ``"runs"`` list): duplicate runs, curves of unequal length,
    missing or impossible accuracies."""
    problems, seen = [], set()
    for i, r in enumerate(doc["runs"]):
        key = (r.get("task"), r.get("kernel"), r.get("seed"))
        if key in seen:
            problems.append(f"run {i} ({key[0]}/{key[1]}/seed {key[2]}) appears twice")
        seen.add(key)
        curves = r.get("curves") or {}
        lengths = {k: len(v) for k, v in curves.items()}
        if len(set(lengths.values())) > 1:
            problems.append(f"run {i}: curves of unequal lengths {lengths}")
        for k in ("test_acc", "test_loss"):
            v = curves.get(k)
            if v is None or any(x is None or not math.isfinite(x) for x in v):
                problems.append(f"run {i} ({key[1]}/seed {key[2]}): {k} missing or not finite")
        if any(x is not None and not 0 <= x <= 1 for x in curves.get("test_acc") or []):
            problems.append(f"run {i}: test_acc outside [0, 1]")
    return problems


def _check_code(prov: dict) -> list:
    """Problems of the record of the code behind a result: ``"git"``, when present, is null or
    a 40-hex commit with a boolean ``dirty``; ``"reproduce_at"`` (files made before commits
    were recorded: the commit whose code remakes them), when present, is a hex commit."""
    import re

    problems = []
    g = prov.get("git")
    if g is not None and not (isinstance(g, dict) and isinstance(g.get("dirty"), bool)
                              and re.fullmatch(r"[0-9a-f]{40}", str(g.get("commit")))):
        problems.append(f"provenance 'git': expected null or {{'commit': <40 hex digits>, "
                        f"'dirty': true/false}}, got {g!r}")
    r = prov.get("reproduce_at")
    if r is not None and not re.fullmatch(r"[0-9a-f]{7,40}", str(r)):
        problems.append(f"provenance 'reproduce_at': expected a git commit hash, got {r!r}")
    return problems


def check_file(path) -> list:
    """The problems of one stored result file (an empty list when it is sound): unreadable or
    non-strict JSON, no provenance, a ``.npz`` without its ``.json`` or with a checksum that
    differs from the one recorded there, non-finite arrays, duplicate or incomplete runs."""
    path = _check_path("path", path)
    try:
        doc = (load_npz(path, validate=False) if path.suffix == ".npz"
               else load_json(path, validate=False))
    except (ValueError, FileNotFoundError) as err:
        return [str(err)]
    problems = []
    if path.suffix == ".npz":
        problems += npz_problems(path, doc)
        for k, v in doc.items():
            if v.dtype.kind == "f" and not np.isfinite(v).all():
                problems.append(f"array {k!r} holds NaN or Inf")
        meta_path = path.with_suffix(".json")
        if not meta_path.exists():
            problems.append(f"its description {meta_path.name} is missing")
        else:
            try:
                meta = load_json(meta_path, validate=False)
            except ValueError:
                meta = {}  # reported for the .json itself
            want = meta.get("npz_sha256")
            if want is not None and want != _sha256(path):
                problems.append(f"its checksum differs from the one in {meta_path.name} "
                                f"(a pair written half-way)")
        return problems
    if not isinstance(doc, dict):
        return [f"expected a JSON object, got {type(doc).__name__}"]
    prov = doc.get("provenance")
    if not isinstance(prov, dict) or not prov.get("command"):
        problems.append("no provenance with the command that makes it")
    else:
        problems += _check_code(prov)
    return problems + content_problems(doc)


def check_stored(root=None) -> dict:
    """``{file: problems}`` for every ``.json`` and ``.npz`` under ``root`` (default: the
    stored results, :func:`data_path`); a sound file maps to an empty list."""
    root = _check_path("root", root) if root is not None else data_path()
    if not root.is_dir():
        raise FileNotFoundError(f"no folder of stored results at {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix in (".json", ".npz") and p.is_file()
                   and not p.name.startswith("."))
    return {p: check_file(p) for p in files}


def main(argv=None) -> int:
    """``python -m tdlib.book check [FOLDER]``: validate every stored result file and name
    the bad ones; the exit status is 1 if any is bad."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m tdlib.book",
                                description="Tools for the stored results of the book.")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="validate every stored result file")
    c.add_argument("folder", nargs="?", default=None, help="default: book/data")
    a = p.parse_args(argv)
    try:
        report = check_stored(a.folder)
    except FileNotFoundError as err:
        p.error(str(err))
    bad = {f: probs for f, probs in report.items() if probs}
    for f, probs in report.items():
        print(f"{'BAD' if probs else 'ok '} {f}")
        for pr in probs:
            print(f"    {pr}")
    print(f"{len(report)} stored result files checked, {len(bad)} bad")
    return 1 if bad else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
