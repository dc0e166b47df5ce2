"""Build the graded problem sets from problem-sets/*.py (one source per theory chapter).

For each source (a notebook in jupytext's percent format, in otter-grader's assignment format)
this writes, under OUT (default _build/problem-sets/<name>/):

* student/<name>.ipynb      -- solutions replaced by `...`, written questions by a prompt, only
  the public sanity tests, plus the tdlib wheel;
* instructor/<name>.ipynb   -- the same notebook with the solutions, the rubrics of the written
  questions and all tests, hidden ones included;
* instructor/*-autograder*.zip -- the otter autograder for `otter run` / `otter grade` /
  Gradescope. Its environment.yml installs, besides otter, the pinned CPU build of torch, numpy
  and tdlib's other dependencies (pinned as in requirements.txt), and tdlib from the wheel
  bundled in the zip (files/, unpacked to /autograder/source/files), so grading needs nothing
  else.

Usage: python scripts/make-problem-sets.py [--out DIR] [NAME ...]
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "problem-sets"
PYTHON_VERSION = "3.11"
# The grading environment installs, besides otter itself, tdlib's dependencies pinned as in
# requirements.txt, then the tdlib wheel. The extra index serves the CPU build of the pinned torch
# (the default Linux wheel of PyPI pulls CUDA libraries of several GB).
TORCH_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"


def pins() -> list[str]:
    """The `name==version` lines of requirements.txt for every dependency of tdlib (pyproject.toml),
    torch first: the grader gets the versions the book is tested with."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [re.match(r"[A-Za-z0-9_.-]+", dep).group(0).lower() for dep in project["dependencies"]]
    found = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if m:
            found[m.group(1).lower()] = m.group(0)
    missing = [n for n in names if n not in found]
    if missing:
        raise SystemExit(f"requirements.txt: expected exact pins (name==version) for tdlib's "
                         f"dependencies {missing}")
    return [found[n] for n in sorted(names, key=lambda n: n != "torch")]


def build_wheel(dest: Path) -> Path:
    """Build the tdlib wheel from this checkout into dest and return its path (from a copy of the
    package files, so that the build leaves nothing behind in the checkout)."""
    src = dest / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "tdlib", src / "tdlib", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(dest), str(src)], check=True)
    wheels = sorted(dest.glob("tdlib-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one tdlib wheel in {dest}, found {[w.name for w in wheels]}")
    return wheels[0]


def configure(nb, wheel_name: str) -> None:
    """Point the assignment config (the first raw cell) at the requirements and the wheel."""
    cell = nb.cells[0]
    if cell.cell_type != "raw" or "ASSIGNMENT CONFIG" not in cell.source:
        raise SystemExit("a problem set must start with a raw '# ASSIGNMENT CONFIG' cell")
    lines = [ln for ln in cell.source.splitlines()
             if not ln.startswith(("files:", "requirements:", "python_version:"))]
    lines += [f"files: [{wheel_name}]", "requirements: requirements.txt",
              f'python_version: "{PYTHON_VERSION}"']
    cell.source = "\n".join(lines)


# Gradescope and `otter grade` (Docker) unpack the autograder zip into /autograder/source (otter's
# autograder_dir), so the wheel bundled through `files:` is at this absolute path when
# environment.yml is installed, whatever folder the environment installer runs pip from.
WHEEL_DIR = "/autograder/source/files"


def requirements(wheel_name: str) -> str:
    return "\n".join([TORCH_INDEX, *pins(), f"{WHEEL_DIR}/{wheel_name}"]) + "\n"


def build(name: str, out: Path, wheel: Path) -> Path:
    src = SOURCES / f"{name}.py"
    if not src.is_file():
        known = ", ".join(sorted(p.stem for p in SOURCES.glob("*.py")))
        raise SystemExit(f"problem set {name!r}: no file {src}; known sets: {known}")
    nb = jupytext.read(src)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    configure(nb, wheel.name)
    target = out / name
    shutil.rmtree(target, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        master = Path(tmp) / f"{name}.ipynb"
        jupytext.write(nb, master)
        shutil.copy(wheel, Path(tmp) / wheel.name)
        (Path(tmp) / "requirements.txt").write_text(requirements(wheel.name))
        dist = Path(tmp) / "dist"
        otter = Path(sys.executable).parent / "otter"
        subprocess.run([str(otter), "assign", str(master), str(dist)], check=True,
                       stdout=subprocess.DEVNULL, cwd=tmp)
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
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(Path(tmp))
        for name in names:
            print("built", build(name, Path(a.out), wheel))
    return 0


if __name__ == "__main__":
    sys.exit(main())
