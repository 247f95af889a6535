"""Figures of optimizer sweeps: results of the comparison protocol (``analysis_lib.sweep``) and
learning-rate sensitivity.

They take the sweep's own tables: ``trials`` (:func:`analysis_lib.sweep.read_trials`, one row
per trial) and ``summary`` (:func:`analysis_lib.sweep.summarize`, one row per optimizer label:
the lr chosen on validation, test numbers with 95% t-intervals over seeds). Each label keeps its
optimizer's colour from the palette (Ada2MS's constant alphas on its sequential scale, its alpha
schedule its own colour)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .._checks import check_int
from .palette import OPTIMIZER_COLORS, optimizer_style

__all__ = [
    "draw_lr_sensitivity",
    "draw_test_intervals",
    "plot_lr_sensitivity",
    "plot_test_intervals",
    "sweep_style",
]

BANDS = ("range", "interval", "binomial")


def _alpha_schedule(step: int) -> float:  # stands for a table-given alpha schedule
    return math.nan


def sweep_style(optimizer: str, hparams: str | Mapping | None = None) -> dict:
    """``color`` and ``linestyle`` of a sweep's optimizer configuration: its name and its
    hyperparameters (a dict, or the JSON text of a trials row). An Ada2MS ``alpha`` number
    picks its colour on the alpha scale; an alpha table (a schedule such as 1 -> 0) the
    schedule's colour. Names outside the palette are grey.

    Args:
        optimizer: the optimizer's name, in any case.
        hparams: a dict of hyperparameters, their JSON text, or None (empty text: none).

    Returns:
        A dict with keys ``"color"`` and ``"linestyle"``.

    Raises:
        json.JSONDecodeError: ``hparams`` is text that is not JSON.
        ValueError: an Ada2MS ``alpha`` number outside ``[0, 1]``.

    Examples:
        >>> sweep_style("ada2ms", '{"alpha": 0.0}')
        {'color': '#2d1738', 'linestyle': (0, (1.2, 1.2))}
        >>> sweep_style("lbfgs")
        {'color': '0.45', 'linestyle': '-'}
    """
    if isinstance(hparams, str):
        hparams = json.loads(hparams) if hparams else {}
    alpha = dict(hparams or {}).get("alpha")
    if isinstance(alpha, Mapping):
        alpha = _alpha_schedule
    if str(optimizer).lower() not in OPTIMIZER_COLORS:
        return {"color": "0.45", "linestyle": "-"}
    return optimizer_style(optimizer, alpha)


def _check_trials(trials, columns=("label", "optimizer", "hparams", "lr", "status")) -> None:
    if not isinstance(trials, pd.DataFrame):
        raise TypeError(f"Invalid trials: expected a DataFrame, got {type(trials).__name__}")
    missing = [c for c in columns if c not in trials.columns]
    if missing:
        raise ValueError(f"Invalid trials: missing columns {missing}")


def _band(trials: pd.DataFrame, metric: str, band: str, n_test: int | None = None) -> pd.DataFrame:
    """:func:`lr_sensitivity` of ``metric``, with ``low``/``high`` replaced by the min and max
    over the finished seeds when ``band="range"``, and by the mean -/+ 1.96 binomial standard
    errors of an accuracy measured on ``n_test`` samples when ``band="binomial"``."""
    from ..sweep.tables import lr_sensitivity  # the sweep machinery loads only when drawn

    sens = lr_sensitivity(trials, metric)
    if band == "binomial":
        p = sens["mean"].clip(0.0, 1.0)
        se = np.sqrt(p * (1.0 - p) / n_test)
        sens["low"], sens["high"] = sens["mean"] - 1.96 * se, sens["mean"] + 1.96 * se
    if band == "range":
        ok = trials[trials["status"] == "ok"].groupby(["label", "lr"])[metric]
        ends = ok.agg(["min", "max"])
        key = list(zip(sens["label"], sens["lr"], strict=True))
        sens["low"] = [ends["min"].get(k, np.nan) for k in key]
        sens["high"] = [ends["max"].get(k, np.nan) for k in key]
    return sens


def draw_lr_sensitivity(
    trials: pd.DataFrame,
    summary: pd.DataFrame | None = None,
    *,
    ax: Axes | None = None,
    labels: Sequence[str] | None = None,
    metric: str = "val_accuracy",
    band: str = "range",
    n_test: int | None = None,
) -> Axes:
    """``metric`` against the learning rate (log x), one line per optimizer label (the mean
    over the seeds that finished) with a band: ``band="range"`` from the lowest to the highest
    seed, ``"interval"`` the 95% Student-t interval of the mean over seeds, ``"binomial"`` the
    test set's own sampling error (mean -/+ 1.96 sqrt(p (1 - p) / n_test), for an accuracy
    measured on ``n_test`` samples: how far another test set of that size could move it). A cross along the
    bottom marks a rate where a seed diverged or failed; a large dot with a black edge marks
    the rate ``summary`` chose. ``labels`` picks and orders the lines (default all).

    Args:
        trials: the trials table (``label``, ``optimizer``, ``hparams``, ``lr``, ``status`` and
            ``metric`` columns).
        summary: the summary table (``label``, ``lr``) whose chosen rates are marked; None: none.
        ax: the matplotlib Axes (None: a new figure).
        labels: the labels to draw, in order (None: all, in the trials' order).
        metric: the trials column drawn on y.
        band: ``"range"``, ``"interval"`` or ``"binomial"``.
        n_test: the test set's size, for ``band="binomial"`` (>= 1).

    Returns:
        The matplotlib Axes.

    Raises:
        TypeError: ``trials`` is not a DataFrame.
        ValueError: a required column is missing, ``band`` is not one of :data:`BANDS`, a
            label is not in the trials, or ``band="binomial"`` without a valid ``n_test``.
    """
    _check_trials(trials, ("label", "optimizer", "hparams", "lr", "status", metric))
    if band not in BANDS:
        raise ValueError(f"Invalid band: {band!r} (expected one of {BANDS})")
    if band == "binomial":
        n_test = check_int("n_test", n_test, 1)
    known = list(dict.fromkeys(trials["label"]))
    labels = known if labels is None else list(labels)
    unknown = [label for label in labels if label not in known]
    if unknown:
        raise ValueError(f"Invalid labels: {unknown} are not labels of the trials")
    ax = ax if ax is not None else plt.subplots(figsize=(7, 4.4))[1]
    sens = _band(trials[trials["label"].isin(labels)], metric, band, n_test)
    chosen = {} if summary is None else dict(zip(summary["label"], summary["lr"], strict=True))
    for label in labels:
        rows = sens[sens["label"] == label]
        first = trials[trials["label"] == label].iloc[0]
        style = sweep_style(first["optimizer"], first["hparams"])
        ax.plot(rows["lr"], rows["mean"], marker="o", ms=3.5, lw=1.6, label=label, **style)
        ax.fill_between(rows["lr"], rows["low"], rows["high"], color=style["color"], alpha=0.12,
                        lw=0)  # fmt: skip
        failed = rows[rows["failed"] > 0]
        if len(failed):
            ax.plot(failed["lr"], np.full(len(failed), 0.03), ls="none", marker="x", ms=7,
                    mew=1.8, color=style["color"], transform=ax.get_xaxis_transform(),
                    clip_on=False)  # fmt: skip
        lr = chosen.get(label, math.nan)
        if math.isfinite(lr) and (rows["lr"] == lr).any():
            ax.plot([lr], rows.loc[rows["lr"] == lr, "mean"], marker="o", ms=10, mec="black",
                    mew=1.2, color=style["color"], ls="none", zorder=4)  # fmt: skip
    what = {"range": "min–max over seeds", "interval": "95% t-interval",
            "binomial": "±1.96 binomial s.e."}[band]  # fmt: skip
    ax.set(xscale="log", xlabel="learning rate (log scale)",
           ylabel=f"{metric.replace('_', ' ')}\n(mean; band: {what})")  # fmt: skip
    return ax


def plot_lr_sensitivity(
    panels: Mapping[str, tuple[pd.DataFrame, pd.DataFrame | None]],
    groups: Mapping[str, Sequence[str]] | None = None,
    *,
    metric: str = "val_accuracy",
    band: str = "range",
    n_test: int | None = None,
    ylim: tuple[float, float] | None = None,
    title: str | None = None,
) -> Figure:
    """Learning-rate sensitivity curves (:func:`draw_lr_sensitivity`) in a grid: one row per
    entry of ``panels`` (a name such as "digits MLP" -> ``(trials, summary)``), one column per
    entry of ``groups`` (a column title -> the labels drawn there; default every label in one
    column). Rows share the y axis range ``ylim`` when given.

    Args:
        panels: a mapping ``row name -> (trials, summary)``; ``summary`` may be None.
        groups: a mapping ``column title -> labels`` (None: one column with every label of the
            first panel's trials).
        metric: the trials column drawn on y.
        band: ``"range"``, ``"interval"`` or ``"binomial"`` (see :func:`draw_lr_sensitivity`).
        n_test: the test set's size, for ``band="binomial"``.
        ylim: the y limits of every panel (None: each its own).
        title: the figure title (None: none).

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: ``panels`` is not a non-empty mapping, or as for :func:`draw_lr_sensitivity`.
        TypeError: as for :func:`draw_lr_sensitivity`.
    """
    if not isinstance(panels, Mapping) or not panels:
        raise ValueError("Invalid panels: expected a non-empty mapping name -> (trials, summary)")
    if groups is None:
        first = next(iter(panels.values()))[0]
        groups = {"": list(dict.fromkeys(first["label"]))}
    fig, axes = plt.subplots(len(panels), len(groups), figsize=(6.2 * len(groups), 4.0 * len(panels)),
                             squeeze=False)  # fmt: skip
    for i, (name, (trials, summary)) in enumerate(panels.items()):
        for j, (group, labels) in enumerate(groups.items()):
            ax = axes[i, j]
            draw_lr_sensitivity(trials, summary, ax=ax, labels=labels, metric=metric, band=band,
                                n_test=n_test)  # fmt: skip
            ax.set_title(f"{name}: {group}" if group else name)
            if ylim is not None:
                ax.set_ylim(*ylim)
            if j:
                ax.set_ylabel("")
            if i == 0:
                ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(title or "Learning-rate sensitivity (large dots: the rate chosen on validation; "
                 "crosses: a seed diverged)")  # fmt: skip
    return fig


def draw_test_intervals(
    summary: pd.DataFrame,
    trials: pd.DataFrame | None = None,
    *,
    ax: Axes | None = None,
    metric: str = "test_accuracy",
) -> Axes:
    """Per optimizer label (top to bottom in the summary's order): the mean of ``metric`` at
    the chosen rate with its 95% t-interval over seeds as an error bar, and, when ``trials``
    is given, each seed's value as a small open dot. The tick labels carry the chosen lr. An
    accuracy cannot leave [0, 1] but a t-interval over a few seeds can: its bar is cut at the
    bound, and the axis label says so.

    Args:
        summary: the summary table, with ``label``, ``optimizer``, ``hparams``, ``lr`` and
            ``{metric}_mean``, ``{metric}_low``, ``{metric}_high`` columns.
        trials: the trials table, for the per-seed dots (None: no dots).
        ax: the matplotlib Axes (None: a new figure).
        metric: the metric's name in the summary's column names.

    Returns:
        The matplotlib Axes.

    Raises:
        ValueError: ``summary`` is not a DataFrame with the needed columns.
    """
    needed = ["label", "optimizer", "hparams", "lr", f"{metric}_mean", f"{metric}_low",
              f"{metric}_high"]  # fmt: skip
    if not isinstance(summary, pd.DataFrame) or any(c not in summary.columns for c in needed):
        raise ValueError(f"Invalid summary: expected a DataFrame with columns {needed}")
    ax = ax if ax is not None else plt.subplots(figsize=(6, 0.45 * len(summary) + 1.2))[1]
    bounded, cut = metric.endswith("accuracy"), False
    for y, row in enumerate(summary.itertuples(index=False)):
        style = sweep_style(row.optimizer, row.hparams)
        mean, low, high = (getattr(row, f"{metric}_{k}") for k in ("mean", "low", "high"))
        if bounded and (low < 0.0 or high > 1.0):
            cut = True
            low, high = max(low, 0.0), min(high, 1.0)
        ax.errorbar([mean], [y], xerr=[[mean - low], [high - mean]], fmt="o", ms=6, capsize=4,
                    lw=1.8, color=style["color"])  # fmt: skip
        if trials is not None:
            at = trials[(trials["label"] == row.label) & (trials["lr"] == row.lr)
                        & (trials["status"] == "ok")]  # fmt: skip
            ax.plot(at[metric], np.full(len(at), y + 0.25), ls="none", marker="o", ms=3.5,
                    mfc="none", color=style["color"], alpha=0.8)  # fmt: skip
    ticks = [f"{label}  (lr {lr:.2g})" for label, lr in zip(summary["label"], summary["lr"],
                                                            strict=True)]  # fmt: skip
    ax.set_yticks(range(len(summary)), ticks)
    ax.set_ylim(len(summary) - 0.4, -0.6)
    ax.set_xlabel(
        f"{metric.replace('_', ' ')}\n(mean, 95% t-interval over seeds"
        f"{', cut to [0, 1]' if cut else ''})"
    )
    ax.xaxis.set_major_locator(MaxNLocator(5))
    return ax


def plot_test_intervals(
    panels: Mapping[str, tuple[pd.DataFrame, pd.DataFrame | None]],
    *,
    metric: str = "test_accuracy",
    title: str | None = None,
) -> Figure:
    """The final table as a figure: :func:`draw_test_intervals` side by side, one panel per
    entry of ``panels`` (a name -> ``(summary, trials)``).

    Args:
        panels: a mapping ``panel title -> (summary, trials)``; ``trials`` may be None.
        metric: the metric's name, as for :func:`draw_test_intervals`.
        title: the figure title (None: none).

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: ``panels`` is not a non-empty mapping, or a summary lacks a needed column.
    """
    if not isinstance(panels, Mapping) or not panels:
        raise ValueError("Invalid panels: expected a non-empty mapping name -> (summary, trials)")
    rows = max(len(summary) for summary, _ in panels.values())
    fig, axes = plt.subplots(1, len(panels), figsize=(max(7.0, 6.4 * len(panels)), 0.42 * rows + 1.6),
                             squeeze=False)  # fmt: skip
    for ax, (name, (summary, trials)) in zip(axes[0], panels.items(), strict=True):
        draw_test_intervals(summary, trials, ax=ax, metric=metric)
        ax.set_title(name)
    fig.suptitle(title or "Test accuracy at the chosen learning rate (open dots: seeds)")
    return fig
