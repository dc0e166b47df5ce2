"""Make reveal.js slides for the lectures of book/teaching.md from the chapters themselves.

Each lecture is a list of chapter ranges (from one section heading to another). The slides take
the executed notebooks of the last `make book` (_build/jupyter_execute/book/*.ipynb, with their
figures and glued numbers) or, without a build, the chapter sources (no outputs). MyST markup that
plain Markdown cannot show is simplified: theorem boxes become bold paragraphs, proofs and
dropdowns are left to the book, roles become plain text, glued numbers are filled in.

Every script the slides need (reveal.js from slides/vendor, RequireJS from _ext/static, MathJax 3
from sphinx-mathjax-offline) is copied next to them: they work without internet.

Usage: python scripts/make-slides.py [--out DIR] [LECTURE ...]    (default: _build/slides)
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent

# lecture -> [(chapter, first heading (None: the start), heading that ends it (None: the end))]
LECTURES = {
    1: [("setup-and-notation", None, "Exercises")],
    2: [("zero-loss", None, "Exercises")],
    3: [("joint-training", None, "Exercises")],
    4: [("softmax-local-minimum", None, "The certificate")],
    5: [("softmax-local-minimum", "The certificate", "Exercises"),
        ("gaussian-convergence", None, "The theorem")],
    6: [("gaussian-convergence", "The theorem", "Exercises"),
        ("kernels-side-by-side", None, "Exercises")],
    7: [("experiments", None, "Exercises")],
}
THEOREM_KINDS = {"prf:theorem": "Theorem", "prf:lemma": "Lemma", "prf:proposition": "Proposition",
                 "prf:definition": "Definition", "prf:corollary": "Corollary", "prf:remark": "Remark"}
DROPPED = {"prf:proof": "*Proof: in the book.*", "dropdown": "*Details: in the book.*"}
FENCE = re.compile(r"^(`{3,}|:{3,})\{([\w:-]+)\}\s*(.*)$")


def _glue_text(glued: dict, name: str) -> str:
    key, _, fmt = name.partition(":")
    out = glued.get(key)
    if out is None:
        return f"[{key}]"
    text = out.get("data", {}).get("text/plain", "")
    if fmt:
        try:
            return format(float(text), fmt)
        except ValueError:
            pass
    return text.strip("'\"")


def simplify(md: str, glued: dict) -> str:
    """Plain Markdown from a MyST cell: directives, roles, labels and glued numbers."""
    out, stack = [], []  # stack of (closing fence, kind)
    for line in md.split("\n"):
        m = FENCE.match(line)
        if m:
            fence, name, arg = m.groups()
            if name == "admonition" and arg.lower().startswith("proof"):
                name = "dropdown"  # a collapsed proof
            stack.append((fence, name))
            if name in THEOREM_KINDS and not any(k in DROPPED for _, k in stack[:-1]):
                out.append(f"**{THEOREM_KINDS[name]}{f' ({arg})' if arg else ''}.**")
            elif name in DROPPED and not any(k in DROPPED for _, k in stack[:-1]):
                out.append(DROPPED[name])
            elif name == "admonition" and arg:
                out.append(f"**{arg}.**")
            continue
        if stack and line.strip() == stack[-1][0]:
            stack.pop()
            continue
        if any(k in DROPPED for _, k in stack):
            continue
        if stack and re.match(r"^:[\w-]+:", line):  # directive options
            continue
        if re.match(r"^\(\S+\)=\s*$", line):  # MyST targets
            continue
        out.append(line)
    text = "\n".join(out)
    text = re.sub(r"\$\$\s*\(([\w:-]+)\)", "$$", text)  # labelled display math
    text = re.sub(r"\{glue:text\}`([^`]+)`", lambda m: _glue_text(glued, m.group(1)), text)
    text = re.sub(r"\{eq\}`([^`]+)`", r"(\1)", text)
    text = re.sub(r"\{cite\}`([^`]+)`", lambda m: "[" + m.group(1).replace(",", ", ") + "]", text)
    text = re.sub(r"\{(?:prf:ref|ref|numref|doc)\}`([^`]+)`", r"*\1*", text)
    return text


def source(chapter: str, build: Path):
    executed = build / "jupyter_execute" / "book" / f"{chapter}.ipynb"
    glue_file = executed.with_suffix(".glue.json")
    if executed.is_file():
        nb = nbformat.read(executed, as_version=4)
    else:
        nb = jupytext.read(ROOT / "book" / f"{chapter}.md")
    glued = json.loads(glue_file.read_text()) if glue_file.is_file() else {}
    return nb, glued, executed.is_file()


def _heading(cell):
    if cell.cell_type != "markdown":
        return None
    first = cell.source.lstrip().split("\n", 1)[0]
    m = re.match(r"^(#{1,3})\s+(.*)$", first)
    return (len(m.group(1)), m.group(2)) if m else None


def split_at_headings(cells):
    """Markdown cells cut before every heading (outside fences), so each section starts a cell."""
    out = []
    for cell in cells:
        if cell.cell_type != "markdown":
            out.append(cell)
            continue
        chunks, fence = [[]], None
        for line in cell.source.split("\n"):
            m = re.match(r"^(`{3,}|:{3,})", line)
            if m and fence is None:
                fence = m.group(1)
            elif fence is not None and line.strip() == fence:
                fence = None
            elif fence is None and re.match(r"^#{1,3}\s", line) and any(l.strip() for l in chunks[-1]):
                chunks.append([])
            chunks[-1].append(line)
        for chunk in chunks:
            part = copy.deepcopy(cell)
            part.source = "\n".join(chunk).strip("\n")
            out.append(part)
    return out


def section(nb, start, stop):
    cells, inside = [], start is None
    for cell in split_at_headings(nb.cells):
        h = _heading(cell)
        if h and stop and h[1].startswith(stop) and inside and cells:
            break
        if h and start and h[1].startswith(start):
            inside = True
        if inside:
            cells.append(cell)
    if not cells:
        raise ValueError(f"no cells between {start!r} and {stop!r}")
    return cells


def keep_output(out) -> bool:
    if "scrapbook" in out.get("metadata", {}):
        return False  # a glued value, shown in the prose
    data = out.get("data", {})
    return not (out.get("output_type") in ("display_data", "execute_result")
                and "application/vnd.jupyter.widget-view+json" in data and "image/png" not in data)


def deck(number: int, build: Path) -> nbformat.NotebookNode:
    nb_out = nbformat.v4.new_notebook()
    nb_out.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    titles = []
    for chapter, start, stop in LECTURES[number]:
        nb, glued, executed = source(chapter, build)
        if not executed:
            print(f"note: {chapter} has no executed notebook in {build}; run `make book` for figures",
                  file=sys.stderr)
        for cell in section(nb, start, stop):
            cell = copy.deepcopy(cell)
            tags = set(cell.metadata.get("tags", []))
            if cell.cell_type == "markdown":
                h = _heading(cell)
                cell.source = simplify(cell.source, glued)
                slide = "slide" if h and h[0] <= 2 else "subslide"
                if h and h[0] == 1:
                    titles.append(h[1])
            elif cell.cell_type == "code":
                if "remove-cell" in tags:
                    continue
                cell.outputs = [o for o in cell.get("outputs", []) if keep_output(o)]
                if {"remove-input", "hide-input"} & tags:
                    cell.metadata["transient"] = {"remove_source": True}
                    cell.source = "" if not cell.outputs else cell.source
                    if not cell.outputs:
                        continue
                slide = "-"
            else:
                continue
            cell.metadata["slideshow"] = {"slide_type": slide}
            cell["id"] = f"cell-{len(nb_out.cells)}"
            nb_out.cells.append(cell)
    nb_out.metadata["title"] = f"Lecture {number}: " + "; ".join(titles or ["continued"])
    return nb_out


def copy_assets(out: Path):
    shutil.copytree(ROOT / "slides" / "vendor" / "reveal.js", out / "reveal.js", dirs_exist_ok=True)
    theme = out / "reveal.js" / "dist" / "theme" / "white.css"
    # the theme imports a web font; the slides use the system's sans-serif instead
    theme.write_text(re.sub(r"@import url\([^)]*\);", "", theme.read_text()))
    shutil.copy(ROOT / "_ext" / "static" / "widgets" / "require.js", out / "require.js")
    import importlib.util

    spec = importlib.util.find_spec("sphinx-mathjax-offline")  # bundles MathJax 3
    mj = Path(spec.origin).parent / "static" / "mathjax" if spec else Path("?")
    if not (mj / "tex-chtml.js").is_file():
        raise SystemExit(f"MathJax 3 not found in {mj}: install sphinx-mathjax-offline (make env)")
    (out / "mathjax").mkdir(exist_ok=True)
    shutil.copy(mj / "tex-chtml.js", out / "mathjax" / "tex-chtml.js")
    shutil.copytree(mj / "output" / "chtml" / "fonts" / "woff-v2",
                    out / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2", dirs_exist_ok=True)


def main(argv=None) -> int:
    from nbconvert import SlidesExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("lectures", nargs="*", type=int, help=f"lectures (default: all of {sorted(LECTURES)})")
    p.add_argument("--out", default=str(ROOT / "_build" / "slides"))
    p.add_argument("--build", default=str(ROOT / "_build"), help="the book's build folder")
    a = p.parse_args(argv)
    for n in a.lectures:
        if n not in LECTURES:
            p.error(f"lecture {n}: expected one of {sorted(LECTURES)}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    copy_assets(out)
    exporter = SlidesExporter(extra_template_basedirs=[str(ROOT / "slides" / "template")],
                              template_name="book-slides", reveal_scroll=True,
                              reveal_url_prefix="reveal.js", reveal_theme="white")
    exporter.register_preprocessor(TagRemovePreprocessor(
        remove_input_tags={"remove-input", "hide-input"}, remove_cell_tags={"remove-cell"},
        remove_all_outputs_tags={"remove-output"}), enabled=True)
    links = []
    for n in a.lectures or sorted(LECTURES):
        nb = deck(n, Path(a.build))
        html, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": f"lecture-{n}"}})
        path = out / f"lecture-{n}.html"
        path.write_text(html, encoding="utf-8")
        links.append(f'<li><a href="{path.name}">{nb.metadata["title"]}</a></li>')
        print("wrote", path)
    (out / "index.html").write_text(
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Lecture slides</title>"
        "</head><body><h1>Lecture slides</h1><ul>" + "".join(links) + "</ul></body></html>\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
