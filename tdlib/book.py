"""Helpers for the book's pages: glue computed numbers into the prose.

Inside a Jupyter Book build, :func:`glue` stores a value for ``{glue:text}`` roles; in a plain
notebook (Binder, Colab) it does nothing, so the chapters run everywhere.
"""
from __future__ import annotations


def glue(name: str, value, display: bool = False):
    """Store ``value`` under ``name`` for the page's prose and return it."""
    try:
        from myst_nb import glue as _glue
    except ImportError:  # plain Jupyter: nothing to glue into
        return value
    _glue(name, value, display=display)
    return value
