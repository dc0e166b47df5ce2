"""Hypothesis strategies for bad input, shared by the tests of every module.

A function inherits the discipline by being listed in ``tests/test_bad_input.py`` with one valid
call and the *kind* of each argument; this module says, per kind, what a careless or
adversarial caller may pass instead:

* numbers: NaN and infinities, zero and negative values where a positive one is expected,
  booleans (``True`` is not the number 1 here), strings, ``None``, lists, complex numbers;
* counts and seeds: zero, negative, non-integer and boolean counts, seeds of ``2^63`` and more;
* arrays: ``None``, strings, boolean arrays, arrays holding NaN or an infinity, empty arrays,
  arrays of another rank or last axis;
* names and mappings: unknown kernel names, empty or malformed lists, dicts with unknown keys.

:func:`check_refused` runs one spoiled call and asserts the house rule: an exception of the
expected types whose message names the argument and says what was expected. Everything else
(a result, or an error from deep inside torch or NumPy) fails.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Tuple

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

BAD = settings(max_examples=40, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow,
                                      HealthCheck.function_scoped_fixture])

NON_NUMBERS = [None, "1", [1.0], True, False, 1 + 1j]
NON_FINITE = [math.nan, math.inf, -math.inf, np.float64("nan")]

# -- generated families (drawn besides the fixed lists above) ---------------------------------
negative_numbers = st.floats(max_value=-1e-300, allow_nan=False, allow_infinity=False)
non_integral = st.floats(allow_nan=False, allow_infinity=False).filter(
    lambda v: v != int(v) if math.isfinite(v) else True)
huge_seeds = st.integers(min_value=2**63, max_value=2**80)
negative_ints = st.integers(max_value=-1, min_value=-2**70)
junk_text = st.text(max_size=4)


def _kind(*values, also=None) -> Callable:
    """A kind whose bad values are the fixed ``values`` and, if given, draws of ``also``."""
    fixed = st.sampled_from(list(values))
    return lambda valid: fixed if also is None else st.one_of(fixed, also)


KINDS: Dict[str, Callable] = {
    # a positive finite number (a step size, a scale, a tolerance)
    "positive": _kind(*NON_NUMBERS, *NON_FINITE, 0.0, -1.0, -1e-300, also=negative_numbers),
    # a finite number >= 0
    "nonneg": _kind(*NON_NUMBERS, *NON_FINITE, -1.0, -1e-300, also=negative_numbers),
    # any finite real (a query, a start, a target)
    "real": _kind(*NON_NUMBERS, *NON_FINITE),
    # an integer >= 1 (a count, a dimension)
    "count": _kind(None, "3", True, 0, -1, 1.5, math.nan, 2.0,
                   also=st.one_of(negative_ints, non_integral)),
    # an integer >= 0 (a number of steps)
    "count0": _kind(None, "3", True, False, -1, 1.5, math.nan,
                    also=st.one_of(negative_ints, non_integral)),
    # a seed: an integer in [0, 2^63)
    "seed": _kind(None, "0", True, -1, 1.5, 2**63, 2**64, math.nan,
                  also=st.one_of(huge_seeds, negative_ints)),
    # a start step: an integer >= 0 or a fraction in [0, 1) of the run
    "start": _kind("3", True, -1, 1.5, -0.5, math.nan, math.inf,
                   also=st.floats(min_value=1.0, allow_nan=False, allow_infinity=False).filter(
                       lambda v: v != int(v))),
    # a kernel name
    "kernel": _kind("nope", "", 3, None, "Softmax"),
    # a name from a fixed list (a task, a quantity): unknown names and non-strings
    "choice": _kind("nope", "", 3, None, True, also=junk_text.filter(lambda s: s != "")),
    # a string (a glue name, a command): non-strings and the empty string
    "text": _kind(None, 3, 1.5, True, ["a"], ""),
    # a non-empty sequence of seeds
    "seeds": _kind([], [-1], [1.5], [True], [2**63], None, "abc", 3),
    # a non-empty sequence of counts (dimensions)
    "counts": _kind([], [0], [-2], [1.5], [True], None, "ab", 3),
    # a non-empty sequence of kernel names
    "kernels": _kind([], ["nope"], None, "softmax", 3),
    # a dict {H: [D, ...]} of dimensions
    "grid": _kind({}, {0: [2]}, {1: []}, {1: [0]}, {1: [1.5]}, {True: [2]}, [2], None),
    # a folder or file name
    "path": _kind(None, 3, 1.5, "", ["a"]),
    # a non-empty list of positive numbers
    "positives": _kind([], [0.0], [-1.0], [math.nan], [True], None, "ab", 3),
    # a model of the wrong type
    "model": _kind(None, "model", 3, torch.zeros(2)),
    # a function of the wrong type
    "function": _kind(None, 3, "f", [1.0]),
    # a boolean flag: numbers and strings are not flags
    "flag": _kind(None, 1, 0, "yes", 1.5),
}


def mapping_kind(valid, unknown=False) -> st.SearchStrategy:
    """Bad versions of a valid dict: not a dict, a missing key, a bad value and, with
    ``unknown`` (a dict of fixed keys, such as options), a key it does not know."""
    out = [None, [], "abc", 3]
    if isinstance(valid, dict) and valid:
        keys = list(valid)
        out.append({k: v for k, v in valid.items() if k != keys[0]})
        out.append({**valid, keys[0]: math.nan})
        if unknown:
            out.append({**valid, "no_such_key": 1})
    return st.sampled_from(out)


KINDS["mapping"] = mapping_kind                                        # extra keys allowed
KINDS["options"] = lambda v: mapping_kind(v, unknown=True)             # fixed keys


def array_variants(valid, nonfinite=True, shape=False, dtype=True) -> st.SearchStrategy:
    """Bad versions of a valid array: not numbers, empty, with NaN or Inf entries
    (``nonfinite``), of another rank or last axis (``shape``: for arguments of one fixed
    shape, not batches), boolean or complex entries (``dtype``)."""
    t = torch.as_tensor(np.asarray(valid, dtype=float))
    out = [None, "abc", [["a"]]]
    if dtype:
        out += [np.array([[True]]), t.to(torch.complex128) if t.numel() else np.array([1j])]
    if t.numel() and nonfinite:
        for v in (math.nan, math.inf, -math.inf):
            b = t.clone().reshape(-1)
            b[b.numel() // 2] = v
            out.append(b.reshape(t.shape))
    out.append(t[:0] if t.ndim else torch.zeros(0))
    if shape:
        out.append(t.unsqueeze(0).unsqueeze(0) if t.ndim else torch.zeros(2, 2, 2))
        if t.ndim >= 1:
            out.append(t[..., :0] if t.shape[-1] > 1 else torch.cat([t, t], dim=-1))
    return st.sampled_from(out)


KINDS["tensor"] = array_variants                                     # a batch: any leading axes
KINDS["batch"] = lambda v: array_variants(v, nonfinite=False)        # NaN propagates by design
KINDS["array"] = lambda v: array_variants(v, shape=True)             # one fixed shape


@dataclass
class Call:
    """A valid call of ``fn`` (``make()`` returns its keyword arguments) and the kind of each
    argument to spoil; ``words`` are further names an error may use for an argument; ``errors``
    the exception types that count as a clear refusal."""

    fn: Callable
    make: Callable[[], dict]
    kinds: Dict[str, str]
    words: Dict[str, tuple] = field(default_factory=dict)
    errors: Tuple[type, ...] = (ValueError, TypeError)
    expect: Tuple[str, ...] = ("expected",)   # words that say what was expected
    none_ok: Tuple[str, ...] = ()    # arguments for which None is valid (beyond signatures)


def _params(fn):
    try:
        return inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}


def draw_bad(call: Call, arg: str, data) -> tuple:
    """The valid keyword arguments of ``call`` with ``arg`` replaced by a drawn bad value;
    returns ``(kwargs, bad)`` or ``None`` when the draw is the argument's own default."""
    kwargs = call.make()
    params = _params(call.fn)
    valid = kwargs.get(arg, params[arg].default if arg in params else None)
    bad = data.draw(KINDS[call.kinds[arg]](valid), label=arg)
    default = params[arg].default if arg in params else inspect._empty
    if bad is None and (default is None or arg in call.none_ok):   # None is valid here
        return None
    kwargs[arg] = bad
    return kwargs, bad


def check_refused(name: str, call: Call, arg: str, kwargs: dict, bad) -> None:
    """``call.fn(**kwargs)`` must raise one of ``call.errors`` naming ``arg`` (or one of its
    ``words``) and saying what was expected; anything else fails the test."""
    try:
        result = call.fn(**kwargs)
    except call.errors as err:
        msg = str(err)
        words = (arg,) + call.words.get(arg, ())
        assert any(w in msg for w in words), \
            f"{name}({arg}={bad!r}): {type(err).__name__} does not name {arg!r}: {msg}"
        assert any(w in msg for w in call.expect), \
            f"{name}({arg}={bad!r}): none of {call.expect} in: {msg}"
    except Exception as err:  # noqa: BLE001 - the point: nothing else may escape
        pytest.fail(f"{name}({arg}={bad!r}) raised {type(err).__name__} from deep inside: {err}")
    else:
        pytest.fail(f"{name}({arg}={bad!r}) accepted the bad value and returned {result!r:.200}")


# -- for property tests: anything a careless caller may pass where a count or number goes ----
junk_ints = st.one_of(st.integers(-3, 6), st.floats(allow_nan=True, allow_infinity=True),
                      st.booleans(), st.none(), st.text(max_size=3))
junk_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5),
                         st.none(), st.text(max_size=3))
dtypes = st.sampled_from([torch.float32, torch.float64])
