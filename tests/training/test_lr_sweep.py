"""Choosing the learning rate on the validation split: the rule, and a real sweep."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis_lib import training
from analysis_lib.problems import tasks


def frame(rows):
    return pd.DataFrame(rows, columns=["lr", "seed", "val_loss", "val_accuracy", "diverged"])


def test_the_lowest_mean_validation_loss_is_chosen():
    f = frame(
        [
            (0.1, 0, 0.50, 0.80, False),
            (0.1, 1, 0.30, 0.90, False),  # mean 0.40
            (0.01, 0, 0.20, 0.85, False),
            (0.01, 1, 0.70, 0.95, False),  # mean 0.45 (a lucky seed does not win)
            (0.001, 0, 0.90, 0.70, False),
            (0.001, 1, 0.80, 0.75, False),  # mean 0.85
        ]
    )
    assert training.choose_lr(f) == 0.1
    # accuracy: the highest mean (0.1: 0.85, 0.01: 0.90, 0.001: 0.725)
    assert training.choose_lr(f, "val_accuracy") == 0.01
    shuffled = f.sample(frac=1.0, random_state=0)  # the order of the rows does not matter
    assert training.choose_lr(shuffled) == 0.1


def test_a_rate_with_a_diverged_or_missing_seed_counts_as_the_worst():
    f = frame(
        [
            (1.0, 0, 0.10, 0.99, False),
            (1.0, 1, math.nan, math.nan, True),  # the best loss, but one seed diverged
            (0.1, 0, 0.40, 0.90, False),
            (0.1, 1, 0.42, 0.90, False),
            (0.01, 0, 0.60, 0.80, False),
        ]
    )
    assert training.choose_lr(f) == 0.1
    assert training.choose_lr(f[f.lr != 0.1]) == 0.01
    assert training.choose_lr(f, seeds=2) == 0.1  # 0.01 has one seed of two
    assert math.isnan(training.choose_lr(f[f.lr == 0.01], seeds=2))
    assert math.isnan(training.choose_lr(f[f.lr == 1.0]))  # every rate failed
    inf = frame([(0.5, 0, math.inf, 0.1, False), (0.05, 0, 2.0, 0.3, False)])
    assert training.choose_lr(inf) == 0.05  # a non-finite loss is the worst too


def test_ties_go_to_the_smaller_rate():
    f = frame([(0.3, 0, 0.25, 0.9, False), (0.03, 0, 0.25, 0.9, False), (3.0, 0, 0.5, 0.9, False)])
    assert training.choose_lr(f) == 0.03
    assert training.choose_lr(f, "val_accuracy") == 0.03


def test_choose_lr_names_a_bad_argument():
    f = frame([(0.1, 0, 0.3, 0.9, False)])
    with pytest.raises(ValueError, match="selection"):
        training.choose_lr(f, "test_loss")
    with pytest.raises(ValueError, match="diverged"):
        training.choose_lr(f.drop(columns="diverged"))
    with pytest.raises(ValueError, match="seeds"):
        training.choose_lr(f, seeds=0)
    with pytest.raises(TypeError, match="frame"):
        training.choose_lr(f.to_dict())


@pytest.fixture(scope="module")
def small():
    return tasks.digits(hidden=(8,))


def test_a_real_sweep_chooses_the_rate_of_the_lowest_mean_validation_loss(small):
    kw = dict(batch_size=64, device="cpu", progress=False)
    sweep = training.lr_sweep(small, "SGD", [0.3, 1e4, 0.01], 25, seeds=(0, 1), **kw)
    f = sweep.frame
    assert list(f.columns) == [
        "lr",
        "seed",
        "diverged",
        "steps",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
    ]
    assert f[["lr", "seed"]].values.tolist() == [
        [0.01, 0],
        [0.01, 1],
        [0.3, 0],
        [0.3, 1],
        [1e4, 0],
        [1e4, 1],
    ]
    assert f.loc[f.lr == 1e4, "diverged"].all() and f.loc[f.lr == 1e4, "val_loss"].isna().all()
    assert not f.loc[f.lr < 1, "diverged"].any()
    # one row against an independent run and evaluation
    run = training.train(small, "sgd", 25, lr=0.3, seed=1, **kw)
    row = f[(f.lr == 0.3) & (f.seed == 1)].iloc[0]
    for split in ("train", "val"):
        expected = run.evaluate(split)
        assert row[f"{split}_loss"] == expected["loss"]
        assert row[f"{split}_accuracy"] == expected["accuracy"]
    means = {lr: f.loc[f.lr == lr, "val_loss"].mean() for lr in (0.01, 0.3)}
    assert means[0.3] != means[0.01]
    assert sweep.lr == min(means, key=means.get)
    assert sorted(sweep.runs) == [0, 1]
    assert all(
        r.config["lr"] == sweep.lr and r.config["optimizer"] == "sgd" for r in sweep.runs.values()
    )
    np.testing.assert_array_equal(
        [sweep.runs[s].evaluate("val")["loss"] for s in (0, 1)],
        f.loc[f.lr == sweep.lr, "val_loss"],
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(lrs=[]), "lrs"),
        (dict(lrs=[0.1, 0.1]), "lrs"),
        (dict(lrs=[0.1, -1.0]), "lrs"),
        (dict(lrs=0.1), "lrs"),
        (dict(seeds=()), "seeds"),
        (dict(seeds=(0, -1)), "seeds"),
        (dict(lr=0.1), "lr"),
        (dict(optimizer=lambda p: None), "optimizer"),
        (dict(optimizer="lion"), "Unknown optimizer"),
        (dict(steps=0), "steps"),
    ],
)
def test_lr_sweep_names_a_bad_argument(small, kwargs, match):
    args = dict(optimizer="sgd", lrs=[0.1], steps=2, progress=False, device="cpu") | kwargs
    with pytest.raises(ValueError, match=match):
        training.lr_sweep(small, **args)
