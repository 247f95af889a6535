"""Figures of the flatness of the minima that each optimizer finds (``analysis_lib.sharpness``):
each measure against the generalisation gap over a population of minima, with Kendall's tau in
the panel titles (:func:`plot_flatness_scatter`); how each measure moves under Dinh et al.'s
rescaling (:func:`plot_rescaling`); and a table of the population per optimizer
(:func:`flatness_table`); rank correlations with their intervals as a forest plot
(:func:`plot_forest`). Colours: one per optimizer configuration, from the sweep's
``optimizer`` and ``hparams`` columns (:func:`~analysis_lib.plots.sweep_style`)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._checks import check_int
from .sweeps import sweep_style

__all__ = [
    "MEASURE_LABELS",
    "draw_measure_scatter",
    "flatness_table",
    "plot_flatness_scatter",
    "plot_forest",
    "plot_rescaling",
]

#: Axis labels of the columns of a sharpness report.
MEASURE_LABELS = {
    "worst_case": "worst-case sharpness",
    "worst_case_adaptive": "adaptive worst-case sharpness",
    "average": "average sharpness",
    "average_adaptive": "adaptive average sharpness",
    "epsilon": "ε-sharpness (Keskar)",
    "sigma_flatness": "1/σ² (Jiang)",
    "lambda_max": "λmax of the Hessian",
    "hessian_trace": "trace of the Hessian",
    "gap": "gap (test − train loss)",
    "loss_gap": "loss gap (test − train loss)",
    "error_gap": "error gap (test − train error)",
    "train_loss": "training loss",
}
#: Okabe & Ito's colour-blind safe set, for lines that are measures, not optimizers.
_MEASURE_COLORS = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#000000", "#999999",
]  # fmt: skip
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
_DECADES = 30.0  # a panel whose positive values span more than this ratio gets a log axis


def _label(column: str) -> str:
    return MEASURE_LABELS.get(column, column.replace("_", " "))


def _spans_decades(values: np.ndarray) -> bool:
    v = values[np.isfinite(values)]
    return v.size > 1 and bool((v > 0).all()) and v.max() / v.min() > _DECADES


def _check_frame(frame, columns: Sequence[str], name: str = "frame") -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"Invalid {name}: expected a DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"Invalid {name}: missing columns {missing}")


def draw_measure_scatter(
    ax: Axes, frame: pd.DataFrame, measure: str, gap: str = "gap", tau=None
) -> None:
    """Draw ``frame[measure]`` (x) against ``frame[gap]`` (y) on ``ax``, one colour per
    optimizer configuration (``label``, ``optimizer``, ``hparams`` columns; markers differ too,
    in the frame's order of labels); a log x axis when
    the measure spans decades; ``tau`` (a row with ``tau``, ``low``, ``high``, ``n``) in the
    title.

    Args:
        ax: the matplotlib Axes to draw on.
        frame: a DataFrame with ``label``, ``optimizer``, ``hparams``, ``measure`` and ``gap``
            columns, one row per minimum.
        measure: the column drawn on x.
        gap: the column drawn on y.
        tau: a row (Series or mapping) with ``tau``, ``low``, ``high``, ``n``; None: the title is
            the measure's label.

    Raises:
        TypeError: ``frame`` is not a DataFrame.
        ValueError: a required column is missing.
    """
    _check_frame(frame, ["label", "optimizer", "hparams", measure, gap])
    for k, (label, group) in enumerate(frame.groupby("label", sort=False)):
        style = sweep_style(group["optimizer"].iloc[0], group["hparams"].iloc[0])
        ax.scatter(group[measure], group[gap], s=26, color=style["color"], label=label,
                   marker=_MARKERS[k % len(_MARKERS)], edgecolor="white",
                   linewidth=0.4)  # fmt: skip
    if _spans_decades(frame[measure].to_numpy(dtype=float)):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(mticker.NullFormatter())  # labelled minor ticks overlap
    else:  # few ticks, so that long labels such as 0.00475 do not run together
        ax.xaxis.set_major_locator(mticker.MaxNLocator(nbins=3, steps=[1, 2, 5, 10]))
    ax.set_xlabel(_label(measure))
    ax.set_ylabel(_label(gap))
    title = _label(measure)
    if tau is not None:
        title = f"τ = {tau['tau']:.2f} [{tau['low']:.2f}, {tau['high']:.2f}], n = {int(tau['n'])}"
    ax.set_title(title, fontsize="small")


def plot_flatness_scatter(
    frame: pd.DataFrame,
    measures: Sequence[str],
    *,
    gap: str = "gap",
    rows: str | None = None,
    taus: pd.DataFrame | None = None,
    suptitle: str | None = None,
) -> Figure:
    """A grid of :func:`draw_measure_scatter` panels: one column per measure, one row per value
    of the column ``rows`` (e.g. the task; None: one row). ``taus``: a table of
    :func:`analysis_lib.stats.tau_table` with a ``measure`` column (and the ``rows`` column),
    whose matching row goes into each panel's title. One legend for the figure.

    Args:
        frame: a DataFrame as for :func:`draw_measure_scatter`.
        measures: the measure columns, one panel column each.
        gap: the column drawn on y.
        rows: a column whose values give the panel rows (None: one row).
        taus: a Kendall's tau table with a ``measure`` column (and ``rows``); None: no tau.
        suptitle: the figure title (None or empty: none).

    Returns:
        The matplotlib Figure.

    Raises:
        TypeError: ``frame`` is not a DataFrame.
        ValueError: ``measures`` is empty or a required column is missing.
    """
    _check_frame(frame, ["label", "optimizer", "hparams", gap, *measures])
    if not measures:
        raise ValueError("Invalid measures: empty")
    keys = [None] if rows is None else list(dict.fromkeys(frame[rows]))
    fig, axes = plt.subplots(
        len(keys), len(measures), figsize=(3.1 * len(measures), 2.9 * len(keys) + 0.6),
        squeeze=False, constrained_layout=True,
    )  # fmt: skip
    for i, key in enumerate(keys):
        part = frame if key is None else frame[frame[rows] == key]
        for j, m in enumerate(measures):
            tau = None
            if taus is not None:
                match = taus[taus["measure"] == m]
                if key is not None:
                    match = match[match[rows] == key]
                tau = match.iloc[0] if len(match) else None
            draw_measure_scatter(axes[i, j], part, m, gap, tau)
            if j:
                axes[i, j].set_ylabel("")
            elif key is not None:
                axes[i, j].set_ylabel(f"{key}\n{_label(gap)}")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=True))
    for ax in axes.flat[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    fig.legend(seen.values(), seen.keys(), loc="outside lower center", ncols=min(len(seen), 6))
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def plot_rescaling(frame: pd.DataFrame, measures: Sequence[str] | None = None) -> Figure:
    """Each measure relative to its value at ``a = 1`` against ``a`` (log-log when the ratios
    span decades, else log-x), from a tidy frame with columns ``a``, ``measure``, ``value``
    (Dinh et al.'s rescaling: the same function at every ``a``). Adaptive measures dashed.

    Args:
        frame: a DataFrame with ``a``, ``measure`` and ``value`` columns.
        measures: the measures to draw, in order (None: all, in the frame's order).

    Returns:
        The matplotlib Figure.

    Raises:
        TypeError: ``frame`` is not a DataFrame.
        ValueError: a required column is missing, or no row has ``a == 1``.
        IndexError: a drawn measure has no row at ``a == 1``.
    """
    _check_frame(frame, ["a", "measure", "value"])
    if not (frame["a"] == 1).any():
        raise ValueError("Invalid frame: no row at a = 1 to compare with")
    measures = list(dict.fromkeys(frame["measure"])) if measures is None else list(measures)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), constrained_layout=True)
    ratios = []
    for k, m in enumerate(measures):
        part = frame[frame["measure"] == m].sort_values("a")
        ref = float(part.loc[part["a"] == 1, "value"].iloc[0])
        ratio = part["value"].to_numpy(dtype=float) / ref
        ratios.append(ratio)
        ax.plot(part["a"], ratio, marker=_MARKERS[k % len(_MARKERS)], ms=4, label=_label(m),
                color=_MEASURE_COLORS[k % len(_MEASURE_COLORS)],
                linestyle="--" if "adaptive" in m else "-")  # fmt: skip
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())
    if _spans_decades(np.abs(np.concatenate(ratios))):
        ax.set_yscale("log")
    ax.axhline(1.0, color="0.6", linewidth=0.8, zorder=0)
    ax.set_xlabel("a (first layer × a, second layer × 1/a)")
    ax.set_ylabel("measure / measure at a = 1")
    ax.legend(fontsize="small", loc="best")
    return fig


def flatness_table(
    frame: pd.DataFrame,
    measures: Sequence[str],
    by: Sequence[str] = ("label",),
    extra: Sequence[str] = ("train_loss", "test_accuracy", "gap"),
) -> pd.DataFrame:
    """Per group of ``by`` (in the frame's order): ``n`` minima and the median of each of
    ``extra`` and ``measures``.

    Args:
        frame: a DataFrame, one row per minimum, with the ``by``, ``extra`` and ``measures``
            columns.
        measures: the measure columns.
        by: the grouping columns.
        extra: further columns whose medians come first.

    Returns:
        A DataFrame indexed by ``by``, with ``n`` then the ``extra`` and ``measures`` columns.

    Raises:
        TypeError: ``frame`` is not a DataFrame.
        ValueError: a required column is missing.

    Examples:
        >>> frame = pd.DataFrame({"label": ["sgd", "sgd", "adam"], "gap": [0.1, 0.3, 0.2],
        ...                       "lambda_max": [4.0, 6.0, 9.0]})
        >>> print(flatness_table(frame, ["lambda_max"], extra=["gap"]).reset_index())
          label  n  gap  lambda_max
        0   sgd  2  0.2         5.0
        1  adam  1  0.2         9.0
    """
    by, cols = list(by), [*extra, *measures]
    _check_frame(frame, [*by, *cols])
    grouped = frame.groupby(by, sort=False)
    table = grouped[cols].median()
    table.insert(0, "n", grouped.size())
    return table


def plot_forest(
    frame: pd.DataFrame,
    *,
    row: str = "measure",
    column: str | None = None,
    hue: str | None = None,
    estimate: str = "tau",
    low: str = "low",
    high: str = "high",
    xlabel: str = "Kendall's τ",
    title: str | None = None,
    ncols: int | None = None,
) -> Figure:
    """A forest plot: one line per value of ``row`` (top to bottom in the frame's order), the
    ``estimate`` as a dot and its interval ``[low, high]`` as a bar, a dashed line at 0; one
    panel per value of ``column`` (None: one panel), and the values of ``hue`` (e.g. the
    population a coefficient was computed on) side by side within a line, each its own colour
    and marker, with a legend. The x axis is shared and spans [-1, 1] (rank correlations).

    Args:
        frame: one row per estimate, with the ``row``, ``estimate``, ``low`` and ``high``
            columns (and ``column`` and ``hue`` when given).
        row: the column naming each line (e.g. the measure); its values are labelled with
            :data:`MEASURE_LABELS` where they are keys of it.
        column: the column whose values give the panels (None: one panel).
        hue: the column whose values are drawn side by side (None: one series).
        estimate: the column of the point estimates.
        low: the column of the intervals' lower ends.
        high: the column of the intervals' upper ends.
        xlabel: the x axis label.
        title: the figure title (None: none).
        ncols: panels per row (None: all in one row); more panels wrap onto further rows.

    Returns:
        The matplotlib Figure.

    Raises:
        TypeError: ``frame`` is not a DataFrame.
        ValueError: a required column is missing, ``frame`` is empty, or ``ncols`` < 1.

    Examples:
        >>> f = pd.DataFrame({"measure": ["lambda_max", "epsilon"], "tau": [0.3, -0.1],
        ...                   "low": [0.1, -0.3], "high": [0.5, 0.1]})
        >>> fig = plot_forest(f)
        >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
        ['λmax of the Hessian', 'ε-sharpness (Keskar)']
        >>> plt.close(fig)
    """
    needed = [row, estimate, low, high] + [c for c in (column, hue) if c is not None]
    _check_frame(frame, needed)
    if frame.empty:
        raise ValueError("Invalid frame: empty")
    panels = [None] if column is None else list(dict.fromkeys(frame[column]))
    lines = list(dict.fromkeys(frame[row]))
    series = [None] if hue is None else list(dict.fromkeys(frame[hue]))
    width = 0.7 / len(series)
    ncols = len(panels) if ncols is None else min(check_int("ncols", ncols, 1), len(panels))
    nrows = -(-len(panels) // ncols)
    height = 0.36 * len(lines) * max(1, len(series) / 2) + 1.0
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.4 * ncols + 3.2, height * nrows + 0.8),
        squeeze=False, sharey=True, sharex=True, constrained_layout=True,
    )  # fmt: skip
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        part = frame if panel is None else frame[frame[column] == panel]
        for k, name in enumerate(series):
            sub = part if name is None else part[part[hue] == name]
            offset = (k - (len(series) - 1) / 2) * width
            y = [lines.index(v) + offset for v in sub[row]]
            est, lo, hi = (sub[c].to_numpy(dtype=float) for c in (estimate, low, high))
            ax.errorbar(est, y, xerr=[est - lo, hi - est], fmt=_MARKERS[k % len(_MARKERS)],
                        ms=5, capsize=2.5, lw=1.4, color=_MEASURE_COLORS[k % len(_MEASURE_COLORS)],
                        label=None if name is None else str(name))  # fmt: skip
        ax.axvline(0.0, color="0.4", lw=0.9, ls="--", zorder=0)
        ax.set_xlim(-1.0, 1.0)
        ax.set_xticks([-1.0, -0.5, 0.0, 0.5, 1.0])
        ax.set_xlabel(xlabel)
        if panel is not None:
            ax.set_title(str(panel), fontsize="medium")
    axes[0, 0].set_yticks(range(len(lines)), [_label(str(v)) for v in lines])
    axes[0, 0].set_ylim(len(lines) - 0.5, -0.5)
    for ax in axes[:, 0]:  # the measures' names at the start of every row of panels
        ax.tick_params(labelleft=True)
    if hue is not None:
        fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center",
                   ncols=min(len(series), 2))  # fmt: skip
    if title:
        fig.suptitle(title)
    return fig
