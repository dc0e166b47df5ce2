"""Every internal link of the built site resolves: each ``href`` and ``src`` of every HTML page
(the chapters, the index, search and proof-index pages) that points inside the site names a file
that exists, and its ``#anchor`` names an element of that page. The check reads the files of the
session's build (no server, no request at all); links to other sites are counted, not followed.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest

pytestmark = pytest.mark.slow

EXTERNAL = ("http:", "https:", "mailto:", "javascript:", "data:", "tel:")


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.refs: list[tuple[str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if a.get(key):
                self.ids.add(a[key])
        for key in ("href", "src"):
            if a.get(key) is not None and not (tag == "link" and a.get("rel") in ("preconnect",)):
                self.refs.append((tag, a[key]))


def _parse(path: Path, cache: dict) -> _Refs:
    if path not in cache:
        p = _Refs()
        p.feed(path.read_text(errors="replace"))
        cache[path] = p
    return cache[path]


def broken_links(site: Path) -> tuple[list[str], int, int]:
    """(problems, internal links checked, external links seen) for the HTML site in ``site``."""
    cache: dict = {}
    problems, internal, external = [], 0, 0
    for page in sorted(site.rglob("*.html")):
        rel = page.relative_to(site).as_posix()
        if rel.startswith(("_static/", "_sources/")):
            continue
        base = f"http://site/{rel}"
        for tag, ref in _parse(page, cache).refs:
            ref = ref.strip()
            if not ref or ref.startswith(EXTERNAL) or ref.startswith("//"):
                external += bool(ref)
                continue
            internal += 1
            url = urlparse(urljoin(base, ref))
            target = site / unquote(url.path).lstrip("/")
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{rel}: <{tag}> {ref} -> missing {target.relative_to(site)}")
                continue
            if url.fragment and target.suffix == ".html":
                if unquote(url.fragment) not in _parse(target, cache).ids:
                    problems.append(f"{rel}: <{tag}> {ref} -> no anchor #{url.fragment}")
    return problems, internal, external


def test_internal_links_resolve(built_site):
    problems, internal, external = broken_links(built_site)
    print(f"{internal} internal links checked, {len(problems)} broken; "
          f"{external} links to other sites not followed")
    assert internal > 100, f"only {internal} internal links found: is the site built?"
    assert not problems, f"{len(problems)} broken internal links:\n  " + "\n  ".join(problems[:40])
