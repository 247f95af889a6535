"""Curvature and the edge of stability: spectral densities, top eigenvalues and traces with their
uncertainty, preconditioned sharpness against its stability threshold, curvature against the
training loss, and the sharpness of training runs against ``2/eta`` and its relatives.

Functions here draw results the library computed: :class:`~analysis_lib.curvature.DensityResult`
objects, tidy frames of curvature estimates (one row per run or per eigenvalue) and training runs
(:class:`~analysis_lib.training.Run`) whose ``measurements`` come from
:class:`~analysis_lib.curvature.SharpnessCallback`. ``colors`` maps each label to its colour
(e.g. :func:`~analysis_lib.plots.optimizer_colors`).
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .palette import alpha_colors

__all__ = [
    "draw_preconditioned_sharpness",
    "draw_top_eigenvalues",
    "draw_traces",
    "plot_curvature_summary",
    "plot_curvature_vs_loss",
    "plot_edge_of_stability",
    "plot_gd_edge_of_stability",
    "plot_spectral_densities",
]

#: The stability threshold of Adam-family methods on the preconditioned Hessian, as an axis label.
ADAPTIVE_RATIO_LABEL = (
    r"$\lambda_{\max}(P^{-1/2} H P^{-1/2})\;/\;\frac{2 + 2\beta_1}{(1 - \beta_1)\eta}$"
)


def _missing(frame, columns, what: str) -> None:
    absent = [c for c in columns if c not in frame]
    if absent:
        raise ValueError(f"Invalid {what}: no {', '.join(map(repr, absent))} column")


def plot_spectral_densities(
    densities: Mapping,
    colors: Mapping,
    *,
    grid=None,
    sigma: float | None = None,
    floor: float = 1e-6,
    title: str | None = None,
    ax=None,
) -> Figure:
    """Hessian spectral densities (``label -> DensityResult`` from ``spectral_density``) on a
    log density axis, one colour per label.

    With ``grid`` (and ``sigma``), every density is smoothed again on that shared grid with one
    Gaussian width, ``sum_k w_k N(lambda; theta_k, sigma^2)`` averaged over the SLQ runs
    (``curvature.gaussian_density``), so their heights compare directly; without it each
    result's own ``grid`` and ``density`` are drawn. Values below ``floor`` (the bottom of the
    axis) are drawn at it. Returns the figure.

    Args:
        densities: a mapping ``label -> DensityResult``.
        colors: a mapping ``label -> colour``.
        grid: a shared eigenvalue grid to re-smooth every density on; None draws each result's own.
        sigma: the Gaussian width for ``grid`` (needed, positive, with it).
        floor: the bottom of the density axis.
        title: the axes title (None: a default).
        ax: the axes to draw on (None: a new figure).

    Returns:
        The matplotlib Figure holding ``ax``.

    Raises:
        ValueError: ``densities`` is empty, or ``grid`` is given without a positive ``sigma``.
        KeyError: a label has no colour in ``colors``.
    """
    if not densities:
        raise ValueError("Invalid densities: empty (expected a dict label -> DensityResult)")
    if grid is not None and (sigma is None or not sigma > 0):
        raise ValueError(f"Invalid sigma: {sigma!r} (a positive width is needed with grid)")
    from ..curvature import gaussian_density

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 4.6))
    for label, slq in densities.items():
        x = slq.grid if grid is None else np.asarray(grid, dtype=float)
        y = slq.density if grid is None else gaussian_density(slq.nodes, slq.weights, x, sigma)
        ax.plot(x, np.maximum(y, floor * 1e-6), color=colors[label], lw=1.5, label=label)
    ax.set_yscale("log")
    ax.set(
        xlabel=r"Hessian eigenvalue $\lambda$",
        ylabel="spectral density (smoothed)",
        ylim=(floor, None),
        title=title or "Hessian spectra (stochastic Lanczos quadrature)",
    )
    ax.legend()
    return ax.figure


def draw_top_eigenvalues(eigenvalues, colors: Mapping, ax, *, column: str = "optimizer"):
    """The top Hessian eigenvalues of each run against their rank, with the Lanczos residuals
    as error bars (some true eigenvalue lies within them); runs side by side at each rank.
    ``eigenvalues``: a tidy frame with ``column``, ``rank``, ``eigenvalue`` and ``residual``.
    Returns the axes.

    Args:
        eigenvalues: a DataFrame with columns ``column``, ``rank``, ``eigenvalue``, ``residual``.
        colors: a mapping ``label -> colour`` for the values of ``column``.
        ax: the matplotlib Axes to draw on.
        column: the column naming each run.

    Returns:
        ``ax``.

    Raises:
        ValueError: a required column is missing.
    """
    _missing(eigenvalues, [column, "rank", "eigenvalue", "residual"], "eigenvalues")
    labels = list(dict.fromkeys(eigenvalues[column]))
    for i, label in enumerate(labels):
        e = eigenvalues[eigenvalues[column] == label]
        ax.errorbar(
            e["rank"] + (i - (len(labels) - 1) / 2) * 0.08,
            e["eigenvalue"],
            yerr=e["residual"],
            fmt="o",
            color=colors[label],
            label=label,
            ms=5,
        )
    ranks = sorted(eigenvalues["rank"].unique())
    ax.set(xlabel="rank $i$", ylabel=r"eigenvalue $\lambda_i$", xticks=ranks)
    ax.set_title("Top Hessian eigenvalues (Lanczos)")
    ax.legend(fontsize=8)
    return ax


def draw_traces(summary, colors: Mapping, ax, *, stderrs: float = 2.0, title: str | None = None):
    """Each run's Hessian trace estimate (``summary``: indexed by label, with ``trace`` and
    ``trace_stderr``) with ``stderrs`` standard errors either side, one row per run from the
    top. Returns the axes.

    Args:
        summary: a DataFrame indexed by label with ``trace`` and ``trace_stderr`` columns.
        colors: a mapping ``label -> colour``.
        ax: the matplotlib Axes to draw on.
        stderrs: the half-width of the error bars, in standard errors.
        title: the axes title (None: ``"Trace (Hutch++)"``).

    Returns:
        ``ax``.

    Raises:
        ValueError: a required column is missing.
    """
    _missing(summary, ["trace", "trace_stderr"], "summary")
    y = np.arange(len(summary))
    for yi, (label, row) in zip(y, summary.iterrows(), strict=True):
        ax.errorbar(
            row["trace"],
            yi,
            xerr=stderrs * row["trace_stderr"],
            fmt="o",
            color=colors[label],
            ms=7,
            capsize=4,
        )
    ax.set(
        yticks=y,
        yticklabels=list(summary.index),
        xlabel=rf"tr $H$  ($\pm {stderrs:g}$ standard errors)",
        xlim=(0, None),
        title=title or "Trace (Hutch++)",
    )
    ax.invert_yaxis()
    return ax


def draw_preconditioned_sharpness(summary, colors: Mapping, ax, *, xlim=(1e-4, 2)):
    """The adaptive runs' preconditioned sharpness as a fraction of their stability threshold,
    ``lambda_max(P^-1/2 H P^-1/2) / ((2 + 2 beta1) / ((1 - beta1) eta))``, as bars on a log axis
    with the threshold (1) dashed. ``summary``: indexed by label, with
    ``preconditioned_lambda_max`` and ``threshold_adam`` (rows without them are left out).
    Returns the axes.

    Args:
        summary: a DataFrame indexed by label with ``preconditioned_lambda_max`` and
            ``threshold_adam`` columns.
        colors: a mapping ``label -> colour``.
        ax: the matplotlib Axes to draw on.
        xlim: the limits of the log ratio axis.

    Returns:
        ``ax``.

    Raises:
        ValueError: a required column is missing.
    """
    _missing(summary, ["preconditioned_lambda_max", "threshold_adam"], "summary")
    adaptive = summary.dropna(subset=["preconditioned_lambda_max", "threshold_adam"])
    ratio = adaptive["preconditioned_lambda_max"] / adaptive["threshold_adam"]
    y = np.arange(len(adaptive))
    ax.barh(y, ratio, color=[colors[label] for label in adaptive.index])
    ax.axvline(1.0, color="0.3", ls="--", lw=1)
    ax.text(0.9, len(adaptive) - 0.6, "stability\nthreshold", ha="right", va="center", fontsize=9)
    ax.set(xscale="log", xlim=xlim, yticks=y, yticklabels=list(adaptive.index))
    ax.set(xlabel=ADAPTIVE_RATIO_LABEL, title="Preconditioned sharpness")
    ax.invert_yaxis()
    return ax


def plot_curvature_summary(
    eigenvalues, summary, colors: Mapping, *, trace_title: str | None = None
) -> Figure:
    """Three panels: :func:`draw_top_eigenvalues`, :func:`draw_traces` (two standard errors)
    and :func:`draw_preconditioned_sharpness`. Returns the figure.

    Args:
        eigenvalues: the frame for :func:`draw_top_eigenvalues` (``column="optimizer"``).
        summary: the frame for :func:`draw_traces` and :func:`draw_preconditioned_sharpness`.
        colors: a mapping ``label -> colour``.
        trace_title: the title of the trace panel (None: the default).

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: a required column is missing.
    """
    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(13, 4.2), width_ratios=[1.3, 1, 1])
    draw_top_eigenvalues(eigenvalues, colors, ax)
    draw_traces(summary, colors, bx, title=trace_title)
    draw_preconditioned_sharpness(summary, colors, cx)
    return fig


def _loss_ticks(ax, losses) -> None:
    """Readable ticks (0.002, 0.005, 0.01, ...) on a log loss axis spanning less than a decade
    or two, where matplotlib would label only one power of ten."""
    lo, hi = float(np.min(losses)) / 1.5, float(np.max(losses)) * 1.5
    decades = 10.0 ** np.arange(np.floor(np.log10(lo)), np.ceil(np.log10(hi)) + 1)
    ticks = [t for d in decades for t in (d, 2 * d, 3 * d, 5 * d) if lo <= t <= hi]
    if len(ticks) < 3:  # a narrow range: evenly spaced round numbers instead
        ticks = [t for t in MaxNLocator(5).tick_values(lo, hi) if lo <= t <= hi and t > 0]
    if 2 <= len(ticks) <= 8:
        ax.set_xticks(ticks, labels=[f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())


def plot_curvature_vs_loss(
    population,
    colors: Mapping,
    *,
    quantities: Mapping[str, str] | None = None,
    loss: str = "train_loss",
    column: str = "optimizer",
    seed: str = "seed",
) -> Figure:
    """Each run's curvature against its final training loss, log-log, one panel per quantity
    (``quantities``: column -> axis name; default the top eigenvalue and the trace), one colour
    per ``column`` value and one marker per ``seed``; each title gives Spearman's rank
    correlation over all runs. ``population``: a tidy frame, one row per run. Returns the
    figure.

    Args:
        population: a DataFrame, one row per run, with the ``loss``, ``column``, ``seed`` and
            quantity columns.
        colors: a mapping from the values of ``column`` to colours.
        quantities: a mapping ``column name -> axis label`` (None: ``lambda_max`` and ``trace``).
        loss: the column of the final training loss.
        column: the column that picks the colour.
        seed: the column that picks the marker (at most seven distinct seeds).

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: a required column is missing.
    """
    quantities = quantities or {"lambda_max": r"$\lambda_{\max}(H)$", "trace": r"tr $H$"}
    _missing(population, [loss, column, seed, *quantities], "population")
    seeds = sorted(population[seed].unique())
    markers = dict(zip(seeds, "osD^v<>", strict=False))
    fig, axes = plt.subplots(1, len(quantities), figsize=(5.5 * len(quantities), 4.4))
    axes = np.atleast_1d(axes)
    for ax, (key, name) in zip(axes, quantities.items(), strict=True):
        for _, row in population.iterrows():
            first = row[seed] == seeds[0]
            ax.scatter(row[loss], row[key], color=colors[row[column]], marker=markers[row[seed]],
                       s=40, label=row[column] if first else None)  # fmt: skip
        rho = population[loss].rank().corr(population[key].rank())  # Spearman's rho
        ax.set(xscale="log", yscale="log", xlabel="final training loss (log scale)")
        ax.set(ylabel=f"{name} (log scale)")
        ax.set_title(f"{name}: Spearman ρ = {rho:.2f} over {len(population)} runs")
        _loss_ticks(ax, population[loss])
    axes[0].legend(fontsize=8, title=column, title_fontsize=8)
    seed_handles = [Line2D([], [], ls="none", marker=m, color="0.4") for m in markers.values()]
    axes[-1].legend(seed_handles, [f"seed {s}" for s in markers], fontsize=8, loc="lower right")
    return fig


def plot_gd_edge_of_stability(runs: Mapping, *, sharpness_ylim=None) -> Figure:
    """Full-batch gradient descent at several learning rates (``runs``: ``lr -> Run`` whose
    measurements hold ``sharpness``): the training loss (log axis) and the sharpness
    ``lambda_max(H)`` against the step, with each run's ``2/eta`` dashed in its colour (one
    sequential scale over the learning rates). Returns the figure.

    Args:
        runs: a mapping ``learning rate -> Run``, with ``sharpness`` in each run's measurements.
        sharpness_ylim: the y limits of the sharpness panel (None: automatic).

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: ``runs`` is empty, or a run's measurements lack ``step`` or ``sharpness``.
    """
    if not runs:
        raise ValueError("Invalid runs: empty (expected a dict learning rate -> Run)")
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.4))
    colors = alpha_colors(np.linspace(0.9, 0.1, len(runs)), cmap="crest")
    for (lr, r), color in zip(runs.items(), colors, strict=True):
        _missing(r.measurements, ["step", "sharpness"], "measurements")
        label = rf"$\eta$ = {lr:g}"
        ax.plot(r.history["step"], r.history["loss"], color=color, lw=1, label=label)
        bx.plot(r.measurements["step"], r.measurements["sharpness"], color=color, lw=1.5,
                label=label)  # fmt: skip
        bx.axhline(2 / lr, color=color, ls="--", lw=1)
    ax.set(yscale="log", xlabel="step", ylabel="training loss (MSE)")
    ax.set_title("Full-batch gradient descent: the loss keeps falling")
    bx.set(xlabel="step", ylabel=r"sharpness $\lambda_{\max}(H)$", ylim=sharpness_ylim)
    bx.set_title(r"... while the sharpness rises to $2/\eta$ (dashed) and hovers there")
    ax.legend()
    bx.legend(ncol=3, loc="upper center")
    return fig


def plot_edge_of_stability(momentum, adaptive: Mapping, colors: Mapping) -> Figure:
    """Two panels against the step. Left: the sharpness of a heavy-ball run (``momentum``: a
    label -> Run mapping of one run, with ``threshold_momentum`` measured) with its threshold
    ``(2 + 2 beta)/eta`` dashed and ``2/eta`` dotted. Right: the preconditioned sharpness of
    adaptive runs (``adaptive``: label -> Run, with ``preconditioned_sharpness`` and
    ``threshold_adam``) as a fraction of their threshold, which is 1 (dashed). Returns the
    figure.

    Args:
        momentum: a mapping ``label -> Run`` holding exactly one heavy-ball run.
        adaptive: a mapping ``label -> Run`` of adaptive runs.
        colors: a mapping ``label -> colour`` covering both mappings' labels.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: ``momentum`` does not hold exactly one run, ``adaptive`` is empty, or a
            run's measurements lack a required column.
    """
    if len(momentum) != 1 or not adaptive:
        raise ValueError("Invalid runs: one momentum run and at least one adaptive run needed")
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.4))
    ((label, run),) = momentum.items()
    m = run.measurements
    _missing(m, ["step", "sharpness", "threshold_momentum"], "measurements")
    ax.plot(m["step"], m["sharpness"], color=colors[label], lw=1.5, label=label)
    ax.axhline(m["threshold_momentum"].iloc[-1], color="0.3", ls="--", lw=1,
               label=r"$(2 + 2\beta)/\eta$")  # fmt: skip
    lr = float(run.history["lr"].iloc[-1])
    ax.axhline(2 / lr, color="0.3", ls=":", lw=1, label=r"$2/\eta$ (no momentum)")
    ax.set(xlabel="step", ylabel=r"sharpness $\lambda_{\max}(H)$", ylim=(0, None))
    ax.set_title("Heavy ball: at its own threshold")
    ax.legend(fontsize=9, loc="lower right")
    for label, r in adaptive.items():
        m = r.measurements
        _missing(m, ["step", "preconditioned_sharpness", "threshold_adam"], "measurements")
        ratio = m["preconditioned_sharpness"] / m["threshold_adam"]
        bx.plot(m["step"], ratio, color=colors[label], lw=1.5, label=label)
    bx.axhline(1.0, color="0.3", ls="--", lw=1)
    bx.set(xlabel="step", ylabel=ADAPTIVE_RATIO_LABEL.replace(r"\;/\;", r" \,/\, "))
    bx.set(ylim=(0, None), title="Adaptive methods: preconditioned sharpness / threshold")
    bx.legend(fontsize=9, loc="lower right")
    return fig
