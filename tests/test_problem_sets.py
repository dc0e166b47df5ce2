"""The graded problem sets: the instructor solutions score full marks, a blank submission zero.

Builds every set with scripts/make-problem-sets.py (otter assign) into a temporary folder, then
grades both notebooks of each set with `otter run` and the set's own autograder.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETS = sorted(p.stem for p in (ROOT / "problem-sets").glob("*.py"))
OTTER = Path(sys.executable).parent / "otter"
PARALLEL = 2


def test_one_set_per_theory_chapter():
    assert SETS == ["gaussian-convergence", "joint-training", "softmax-local-minimum",
                    "zero-loss"]


def _score(results: Path):
    tests = json.loads(results.read_text())["tests"]
    graded = [t for t in tests if t.get("max_score")]
    return sum(t["score"] for t in graded), sum(t["max_score"] for t in graded), len(graded)


@pytest.mark.slow
def test_instructor_full_marks_blank_zero(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make-problem-sets.py"),
                    "--out", str(tmp_path)], check=True, stdout=subprocess.DEVNULL)
    commands = {}
    for name in SETS:
        zip_ = next((tmp_path / name / "instructor").glob("*-autograder_*.zip"))
        student = (tmp_path / name / "student" / f"{name}.ipynb").read_text()
        assert "BEGIN SOLUTION" not in student and "grader.check(" in student
        for version in ("instructor", "student"):
            out = tmp_path / f"{name}-{version}-results"
            out.mkdir()
            nb = tmp_path / name / version / f"{name}.ipynb"
            commands[name, version] = (out, [str(OTTER), "run", "-a", str(zip_), "-o", str(out),
                                             str(nb)])
    # at most two graders at a time: each starts a kernel, and on two cores more of them at once
    # can miss the kernel's start-up timeout
    jobs, queue = {}, list(commands.items())
    while queue:
        batch, queue = queue[:PARALLEL], queue[PARALLEL:]
        started = {key: (out, subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT, text=True))
                   for key, (out, cmd) in batch}
        for key, (out, proc) in started.items():
            jobs[key] = (out, proc, proc.communicate(timeout=600)[0])
    for (name, version), (out, proc, log) in jobs.items():
        assert proc.returncode == 0, log[-2000:]
        score, total, n = _score(out / "results.json")
        assert n >= 4, f"{name}: expected at least four graded questions, found {n}"
        if version == "instructor":
            assert score == total, f"{name}: the solutions scored {score}/{total}\n{log[-3000:]}"
        else:
            assert score == 0, f"{name}: a blank submission scored {score}/{total}"
