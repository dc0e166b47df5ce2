"""The course: the lecture plan of ``slides/plan.yml`` and the book's list of results.

Read by ``scripts/make-slides.py`` (one deck per lecture), by the tests, and by Sphinx as a small
extension with two directives:

* ``{lecture-plan}`` (in ``book/teaching.md``): a table of the lectures, with the sections of
  the chapters each one covers, its words of lecture material and its numbered results, and the
  long proofs left to reading. The words are counted from the chapter sources at build time.
* ``{list-of-results}`` (in ``book/results.md``): every theorem, lemma, proposition and
  corollary of the chapters with its number (the book's, read from the build), title, chapter,
  the check cell that follows it in the chapter and the tests that check it (``slides/plan.yml``,
  key ``checks``).

*Words of lecture material* are the words (whitespace-separated tokens, math included) of the
Markdown of the sections a lecture covers: code cells and their outputs, directive options,
targets and comments are not counted, nor the proofs the plan marks as reading. A section runs
from its heading to the next heading of the same or a higher level.

    python _ext/course.py          # the plan: words and results per lecture
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "slides" / "plan.yml"

#: the kinds of numbered results listed on the results page
RESULT_KINDS = ("theorem", "lemma", "proposition", "corollary")
#: a proof longer than this (in words) is reading, not lecture, unless the plan says otherwise
LONG_PROOF = 400

FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|:{3,})(?:\{(?P<name>[^}\s]+)\})?\s*(?P<arg>.*)$")
HEADING = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<title>.*?)\s*$")


@dataclass
class Result:
    """A numbered result of a chapter (``prf:theorem`` etc.) and its proof in the source."""
    label: str
    kind: str
    title: str
    chapter: str
    section: str
    line: int
    proof_words: int = 0
    check_cell: str = ""      # first line of the first code cell after the result and its proof
    check_section: str = ""


@dataclass
class Block:
    """A stretch of a chapter's Markdown: its words, the section it is in, and the proof (the
    label of the result it proves) when it is part of one."""
    words: int
    section: tuple[str, ...]
    proof_of: str | None = None


@dataclass
class Chapter:
    name: str
    headings: list[tuple[int, str, int]] = field(default_factory=list)  # (level, title, line)
    blocks: list[Block] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)


def _plain_heading(title: str) -> str:
    return title.strip()


def read_chapter(name: str, root: Path = ROOT) -> Chapter:
    """Parse ``book/<name>.md``: headings, words per stretch of Markdown, results and proofs."""
    path = root / "book" / f"{name}.md"
    if not path.is_file():
        raise FileNotFoundError(f"the plan names chapter {name!r}, but {path} does not exist")
    lines = path.read_text().split("\n")
    ch = Chapter(name)
    # skip the front matter
    i = 0
    if lines and lines[0].strip() == "---":
        i = next(k for k in range(1, len(lines)) if lines[k].strip() == "---") + 1
    # the names under which the chapter imports the library: tdlib, th, ce, query, ...
    aliases = {"tdlib"}
    for line in lines:
        m = re.match(r"^\s*from tdlib import (.*)$", line)
        if m:
            for item in m.group(1).split(","):
                aliases.add(item.split(" as ")[-1].strip())
        m = re.match(r"^\s*import tdlib\.(\w+)(?: as (\w+))?", line)
        if m:
            aliases.add(m.group(2) or "tdlib")
    stack: list[tuple[str, str | None, str]] = []   # (fence, directive name, label)
    path_titles: list[tuple[int, str]] = []
    last_result: Result | None = None
    pending_check: list[Result] = []
    in_code = None
    while i < len(lines):
        line = lines[i]
        m = FENCE.match(line)
        if in_code is not None:
            if line.strip() == in_code:
                in_code = None
            i += 1
            continue
        if m and m["name"] == "code-cell":
            in_code = m["fence"]
            # the first code cell after a result and its proof is its check cell; it is named
            # by the first call of a library function in it (or its first line)
            end = next((k for k in range(i + 1, len(lines)) if lines[k].strip() == m["fence"]),
                       len(lines))
            body = [l for l in lines[i + 1:end] if l.strip() and not l.startswith(("---", ":"))
                    and not re.match(r"^\s*(tags|mystnb|#)", l)]
            calls = []
            for c in re.findall(r"\b([A-Za-z_]\w*(?:\.\w+)+)\(", "\n".join(body)):
                if c.split(".")[0] in aliases and c not in calls and "book." not in c:
                    calls.append(c)
            for r in pending_check:
                r.check_cell = ", ".join(calls[:2]) if calls else "closed-form code"
                r.check_section = path_titles[-1][1] if path_titles else ch.name
            pending_check = []
            i += 1
            continue
        if m and not m["name"]:
            if stack and line.strip() == stack[-1][0]:
                stack.pop()
            else:  # a plain code block in the prose: not lecture words either
                in_code = m["fence"]
            i += 1
            continue
        if m and m["name"]:
            name = m["name"]
            label = ""
            k = i + 1
            while k < len(lines) and re.match(r"^\s*:[\w-]+:", lines[k]):
                lm = re.match(r"^\s*:label:\s*(\S+)", lines[k])
                if lm:
                    label = lm.group(1)
                k += 1
            kind = name.split(":", 1)[1] if name.startswith("prf:") else ""
            if kind in RESULT_KINDS and label:
                last_result = Result(label, kind, m["arg"].strip(), name_of(ch),
                                     path_titles[-1][1] if path_titles else ch.name, i + 1)
                ch.results.append(last_result)
                pending_check = [r for r in pending_check if r is not last_result] + [last_result]
            proof_of = None
            if name == "prf:proof" and last_result is not None:
                proof_of = last_result.label
            stack.append((m["fence"], name, proof_of or ""))
            words = len(m["arg"].split())
            if words:
                ch.blocks.append(Block(words, tuple(t for _, t in path_titles), _proof(stack)))
            i = k
            continue
        h = HEADING.match(line)
        if h and not stack:
            level = len(h["hashes"])
            title = _plain_heading(h["title"])
            while path_titles and path_titles[-1][0] >= level:
                path_titles.pop()
            path_titles.append((level, title))
            ch.headings.append((level, title, i + 1))
            i += 1
            continue
        if re.match(r"^\s*\([^)\s]+\)=\s*$", line) or re.match(r"^\s*%", line) or line.strip() == "+++":
            i += 1
            continue
        words = len(line.split())
        if words:
            ch.blocks.append(Block(words, tuple(t for _, t in path_titles), _proof(stack)))
            if ch.blocks[-1].proof_of:
                r = next(r for r in ch.results if r.label == ch.blocks[-1].proof_of)
                r.proof_words += words
        i += 1
    return ch


def name_of(ch: Chapter) -> str:
    return ch.name


def _proof(stack) -> str | None:
    for _, name, proof_of in reversed(stack):
        if proof_of:
            return proof_of
    return None


# --------------------------------------------------------------------------- the plan

def load_plan(path: Path = PLAN) -> dict:
    """The plan: ``lectures`` (number -> title, parts, reading) and ``checks`` (label -> tests)."""
    plan = yaml.safe_load(Path(path).read_text())
    lectures = plan.get("lectures")
    if not isinstance(lectures, dict) or not lectures:
        raise ValueError(f"{path}: expected a mapping 'lectures' of lecture number -> lecture")
    for n, lec in lectures.items():
        if not isinstance(n, int) or not isinstance(lec, dict) or "title" not in lec:
            raise ValueError(f"{path}: lecture {n!r} needs a number and a title")
        for part in lec.get("parts", []):
            if "chapter" not in part:
                raise ValueError(f"{path}: lecture {n}: a part without 'chapter': {part}")
    return plan


def _section_range(ch: Chapter, start: str | None, stop: str | None) -> tuple[int, int]:
    """Line range [first, last) of the chapter from heading ``start`` (None: the beginning) to
    heading ``stop`` (None: the end). Headings are matched by their beginning."""
    def find(title, after=0):
        for level, t, line in ch.headings:
            if line > after and t.startswith(title):
                return line
        raise ValueError(f"{ch.name}: no heading starting with {title!r}; headings: "
                         f"{[t for _, t, _ in ch.headings]}")
    first = find(start) if start else 0
    last = find(stop, first) if stop else 10 ** 9
    return first, last


def span_text(part: dict) -> str:
    """The sections of a part, in words: "the whole chapter", "from “A” up to “B”", ..."""
    start, stop = part.get("from"), part.get("to")
    to_end = stop in (None, "Exercises")
    if not start and to_end:
        return "the whole chapter"
    if not start:
        return f"from the start up to “{stop}”"
    return f"from “{start}” to the end" if to_end else f"from “{start}” up to “{stop}”"


def lecture_blocks(lec: dict, root: Path = ROOT, chapters: dict | None = None):
    """(chapter, blocks, results) of each part of a lecture."""
    chapters = {} if chapters is None else chapters
    out = []
    for part in lec.get("parts", []):
        name = part["chapter"]
        if part.get("pending") and not (root / "book" / f"{name}.md").is_file():
            continue   # not in the book yet: counted once its file exists
        if name not in chapters:
            chapters[name] = read_chapter(name, root)
        ch = chapters[name]
        first, last = _section_range(ch, part.get("from"), part.get("to"))
        titles = {t for _, t, line in ch.headings if first <= line < last}
        skipped = set(lec.get("reading_sections", []))
        blocks = [b for b in ch.blocks if b.section and b.section[-1] in titles
                  and not skipped.intersection(b.section)]
        results = [r for r in ch.results if first <= r.line < last]
        out.append((ch, blocks, results))
    return out


def reading(lec: dict, chapters_results: list[Result]) -> list[str]:
    """Labels whose proofs are reading, not lecture: those the plan names and every proof
    longer than LONG_PROOF words (unless the plan keeps it in the lecture)."""
    named = list(lec.get("reading", []))
    keep = set(lec.get("lecture", []))
    for r in chapters_results:
        if r.proof_words > LONG_PROOF and r.label not in named and r.label not in keep:
            named.append(r.label)
    return named


def lecture_summary(plan: dict, root: Path = ROOT) -> list[dict]:
    """Per lecture: number, title, words of lecture material, results, proofs for reading."""
    chapters: dict = {}
    rows = []
    for n, lec in sorted(plan["lectures"].items()):
        parts = lecture_blocks(lec, root, chapters)
        results = [r for _, _, rs in parts for r in rs]
        read = reading(lec, results)
        words = sum(b.words for _, blocks, _ in parts for b in blocks if b.proof_of not in read)
        read_words = sum(b.words for _, blocks, _ in parts for b in blocks
                         if b.proof_of and b.proof_of in read)
        pending = [p["chapter"] for p in lec.get("parts", []) if p.get("pending")
                   and not (root / "book" / f"{p['chapter']}.md").is_file()]
        rows.append({"lecture": n, "title": lec["title"], "words": words, "pending": pending,
                     "reading_words": read_words, "results": [r.label for r in results],
                     "reading": read, "parts": lec.get("parts", [])})
    return rows


def all_results(root: Path = ROOT) -> list[Result]:
    """Every numbered result of the chapters of _toc.yml, in reading order."""
    import sys
    sys.path.insert(0, str(root / "scripts"))
    from booktoc import toc_pages

    out = []
    for page in toc_pages(root):
        src = root / f"{page}.md"
        if page.startswith("book/") and src.is_file():
            out += read_chapter(page.split("/", 1)[1], root).results
    return out


# --------------------------------------------------------------------------- Sphinx

try:
    from docutils import nodes
    from docutils.parsers.rst import Directive
except ImportError:  # the plan and the counts need no docutils
    nodes = Directive = None

if nodes is not None:
    class plan_table(nodes.General, nodes.Element):
        """Placeholder for the plan's table, filled in once the numbers are known."""

    class results_table(nodes.General, nodes.Element):
        """Placeholder for the list of results, filled in once the numbers are known."""


def setup(app):
    from sphinx.util import logging

    log = logging.getLogger(__name__)

    def _math_marker():
        """The tables are filled in after reading and may hold math (section titles); a math
        node inside the placeholder tells the math domain so, and the page loads MathJax."""
        return nodes.math("", "")

    class LecturePlan(Directive):
        has_content = False

        def run(self):
            env = self.state.document.settings.env
            env.note_dependency(str(PLAN))
            for part in {p["chapter"] for lec in load_plan()["lectures"].values()
                         for p in lec.get("parts", [])}:
                env.note_dependency(str(ROOT / "book" / f"{part}.md"))
            return [plan_table("", _math_marker())]

    class ListOfResults(Directive):
        has_content = False

        def run(self):
            env = self.state.document.settings.env
            env.note_dependency(str(PLAN))
            return [results_table("", _math_marker())]

    app.add_node(plan_table)
    app.add_node(results_table)
    app.add_directive("lecture-plan", LecturePlan)
    app.add_directive("list-of-results", ListOfResults)

    def _numbers(env) -> dict:
        numbers = {}
        for doc, kinds in env.toc_fignumbers.items():
            for kind, ids in kinds.items():
                for node_id, number in ids.items():
                    numbers[(doc, node_id)] = ".".join(map(str, number))
        return numbers

    def _inline(text):
        """Text with its $...$ parts as math nodes (a section title such as 'Training $W^V$')."""
        out = []
        for k, piece in enumerate(re.split(r"\$([^$]+)\$", text)):
            if piece:
                out.append(nodes.math(piece, piece) if k % 2 else nodes.Text(piece))
        return out

    def _ref(builder, fromdoc, doc, anchor, text):
        ref = nodes.reference("", "", internal=True)
        ref["refuri"] = builder.get_relative_uri(fromdoc, doc) + (f"#{anchor}" if anchor else "")
        ref += _inline(text)
        return ref

    def _table(headers, widths):
        table = nodes.table()
        tgroup = nodes.tgroup(cols=len(headers))
        table += tgroup
        for w in widths:
            tgroup += nodes.colspec(colwidth=w)
        head = nodes.thead()
        row = nodes.row()
        for h in headers:
            entry = nodes.entry()
            entry += nodes.paragraph(text=h)
            row += entry
        head += row
        tgroup += head
        body = nodes.tbody()
        tgroup += body
        return table, body

    def _row(body, cells):
        row = nodes.row()
        for c in cells:
            entry = nodes.entry()
            para = nodes.paragraph()
            for piece in (c if isinstance(c, list) else [c]):
                if isinstance(piece, nodes.Node):
                    para += piece
                else:
                    para += _inline(str(piece))
            entry += para
            row += entry
        body += row

    def _result_entry(env, builder, fromdoc, label, numbers):
        info = getattr(env, "proof_list", {}).get(label)
        if info is None:
            return None
        doc = info["docname"]
        node_id = (info.get("ids") or [label])[0]
        number = numbers.get((doc, node_id), "")
        word = info.get("realtype", info.get("type", "")).title()
        return doc, node_id, f"{word} {number}".strip()

    section_ids: dict = {}

    def _section_id(env, doc, title):
        """The anchor of the section of ``doc`` with this title ('' if none)."""
        if doc not in section_ids:
            ids = {}
            for sec in env.get_doctree(doc).findall(nodes.section):
                if sec.children and sec["ids"]:
                    ids.setdefault(sec.children[0].astext(), sec["ids"][0])
            section_ids[doc] = ids
        plain = re.sub(r"\$([^$]*)\$", r"\1", title)
        return section_ids[doc].get(title) or section_ids[doc].get(plain, "")

    def resolve(app, doctree, fromdoc):
        env, builder = app.env, app.builder
        numbers = _numbers(env)
        plan = load_plan()
        results = {r.label: r for r in all_results()}
        checks = plan.get("checks", {}) or {}
        for node in doctree.findall(plan_table):
            table, body = _table(["Lecture", "Sections", "Words", "Results",
                                  "Reading, not lecture"], [5, 40, 8, 25, 22])
            for row in lecture_summary(plan):
                sections = []
                for part in row["parts"]:
                    doc = f"book/{part['chapter']}"
                    if part["chapter"] in row["pending"]:
                        sections += _inline(("; " if sections else "") + part.get(
                            "note", f"the chapter “{part['chapter']}” (in preparation)"))
                        continue
                    title = env.titles[doc].astext() if doc in env.titles else part["chapter"]
                    if sections:
                        sections.append(nodes.Text("; "))
                    sections.append(_ref(builder, fromdoc, doc, "", title))
                    sections += _inline(": " + (part.get("note") or span_text(part)))
                res, read = [], []
                for labels, out in ((row["results"], res), (row["reading"], read)):
                    for label in labels:
                        e = _result_entry(env, builder, fromdoc, label, numbers)
                        if e is None:
                            log.warning(f"lecture plan: no result {label!r}", location=node)
                            continue
                        if out:
                            out.append(nodes.Text(", "))
                        out.append(_ref(builder, fromdoc, e[0], e[1], e[2] if out is res
                                        else f"proof of {e[2]}"))
                words = ("counted when the chapter is in the book" if row["pending"]
                         and not row["words"] else f"{row['words']:,}")
                _row(body, [str(row["lecture"]) + ". " + row["title"], sections or ["—"],
                            words, res or ["—"], read or ["—"]])
            node.replace_self(table)
        for node in doctree.findall(results_table):
            table, body = _table(["Result", "Chapter", "Checked by"], [34, 26, 40])
            listed = 0
            proofs = getattr(env, "proof_list", {})
            order = [label for label in results if label in proofs]
            order += sorted(label for label in proofs if label not in results)
            for label in order:
                info = proofs[label]
                if info.get("realtype", info.get("type")) not in RESULT_KINDS:
                    continue
                e = _result_entry(env, builder, fromdoc, label, numbers)
                r = results.get(label)
                doc = e[0]
                chapter = env.titles[doc].astext() if doc in env.titles else doc
                check = []
                if r and r.check_cell:
                    check.append(nodes.Text("the cell after it in “"))
                    check.append(_ref(builder, fromdoc, doc, _section_id(env, doc, r.check_section),
                                      r.check_section))
                    check.append(nodes.Text("” ("))
                    if r.check_cell == "closed-form code":
                        check.append(nodes.Text(r.check_cell))
                    else:
                        check.append(nodes.literal(text=r.check_cell))
                    check.append(nodes.Text(")"))
                for test in checks.get(label, []):
                    check.append(nodes.Text("; " if check else ""))
                    check.append(nodes.literal(text=test.removeprefix("tests/")))
                if not check:
                    log.warning(f"list of results: nothing checks {label!r}", location=node)
                title = r.title if r else ""
                _row(body, [[_ref(builder, fromdoc, doc, e[1], e[2]),
                             *_inline(f" ({title})" if title else "")],
                            [_ref(builder, fromdoc, doc, "", chapter)], check or ["—"]])
                listed += 1
            node.replace_self(table)

    app.connect("doctree-resolved", resolve)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    for row in lecture_summary(load_plan()):
        print(f"{row['lecture']:2d}  {row['words']:5d} words  {len(row['results']):2d} results  "
              f"reading {row['reading_words']:5d} words {row['reading']}  {row['title']}")
