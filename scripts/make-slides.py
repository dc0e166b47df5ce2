"""Make reveal.js slides, one deck per lecture of the course plan (slides/plan.yml).

The slides are written for lecturing, in one short file per lecture, ``slides/lecture-NN.md``,
kept apart from the chapters. Each ``## Title`` starts a slide; a slide holds Markdown (3-5
bullets, the key equation) and at most one of each of these blocks:

    :::{statement} thm-zl-value          the result of the book with this label: its kind, the
    text of the statement, in short     book's number and title are added from the build
    :::
    :::{figure} zero-loss                a figure of the built book: the output of the code cell
    :cell: D_GRID = {                   of the chapter whose source contains this text
    :alt: what the figure shows          (:output: k picks its k-th image, from 0)
    caption
    :::
    :::{notes}                           speaker notes (reveal.js: press s)
    :::

Roles ({prf:ref}, {eq}, {numref}, {doc}, {cite}, {glue:text} with ``chapter::name``) are
resolved to the book's numbers, titles and author-year citations by the converter of
scripts/make-notebooks.py, from the build (``--build``, default _build, after ``make book``) or,
without one, from the numbers recorded in notebooks/build-values.json (then without figures).

Every script the slides need (reveal.js from slides/vendor, MathJax 3 from
sphinx-mathjax-offline) is copied next to them: they work without internet.

Usage: python scripts/make-slides.py [--out DIR] [--build DIR] [LECTURE ...]
"""
from __future__ import annotations

import argparse
import base64
import html
import importlib.util
import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLIDES = ROOT / "slides"
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "_ext"))
import course  # noqa: E402  (the plan and the chapters' results)


def _load_notebooks_module():
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "scripts" / "make-notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


nbgen = _load_notebooks_module()

PLAN = course.load_plan()
#: lecture -> [(chapter, first heading or None, heading that ends it or None)], from the plan
LECTURES = {n: [(p["chapter"], p.get("from"), p.get("to")) for p in lec.get("parts", [])]
            for n, lec in sorted(PLAN["lectures"].items())}

BLOCK = re.compile(r"^:::\{(?P<name>statement|figure|notes)\}\s*(?P<arg>.*?)\s*\n(?P<body>.*?)^:::\s*$",
                   re.M | re.S)
MD_LINK = re.compile(r"\[([^\]]*)\]\((?:https?://[^)\s]*)\)")
#: the page a slide file is read as: {doc}`zero-loss` is a chapter of book/
PAGE = "book/teaching"


@dataclass
class Slide:
    title: str
    body: str = ""                       # Markdown, roles resolved
    statement: tuple | None = None       # (label, heading, Markdown text)
    figure: dict | None = None           # chapter, cell, output, alt, caption
    notes: str = ""
    html: str = ""
    missing: list = field(default_factory=list)


def source_path(number: int) -> Path:
    return SLIDES / f"lecture-{number:02d}.md"


def read_values(build: Path) -> tuple[dict, bool]:
    """Numbers, titles and glued values of the build (True) or, without one, the recorded ones."""
    if (build / ".doctrees" / "environment.pickle").is_file():
        try:
            return nbgen.read_build(build), True
        except FileNotFoundError as err:
            print(f"note: {err}; using notebooks/{nbgen.VALUES}", file=sys.stderr)
    return nbgen.load_values(), False


def _options(body: str) -> tuple[dict, str]:
    opts, rest = {}, []
    for line in body.split("\n"):
        m = re.match(r"^:([\w-]+):\s*(.*)$", line)
        if m and not rest:
            opts[m.group(1)] = m.group(2).strip()
        else:
            rest.append(line)
    return opts, "\n".join(rest).strip()


def parse(number: int, text: str) -> list[Slide]:
    """The slides of a lecture file: each ``## `` heading starts one."""
    slides = []
    chunks = re.split(r"^## +", text, flags=re.M)
    for chunk in chunks[1:]:
        title, _, body = chunk.partition("\n")
        slide = Slide(title.strip())
        for m in BLOCK.finditer(body):
            name, arg = m["name"], m["arg"].strip()
            opts, content = _options(m["body"])
            where = f"{source_path(number).name}, slide {slide.title!r}"
            if name == "statement":
                if slide.statement:
                    raise ValueError(f"{where}: one statement per slide")
                slide.statement = (arg, opts, content)
            elif name == "figure":
                if slide.figure:
                    raise ValueError(f"{where}: at most one figure per slide")
                if not opts.get("cell") or not opts.get("alt"):
                    raise ValueError(f"{where}: a figure needs :cell: (text of the code cell) "
                                     f"and :alt: (what it shows), got {sorted(opts)}")
                slide.figure = {"chapter": arg, "cell": opts["cell"], "alt": opts["alt"],
                                "output": int(opts.get("output", 0)), "caption": content}
            else:
                slide.notes = content
        slide.body = BLOCK.sub("", body).strip()
        slides.append(slide)
    if not slides:
        raise ValueError(f"{source_path(number)}: no slide (each slide starts with '## ')")
    return slides


def resolve(md: str, conv) -> str:
    """Plain Markdown: roles resolved by the notebooks' converter, links to the book dropped
    (a slide shows the number, not a link)."""
    out = conv.convert(md, solutions=False)
    return MD_LINK.sub(lambda m: m.group(1), out)


def statement_heading(label: str, values: dict, results: dict) -> str:
    entry = values.get("labels", {}).get(label)
    if entry is None or not entry.get("number"):
        raise ValueError(f"statement {label!r}: the book has no numbered result with this label "
                         f"(known: {sorted(k for k in values.get('labels', {}) if k in results)})")
    word = entry.get("kind", "").split(":")[-1].title()
    title = results[label].title if label in results else ""
    title = re.sub(r"\s*\(book's formulation\)\s*$", "", title)
    return f"{word} {entry['number']}" + (f" ({title})" if title else "")


def _html_cells(page: Path) -> list[tuple[str, list[bytes]]]:
    """(source, PNG images) of every code cell of a built HTML page."""
    text = page.read_text()
    out = []
    for chunk in re.split(r'<div class="cell docutils container', text)[1:]:
        m = re.search(r'<div class="cell_input.*?<pre>(.*?)</pre>', chunk, re.S)
        source = html.unescape(re.sub(r"<[^>]+>", "", m.group(1))) if m else ""
        images = []
        for src in re.findall(r'<img[^>]+src="([^"]+\.png)"', chunk):
            path = (page.parent / src).resolve()
            if path.is_file():
                images.append(path.read_bytes())
        out.append((source, images))
    return out


def figure_png(fig: dict, build: Path) -> bytes | None:
    """The PNG of the figure's code cell in the built chapter (its HTML page, or else its
    executed notebook); None without a build."""
    page = build / "html" / "book" / f"{fig['chapter']}.html"
    executed = build / "jupyter_execute" / "book" / f"{fig['chapter']}.ipynb"
    if page.is_file():
        cells = [imgs for src, imgs in _html_cells(page) if fig["cell"] in src and imgs]
    elif executed.is_file():
        nb = json.loads(executed.read_text())
        cells = [[base64.b64decode("".join(d) if isinstance(d, list) else d)
                  for o in c.get("outputs", []) if (d := o.get("data", {}).get("image/png"))]
                 for c in nb["cells"]
                 if c["cell_type"] == "code" and fig["cell"] in "".join(c["source"])]
        cells = [imgs for imgs in cells if imgs]
    else:
        return None
    if len(cells) != 1:
        raise ValueError(f"figure of {fig['chapter']} with cell text {fig['cell']!r}: expected one "
                         f"code cell with an image, found {len(cells)}")
    if fig["output"] >= len(cells[0]):
        raise ValueError(f"figure of {fig['chapter']} {fig['cell']!r}: output {fig['output']} "
                         f"asked, the cell has {len(cells[0])} images")
    return cells[0][fig["output"]]


def markdown_html(md: str) -> str:
    from nbconvert.filters.markdown_mistune import markdown2html_mistune
    return markdown2html_mistune(md)


def render_slide(number: int, k: int, slide: Slide, values: dict, results: dict, build: Path,
                 out: Path) -> str:
    conv = nbgen.Converter(PAGE, values, ROOT)
    parts = [f"<h2>{html.escape(slide.title)}</h2>"]
    if slide.statement:
        label, _, text = slide.statement
        head = statement_heading(label, values, results)
        parts.append(f'<div class="statement" data-label="{label}">'
                     + markdown_html(f"**{head}.** " + resolve(text, conv)) + "</div>")
    body = markdown_html(resolve(slide.body, conv)) if slide.body else ""
    if slide.figure:
        fig = slide.figure
        png = figure_png(fig, build)
        caption = resolve(fig["caption"], conv) if fig["caption"] else ""
        if png is None:
            img = f'<p class="no-figure">[figure: run make book, then make slides]</p>'
        else:
            name = f"lecture-{number:02d}-{k:02d}.png"
            (out / "figures").mkdir(exist_ok=True)
            (out / "figures" / name).write_bytes(png)
            img = f'<img src="figures/{name}" alt="{html.escape(fig["alt"], quote=True)}">'
        figure = (f'<figure>{img}' + (f"<figcaption>{markdown_html(caption)}</figcaption>"
                                     if caption else "") + "</figure>")
        parts.append(f'<div class="columns"><div class="text">{body}</div>{figure}</div>')
    else:
        parts.append(body)
    if slide.notes:
        parts.append(f'<aside class="notes">{markdown_html(resolve(slide.notes, conv))}</aside>')
    slide.missing = conv.missing
    slide.html = "\n".join(parts)
    return f'<section data-slide="{k}">\n{slide.html}\n</section>'


STYLE = """
.reveal { font-size: 27px; }
.reveal h1 { font-size: 1.9em; } .reveal h2 { font-size: 1.35em; margin-bottom: 0.4em; }
.reveal h1, .reveal h2 { text-transform: none; }
.reveal .slides section { text-align: left; }
.reveal .slides section.title-slide { text-align: center; }
.reveal ul { display: block; margin-left: 1.1em; } .reveal li { margin: 0.25em 0; }
.reveal p { margin: 0.35em 0; }
.reveal .statement { border-left: 6px solid #3465a4; background: #eef3fa; padding: 0.3em 0.7em;
  margin: 0.3em 0 0.5em 0; }
.reveal .columns { display: flex; gap: 0.8em; align-items: flex-start; }
.reveal .columns .text { flex: 1 1 45%; }
.reveal figure { flex: 1 1 55%; margin: 0; text-align: center; }
.reveal figure img { max-width: 100%; max-height: 430px; margin: 0; }
.reveal figcaption { font-size: 0.62em; color: #444; }
.reveal .no-figure { color: #888; font-style: italic; }
.reveal .subtitle { font-size: 0.8em; color: #444; }
"""


def deck_html(number: int, title: str, sections: list[str], lecture_words: str) -> str:
    head = (f'<section class="title-slide" data-slide="0"><h1>Lecture {number}</h1>'
            f"<h2>{html.escape(title)}</h2>"
            f'<p class="subtitle">{html.escape(lecture_words)}</p></section>')
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Lecture {number}: {html.escape(title)}</title>
<link rel="stylesheet" href="reveal.js/dist/reveal.css">
<link rel="stylesheet" href="reveal.js/dist/theme/white.css">
<style>{STYLE}</style>
<script>
window.MathJax = {{
  tex: {{inlineMath: [['$', '$'], ['\\\\(', '\\\\)']], displayMath: [['$$', '$$'], ['\\\\[', '\\\\]']],
        processEscapes: true, tags: 'none'}},
  chtml: {{fontURL: 'mathjax/output/chtml/fonts/woff-v2'}},
  startup: {{pageReady: () => MathJax.startup.defaultPageReady().then(() => {{
    document.body.dataset.mathjax = 'done'; if (window.Reveal && Reveal.isReady()) Reveal.layout(); }})}}
}};
</script>
<script src="mathjax/tex-chtml.js"></script>
</head>
<body>
<div class="reveal"><div class="slides">
{head}
{chr(10).join(sections)}
</div></div>
<script src="reveal.js/dist/reveal.js"></script>
<script src="reveal.js/plugin/notes/notes.js"></script>
<script>
Reveal.initialize({{controls: true, progress: true, hash: true, slideNumber: "c/t", center: false,
                   transition: "none", width: 1280, height: 720, margin: 0.04,
                   plugins: [RevealNotes]}});
</script>
</body>
</html>
"""


def copy_assets(out: Path):
    shutil.copytree(SLIDES / "vendor" / "reveal.js", out / "reveal.js", dirs_exist_ok=True)
    theme = out / "reveal.js" / "dist" / "theme" / "white.css"
    # the theme imports a web font; the slides use the system's sans-serif instead
    theme.write_text(re.sub(r"@import url\([^)]*\);", "", theme.read_text()))
    spec = importlib.util.find_spec("sphinx-mathjax-offline")  # bundles MathJax 3
    mj = Path(spec.origin).parent / "static" / "mathjax" if spec else Path("?")
    if not (mj / "tex-chtml.js").is_file():
        raise SystemExit(f"MathJax 3 not found in {mj}: install sphinx-mathjax-offline (make env)")
    (out / "mathjax").mkdir(exist_ok=True)
    shutil.copy(mj / "tex-chtml.js", out / "mathjax" / "tex-chtml.js")
    shutil.copytree(mj / "output" / "chtml" / "fonts" / "woff-v2",
                    out / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2", dirs_exist_ok=True)


def build_deck(number: int, build: Path, out: Path, values: dict, results: dict,
               summary: dict) -> tuple[Path, list[Slide]]:
    src = source_path(number)
    if not src.is_file():
        raise FileNotFoundError(f"lecture {number} of slides/plan.yml has no slides: write {src}")
    slides = parse(number, src.read_text())
    sections = [render_slide(number, k, s, values, results, build, out)
                for k, s in enumerate(slides, start=1)]
    title = PLAN["lectures"][number]["title"]
    row = summary[number]
    words = (f"{row['words']:,} words of lecture material in the book"
             + (" + a chapter in preparation" if row["pending"] else ""))
    path = out / f"lecture-{number:02d}.html"
    path.write_text(deck_html(number, title, sections, words), encoding="utf-8")
    return path, slides


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("lectures", nargs="*", type=int, help=f"lectures (default: all of {sorted(LECTURES)})")
    p.add_argument("--out", default=str(ROOT / "_build" / "slides"))
    p.add_argument("--build", default=str(ROOT / "_build"), help="the book's build folder")
    a = p.parse_args(argv)
    for n in a.lectures:
        if n not in LECTURES:
            p.error(f"lecture {n}: expected one of {sorted(LECTURES)}")
    out, build = Path(a.out), Path(a.build)
    out.mkdir(parents=True, exist_ok=True)
    copy_assets(out)
    values, from_build = read_values(build)
    if not from_build:
        print(f"note: no book build in {build}: numbers from notebooks/{nbgen.VALUES}, no figures "
              f"(run make book first)", file=sys.stderr)
    results = {r.label: r for r in course.all_results(ROOT)}
    summary = {row["lecture"]: row for row in course.lecture_summary(PLAN, ROOT)}
    links, missing = [], []
    for n in a.lectures or sorted(LECTURES):
        path, slides = build_deck(n, build, out, values, results, summary)
        missing += [f"lecture {n}, {s.title!r}: {m}" for s in slides for m in s.missing]
        links.append(f'<li><a href="{path.name}">Lecture {n}: '
                     f'{html.escape(PLAN["lectures"][n]["title"])}</a> ({len(slides)} slides)</li>')
        print("wrote", path)
    (out / "index.html").write_text(
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Lecture slides</title>"
        "</head><body><h1>Lecture slides</h1><ul>" + "".join(links) + "</ul></body></html>\n")
    for m in missing:
        print(f"unresolved: {m}", file=sys.stderr)
    return 1 if missing and from_build else 0


if __name__ == "__main__":
    sys.exit(main())
