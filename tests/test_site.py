"""Site metadata and house rules that can be read from the sources, without building the book.

* CITATION.cff is valid YAML with the keys the Citation File Format requires;
* one version everywhere: pyproject.toml, tdlib.__version__, CITATION.cff, the changelog and
  the site footer;
* a real author line, a licence page and file, a how-to-cite page, all in the table of contents;
* one proof style: in every chapter the first proof is open and every later proof sits in a
  ``{dropdown}`` (collapsed);
* one meaning per symbol: the notation page against the chapters;
* visible chapter code is short: no line longer than 88 characters and no cell longer than 25
  lines, unless its input is hidden (``hide-input``, ``remove-input``, ``remove-cell``).
"""
from __future__ import annotations

import importlib
import inspect
import re
import tomllib

import pytest
import yaml

from conftest import ROOT, source_of, toc_files

CHAPTERS = [p for p in toc_files() if source_of(p).suffix == ".md"]


def _text(page: str) -> str:
    return source_of(page).read_text()


def _prose(text: str) -> str:
    """The text outside code cells."""
    return re.sub(r"```\{code-cell\}.*?\n```", "", text, flags=re.S)


def _math(text: str) -> list[str]:
    """Every math segment ($...$ and $$...$$) outside code cells."""
    prose = _prose(text)
    out = re.findall(r"\$\$(.+?)\$\$", prose, flags=re.S)
    prose = re.sub(r"\$\$(.+?)\$\$", " ", prose, flags=re.S)
    out += re.findall(r"\$([^$\n]+)\$", prose)
    return out


# ------------------------------------------------------------------------------ citation, version
def test_citation_cff_is_valid():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    for key in ("cff-version", "message", "title", "authors", "version", "license",
                "date-released"):
        assert key in cff, f"CITATION.cff: missing required key {key!r}"
    assert str(cff["cff-version"]).startswith("1.2"), cff["cff-version"]
    assert cff["authors"] and all("name" in a or "family-names" in a for a in cff["authors"])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(cff["date-released"]))
    for ref in cff.get("references", []):
        assert {"type", "title", "authors"} <= set(ref), ref


def test_one_version_everywhere():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    import tdlib

    assert tdlib.__version__ == version
    assert str(yaml.safe_load((ROOT / "CITATION.cff").read_text())["version"]) == version
    footer = yaml.safe_load((ROOT / "_config.yml").read_text())["html"]["extra_footer"]
    assert f"Version {version}" in footer, footer
    first = re.search(r"^## (\S+)", (ROOT / "book" / "changelog.md").read_text(), flags=re.M)
    assert first and first.group(1) == version, "the changelog's newest entry is not the version"
    assert f"version = {{{version}}}" in (ROOT / "book" / "cite.md").read_text()


def test_author_licence_and_cite_pages():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["author"] and "authors of this book" not in config["author"].lower()
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "CC BY 4.0" in (ROOT / "LICENSE").read_text()
    pages = toc_files()
    for page in ("book/license", "book/cite", "book/changelog"):
        assert page in pages, f"{page} is not in _toc.yml"
    cite = (ROOT / "book" / "cite.md").read_text()
    assert "@software" in cite and "song2024unraveling" in cite


# ------------------------------------------------------------------------------ proof style
def _proofs(text: str):
    """(line number, inside a dropdown?) for every prf:proof of a chapter."""
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines):
        if re.match(r"^[`:]{3,}\{prf:proof\}", line):
            k = i - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            out.append((i + 1, bool(re.match(r"^[`:]{4,}\{dropdown\} Proof", lines[k]))))
    return out


@pytest.mark.parametrize("page", CHAPTERS)
def test_one_proof_style(page):
    """The first proof of a chapter is open; every later proof is collapsed, wrapped as
    ````{dropdown} Proof of the theorem / lemma / proposition ... ````."""
    proofs = _proofs(_text(page))
    if not proofs:
        pytest.skip("no proofs")
    line, collapsed = proofs[0]
    assert not collapsed, f"{page}:{line}: the first proof of a chapter stays open"
    wrong = [line for line, collapsed in proofs[1:] if not collapsed]
    assert not wrong, (f"{page}: proofs after the first must sit in a '{{dropdown}} Proof of ...' "
                       f"directly around the prf:proof (lines {wrong})")


# ------------------------------------------------------------------------------ symbols
# Meanings the book retired so that each symbol keeps one (see the notation page): each pattern
# is a use of a symbol in its old second meaning, searched in the math of every chapter.
RETIRED = {
    r"\\(alpha|beta)_[a-z]|\\operatorname\{diag\}\(\\(alpha|beta)":
        "alpha/beta are the rate constant and gradient bound; Gaussian weights are phi/psi",
    r"(?<![\\a-zA-Z])q_k(?![a-zA-Z])|_\{[a-z]?k\}|_\{kj\}|\\sum_\{k=1\}":
        "k_j is a key vector; the query token index is \\ell",
    r"\\in B\b|^B = \\\{|\\\|W - W_0\\\|_F \\le R\\\}\$? ?and":
        "B is the feature matrix; balls are \\mathbb B",
    r"\\mathcal N\(0, y\^2\)|^y = 0\.|y\^2\\chi":
        "y is a target; the target scale is \\tau",
    r"^L = \d+$": "L is a smoothness constant, not a count of blocks",
    r"\\pi_\{?T\b|f_\{T/[24]\}|\\log\(f_\{T":
        "T(X) is the layer output; a run's step budget is t_max",
    r"F\(a, ?b\)|\\delta\[r\]|\(a, ?b\) \\in \[":
        "landscape coordinates are zeta_1, zeta_2 (a_j is a Gaussian weight); a row of a "
        "direction is delta_row (r is a radius)",
    r"\\xi_i|\\kappa_i": "kappa, xi_0, xi_1 are the tail-shape numbers; the joint theorem's norm "
        "bounds are Gamma_i, Omega_i",
    r"\\sigma'|\\sigma\(\\theta|\\sigma\(\\chi":
        "sigma is a singular value; the sigmoid is written \\operatorname{sigmoid}",
    r"\\theta = w|\\theta_0 \\ge|e\^\{\\theta": "theta is all the weights; the two-key logit "
        "difference is chi",
    r"(?<!\\mathcal )(?<![\\a-zA-Z])E_(0|t|\{t)":
        "E is the Softmax numerator; e^{chi_t} is \\mathcal E_t",
    r"\\Delta u|\\Delta_t": "Delta is the simplex; a value difference is u_12",
    r"(?<![\\a-zA-Z_])a = \\eta|a\\,e\^\{a|ae\^\{a|(?<![\\a-zA-Z_])a e\^\{-s\}":
        "a_j is a Gaussian weight, not a constant of a rate",
    r"t = e\^\{-s\}|\\max_t t": "t is a step index",
    r"(?<![\\a-zA-Z])e = q_|\\\|e\\\|": "e is Euler's number; a difference vector is varepsilon",
    r"(?<![\\a-zA-Z])h\(p\)": "h is a head index; the loss on the simplex is g_Delta",
    r"S_\{i\\ell\} = \\\{": "S is an attention matrix; sublevel sets are \\mathcal L",
    r"(?<![\\a-zA-Z])q\^t|q\^\{2s\}|q = \\sqrt\{1 -": "q is a query; a contraction factor is varrho",
    r"(?<!underline)\\mu = \\lambda_0|(?<![\\a-zA-Z])\\mu = \\sigma_\{\\mathbf X\}":
        "mu(theta) is the feature PL constant; the joint theorem's is underline-mu, the "
        "query-only one mu_Q",
}


@pytest.mark.parametrize("page", CHAPTERS)
def test_retired_meanings_are_gone(page):
    bad = []
    for seg in _math(_text(page)):
        for pattern, why in RETIRED.items():
            if re.search(pattern, seg.strip()):
                bad.append(f"${seg.strip()[:60]}$ ({why})")
    assert not bad, f"{page}: symbols used in a retired meaning:\n  " + "\n  ".join(bad)


def _notation_rows():
    """(symbols cell, meaning, code cell, see cell) of every table row of the notation page."""
    rows = []
    for line in (ROOT / "book" / "notation.md").read_text().splitlines():
        if line.startswith("| $"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows.append(cells)
    return rows


def _symbols(cell: str) -> list[str]:
    return [s.strip() for s in re.findall(r"\$([^$]+)\$", cell)]


def test_notation_rows_are_used_in_the_chapters():
    """Every symbol of the notation table appears in the math of some chapter (no stale rows)."""
    corpus = "\n".join(" ".join(_math(_text(p))) for p in CHAPTERS if p != "book/notation")
    def squash(s):  # spacing and braces around one-letter arguments do not matter
        return re.sub(r"\{(\w)\}", r"\1", re.sub(r"\s+", "", s))

    corpus = squash(corpus)
    missing = []
    for cells in _notation_rows():
        for sym in _symbols(cells[0]):
            # symbols the table writes as a pattern (a ratio, a function of theta) are skipped
            if any(t in sym for t in ("\\lVert", "(\\theta^*", "(s)")):
                continue
            if squash(sym) not in corpus:
                missing.append(sym)
    assert not missing, f"symbols of the notation page that no chapter uses: {missing}"


def test_no_symbol_has_two_rows_with_different_meanings():
    """A symbol may appear in two rows only when the later row says it keeps the earlier role."""
    seen = {}
    clashes = []
    for cells in _notation_rows():
        for sym in _symbols(cells[0]):
            if sym in seen and "role" not in cells[1]:
                clashes.append(f"${sym}$: '{seen[sym][:50]}' and '{cells[1][:50]}'")
            seen.setdefault(sym, cells[1])
    assert not clashes, "one symbol, two meanings on the notation page:\n  " + "\n  ".join(clashes)


ALIASES = {"th": "tdlib.zeroloss", "jt": "tdlib.joint", "ce": "tdlib.counterexample",
           "query": "tdlib.query", "zoo": "tdlib.zoo", "icl": "tdlib.icl",
           "experiments": "tdlib.experiments", "landscape": "tdlib.landscape", "tdlib": "tdlib"}
# argument names that stand for a specific object: they must match the parameter's name
TYPED = {"model", "X", "Y", "W_O", "W_Q", "B"}


def test_notation_code_column_matches_tdlib():
    """Every `alias.name(...)` of the code column exists, and its arguments fit the signature
    (e.g. a function of ``W_O`` is not documented as taking ``model``)."""
    problems = []
    for cells in _notation_rows():
        for code in re.findall(r"`([^`]+)`", cells[2]):
            for m in re.finditer(r"\b(\w+)\.(\w+)(?:\(([^()]*)\))?", code):
                alias, name, args = m.groups()
                if alias not in ALIASES:
                    continue
                obj = getattr(importlib.import_module(ALIASES[alias]), name, None)
                if obj is None:
                    problems.append(f"{alias}.{name} does not exist")
                    continue
                if args is None or not callable(obj):
                    continue
                params = list(inspect.signature(obj).parameters)
                given = [a.strip() for a in args.split(",") if a.strip()]
                if len(given) > len(params):
                    problems.append(f"{code}: {len(given)} arguments, signature {params}")
                for a, p in zip(given, params):
                    if a in TYPED and a != p:
                        problems.append(f"{code}: argument {a!r} where the function takes {p!r}")
    assert not problems, "notation page vs tdlib:\n  " + "\n  ".join(problems)


# ------------------------------------------------------------------------------ short visible code
MAX_CODE_LINE, MAX_CELL_LINES = 88, 25
HIDDEN_INPUT = ("hide-input", "remove-input", "remove-cell")


def visible_code_cells(text: str):
    """``(line number, body lines)`` of every ``{code-cell}`` whose input a reader sees."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(`{3,})\{code-cell\}", lines[i])
        if not m:
            i += 1
            continue
        fence, start, options, body = m.group(1), i + 1, [], []
        i += 1
        if i < len(lines) and lines[i].strip() == "---":  # YAML options block
            i += 1
            while i < len(lines) and lines[i].strip() != "---":
                options.append(lines[i])
                i += 1
            i += 1
        while i < len(lines) and lines[i].startswith(":"):  # short options
            options.append(lines[i])
            i += 1
        while i < len(lines) and lines[i].rstrip() != fence:
            body.append(lines[i])
            i += 1
        i += 1
        while body and not body[-1].strip():
            body.pop()
        if not any(tag in " ".join(options) for tag in HIDDEN_INPUT):
            yield start, body


def test_cell_reader_sees_options_and_bodies():
    text = ("```{code-cell} ipython3\nx = 1\ny = 2\n```\n\n"
            "```{code-cell} ipython3\n---\ntags: [remove-input]\n---\nz = 3\n```\n"
            "```{code-cell} ipython3\n:tags: [hide-input]\nw = 4\n```\n")
    assert list(visible_code_cells(text)) == [(1, ["x = 1", "y = 2"])]


@pytest.mark.parametrize("page", CHAPTERS)
def test_visible_code_is_short(page):
    """A reader sees short code: lines that fit the column and cells that fit a screen."""
    problems = []
    for start, body in visible_code_cells(_text(page)):
        if len(body) > MAX_CELL_LINES:
            problems.append(f"cell at line {start}: {len(body)} lines > {MAX_CELL_LINES}")
        for k, line in enumerate(body):
            if len(line) > MAX_CODE_LINE:
                problems.append(f"line {start + 1 + k}: {len(line)} characters > {MAX_CODE_LINE}")
    assert not problems, f"{page}: " + "; ".join(problems)


# ------------------------------------------------------------------------------ exercise outputs

# What a self-check prints on success (the current neutral word, the old praise) and the value a
# check used to return (a notebook echoes it as a stray ``True``).
_SUCCESS = re.compile(r"\bwell done\b|^\s*correct\s*$|^\s*True\s*$", re.I | re.M)


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def exercise_output_problems(html_dir) -> tuple[list[str], int, int]:
    """Visible outputs under the exercises of the built chapters that show a success message or
    the solution's formula (a ``return`` expression of the solution code). An output belongs to
    an exercise from the exercise box to the next one; outputs inside a solution dropdown do not
    count (the reader opens it on purpose). Returns (problems, exercises seen, formulas seen)."""
    from pathlib import Path

    from bs4 import BeautifulSoup

    problems, n_exercises, n_formulas = [], 0, 0
    for page in CHAPTERS:
        soup = BeautifulSoup((Path(html_dir) / f"{page}.html").read_text(), "html.parser")
        formulas: dict[str, list[str]] = {}
        for sol in soup.select("div.solution"):
            link = sol.select_one("p.admonition-title a[href^='#']")
            if link is None:
                continue
            code = "\n".join(pre.get_text() for pre in sol.select("div.cell_input pre"))
            found = [_squash(m) for m in re.findall(r"^\s*return (.+)$", code, flags=re.M)]
            formulas.setdefault(link["href"][1:], []).extend(f for f in found if len(f) >= 4)
        for ex in soup.select("div.exercise"):
            n_exercises += 1
            mine = formulas.get(ex.get("id"), [])
            n_formulas += len(mine)
            for el in ex.find_all_next("div"):
                classes = el.get("class", [])
                if "exercise" in classes:
                    break
                if "cell_output" not in classes or el.find_parent("div", class_="solution"):
                    continue
                text = el.get_text("\n")
                where = f"{page} #{ex.get('id')}"
                if _SUCCESS.search(text):
                    problems.append(f"{where}: success message {_SUCCESS.search(text).group(0)!r}")
                problems += [f"{where}: the solution's formula {f!r} is shown"
                             for f in mine if f in _squash(text)]
    return problems, n_exercises, n_formulas


def test_exercise_output_scan_finds_what_it_looks_for(tmp_path):
    """The scan flags a success message and a formula under an exercise, not inside a solution."""
    import shutil

    page = "book/zero-loss" if "book/zero-loss" in CHAPTERS else CHAPTERS[-1]
    html = ('<div class="exercise admonition" id="ex-a"><p>Find it.</p></div>'
            '<div class="solution dropdown admonition"><p class="admonition-title">'
            '<a href="#ex-a">Solution</a></p><div class="cell_input"><pre>def f(a, L):\n'
            '    return 2 / (a + L)\n</pre></div><div class="cell_output">correct</div></div>'
            '<div class="cell_output"><pre>{}</pre></div>')
    for shown, flagged in (("correct\n", 1), ("True\n", 1), ("factor at 2/(a+L)\n", 1),
                           ("a plot\n", 0)):
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        for other in CHAPTERS:
            (tmp_path / f"{other}.html").parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / f"{other}.html").write_text("<p>nothing</p>")
        (tmp_path / f"{page}.html").write_text(html.format(shown))
        problems, n_ex, n_f = exercise_output_problems(tmp_path)
        assert (len(problems), n_ex, n_f) == (flagged, 1, 1), (shown, problems)
        shutil.rmtree(tmp_path / "book", ignore_errors=True)


@pytest.mark.slow
@pytest.mark.book
def test_exercise_outputs_give_nothing_away(request):
    """In the built book no visible output under an exercise shows a success message, an echoed
    ``True`` or its solution's formula (BOOK_HTML=<folder> reuses an existing build)."""
    import os

    if os.environ.get("BOOK_HTML"):
        html_dir = os.environ["BOOK_HTML"]
    else:
        html_dir = request.getfixturevalue("built_site")
    from tdlib import selfcheck

    problems, n_exercises, n_formulas = exercise_output_problems(html_dir)
    assert n_exercises == len(selfcheck.EXERCISES), (n_exercises, len(selfcheck.EXERCISES))
    assert n_formulas >= 10, f"only {n_formulas} solution formulas found: is the scan broken?"
    assert not problems, "\n".join(problems)


def test_binder_opens_the_generated_notebook():
    """Binder's launch URL is re-pointed at notebooks/<chapter>.ipynb (solutions apart), unless
    _config.yml chooses the MyST route for authors; a wrong setting is refused by name."""
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("book_site", ROOT / "_ext" / "book_site.py")
    site = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(site)
    url = "https://mybinder.org/v2/gh/o/r/main?urlpath=lab/tree/book/zero-loss.md"
    assert site.binder_url(url, "notebooks/zero-loss.ipynb") == \
        "https://mybinder.org/v2/gh/o/r/main?urlpath=lab/tree/notebooks/zero-loss.ipynb"
    assert site.binder_url("https://mybinder.org/v2/gh/o/r/main", "x.ipynb") == \
        "https://mybinder.org/v2/gh/o/r/main"
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["sphinx"]["config"]["book_binder_source"] == "notebooks"
    assert "notebook_interface" in config["launch_buttons"]
    for page in CHAPTERS:
        if page.startswith("book/") and "{code-cell}" in _text(page):
            context = {"header_buttons": [{"buttons": [
                {"text": "Binder", "url": url.replace("zero-loss", page.split("/")[-1])}]}]}
            app = SimpleNamespace(confdir=str(ROOT),
                                  config=SimpleNamespace(book_binder_source="notebooks"))
            site._launch_to_ipynb(app, page, None, context, None)
            target = f"notebooks/{page.split('/')[-1]}.ipynb"
            got = context["header_buttons"][0]["buttons"][0]["url"]
            assert got.endswith(target) == (ROOT / target).exists(), (page, got)
    with pytest.raises(ValueError, match="book_binder_source"):
        site._check_binder_source(None, SimpleNamespace(book_binder_source="md"))
