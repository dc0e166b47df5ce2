"""Exercises are numbered per chapter: (position of the chapter in the toc, position in the page)."""
import importlib.util
import types

from conftest import ROOT

spec = importlib.util.spec_from_file_location("exercise_numbers", ROOT / "_ext" / "exercise_numbers.py")
numbers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(numbers)


def _env():
    env = types.SimpleNamespace()
    env.config = types.SimpleNamespace(root_doc="intro")
    env.toctree_includes = {"intro": ["a", "b", "c"]}
    # Sphinx's own numbering counts across the book; "c" has a figure but no exercise
    env.toc_fignumbers = {
        "a": {"exercise": {"ex-a1": (1,), "ex-a2": (2,)}},
        "b": {"exercise": {"ex-b2": (4,), "ex-b1": (3,)}, "figure": {"fig": (1,)}},
        "c": {"figure": {"fig2": (2,)}},
    }
    return env


def test_renumber_per_chapter():
    env = _env()
    changed = numbers.renumber(None, env)
    assert sorted(changed) == ["a", "b"]
    assert env.toc_fignumbers["a"]["exercise"] == {"ex-a1": (1, 1), "ex-a2": (1, 2)}
    assert env.toc_fignumbers["b"]["exercise"] == {"ex-b1": (2, 1), "ex-b2": (2, 2)}
    assert env.toc_fignumbers["b"]["figure"] == {"fig": (1,)}, "other numbers are left alone"
    assert numbers.renumber(None, env) == [], "a second pass changes nothing"


def test_extension_is_loaded_by_the_book():
    import yaml

    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert "exercise_numbers" in cfg["sphinx"]["local_extensions"]
