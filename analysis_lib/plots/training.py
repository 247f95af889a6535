"""Training curves: the loss of toy-problem runs against the step, and the AdamW-to-SGD
transition of training runs (notebook 03)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .._checks import check_int
from .palette import trajectory_list, trajectory_styles

__all__ = [
    "draw_losses",
    "draw_step_size_cdf",
    "draw_transition",
    "plot_adamnx_second_moment",
    "plot_alpha_step_sizes",
    "plot_loss_and_step_sizes",
]

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
    for noisy runs. Returns the axes.

    Args:
        problem: a toy problem (``min_value``, ``scale``).
        trajectories: a list of trajectories or a dict ``label -> trajectory`` (``losses``,
            ``diverged``).
        ax: the matplotlib Axes (None: a new figure).
        legend: add a legend.
        colors: colours, one per trajectory (None: the optimizer palette).
        smooth: the rolling window in steps (None or 1: raw losses).

    Returns:
        The matplotlib Axes.

    Raises:
        ValueError: ``smooth`` is not an integer >= 1, or ``colors`` does not have one entry per
            trajectory.
    """
    styles = trajectory_styles(trajectories, colors)
    trajectories = trajectory_list(trajectories)
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


def _mark_horizon(axes, horizon: float) -> None:
    """AdamNX's horizon 1 / (1 - a) as a dotted line on every panel, named on the first."""
    for ax in axes:
        ax.axvline(horizon, color="0.35", ls=":", lw=1.2)
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


def _draw_beta2_hat(ax, frame, run: str, color) -> None:
    """1 - beta2_hat of one run (AdamNX's second-moment decay) dashed on a twin log axis."""
    twin = ax.twinx()
    twin.plot(frame["step"], 1.0 - frame["beta2_hat"], color=color, ls="--", lw=1.2, alpha=0.8)
    twin.set_yscale("log")
    twin.set_ylabel(f"1 − β̂$_{{2,t}}$ of {run} (dashed)")
    twin.grid(False)
    twin.spines["right"].set_visible(True)


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

    Args:
        measurements: a tidy DataFrame with ``column``, ``step``, ``step_size_log10_iqr``,
            ``cosine_to_momentum`` and ``preconditioner_drift`` (and ``beta2_hat`` for
            ``beta2_hat_run``) columns.
        colors: a mapping ``run -> colour``.
        styles: a mapping ``run -> line style`` (default solid).
        horizon: the step of AdamNX's horizon to mark (None: none).
        beta2_hat_run: the run whose ``1 - beta2_hat`` is drawn in panel (c) (None: none).
        smooth: the rolling-median window, in measurements (<= 1: raw values).
        column: the column naming the runs.

    Returns:
        A tuple ``(Figure, axes)``, ``axes`` the three stacked Axes.

    Raises:
        ValueError: ``measurements`` has no ``column`` column.
        KeyError: a run has no colour, or a panel's column is missing.
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
    axes[2].set_yscale("log")
    axes[2].set_xlabel("step")
    axes[0].set_ylim(bottom=-0.02)
    if horizon is not None:
        _mark_horizon(axes, horizon)
    handles, labels = axes[0].get_legend_handles_labels()
    if beta2_hat_run is not None:
        frame = measurements[measurements[column] == beta2_hat_run].sort_values("step")
        _draw_beta2_hat(axes[2], frame, beta2_hat_run, colors[beta2_hat_run])
    fig.legend(handles, labels, loc="outside right center", title="optimizer")
    return fig, axes


# -- effective step sizes (notebooks 01 and 03) -------------------------------------------------
def _binned_mean(steps: np.ndarray, values: np.ndarray, bins: int = 100):
    """``values`` averaged over about ``bins`` log-spaced bins of the step (for a log step axis:
    every bin holds at least one step); returns (first step of each bin, its mean)."""
    edges = np.unique(np.geomspace(1, len(values), bins).astype(int)) - 1
    return steps[edges], np.add.reduceat(values, edges) / np.diff(np.r_[edges, len(values)])


def draw_step_size_cdf(sizes: np.ndarray, ax, **line_kwargs):
    """The empirical distribution function of effective step sizes against log10 of the size
    (a single value draws one vertical step). Returns the axes.

    Args:
        sizes: the effective step sizes (any shape; flattened).
        ax: the matplotlib Axes.
        **line_kwargs: passed on to ``Axes.step`` (e.g. ``color``, ``label``).

    Returns:
        ``ax``.

    Raises:
        ValueError: ``sizes`` is empty or holds a value that is not finite and positive.
    """
    sizes = np.sort(np.asarray(sizes, dtype=np.float64).ravel())
    if sizes.size == 0 or not (np.isfinite(sizes) & (sizes > 0)).all():
        raise ValueError("Invalid sizes: expected finite positive step sizes")
    ecdf = np.arange(1, len(sizes) + 1) / len(sizes)
    ax.step(np.log10(np.r_[sizes[0], sizes]), np.r_[0.0, ecdf], where="post", **line_kwargs)
    return ax


def plot_loss_and_step_sizes(
    runs, step_sizes, colors: dict, *, styles: dict | None = None, loss_ylim=None, titles=None
) -> Figure:
    """Two panels: each run's training loss against the step (log axis; the mean over about 100
    log-spaced bins, so the noise of small batches averages out where steps are dense) and the
    distribution of its final effective step sizes (``step_sizes``: label -> array, see
    :func:`draw_step_size_cdf`); one legend for both, on the right. ``runs``: label -> Run
    (its ``history``); ``titles``: (loss panel, step-size panel). Returns the figure.

    Args:
        runs: a mapping ``label -> Run`` (its ``history`` with ``step`` and ``loss``).
        step_sizes: a mapping ``label -> array`` of final effective step sizes.
        colors: a mapping ``label -> colour``.
        styles: a mapping ``label -> line style`` (default solid).
        loss_ylim: the y limits of the loss panel (None: automatic).
        titles: the two panel titles (None: defaults).

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: a label's step sizes are empty, not finite or not positive.
        KeyError: a label of ``runs`` has no colour or step sizes.
    """
    styles = styles or {}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.3))
    for label, run in runs.items():
        style = {"color": colors[label], "ls": styles.get(label, "-")}
        h = run.history
        x, y = _binned_mean(h["step"].to_numpy(), h["loss"].to_numpy(dtype=float))
        ax.plot(x, y, lw=1.4, **style)
        draw_step_size_cdf(step_sizes[label], bx, lw=1.5, label=label, **style)
    loss_title, sizes_title = titles or ("training loss", "effective step sizes")
    ax.set(xscale="log", xlabel="step", ylabel="training loss (mean over log-spaced bins)")
    ax.set(ylim=loss_ylim, title=loss_title)
    bx.set(
        xlabel=r"log$_{10}$ effective step size $\eta / (\sqrt{d_i} + \epsilon)$",
        ylabel="fraction of coordinates",
        title=sizes_title,
    )
    fig.legend(*bx.get_legend_handles_labels(), loc="outside right center", title="optimizer")
    return fig


def plot_alpha_step_sizes(step_sizes, *, title: str | None = None) -> Figure:
    """Ada2MS's effective step sizes at several alphas (``step_sizes``: alpha -> array of the
    sizes of every coordinate), on the alpha scale: their histograms on a log axis (a single
    value as a vertical line) and the spread, the standard deviation of log10 of the sizes,
    against alpha with the line ``alpha x`` (spread at the largest alpha) dashed.
    Returns the figure.

    Args:
        step_sizes: a mapping ``alpha -> array`` of effective step sizes, alphas in ``[0, 1]``.
        title: the figure title (None: none).

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: an alpha outside ``[0, 1]``, or ``step_sizes`` is empty.
    """
    from .palette import alpha_colors, optimizer_color

    alphas = list(step_sizes)
    logs = {a: np.log10(np.asarray(s, dtype=np.float64).ravel()) for a, s in step_sizes.items()}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), width_ratios=[1.6, 1])
    lo = min(v.min() for v in logs.values()) - 0.05
    hi = max(v.max() for v in logs.values()) + 0.05
    bins = np.logspace(lo, hi, 120)
    for (a, v), color in zip(logs.items(), alpha_colors(alphas), strict=True):
        if np.ptp(v) > 1e-6:
            ax.hist(
                10**v, bins=bins, histtype="step", lw=1.6, color=color, label=rf"$\alpha$ = {a:g}"
            )
        else:
            ax.axvline(10 ** v[0], color=color, lw=2, label=rf"$\alpha$ = {a:g} (one value)")
    ax.set_xscale("log")
    ax.set(xlabel=r"effective step size $\eta/(\sqrt{d}+\epsilon)$", ylabel="number of coordinates")
    ax.set_title(title or "Ada2MS's effective step sizes")
    ax.legend(fontsize=9)
    spread = np.array([np.std(logs[a]) for a in alphas])
    top = int(np.argmax(alphas))
    bx.plot(alphas, spread, "o-", color=optimizer_color("ada2ms"), label="Ada2MS")
    bx.plot([0, alphas[top]], [0, spread[top]], ls="--", color="0.5",
            label=rf"$\alpha \times$ spread at $\alpha$ = {alphas[top]:g}")  # fmt: skip
    bx.set(xlabel=r"$\alpha$", ylabel=r"std of log$_{10}$ step size  [decades]")
    bx.set_title("Spread shrinks linearly in $\\alpha$")
    bx.legend(fontsize=9)
    return fig


def plot_adamnx_second_moment(
    beta2s=(0.9, 0.99, 0.999), beta2: float = 0.99, steps=(10, 100, 1_000, 10_000, 100_000)
) -> Figure:
    """AdamNX's second moment against Adam's (notebook 01). Left: the weight
    ``1 - beta2_hat_t`` of the newest squared gradient against the step, for each of ``beta2s``
    (dashed: Adam's constant ``1 - beta2``; dotted: the horizon ``t = 1 / (1 - a)``,
    ``a = beta2^(1 - beta2)``). Right: the weight of each past ``g_i^2`` in ``v_t`` at each step
    of ``steps``, for ``beta2`` (dashed: Adam's). The curves are the closed forms
    :func:`~analysis_lib.optim.adamnx_betas`, :func:`~analysis_lib.optim.adamnx_gradient_weights`
    and :func:`~analysis_lib.optim.adam_gradient_weights`.

    Args:
        beta2s: the ``beta2`` values of the left panel.
        beta2: the ``beta2`` of the right panel.
        steps: the steps ``t`` whose weights the right panel draws.

    Returns:
        The matplotlib Figure.
    """
    from ..optim import adam_gradient_weights, adamnx_betas, adamnx_gradient_weights, adamnx_horizon
    from .palette import alpha_colors

    t = np.unique(np.logspace(0, 6.3, 600).astype(int))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    for b2, color in zip(
        beta2s, alpha_colors(np.linspace(0.2, 0.9, len(beta2s)), cmap="crest"), strict=True
    ):
        one_minus = np.array([1 - adamnx_betas(0.9, b2, int(k))[1] for k in t[1:]])
        ax.loglog(t[1:], one_minus, color=color, label=rf"AdamNX, $\beta_2$ = {b2}")
        ax.axhline(1 - b2, color=color, ls="--", lw=1, label=rf"Adam, $\beta_2$ = {b2}")
        ax.axvline(adamnx_horizon(b2), color=color, ls=":", lw=1)
    ax.set(xlabel="step $t$", ylabel=r"$1 - \hat\beta_{2,t}$  (weight of the newest $g_t^2$)",
           ylim=(1e-12, 1.5), title=r"AdamNX's decay rises to 1 (dotted: $t = 1/(1-a)$)")  # fmt: skip
    ax.legend(fontsize=8, ncol=2, loc="lower left")
    for step, color in zip(steps, plt.cm.viridis(np.linspace(0, 0.9, len(steps))), strict=True):
        i = np.arange(1, step + 1)
        bx.loglog(
            i, adamnx_gradient_weights(beta2, step), color=color, label=f"AdamNX, t = {step:,}"
        )
        bx.loglog(i, adam_gradient_weights(beta2, step), color=color, ls="--", lw=1)
    bx.set(xlabel="index $i$ of the past gradient", ylabel=r"weight of $g_i^2$ in $v_t$",
           ylim=(1e-9, 1.5), title=rf"Weights in $v_t$, $\beta_2$ = {beta2} (dashed: Adam)")  # fmt: skip
    bx.legend(fontsize=8, loc="lower left")
    return fig
