"""The graded problem sets: what students get, what stays with the instructor, and grading in a
clean environment.

* every set has a derive-and-verify question, a construct-a-counterexample question checked by a
  certificate in a hidden test, and a written proof graded by a rubric (otter ``manual: true``);
  every autograded question shows students one public sanity test worth 0 points, and its points
  come from hidden tests;
* no reference answer, hidden test or rubric of a set appears in tdlib/ (which students install),
  in notebooks/ (public) or in the student build;
* the autograder zip grades in a fresh virtual environment made from its own environment.yml
  only (torch, numpy and the bundled tdlib wheel): the instructor solutions score full marks and
  a blank submission zero.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SETS = sorted(p.stem for p in (ROOT / "problem-sets").glob("*.py"))
OTTER = Path(sys.executable).parent / "otter"
PARALLEL = 2
LONG = 45


def test_one_set_per_theory_chapter():
    assert SETS == ["gaussian-convergence", "in-context-regression", "joint-training",
                    "kernel-zoo", "softmax-local-minimum", "zero-loss"]


# ------------------------------------------------------------------------------ reading a source

def _questions(name: str) -> list[dict]:
    """The questions of a set: config, prompt, solution lines, public and hidden test cells."""
    cells = jupytext.read(ROOT / "problem-sets" / f"{name}.py").cells
    out, q, region = [], None, None
    for cell in cells:
        src = cell.source
        first = src.strip().splitlines()[0] if src.strip() else ""
        if cell.cell_type == "raw" and first == "# BEGIN QUESTION":
            q = {"config": yaml.safe_load(src.split("\n", 1)[1]), "prompt": "", "solution": [],
                 "public": [], "hidden": []}
            out.append(q)
            continue
        if cell.cell_type == "raw" and first in ("# END QUESTION",):
            q = None
            continue
        if cell.cell_type == "raw" and first in ("# BEGIN TESTS", "# BEGIN SOLUTION"):
            region = first.split()[-1].lower()
            continue
        if cell.cell_type == "raw" and first in ("# END TESTS", "# END SOLUTION"):
            region = None
            continue
        if q is None:
            continue
        if region == "tests":
            q["hidden" if re.match(r"#\s*hidden", first, re.I) else "public"].append(src)
        elif region == "solution":
            q["solution"].append(src)
        elif cell.cell_type == "markdown":
            q["prompt"] += src
        else:
            inside = re.findall(r"# BEGIN SOLUTION\n(.*?)\n\s*# END SOLUTION", src, flags=re.S)
            q["solution"] += inside
    return out


def _norm(line: str) -> str:
    return " ".join(line.split())


def _fingerprints(texts) -> set[str]:
    """What identifies a block of answer text: each line of at least LONG characters, and each
    run of three consecutive non-trivial lines (single short lines such as a loop over the two
    kernels are common to much code; three in a row are not)."""
    out = set()
    for t in texts:
        lines = [_norm(ln) for ln in t.splitlines()]
        out |= {ln for ln in lines if len(ln) >= LONG}
        out |= {"\n".join(lines[i:i + 3]) for i in range(len(lines) - 2)
                if min(len(ln) for ln in lines[i:i + 3]) >= 8}
    return out


@pytest.mark.parametrize("name", SETS)
def test_each_set_has_the_three_kinds_of_question(name):
    qs = _questions(name)
    kinds = [q["prompt"] for q in qs]
    assert any("derive, then verify" in p for p in kinds), f"{name}: no derive-and-verify question"
    assert any("counterexample" in p or "construct" in p for p in kinds), f"{name}: no construction"
    manual = [q for q in qs if q["config"].get("manual")]
    assert manual, f"{name}: no written proof"
    for q in manual:
        assert q["config"].get("points", 0) > 0 and "Rubric" in "".join(q["solution"]), \
            f"{name}/{q['config']['name']}: a written question needs points and a rubric"
    for q in qs:
        if q["config"].get("manual"):
            continue
        points = q["config"]["points"]
        assert len(q["public"]) == 1 and q["hidden"], \
            f"{name}/{q['config']['name']}: one public sanity test and hidden tests"
        assert isinstance(points, list) and points[0] == 0 and sum(points[1:]) > 0, \
            f"{name}/{q['config']['name']}: the public test must be worth 0 points"


# ------------------------------------------------------------------------------ building the sets

@pytest.fixture(scope="session")
def problem_sets(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("problem-sets")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make-problem-sets.py"), "--out",
                    str(out)], check=True, stdout=subprocess.DEVNULL)
    return out


def _notebook_text(path: Path) -> str:
    nb = json.loads(path.read_text())
    parts = []
    for cell in nb["cells"]:
        parts.append("".join(cell["source"]))
        for o in cell.get("outputs", []):
            parts.append("".join(o.get("text", "")))
            parts += ["".join(v) if isinstance(v, list) else str(v)
                      for v in o.get("data", {}).values()]
    return "\n".join(parts)


def _normalized(text: str) -> str:
    return "\n".join(_norm(ln) for ln in text.splitlines())


def test_answers_do_not_ship(problem_sets):
    public_places = {str(p.relative_to(ROOT)): p.read_text() for p in (ROOT / "tdlib").rglob("*.py")}
    public_places |= {str(p.relative_to(ROOT)): _notebook_text(p)
                      for p in (ROOT / "notebooks").rglob("*.ipynb")}
    for name in SETS:
        student = problem_sets / name / "student"
        public_places[f"student build of {name}"] = "\n".join(
            _notebook_text(p) if p.suffix == ".ipynb" else p.name for p in student.rglob("*")
            if p.is_file() and p.suffix in (".ipynb", ".py", ".md", ".txt"))
        assert not any(p.suffix == ".zip" for p in student.rglob("*")), "autograder in student build"
    haystacks = {k: _normalized(v) for k, v in public_places.items()}
    for name in SETS:
        qs = _questions(name)
        public = _fingerprints([q["prompt"] for q in qs] + [t for q in qs for t in q["public"]])
        secret = _fingerprints([s for q in qs for s in q["solution"]]
                               + [t for q in qs for t in q["hidden"]]) - public
        assert len(secret) >= 20, f"{name}: suspiciously few answer fingerprints ({len(secret)})"
        # the same search finds the solutions in the instructor notebook, so it would find a copy
        # elsewhere (hidden tests are stored there reformatted, so they are not looked up)
        instructor = _normalized(_notebook_text(problem_sets / name / "instructor" / f"{name}.ipynb"))
        solutions = _fingerprints([s for q in qs for s in q["solution"]]) - public
        missing = [fp for fp in solutions if fp not in instructor]
        assert not missing, f"{name}: solutions not found in the instructor build: {missing[:3]}"
        leaks = [(line, where) for line in secret for where, text in haystacks.items()
                 if line in text]
        assert not leaks, f"{name}: answers or hidden tests found outside the instructor build: " \
                          f"{leaks[:5]}"
        # the graded functions themselves are defined nowhere else (a short reference answer,
        # e.g. one constant, has no fingerprint but would come with its function)
        source = (ROOT / "problem-sets" / f"{name}.py").read_text()
        for fn in re.findall(r"^def (\w+)\(", source, flags=re.M):
            for where, text in haystacks.items():
                if not where.startswith("student build"):
                    assert f"def {fn}(" not in text, f"{name}: {fn} is defined in {where}"


# ------------------------------------------------------------------------------ grading, clean env

def _pip_lines(zip_path: Path) -> tuple[str, list[str]]:
    env = yaml.safe_load(zipfile.ZipFile(zip_path).read("environment.yml"))
    python = next(d.split("=", 1)[1] for d in env["dependencies"]
                  if isinstance(d, str) and d.startswith("python="))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return python, pip


def _pip(venv: Path, cwd: Path, *args: str) -> None:
    quiet = ["--quiet"] if args[0] == "install" else []
    cmd = [str(venv / "bin" / "python"), "-m", "pip", args[0], *quiet, *args[1:]]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"


@pytest.fixture(scope="session")
def grading_env(problem_sets, tmp_path_factory) -> Path:
    """A venv made from nothing but the pip section of an autograder's environment.yml (once per
    session, or kept between sessions with PROBLEM_SETS_ENV_CACHE, see below). Two changes,
    both about where things are, not what is installed: the folder the zip is unpacked into
    stands in for /autograder/source, and the extra index of the CPU torch builds is left out
    (this machine has no route to it; pip's local wheel folder here serves the same CPU build of
    the pinned version)."""
    zip_path = next((problem_sets / SETS[0] / "instructor").glob("*-autograder_*.zip"))
    python, pip = _pip_lines(zip_path)
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == python, \
        f"the autograder asks for Python {python}; this test runs {sys.version}"
    assert "torch==2.13.0" in pip and any(p.startswith("numpy==") for p in pip)
    assert any(re.fullmatch(r"/autograder/source/files/tdlib-[^/]+\.whl", p) for p in pip), pip
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in pip
    root = tmp_path_factory.mktemp("grading-env")
    source = root / "source"
    zipfile.ZipFile(zip_path).extractall(source)
    # the zip's folder stands in for /autograder/source, where the graders unpack it
    lines = [p.replace("/autograder/source/", f"{source}/") for p in pip
             if "download.pytorch.org" not in p]
    wheel = [p for p in lines if p.endswith(".whl")]
    others = [p for p in lines if not p.endswith(".whl")]
    # PROBLEM_SETS_ENV_CACHE=<folder> keeps the environment of everything but tdlib between
    # sessions, keyed by Python version and the exact pip lines; tdlib is installed afresh from
    # the zip's wheel every session. Unset, every session builds its own environment.
    cache = os.environ.get("PROBLEM_SETS_ENV_CACHE")
    key = hashlib.sha256("\n".join([python, *others]).encode()).hexdigest()[:16]
    venv = Path(cache) / f"grading-env-{key}" if cache else root / "venv"
    start = time.perf_counter()
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        (source / "requirements-test.txt").write_text("\n".join(others) + "\n")
        _pip(venv, source, "install", "-r", "requirements-test.txt")
        (venv / ".complete").write_text(key)
    _pip(venv, source, "install", "--no-deps", "--force-reinstall", *wheel)
    _pip(venv, source, "check")
    print(f"\ngrading environment ready in {time.perf_counter() - start:.0f} s ({venv})")
    probe = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import torch, numpy, tdlib; print(torch.__version__, "
                            "torch.version.cuda, tdlib.__file__)"],
                           capture_output=True, text=True, cwd=root)
    assert probe.returncode == 0, probe.stderr
    version, cuda, where = probe.stdout.split()
    assert version.startswith("2.13.0") and cuda == "None", probe.stdout
    assert str(venv) in where, f"tdlib should come from the wheel, not this checkout: {where}"
    return venv


def _score(results: Path):
    tests = json.loads(results.read_text())["tests"]
    graded = [t for t in tests if t.get("max_score")]
    return sum(t["score"] for t in graded), sum(t["max_score"] for t in graded), \
        {t["name"] for t in graded}


@pytest.mark.slow
def test_instructor_full_marks_blank_zero_in_a_fresh_environment(problem_sets, grading_env,
                                                                 tmp_path):
    otter = grading_env / "bin" / "otter"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{grading_env / 'bin'}:{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    env.pop("JUPYTER_PATH", None)
    env["JUPYTER_DATA_DIR"] = str(tmp_path / "jupyter")   # only the venv's own kernel
    commands = {}
    for name in SETS:
        zip_ = next((problem_sets / name / "instructor").glob("*-autograder_*.zip"))
        student = (problem_sets / name / "student" / f"{name}.ipynb").read_text()
        assert "BEGIN SOLUTION" not in student and "grader.check(" in student
        for version in ("instructor", "student"):
            out = tmp_path / f"{name}-{version}-results"
            out.mkdir()
            nb = problem_sets / name / version / f"{name}.ipynb"
            commands[name, version] = (out, [str(otter), "run", "-a", str(zip_), "-o", str(out),
                                             str(nb)])
    # at most two graders at a time: each starts a kernel, and on two cores more of them at once
    # can miss the kernel's start-up timeout
    jobs, queue = {}, list(commands.items())
    while queue:
        batch, queue = queue[:PARALLEL], queue[PARALLEL:]
        started = {key: (out, subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, cwd=tmp_path,
                                                stderr=subprocess.STDOUT, text=True))
                   for key, (out, cmd) in batch}
        for key, (out, proc) in started.items():
            jobs[key] = (out, proc, proc.communicate(timeout=600)[0])
    # a kernel that dies while starting (two kernels started at once can race for the same
    # ports) is the machine's failure, not the grader's: that grading runs again, alone, once
    for key, (out, proc, log) in list(jobs.items()):
        if proc.returncode != 0 and "Kernel died before replying to kernel_info" in log:
            print(f"{key}: the kernel died while starting; graded again")
            shutil.rmtree(out)
            out.mkdir()
            again = subprocess.run(commands[key][1], stdout=subprocess.PIPE, env=env,
                                   cwd=tmp_path, stderr=subprocess.STDOUT, text=True,
                                   timeout=600)
            jobs[key] = (out, again, again.stdout)
    for (name, version), (out, proc, log) in jobs.items():
        assert proc.returncode == 0, log[-2000:]
        score, total, graded = _score(out / "results.json")
        auto = {q["config"]["name"] for q in _questions(name) if not q["config"].get("manual")}
        assert graded == auto, f"{name}: graded {sorted(graded)}, expected {sorted(auto)}"
        if version == "instructor":
            assert score == total > 0, f"{name}: the solutions scored {score}/{total}\n{log[-3000:]}"
        else:
            assert score == 0, f"{name}: a blank submission scored {score}/{total}"


# ------------------------------------------------------------------------------ the mathematics

def _namespace(name: str) -> tuple[dict, dict]:
    """Execute a set's instructor code (imports and reference answers) in a fresh namespace;
    return it and {question name: its test cells (public and hidden)}."""
    ns: dict = {}
    tests = {}
    cells = jupytext.read(ROOT / "problem-sets" / f"{name}.py").cells
    in_tests = False
    for cell in cells:
        first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
        if cell.cell_type == "raw":
            in_tests = {"# BEGIN TESTS": True, "# END TESTS": False}.get(first, in_tests)
        elif cell.cell_type == "code" and not in_tests:
            exec(compile(cell.source, f"{name}.py", "exec"), ns)
    for q in _questions(name):
        tests[q["config"]["name"]] = q["public"] + q["hidden"]
    return ns, tests


def _passes(ns: dict, cells: list[str]) -> bool:
    try:
        for src in cells:
            exec(compile(src, "test", "exec"), dict(ns))
    except AssertionError:
        return False
    return True


# Plausible wrong answers, one per autograded question: the hidden tests must reject each.
WRONG = {
    "q1-value-limit": "def value_limit(B, W_O, Y, V0):\n"
                      "    return V0 - torch.linalg.pinv(B) @ (B @ V0 @ W_O - Y) @ W_O.T",
    "q2-counting-is-not-enough": "def counting_counterexample():\n"
                                 "    g = torch.Generator().manual_seed(0)\n"
                                 "    return torch.rand(2, 3, 3, generator=g, dtype=torch.float64), 2",
    "q1-first-step": "def first_step(B, W_O, Y):\n"
                     "    L = float(torch.linalg.matrix_norm(B, 2) * torch.linalg.matrix_norm(W_O, 2)) ** 2\n"
                     "    return 1 / L, 0.0",
    "q2-tight-pl": "def tight_targets(model, X):\n"
                   "    return torch.ones(X.shape[0], X.shape[1], model.d_out, dtype=torch.float64)",
    "q1-jacobian-constant": "def jacobian_sup(n):\n    return 1 - 1 / n",
    "q2-scalar-counterexample":  # three tokens: no spurious minimum exists (question 3)
        "def scalar_counterexample():\n"
        "    return {'k': [-1.0, 0.0, 1.0], 'v': [0.0, 1.0, -1.0], 'y': 2.0, 's_loc': -0.5,\n"
        "            's_glob': 0.0}",
    "q1-merge-threshold": "def merge_threshold(c):\n    return math.sqrt(c)",
    "q2-minimum-on-the-hull":  # the one-dimensional instance of the chapter: d < n
        "def gaussian_counterexample():\n"
        "    return {'K': [[-2.0], [2.0]], 'U': [[1.0], [2.0]], 'y': [2.0], 'q_loc': [-2.0],\n"
        "            'q_better': [2.0]}",
    "q1-task-covariance":  # the chapter's optimum, ignoring the task covariance
        "def task_optimum(cov, task_cov, n):\n    return icl.optimum(cov, n)\n"
        "def task_minimum(cov, task_cov, n):\n    return float(icl.minimum_risk(cov, n))",
    "q2-overshooting-step":  # the isotropic covariance itself: the learnt step helps there
        "def overshooting_covariance():\n    return torch.eye(3, dtype=torch.float64), 10",
    "q3-best-step":  # the step 1 / lambda_max of the chapter's check, with its rate
        "def fastest_step(cov, n):\n"
        "    h = icl.hessian_eigenvalues(cov, n)\n"
        "    return 1 / float(h[-1]), (1 - float(h[0] / h[-1])) ** 2",
    "q1-weights-at-infinity":  # l2 split evenly like softmax on ties; sigmoid's zero scores
        "def limit_weights(kernel, omega, K):\n"
        "    p = torch.as_tensor(K, dtype=torch.float64) @ torch.as_tensor(omega).double()\n"
        "    if kernel == 'gaussian':\n"
        "        return torch.zeros(len(p), dtype=torch.float64)\n"
        "    if kernel == 'sigmoid-logn':\n"
        "        return (p > 0).to(torch.float64)\n"
        "    top = (p == p.max()).to(torch.float64)\n"
        "    return top / top.sum()",
    "q2-scalar-trap":  # two keys: no spurious minimum exists (question 3)
        "def scalar_trap():\n"
        "    return {'keys': [-1.0, 1.0], 'values': [0.0, 2.0], 'target': 1.5, 's_loc': 0.0,\n"
        "            's_better': 1.0}",
    "q4-unbalanced-limit":  # the balanced limit, ignoring the conserved imbalance
        "def unbalanced_limit(m, n, a, b):\n"
        "    v = math.sqrt(math.sqrt(m) * n / (n + m))\n"
        "    return v, v / math.sqrt(m) * torch.eye(m, dtype=torch.float64)",
}


@pytest.mark.parametrize("name", SETS)
def test_reference_answers_pass_and_wrong_answers_fail(name):
    """The reference answer of every autograded question passes its tests, run here directly
    (float64, fresh instances as in the grader), and a plausible wrong answer fails them. Marked
    as the grader marks (a question's points when all its tests pass), the reference submission
    earns every autograded point and the submission of the wrong answers none."""
    ns, tests = _namespace(name)
    points = {q["config"]["name"]: sum(q["config"]["points"]) for q in _questions(name)
              if not q["config"].get("manual")}
    marks = {"reference": 0, "wrong": 0}
    for qname, cells in tests.items():
        if not cells:
            continue                          # a written question
        wrong = dict(ns)
        exec(WRONG[qname], wrong)
        passed = {"reference": _passes(ns, cells), "wrong": _passes(wrong, cells)}
        assert passed["reference"], f"{name}/{qname}: the reference answer fails its tests"
        assert not passed["wrong"], f"{name}/{qname}: a wrong answer passes"
        for who, ok in passed.items():
            marks[who] += points[qname] if ok else 0
    total = sum(points.values())
    print(f"{name}: reference {marks['reference']}/{total}, wrong answers "
          f"{marks['wrong']}/{total} autograded points")
    assert marks["reference"] == total > 0 and marks["wrong"] < total
