"""Build the graded problem sets from problem-sets/*.py (one source per theory chapter).

For each source (a notebook in jupytext's percent format, in otter-grader's assignment format)
this writes, under OUT (default _build/problem-sets/<name>/):

* student/<name>.ipynb      -- solutions replaced by `...`, with grader.check cells;
* instructor/<name>.ipynb   -- the same notebook with the solutions;
* instructor/*-autograder*.zip -- the otter autograder for `otter run` / `otter grade`.

Usage: python scripts/make-problem-sets.py [--out DIR] [NAME ...]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "problem-sets"


def build(name: str, out: Path) -> Path:
    src = SOURCES / f"{name}.py"
    if not src.is_file():
        known = ", ".join(sorted(p.stem for p in SOURCES.glob("*.py")))
        raise SystemExit(f"problem set {name!r}: no file {src}; known sets: {known}")
    nb = jupytext.read(src)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    target = out / name
    shutil.rmtree(target, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        master = Path(tmp) / f"{name}.ipynb"
        jupytext.write(nb, master)
        dist = Path(tmp) / "dist"
        otter = Path(sys.executable).parent / "otter"
        subprocess.run([str(otter), "assign", str(master), str(dist)], check=True,
                       stdout=subprocess.DEVNULL)
        target.mkdir(parents=True)
        shutil.copytree(dist / "student", target / "student")
        shutil.copytree(dist / "autograder", target / "instructor")
    return target


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", help="problem sets to build (default: all)")
    p.add_argument("--out", default=str(ROOT / "_build" / "problem-sets"))
    a = p.parse_args(argv)
    names = a.names or sorted(s.stem for s in SOURCES.glob("*.py"))
    for name in names:
        print("built", build(name, Path(a.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
