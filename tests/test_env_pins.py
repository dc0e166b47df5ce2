"""Binder's environment.yml and make's requirements.txt agree on every version they share.

Binder builds from environment.yml, `make env` from requirements.txt: a package pinned in one and
floating (or pinned differently) in the other would let the chapters run against other versions
on Binder than the ones the tests checked.
"""
from __future__ import annotations

import re

import yaml

from conftest import ROOT

#: what a chapter needs at run time on Binder (the rest of requirements.txt builds and tests)
RUNTIME = {"torch", "numpy", "matplotlib", "tqdm", "ipywidgets", "ipykernel", "jupytext"}


def _name(spec: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[=<>!~\[; ]", spec, maxsplit=1)[0]).lower()


def _pins(lines) -> dict[str, str]:
    """name -> the whole requirement, for every requirement line (options and -e skipped)."""
    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        out[_name(line)] = line.replace(" ", "")
    return out


def _environment_pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return _pins(pip)


def _requirement_pins() -> dict[str, str]:
    return _pins((ROOT / "requirements.txt").read_text().splitlines())


def test_every_environment_package_is_pinned_exactly():
    loose = {n: s for n, s in _environment_pins().items() if "==" not in s}
    assert not loose, f"environment.yml has packages without an exact '==' pin: {loose}"


def test_environment_and_requirements_agree():
    env, req = _environment_pins(), _requirement_pins()
    shared = set(env) & set(req)
    differ = {n: (env[n], req[n]) for n in shared if env[n] != req[n]}
    assert not differ, f"environment.yml and requirements.txt pin differently: {differ}"
    missing = RUNTIME - set(env)
    assert not missing, f"environment.yml lacks packages the chapters import: {sorted(missing)}"
    print(f"{len(shared)} shared pins agree: {sorted(shared)}")


def test_binder_renders_myst_in_jupyterlab_4():
    env = _environment_pins()
    assert "jupyterlab-myst" in env, "Binder needs jupyterlab-myst to render theorem boxes"
    lab = env.get("jupyterlab", "")
    assert lab.startswith("jupyterlab==4."), f"jupyterlab-myst 2.x needs JupyterLab 4, got {lab!r}"
    major = int(env["jupyterlab-myst"].split("==")[1].split(".")[0])
    assert major >= 2, "jupyterlab-myst 1.x is for JupyterLab 3"
    # `jupyter labextension list` marks jupyterlab-myst 2.7.0 incompatible with JupyterLab 4.6
    # (it is built against @jupyter/ydoc 3, JupyterLab 4.6 ships 4) and OK with 4.5.11
    if env["jupyterlab-myst"] == "jupyterlab-myst==2.7.0":
        assert int(lab.split("==")[1].split(".")[1]) <= 5, f"{lab} rejects jupyterlab-myst 2.7.0"
