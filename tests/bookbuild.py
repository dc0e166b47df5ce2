"""Build the whole book from an empty folder with warnings as errors (the ``book_build`` fixture
of tests/conftest.py starts this in the background as soon as the tests are collected).

Usage: ``python tests/bookbuild.py OUT``. Writes the build's output to ``OUT/build.out`` and
``OUT/build.err`` and, when the build has ended, ``OUT/result.json`` with its exit status, wall
time and CPU time (of jupyter-book and every kernel it started)."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(out: Path) -> int:
    start = time.perf_counter()
    with open(out / "build.out", "w") as stdout, open(out / "build.err", "w") as stderr:
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "jupyter-book"), "build", str(ROOT),
             "--path-output", str(out), "-W", "-n", "--keep-going"],
            stdout=stdout, stderr=stderr, text=True, cwd=ROOT)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {"returncode": proc.returncode, "seconds": time.perf_counter() - start,
              "cpu_seconds": usage.ru_utime + usage.ru_stime}
    tmp = out / "result.json.tmp"
    tmp.write_text(json.dumps(result))
    os.replace(tmp, out / "result.json")        # readers see the whole file or none
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
