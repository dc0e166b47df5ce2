"""Publishing: the GitHub Actions workflow and the one setting every outside link follows.

The workflow cannot run here, so its structure is checked: it parses, tests on every push and pull
request, builds the PDF and keeps it as an artefact, and on main deploys _build/html (with the
PDF) to GitHub Pages with the standard actions and the permissions they need.
"""
from __future__ import annotations

import importlib.util
import re
import sys

import pytest
import yaml

from conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


@pytest.fixture(scope="module")
def workflow() -> dict:
    data = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 reads the key `on` as the boolean True
    if True in data:
        data["on"] = data.pop(True)
    return data


def _uses(job: dict) -> list[str]:
    return [s["uses"] for s in job.get("steps", []) if "uses" in s]


def _runs(job: dict) -> str:
    return "\n".join(s.get("run", "") for s in job.get("steps", []))


def _action(job: dict, name: str) -> dict:
    steps = [s for s in job["steps"] if s.get("uses", "").split("@")[0] == name]
    assert steps, f"no step uses {name}"
    return steps[0]


def test_every_step_is_well_formed(workflow):
    assert set(workflow["jobs"]) >= {"test", "build", "deploy"}
    for name, job in workflow["jobs"].items():
        assert "runs-on" in job, f"job {name} has no runs-on"
        assert job.get("steps"), f"job {name} has no steps"
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), f"{name}: a step needs uses or run: {step}"
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@v\d+", step["uses"]), step["uses"]
        for need in job.get("needs", []) if isinstance(job.get("needs"), list) else [job.get("needs")]:
            assert need is None or need in workflow["jobs"], f"{name} needs unknown job {need}"


def test_tests_run_on_every_push_and_pull_request(workflow):
    on = workflow["on"]
    assert "push" in on and "pull_request" in on
    for event in ("push", "pull_request"):
        assert not (on[event] or {}).get("branches"), f"{event} must not be limited to branches"
    test = workflow["jobs"]["test"]
    assert _action(test, "actions/checkout") and _action(test, "actions/setup-python")
    assert "bash .ci/run" in _runs(test), "the workflow must run the same tests as .ci/run"
    assert "deploy" not in _runs(test)


def test_pdf_is_built_kept_and_put_on_the_site(workflow):
    build = workflow["jobs"]["build"]
    runs = _runs(build)
    assert "make tex" in runs and "make pdf" in runs and "make book" in runs
    assert runs.index("make pdf") < runs.index("make book"), \
        "the HTML build must come after the PDF, which it copies into the site"
    artefact = _action(build, "actions/upload-artifact")
    assert artefact["with"]["path"] == "_build/latex/book.pdf"
    pages = _action(build, "actions/upload-pages-artifact")
    assert pages["with"]["path"] == "_build/html"
    assert "refs/heads/main" in pages.get("if", ""), "only main publishes the site"


def test_main_deploys_to_pages_with_the_needed_permissions(workflow):
    deploy = workflow["jobs"]["deploy"]
    assert "refs/heads/main" in deploy["if"] and "push" in deploy["if"]
    needs = deploy["needs"] if isinstance(deploy["needs"], list) else [deploy["needs"]]
    assert set(needs) >= {"test", "build"}, "deploy only what passed the tests"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert _action(deploy, "actions/deploy-pages")
    assert workflow["permissions"] == {"contents": "read"}, "least privilege outside deploy"


def test_make_targets_the_workflow_calls_exist():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("env", "book", "test", "tex", "pdf", "notebooks", "chromium"):
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no target {target}"


def test_one_setting_drives_every_outside_link():
    """repository.url gives the Colab clone, the site address, and the Binder/issue buttons."""
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "scripts" / "make-notebooks.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    url = config["repository"]["url"].rstrip("/")
    owner, name = url.split("/")[-2:]
    assert gen.repository()[0] == url
    assert gen.site_url() == f"https://{owner.lower()}.github.io/{name}/"
    assert url in gen.colab_cell_source(*gen.repository(), "book/x")
    html = config["html"]
    assert html["use_repository_button"] and html["use_issues_button"]
    # no other file may name a repository of its own
    others = []
    for path in [ROOT / "README.md", ROOT / "postBuild", ROOT / "environment.yml", WORKFLOW,
                 ROOT / "_ext" / "book_site.py", ROOT / "scripts" / "make-notebooks.py"]:
        others += [f"{path.name}: {m}" for m in re.findall(r"github\.com/[\w.-]+/[\w.-]+", path.read_text())
                   if m.rstrip(".") not in (url.removeprefix("https://"), "github.com/OWNER/REPO")]
    assert not others, f"repository addresses outside _config.yml: {others}"


def test_site_address_rejects_a_non_github_setting(tmp_path):
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "scripts" / "make-notebooks.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    (tmp_path / "_config.yml").write_text("repository:\n  url: https://example.org/x\n")
    with pytest.raises(ValueError, match="repository.url"):
        gen.site_url(tmp_path)
