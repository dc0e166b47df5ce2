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
* **Colab.** Colab opens only ``.ipynb`` files: the Colab launch button of every chapter points to
  the notebook generated from the chapter by ``scripts/make-notebooks.py`` (folder ``notebooks/``).
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"

#: Where the generated notebooks live, relative to the repository root.
NOTEBOOK_DIR = "notebooks"


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


def _colab_to_ipynb(app, pagename, templatename, context, doctree):
    """Point the Colab launch button at the generated notebook of the page."""
    root = Path(app.confdir)
    target = f"{NOTEBOOK_DIR}/{notebook_name(pagename)}"
    for button in context.get("header_buttons", []) or []:
        for sub in button.get("buttons", []) or []:
            if sub.get("text") == "Colab" and "/blob/" in sub.get("url", ""):
                head = sub["url"].split("/blob/")[0]
                branch = sub["url"].split("/blob/")[1].split("/")[0]
                if (root / target).exists():
                    sub["url"] = f"{head}/blob/{branch}/{target}"
                    sub["tooltip"] = "Open the notebook of this page in Colab"


def setup(app):
    app.connect("builder-inited", _add_static)
    app.add_js_file("mathjax2-bridge.js", loading_method="defer", priority=900)
    app.add_css_file("book.css", priority=900)
    app.connect("html-page-context", _colab_to_ipynb, priority=900)
    app.connect("html-page-context", _dedupe_scripts, priority=990)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
