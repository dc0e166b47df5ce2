"""tdlib.book: glue helpers and the one access path for stored results."""
from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tdlib import book, experiments

STORED = sorted(p.relative_to(book.data_path()) for p in book.data_path().rglob("*")
                if p.suffix in (".json", ".npz"))


ROOT = Path(__file__).resolve().parents[1]


def test_there_are_stored_results():
    assert len(STORED) >= 5, STORED


@pytest.mark.parametrize("rel", STORED, ids=str)
def test_every_stored_result_reloads_with_its_provenance(rel):
    doc = book.stored(*rel.parts)
    if rel.suffix == ".npz":
        assert doc and all(isinstance(v, np.ndarray) for v in doc.values())
        meta = book.stored(*rel.with_suffix(".json").parts)  # every .npz has its .json
        assert "provenance" in meta
        return
    prov = doc["provenance"]
    assert prov["command"].startswith(("python -m tdlib.", "OMP_NUM_THREADS=1 python -m tdlib."))
    assert prov["wall_seconds"] > 0 and prov["torch"]
    # strict JSON: no NaN or Infinity anywhere in the file
    json.loads(book.data_path(*rel.parts).read_text(),
               parse_constant=lambda c: pytest.fail(f"{rel} holds {c}"))


def test_experiments_reads_through_book():
    assert experiments.stored("text-curves.json") is book.stored("experiments", "text-curves.json")


def test_provenance_has_one_shape():
    p = book.provenance("python -m tdlib.x", wall_seconds=1.0)
    assert {"command", "created", "python", "torch", "numpy", "tdlib", "platform",
            "threads", "omp_num_threads", "git", "wall_seconds"} <= set(p)
    assert set(book.versions()) <= set(p)


def test_provenance_records_code_and_threads():
    import torch

    p = book.provenance("x")
    assert p["threads"] == torch.get_num_threads()
    assert p["omp_num_threads"] == os.environ.get("OMP_NUM_THREADS")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    if head.returncode == 0:  # a git checkout: the commit is HEAD's
        assert p["git"]["commit"] == head.stdout.strip() and isinstance(p["git"]["dirty"], bool)
    else:
        assert p["git"] is None
    assert book._check_code(p) == []
    assert book._check_code({"git": {"commit": "abc", "dirty": False}})  # not 40 hex digits
    assert book._check_code({"reproduce_at": "not a hash"})
    assert book._check_code({"git": None, "reproduce_at": "c17533f"}) == []


def test_save_json_is_atomic(tmp_path, monkeypatch):
    f = tmp_path / "r.json"
    book.save_json(f, {"a": 1})

    def boom(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(book.os, "replace", boom)
    with pytest.raises(OSError):
        book.save_json(f, {"a": 2})
    assert book.load_json(f) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left


def test_save_json_stores_nan_as_null_and_rejects_infinity(tmp_path):
    f = book.save_json(tmp_path / "r.json", {"x": [float("nan"), 1.0, np.float32(2)]})
    assert json.loads(f.read_text()) == {"x": [None, 1.0, 2.0]}
    with pytest.raises(ValueError, match="r2.json"):
        book.save_json(tmp_path / "r2.json", {"x": math.inf})
    assert not (tmp_path / "r2.json").exists()


def test_damaged_files_are_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": [1, 2')
    with pytest.raises(ValueError, match="bad.json"):
        book.load_json(bad)
    badz = tmp_path / "bad.npz"
    badz.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz"):
        book.load_npz(badz)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        book.load_json(tmp_path / "missing.json")


def test_glue_all_returns_values_and_checks_prefix():
    assert book.glue_all("p", {"a": np.float64(1.5)}) == {"a": 1.5}
    with pytest.raises(ValueError, match="prefix"):
        book.glue_all("", {"a": 1})


def test_fresh_seed_follows_the_seed_variable(monkeypatch):
    from tdlib import book

    monkeypatch.setenv(book.SEED_ENV, "7")
    book._SEED_STREAM.clear()
    first = [book.fresh_seed() for _ in range(3)]
    book._SEED_STREAM.clear()
    assert [book.fresh_seed() for _ in range(3)] == first and len(set(first)) == 3
    monkeypatch.setenv(book.SEED_ENV, "8")
    assert book.fresh_seed() not in first
    monkeypatch.setenv(book.SEED_ENV, "seven")
    with pytest.raises(ValueError, match="TDLIB_SEED"):
        book.fresh_seed()
    monkeypatch.delenv(book.SEED_ENV)
    assert 0 <= book.fresh_seed() < 2**31
