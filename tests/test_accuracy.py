"""Predicted graphs replacing attention in the bundled models."""

from __future__ import annotations

from functools import cache

import pytest

from sparsebench import methods
from sparsebench.bench.accuracy import restrict_with
from sparsebench.datasets.shakespeare import load_model, load_tokenizer
from sparsebench.datasets.train import evaluate_model, token_streams

MODELS = ["shakespeare-lm", "shakespeare-mlm"]
WINDOWS = 4  # held-out windows of 512 tokens


@cache
def streams():
    return token_streams(load_tokenizer())["eval"]


def score(name, method=None):
    model = load_model(name)
    restrict = None
    if method is not None:
        restrict = restrict_with([method] * model.cfg.n_layers)
    return evaluate_model(model, streams(), restrict=restrict, max_windows=WINDOWS)


@pytest.mark.parametrize("name", MODELS)
def test_gold_and_covering_window_equal_full_attention(name):
    full = score(name)
    gold = score(name, methods.create("gold"))
    assert gold["loss"] == full["loss"] and gold["accuracy"] == full["accuracy"]
    wide = score(name, methods.create("window", w=2 * 512 + 1))
    assert wide["loss"] == full["loss"] and wide["accuracy"] == full["accuracy"]


@pytest.mark.parametrize("name", MODELS)
def test_accuracy_falls_as_the_window_narrows(name):
    # Sparser windows lose accuracy and raise the loss (on the same fixed held-out windows).
    by_w = {w: score(name, methods.create("window", w=w)) for w in (1, 3, 9, 33)}
    acc = [by_w[w]["accuracy"] for w in (1, 3, 9)]
    loss = [by_w[w]["loss"] for w in (1, 3, 9, 33)]
    assert acc == sorted(acc) and acc[0] < acc[-1]
    assert loss == sorted(loss, reverse=True)
    assert by_w[1]["accuracy"] < score(name)["accuracy"]
