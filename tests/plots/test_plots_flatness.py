"""Flatness figures (Agg): scatter panels with labels, log axes where a measure spans decades,
tau in the titles, one colour per optimizer configuration; the rescaling figure; the table."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")

import matplotlib.collections
import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import pytest

from analysis_lib import plots
from analysis_lib.stats import tau_table

CONFIGS = [
    ("SGD+momentum", "sgdm", {}),
    ("AdamW", "adamw", {"weight_decay": 0.01}),
    ("Ada2MS alpha=0", "ada2ms", {"alpha": 0.0}),
    ("Ada2MS alpha 1->0", "ada2ms", {"alpha": {"final": 0.0, "within": 0.01}}),
]


def population(seeds: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for task in ("digits-mlp", "digits-cnn"):
        for k, (label, name, hp) in enumerate(CONFIGS):
            for s in range(seeds):
                rows.append(dict(task=task, label=label, optimizer=name, hparams=json.dumps(hp),
                                 seed=s, gap=0.1 + 0.01 * k + 0.001 * s,
                                 lambda_max=10.0 ** (k - 2 + 0.1 * rng.normal()),
                                 worst_case_adaptive=0.5 + 0.01 * rng.normal(),
                                 train_loss=1e-3, test_accuracy=0.95))  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_scatter_panels_labels_scales_colours_and_titles():
    frame = population()
    measures = ["lambda_max", "worst_case_adaptive"]
    taus = pd.concat(
        [tau_table(part, measures, n_boot=50).assign(task=t) for t, part in frame.groupby("task")]
    )
    fig = plots.plot_flatness_scatter(frame, measures, rows="task", taus=taus)
    axes = np.array(fig.axes).reshape(2, 2)
    for row in axes:
        assert row[0].get_xscale() == "log"  # lambda_max spans four decades
        assert row[1].get_xscale() == "linear"  # the adaptive measure does not
        assert row[0].get_xlabel() == plots.MEASURE_LABELS["lambda_max"]
        assert "gap (test − train loss)" in row[0].get_ylabel()
    mlp = taus[(taus["task"] == "digits-mlp") & (taus["measure"] == "lambda_max")].iloc[0]
    assert axes[0, 0].get_title().startswith(f"τ = {mlp['tau']:.2f} [{mlp['low']:.2f}, ")
    assert "n = 12" in axes[0, 0].get_title()
    # one colour per configuration, the palette's, and the same in every panel
    expected = {
        "SGD+momentum": plots.optimizer_color("sgdm"),
        "AdamW": plots.optimizer_color("adamw"),
        "Ada2MS alpha=0": plots.optimizer_color("ada2ms", 0.0),
        "Ada2MS alpha 1->0": plots.ADA2MS_SCHEDULE_COLOR,
    }
    for ax in axes.flat:
        colours = {}
        for coll in ax.collections:
            faces = {mcolors.to_hex(c) for c in coll.get_facecolors()}
            assert len(faces) == 1
            colours[coll.get_label()] = faces.pop()
        assert colours == expected
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [c[0] for c in CONFIGS]


def test_scatter_rejects_missing_columns():
    with pytest.raises(ValueError, match="missing columns"):
        plots.plot_flatness_scatter(population(), ["epsilon"])


def test_rescaling_figure_log_axes_and_relative_values():
    a = np.logspace(-1, 1, 5)
    frame = pd.concat(
        [
            pd.DataFrame(dict(a=a, measure="lambda_max", value=3.0 * a**2)),
            pd.DataFrame(dict(a=a, measure="worst_case_adaptive", value=0.2)),
        ]
    )
    fig = plots.plot_rescaling(frame)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    np.testing.assert_allclose(lines["λmax of the Hessian"].get_ydata(), a**2)
    np.testing.assert_allclose(lines["adaptive worst-case sharpness"].get_ydata(), 1.0)
    assert lines["adaptive worst-case sharpness"].get_linestyle() == "--"
    assert "measure at a = 1" in ax.get_ylabel() and ax.get_xlabel().startswith("a ")
    with pytest.raises(ValueError, match="a = 1"):
        plots.plot_rescaling(frame[frame["a"] != 1])


def test_table_counts_and_medians():
    frame = population(seeds=3)
    table = plots.flatness_table(frame, ["lambda_max"], by=["task", "label"])
    assert (table["n"] == 3).all() and len(table) == 8
    part = frame[(frame["task"] == "digits-cnn") & (frame["label"] == "AdamW")]
    assert table.loc[("digits-cnn", "AdamW"), "lambda_max"] == pytest.approx(
        part["lambda_max"].median()
    )


def test_linear_axis_keeps_few_ticks_for_long_labels():
    # a measure over a narrow range of small values (0.00425 ... 0.00525): matplotlib's default
    # locator puts five ticks of up to seven characters on a three-inch panel, which run together
    frame = population()
    frame["worst_case_adaptive"] = np.linspace(0.00425, 0.00525, len(frame))
    fig = plots.plot_flatness_scatter(frame, ["worst_case_adaptive"])
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ax.get_xscale() == "linear" and 2 <= len(ticks) <= 4, ticks


def test_forest_plot_draws_each_interval_on_its_line_and_series():
    frame = pd.DataFrame({
        "measure": ["lambda_max", "epsilon", "lambda_max", "epsilon"],
        "population": ["MLP", "MLP", "CNN", "CNN"],
        "tau": [0.3, -0.1, 0.5, 0.0], "low": [0.1, -0.3, 0.2, -0.4], "high": [0.5, 0.1, 0.7, 0.3],
    })  # fmt: skip
    fig = plots.plot_forest(frame, hue="population", xlabel="τ with the error gap")
    (ax,) = fig.axes
    assert ax.get_xlim() == (-1.0, 1.0) and ax.get_xlabel() == "τ with the error gap"
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        plots.MEASURE_LABELS["lambda_max"], plots.MEASURE_LABELS["epsilon"]]  # fmt: skip
    bars = [c for c in ax.collections if isinstance(c, matplotlib.collections.LineCollection)]
    segments = [seg for c in bars for seg in c.get_segments() if seg[0][1] == seg[1][1]]
    spans = sorted((round(s[0][0], 6), round(s[1][0], 6)) for s in segments)
    assert spans == sorted(zip(frame["low"], frame["high"], strict=True))
    ys = {(round(s[0][0], 6), round(s[1][0], 6)): s[0][1] for s in segments}
    assert ys[(0.1, 0.5)] < 0 < ys[(0.2, 0.7)] < 1  # line 0, the two series side by side
    assert ys[(-0.3, 0.1)] < 1 < ys[(-0.4, 0.3)]
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["MLP", "CNN"]
    plt.close(fig)
    two = plots.plot_forest(frame, column="population")
    assert [a.get_title() for a in two.axes] == ["MLP", "CNN"]
    plt.close(two)
    with pytest.raises(ValueError, match="missing columns"):
        plots.plot_forest(frame.drop(columns="low"))
    with pytest.raises(ValueError, match="empty"):
        plots.plot_forest(frame[:0])


def test_forest_panels_wrap_into_rows():
    frame = pd.DataFrame({"measure": ["lambda_max"] * 5, "axis": list("abcde"),
                          "tau": [0.1] * 5, "low": [0.0] * 5, "high": [0.2] * 5})  # fmt: skip
    fig = plots.plot_forest(frame, column="axis", ncols=3)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == list("abcde") and len(fig.axes) == 6
    rows = sorted({round(ax.get_position().y0, 3) for ax in visible})
    assert len(rows) == 2
    plt.close(fig)
    with pytest.raises(ValueError, match="ncols"):
        plots.plot_forest(frame, column="axis", ncols=0)
