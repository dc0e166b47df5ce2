"""A small local Sphinx extension: how the rendered book behaves for readers.

* **Offline widgets.** Pages whose notebooks hold ipywidgets state load RequireJS and the
  ipywidgets HTML manager from copies bundled in ``_ext/static/widgets`` (taken unchanged from the
  npm packages ``requirejs`` 2.3.8 and ``@jupyter-widgets/html-manager`` 1.0.15), never from a
  CDN, so the static figure inside an interactive cell shows on a laptop without internet and on
  the published site alike. The script list is ``nb_ipywidgets_js`` in ``_config.yml``; this
  extension only adds ``_ext/static`` to the static files.
* **MathJax 3 and ipywidgets 8.** The widget manager typesets labels through the MathJax 2 call
  ``MathJax.Hub.Queue``; ``mathjax2-bridge.js`` forwards it to MathJax 3's ``typesetPromise``.
* **No duplicate scripts.** sphinx-thebe 0.3.1 registers its inline configuration twice under
  Sphinx 7.4 (a page error: "Identifier 'THEBE_JS_URL' has already been declared"); identical
  script entries are dropped per page.
* **Reading.** ``book.css`` makes a wide display equation or table scroll inside its own box
  instead of widening the page (on a phone) and keeps figures within the column.
* **Sliders without a kernel.** The build sets ``TDLIB_STATIC_WIDGETS=1`` for the kernels it
  starts: ``tdlib.widgets.explorer`` then precomputes the frames of each interactive figure and
  links its controls to them in the browser (see ``tdlib/widgets.py``).
* **Colab and Binder.** Colab opens only ``.ipynb`` files: the Colab launch button of every
  chapter points to the notebook generated from the chapter by ``scripts/make-notebooks.py``
  (folder ``notebooks/``), whose solutions are in a separate notebook, so "Run all" never runs
  them. The Binder button opens the same notebook in JupyterLab. Authors who want Binder to open
  the MyST source instead (every cell, solutions included, as ordinary cells, rendered by
  jupyterlab-myst) set ``book_binder_source: myst`` under ``sphinx.config`` in ``_config.yml``;
  the default is ``notebooks``.
* **The PDF.** When ``make pdf`` has left ``<build>/latex/book.pdf`` next to the HTML folder, the
  HTML build copies it to the site's root and the download menu of every page offers it (in place
  of the theme's "print this page" button). Without a PDF the menu is left as it is, so the site
  never links a missing file.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"

#: Where the generated notebooks live, relative to the repository root.
NOTEBOOK_DIR = "notebooks"

#: The PDF of ``make pdf`` (Jupyter Book's ``latex_documents.targetname``), and its name on the site.
PDF_NAME = "book.pdf"


def notebook_name(pagename: str) -> str:
    """``book/setup-and-notation`` -> ``setup-and-notation.ipynb`` (one flat folder)."""
    return pagename.split("/")[-1] + ".ipynb"


def _add_static(app):
    app.config.html_static_path.append(str(STATIC))


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        # inline scripts are registered with filename None or "" - the same script either way
        attrs = getattr(js, "attributes", {}) or {}
        key = (getattr(js, "filename", str(js)) or "", tuple(sorted((k, str(v)) for k, v in attrs.items())))
        if key in seen:
            continue
        seen.add(key)
        unique.append(js)
    scripts[:] = unique


#: What the Binder button opens: the generated notebook (``notebooks``) or the MyST source (``myst``).
BINDER_SOURCES = ("notebooks", "myst")


def binder_url(url: str, target: str) -> str:
    """A Binder launch URL (``...?urlpath=lab/tree/<path>``) re-pointed at ``target``, a path of
    the repository; the URL unchanged when it has no ``urlpath`` of that form."""
    head, sep, query = url.partition("?")
    params = query.split("&") if sep else []
    for k, p in enumerate(params):
        key, _, value = p.partition("=")
        if key == "urlpath" and "/tree/" in value:
            params[k] = f"urlpath={value.split('/tree/', 1)[0]}/tree/{target}"
            return head + "?" + "&".join(params)
    return url


def _launch_to_ipynb(app, pagename, templatename, context, doctree):
    """Point the Colab (and, unless ``book_binder_source`` is ``myst``, the Binder) launch button
    at the generated notebook of the page."""
    root = Path(app.confdir)
    target = f"{NOTEBOOK_DIR}/{notebook_name(pagename)}"
    if not (root / target).exists():
        return
    for button in context.get("header_buttons", []) or []:
        for sub in button.get("buttons", []) or []:
            if sub.get("text") == "Colab" and "/blob/" in sub.get("url", ""):
                head = sub["url"].split("/blob/")[0]
                branch = sub["url"].split("/blob/")[1].split("/")[0]
                sub["url"] = f"{head}/blob/{branch}/{target}"
                sub["tooltip"] = "Open the notebook of this page in Colab"
            elif sub.get("text") == "Binder" and app.config.book_binder_source == "notebooks":
                sub["url"] = binder_url(sub.get("url", ""), target)
                sub["tooltip"] = "Open the notebook of this page on Binder"


def _check_binder_source(app, config):
    if config.book_binder_source not in BINDER_SOURCES:
        raise ValueError(f"book_binder_source in _config.yml: expected one of {BINDER_SOURCES}, "
                         f"got {config.book_binder_source!r}")


def pdf_source(outdir) -> Path:
    """Where ``make pdf`` leaves the PDF for an HTML build into ``outdir``: ``<build>/latex``."""
    return Path(outdir).parent / "latex" / PDF_NAME


def add_pdf_button(header_buttons: list, url: str) -> bool:
    """Offer the book's PDF in the page's download menu; False if the page has no such menu."""
    for group in header_buttons:
        if group.get("label") == "download-buttons":
            buttons = [b for b in group.get("buttons", []) if b.get("label") != "download-pdf-button"]
            buttons.append({"type": "link", "url": url, "text": "book.pdf",
                            "tooltip": "Download the whole book as a PDF",
                            "icon": "fas fa-file-pdf", "label": "download-book-pdf-button"})
            group["buttons"] = buttons
            return True
    return False


def _pdf_link(app, pagename, templatename, context, doctree):
    if app.builder.format == "html" and pdf_source(app.outdir).is_file():
        add_pdf_button(context.get("header_buttons") or [], context["pathto"](PDF_NAME, 1))


def _copy_pdf(app, exception):
    if exception is None and app.builder.format == "html" and pdf_source(app.outdir).is_file():
        shutil.copy2(pdf_source(app.outdir), Path(app.outdir) / PDF_NAME)


def _pdf_stamp(app, config):
    """A config value that changes with the PDF, so that every page is written again (with or
    without the PDF link) when ``make pdf`` has made a new PDF or it is gone."""
    pdf = pdf_source(app.outdir)
    config.book_pdf_stamp = f"{pdf.stat().st_size}-{pdf.stat().st_mtime_ns}" if pdf.is_file() else ""


def setup(app):
    app.add_config_value("book_pdf_stamp", "", "env")
    app.add_config_value("book_binder_source", "notebooks", "html")
    app.connect("config-inited", _check_binder_source)
    app.connect("config-inited", _pdf_stamp)
    # inherited by the kernels that execute the chapters (not by a reader's kernel)
    os.environ.setdefault("TDLIB_STATIC_WIDGETS", "1")
    app.connect("builder-inited", _add_static)
    app.add_js_file("mathjax2-bridge.js", loading_method="defer", priority=900)
    app.add_css_file("book.css", priority=900)
    app.connect("html-page-context", _launch_to_ipynb, priority=900)
    app.connect("html-page-context", _pdf_link, priority=900)
    app.connect("html-page-context", _dedupe_scripts, priority=990)
    app.connect("build-finished", _copy_pdf)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
