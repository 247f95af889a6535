"""Tests of analysis_lib.plots.sweeps: the drawn lines, bands, markers and error bars are the
numbers of the tables they come from (computed here independently from the trials)."""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex

from analysis_lib import plots
from analysis_lib.sweep import summarize

CONFIGS = {  # label: (optimizer, hparams)
    "SGD": ("sgd", {}),
    "AdamW": ("adamw", {"weight_decay": 0.01}),
    "Ada2MS alpha=0.25": ("ada2ms", {"alpha": 0.25}),
    "Ada2MS alpha 1->0": ("ada2ms", {"alpha": {"final": 0.0, "within": 0.01}}),
}
LRS = [1e-3, 1e-2, 1e-1]


@pytest.fixture
def trials():
    """Three seeds per (label, lr); accuracy peaks at the middle rate; SGD's seed 2 diverged
    at the top rate."""
    rng = np.random.default_rng(0)
    rows = []
    for k, (label, (name, hp)) in enumerate(CONFIGS.items()):
        for lr in LRS:
            for seed in range(3):
                diverged = label == "SGD" and lr == LRS[-1] and seed == 2
                acc = 0.9 - 0.05 * abs(math.log10(lr) + 2) + 0.01 * k + rng.normal(0, 0.005)
                nan = math.nan
                rows.append(
                    {"label": label, "optimizer": name, "hparams": json.dumps(hp), "lr": lr,
                     "seed": seed, "status": "diverged" if diverged else "ok",
                     "val_loss": nan if diverged else 1 - acc,
                     "val_accuracy": nan if diverged else acc,
                     "test_loss": nan if diverged else 1 - acc + 0.01,
                     "test_accuracy": nan if diverged else acc - 0.01}
                )  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def expected_color(label: str) -> str:
    name, hp = CONFIGS[label]
    if label == "Ada2MS alpha 1->0":
        return plots.ADA2MS_SCHEDULE_COLOR
    return plots.optimizer_color(name, hp.get("alpha"))


def test_sweep_style_follows_the_palette():
    assert plots.sweep_style("adamw", "{}")["color"] == plots.optimizer_color("adamw")
    assert plots.sweep_style("ada2ms", {"alpha": 0.25})["color"] == plots.optimizer_color(
        "ada2ms", 0.25
    )
    assert plots.sweep_style("ada2ms", '{"alpha": {"final": 0.0, "tau": 10.0}}') == {
        "color": plots.ADA2MS_SCHEDULE_COLOR,
        "linestyle": "-.",
    }
    assert plots.sweep_style("mystery")["color"] == "0.45"


def test_lr_sensitivity_draws_one_line_and_band_per_optimizer(trials):
    summary = summarize(trials, "val_loss", seeds=3)
    ax = plots.draw_lr_sensitivity(trials, summary)
    assert ax.get_xscale() == "log"
    assert "learning rate" in ax.get_xlabel()
    assert "val accuracy" in ax.get_ylabel() and "min–max over seeds" in ax.get_ylabel()
    lines = {
        line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")
    }
    assert sorted(lines) == sorted(CONFIGS)
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == len(CONFIGS)
    for band, label in zip(bands, CONFIGS, strict=True):
        ok = trials[(trials["label"] == label) & (trials["status"] == "ok")]
        by_lr = ok.groupby("lr")["val_accuracy"]
        line = lines[label]
        assert to_hex(line.get_color()) == to_hex(expected_color(label))
        np.testing.assert_allclose(line.get_xdata(), LRS)
        np.testing.assert_allclose(line.get_ydata(), by_lr.mean().to_numpy())
        ys = band.get_paths()[0].vertices[:, 1]
        assert ys.min() == pytest.approx(by_lr.min().min())
        assert ys.max() == pytest.approx(by_lr.max().max())


def test_chosen_rates_and_divergences_are_marked(trials):
    summary = summarize(trials, "val_loss", seeds=3)
    ax = plots.draw_lr_sensitivity(trials, summary, labels=["SGD", "AdamW"])
    big = [
        line for line in ax.get_lines() if line.get_marker() == "o" and line.get_markersize() == 10
    ]
    chosen = summary.set_index("label")["lr"]
    assert sorted(float(line.get_xdata()[0]) for line in big) == sorted(chosen[["SGD", "AdamW"]])
    crosses = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert len(crosses) == 1 and list(crosses[0].get_xdata()) == [LRS[-1]]
    assert to_hex(crosses[0].get_color()) == to_hex(plots.optimizer_color("sgd"))


def test_interval_band_is_the_t_interval(trials):
    ax = plots.draw_lr_sensitivity(trials, labels=["AdamW"], band="interval")
    assert "95% t-interval" in ax.get_ylabel()
    vals = trials[(trials["label"] == "AdamW") & (trials["lr"] == LRS[0])]["val_accuracy"]
    half = 4.302652729911275 * vals.std(ddof=1) / math.sqrt(3)  # t_{0.975, 2}
    ys = ax.collections[0].get_paths()[0].vertices
    at = ys[np.isclose(ys[:, 0], LRS[0]), 1]
    assert at.min() == pytest.approx(vals.mean() - half) and at.max() == pytest.approx(
        vals.mean() + half
    )


def test_binomial_band_is_the_test_sets_sampling_error(trials):
    ax = plots.draw_lr_sensitivity(trials, labels=["AdamW"], band="binomial", n_test=400)
    assert "binomial" in ax.get_ylabel()
    p = trials[(trials["label"] == "AdamW") & (trials["lr"] == LRS[0])]["val_accuracy"].mean()
    half = 1.96 * math.sqrt(p * (1 - p) / 400)
    ys = ax.collections[0].get_paths()[0].vertices
    at = ys[np.isclose(ys[:, 0], LRS[0]), 1]
    assert at.min() == pytest.approx(p - half) and at.max() == pytest.approx(p + half)
    for bad in (None, 0, 2.5, True):
        with pytest.raises(ValueError, match="n_test"):
            plots.draw_lr_sensitivity(trials, labels=["AdamW"], band="binomial", n_test=bad)


def test_plot_lr_sensitivity_is_a_grid_of_tasks_by_groups(trials):
    summary = summarize(trials)
    groups = {"baselines": ["SGD", "AdamW"], "Ada2MS": ["AdamW", "Ada2MS alpha=0.25"]}
    fig = plots.plot_lr_sensitivity({"MLP": (trials, summary), "CNN": (trials, None)}, groups)
    axes = fig.axes
    assert len(axes) == 4 and [ax.get_title() for ax in axes][:2] == [
        "MLP: baselines",
        "MLP: Ada2MS",
    ]
    assert all(ax.get_xscale() == "log" for ax in axes)
    assert axes[0].get_legend() is not None


def test_test_intervals_are_the_summary_intervals(trials):
    summary = summarize(trials, "val_loss", seeds=3)
    ax = plots.draw_test_intervals(summary, trials)
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert [t.split("  (lr")[0] for t in ticks] == list(summary["label"])
    bars = [c for c in ax.collections if c.get_segments()]
    assert len(bars) == len(summary)
    for seg, row in zip(bars, summary.itertuples(index=False), strict=True):
        (x0, _), (x1, _) = seg.get_segments()[0]
        assert (x0, x1) == pytest.approx((row.test_accuracy_low, row.test_accuracy_high))
    assert "95% t-interval" in ax.get_xlabel()
    fig = plots.plot_test_intervals({"MLP": (summary, trials), "CNN": (summary, None)})
    assert [ax.get_title() for ax in fig.axes] == ["MLP", "CNN"]


def test_accuracy_intervals_are_cut_at_one(trials):
    summary = summarize(trials, "val_loss", seeds=3)
    assert "cut" not in plots.draw_test_intervals(summary, trials).get_xlabel()
    over = summary.assign(test_accuracy_high=summary["test_accuracy_mean"] + 0.5)
    ax = plots.draw_test_intervals(over, trials)
    bars = [c for c in ax.collections if c.get_segments()]
    for seg, row in zip(bars, over.itertuples(index=False), strict=True):
        (x0, _), (x1, _) = seg.get_segments()[0]
        assert (x0, x1) == pytest.approx((row.test_accuracy_low, 1.0))
    assert "cut to [0, 1]" in ax.get_xlabel()


def test_bad_input_is_rejected(trials):
    with pytest.raises(ValueError, match="band"):
        plots.draw_lr_sensitivity(trials, band="sd")
    with pytest.raises(ValueError, match="labels"):
        plots.draw_lr_sensitivity(trials, labels=["Adam"])
    with pytest.raises(TypeError, match="trials"):
        plots.draw_lr_sensitivity(trials.to_dict())
    with pytest.raises(ValueError, match="summary"):
        plots.draw_test_intervals(trials)
    with pytest.raises(ValueError, match="panels"):
        plots.plot_test_intervals({})
