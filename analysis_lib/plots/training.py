"""Training curves: the loss of toy-problem runs against the step, and the AdamW-to-SGD
transition of training runs (notebook 03)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .._checks import check_int
from .palette import _as_list, _styles

__all__ = ["draw_losses", "draw_transition"]

#: How far below the largest starting gap the log loss axis reaches (rounding noise lies below)
#: and how far above it a diverging run is followed.
_GAP_DECADES_BELOW, _GAP_DECADES_ABOVE = 16, 3


def _rolling(y: np.ndarray, window: int, q: float | None = None) -> np.ndarray:
    import pandas as pd

    roll = pd.Series(y).rolling(window, center=True, min_periods=1)
    return (roll.mean() if q is None else roll.quantile(q)).to_numpy()


def draw_losses(
    problem, trajectories, ax=None, *, legend: bool = False, colors=None, smooth: int | None = None
):
    """The loss of each trajectory against the step: the gap to the minimum f - f* on a log
    axis when the problem has minima, else the loss itself (linear). Diverged runs end with a
    cross (at the top edge when they left the axis).

    The log axis spans at most 16 decades below the largest starting gap (rounding noise of a
    converged run lies below) and 3 above it (a diverging run is followed that far); the step
    axis ends where the last run still visible on it ends. ``smooth`` (a window of steps) draws
    each loss as its centred rolling mean with a band from the rolling 10% to 90% quantile,
    for noisy runs. Returns the axes."""
    styles = _styles(trajectories, colors)
    trajectories = _as_list(trajectories)
    if smooth is not None:
        smooth = check_int("smooth", smooth, 1)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4))
    has_min = problem.min_value is not None
    floor = (problem.min_value or 0.0) * problem.scale
    curves = []
    for t in trajectories:
        y = t.losses - floor if has_min else np.asarray(t.losses, dtype=float)
        curves.append(np.maximum(y, 1e-300) if has_min else y)  # exact zeros stay on a log axis
    lo = hi = None
    if has_min and curves:
        start = max(float(y[0]) for y in curves if np.isfinite(y[0]))
        lowest = min(float(np.nanmin(y)) for y in curves)
        lo = max(lowest, start * 10.0**-_GAP_DECADES_BELOW) / 3
        hi = max(start, max(float(np.nanmax(np.where(np.isfinite(y), y, 0))) for y in curves))
        hi = min(hi, start * 10.0**_GAP_DECADES_ABOVE) * 3
    last = 0
    for t, y, style in zip(trajectories, curves, styles, strict=True):
        steps = np.arange(len(y))
        if smooth and smooth > 1:
            ax.fill_between(
                steps,
                _rolling(y, smooth, 0.1),
                _rolling(y, smooth, 0.9),
                color=style["color"],
                alpha=0.2,
                lw=0,
            )
            ax.plot(steps, _rolling(y, smooth), lw=1.5, **style)
        else:
            ax.plot(steps, y, lw=1.5, **style)
        if t.diverged:
            end = y[-1] if hi is None or not np.isfinite(hi) else min(y[-1], hi / 1.5)
            ax.plot([len(y) - 1], [end], marker="x", ms=8, mew=2, color=style["color"])
        visible = np.flatnonzero(y > lo) if lo is not None else steps
        last = max(last, int(visible[-1]) + 1 if len(visible) else 1, 1)
        if t.diverged or len(y) < max(len(c) for c in curves):
            last = max(last, len(y))
    if has_min:
        ax.set_yscale("log")
        if lo is not None and np.isfinite(lo) and np.isfinite(hi) and hi > lo:
            ax.set_ylim(lo, hi)
        ax.set_ylabel(r"loss gap $f - f^*$  (log scale)")
    else:
        ax.set_ylabel("loss $f(x, y)$")
    if curves:
        longest = max(len(c) for c in curves)
        ax.set_xlim(-0.02 * last, min(longest - 1, last) * 1.04 + 1)
    ax.set_xlabel("step")
    if legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=9)
    return ax


def _rolling_median(values, window: int):
    import pandas as pd

    if window <= 1:
        return values
    return pd.Series(values).rolling(window, center=True, min_periods=1).median().to_numpy()


def draw_transition(
    measurements,
    colors: dict,
    *,
    styles: dict | None = None,
    horizon: float | None = None,
    beta2_hat_run: str | None = None,
    smooth: int = 9,
    column: str = "run",
):
    """How SGD-like each run is over training: three stacked panels against the step (log axis)
    drawn from the tidy frame of :class:`~analysis_lib.training.TransitionCallback` measurements
    of several runs (``training.runs_frame(runs, "measurements")``).

    (a) spread of the effective step sizes, log10(q75 / q25); (b) cosine between the update and
    the momentum-SGD direction; (c) preconditioner drift since the previous measurement (log
    axis; a run whose drift is exactly 0, like SGD's, is marked so in the legend). ``smooth`` > 1
    draws rolling medians over that many measurements (the raw values of a
    minibatch run are noisy). ``beta2_hat_run`` names a run whose ``beta2_hat`` (AdamNX) is drawn
    in panel (c) as 1 - beta2_hat on a twin log axis; ``horizon`` marks AdamNX's 1 / (1 - a).
    Returns (figure, axes).
    """
    if column not in measurements:
        raise ValueError(f"measurements has no {column!r} column (use training.runs_frame)")
    styles = styles or {}
    fig, axes = plt.subplots(3, 1, figsize=(8.5, 8.2), sharex=True)
    panels = [
        ("step_size_log10_iqr", "step-size spread\nlog$_{10}$(q$_{75}$ / q$_{25}$)"),
        ("cosine_to_momentum", "cosine(update,\nmomentum direction)"),
        ("preconditioner_drift", "preconditioner drift\n‖ΔP‖ / ‖P‖ per measurement"),
    ]
    gaps = np.unique(np.diff(np.sort(measurements["step"].unique())))
    if len(gaps) == 1:  # measured every k steps
        panels[2] = (panels[2][0], f"preconditioner drift\n‖ΔP‖ / ‖P‖ per {gaps[0]:,} steps")
    for run, frame in measurements.groupby(column, sort=False):
        frame = frame.sort_values("step")
        drift = frame["preconditioner_drift"].dropna()
        label = f"{run} (drift 0)" if len(drift) and (drift == 0).all() else run
        for ax, (key, _) in zip(axes, panels, strict=True):
            y = frame[key].to_numpy(dtype=float)
            if key == "preconditioner_drift":
                y = np.where(y > 0, y, np.nan)  # log axis: exact zeros (SGD) are not drawn
            ax.plot(
                frame["step"],
                _rolling_median(y, smooth),
                color=colors[run],
                ls=styles.get(run, "-"),
                lw=1.6,
                label=label,
            )
    for ax, (_, label) in zip(axes, panels, strict=True):
        ax.set_ylabel(label)
        ax.set_xscale("log")
        if horizon is not None:
            ax.axvline(horizon, color="0.35", ls=":", lw=1.2)
    axes[2].set_yscale("log")
    axes[2].set_xlabel("step")
    axes[0].set_ylim(bottom=-0.02)
    if horizon is not None:
        axes[0].annotate(
            "AdamNX horizon\n1 / (1 − a)",
            (horizon, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(-4, -4),
            textcoords="offset points",
            va="top",
            ha="right",
            fontsize=9,
            color="0.3",
        )
    handles, labels = axes[0].get_legend_handles_labels()
    if beta2_hat_run is not None:
        frame = measurements[measurements[column] == beta2_hat_run].sort_values("step")
        twin = axes[2].twinx()
        twin.plot(
            frame["step"],
            1.0 - frame["beta2_hat"],
            color=colors[beta2_hat_run],
            ls="--",
            lw=1.2,
            alpha=0.8,
        )
        twin.set_yscale("log")
        twin.set_ylabel(f"1 − β̂$_{{2,t}}$ of {beta2_hat_run} (dashed)")
        twin.grid(False)
        twin.spines["right"].set_visible(True)
    fig.legend(handles, labels, loc="outside right center", title="optimizer")
    return fig, axes
