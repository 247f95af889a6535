"""House plotting style, optimizer colours and reproducible figure saving.

Importing this module applies the house style (:func:`set_style`). Typical notebook use::

    from analysis_lib import plots

    fig, ax = plt.subplots()
    ax.plot(steps, loss, color=plots.optimizer_color("adamw"), label="AdamW")
    plots.save(fig, "loss_adamw")  # figures/loss_adamw.png and figures/loss_adamw.pdf

Figures go to :func:`figures_dir`: ``$ANALYSIS_LIB_FIGURES`` when it is set, else ``figures/`` at
the project root. :func:`save` writes each file atomically and strips the metadata that would
change from one run to the next (dates, matplotlib's version), so re-running a notebook that
draws the same figure rewrites the same bytes and leaves ``git diff`` quiet.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

from ._checks import check_int
from .io import write_atomically

__all__ = [
    "ADA2MS_SCHEDULE_COLOR",
    "FIGURES_ENV_VAR",
    "OPTIMIZER_COLORS",
    "TOY_CMAP",
    "SavedFigures",
    "alpha_colormap",
    "alpha_colors",
    "animate_trajectories",
    "animation_html",
    "draw_explorer",
    "draw_landscape_contour",
    "draw_landscape_filled",
    "draw_landscape_surface",
    "draw_losses",
    "draw_pca_path",
    "draw_problem",
    "draw_trajectories",
    "draw_transition",
    "figures_dir",
    "landscape_levels",
    "optimizer_color",
    "optimizer_style",
    "plot_alpha_sweep",
    "plot_interpolation",
    "plot_landscapes",
    "plot_lr_tuning",
    "plot_problem_gallery",
    "plot_race",
    "plot_small_multiples",
    "plot_step_sizes",
    "save",
    "set_style",
    "trajectory_explorer",
    "trajectory_style",
]

#: Environment variable that, when set, names the folder :func:`figures_dir` returns.
FIGURES_ENV_VAR = "ANALYSIS_LIB_FIGURES"

# One palette for every figure, defined here only. Fixed colours from Okabe & Ito's colour-blind
# safe set: the SGD family blue, Adam green, AdamW orange, AdamNX reddish purple. Ada2MS is one
# method with a dial, so its constant alphas lie on one sequential scale (seaborn's perceptually
# uniform "rocket", dark at alpha = 0 to light at alpha = 1: adjacent levels differ in lightness,
# which colour-blind readers see too), and a schedule of alpha is near-black.
#: Fixed colour (hex string) for each optimizer, shared by all figures. ``"ada2ms"`` is its
#: default alpha (0.5); use :func:`optimizer_color` for any other alpha or a schedule.
OPTIMIZER_COLORS: dict[str, str] = {
    "sgd": "#0072b2",  # blue
    "sgdm": "#56b4e9",  # sky blue
    "adam": "#009e73",  # bluish green
    "adamw": "#e69f00",  # orange
    "adamnx": "#cc79a7",  # reddish purple
    "ada2ms": "",  # filled in below: alpha_colors([0.5])
}
#: The colour of Ada2MS with a schedule of alpha (e.g. ``ExponentialAlpha``, 1 -> 0).
ADA2MS_SCHEDULE_COLOR = "#1a1a1a"
# The part of "rocket" that Ada2MS's alpha in [0, 1] maps to: its darkest end is black and its
# lightest is too pale for lines on white.
_ALPHA_SPAN = (0.12, 0.74)
_ADA2MS_DEFAULT_ALPHA = 0.5

_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
_FORMAT_RE = re.compile(r"[A-Za-z0-9]+")

# Metadata that removes run-dependent entries (dates, matplotlib's version) per output format.
# A value of None tells matplotlib to leave the key out.
_STABLE_METADATA: dict[str, dict[str, str | None]] = {
    "png": {"Software": None},
    "pdf": {"CreationDate": None, "ModDate": None, "Creator": None, "Producer": None},
    "svg": {"Date": None, "Creator": None},
}

_MAX_LAYOUT_PASSES = 4

_RC = {
    "savefig.dpi": 180,
    "figure.dpi": 100,
    "figure.constrained_layout.use": True,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    # Embed TrueType fonts in PDF/PS (text stays editable and searchable).
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    # Fixed salt so the ids in SVG output do not change from run to run.
    "svg.hashsalt": "analysis_lib",
}


def set_style() -> None:
    """Apply the house style: seaborn's ``whitegrid`` theme in the ``notebook`` context with the
    colour-blind-safe ``colorblind`` palette, constrained layout, no top/right spines and a
    180 dpi ``savefig`` resolution.

    ``sns.set_theme`` starts from matplotlib's defaults, so calling this any number of times
    gives the same settings (it is idempotent); it also undoes earlier changes to ``rcParams``.
    """
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", rc=_RC)


def _project_root() -> Path | None:
    """The folder holding ``pyproject.toml`` next to the ``analysis_lib`` package, or None when
    the package is installed somewhere without one (e.g. site-packages)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def figures_dir() -> Path:
    """The folder figures are saved to, created if missing.

    ``$ANALYSIS_LIB_FIGURES`` when it is set and not empty; a relative value is taken relative
    to the project root (so ``ANALYSIS_LIB_FIGURES=build/test-figures`` means the same folder
    whatever the kernel's working directory is), or to the current working directory when there
    is no project root. Without the variable: ``figures/`` at the project root (the folder with
    the ``pyproject.toml`` above the ``analysis_lib`` package), or ``./figures`` when the package
    is installed elsewhere.
    """
    root = _project_root()
    base = root if root is not None else Path.cwd()
    env = os.environ.get(FIGURES_ENV_VAR, "").strip()
    folder = base / Path(env).expanduser() if env else base / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class SavedFigures(list):
    """The list of paths :func:`save` returns. It is a plain ``list`` of ``Path`` objects, but it
    shows only the file names, so a notebook cell ending in ``plots.save(...)`` does not put
    machine-specific absolute paths into the notebook's outputs."""

    def __repr__(self) -> str:
        """``SavedFigures(['name.png', 'name.pdf'])``."""
        return f"{type(self).__name__}({[Path(p).name for p in self]!r})"

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        """IPython's display: the same as ``repr``."""
        printer.text(repr(self))


def _settle_layout(fig: Figure, max_passes: int = _MAX_LAYOUT_PASSES) -> None:
    """Draw ``fig`` without rendering (which runs its layout engine) until no axes moves, at most
    ``max_passes`` times."""
    previous = None
    for _ in range(max_passes):
        fig.draw_without_rendering()
        positions = [tuple(ax.get_position().bounds) for ax in fig.get_axes()]
        if positions == previous or fig.get_layout_engine() is None:
            return
        previous = positions


def save(
    fig: Figure, name: str, *, formats: Sequence[str] = ("png", "pdf"), **savefig_kwargs
) -> list[Path]:
    """Save ``fig`` as ``figures_dir() / f"{name}.{fmt}"`` for each format and return the paths
    (a :class:`SavedFigures` list, whose repr shows only the file names).

    Args:
        fig: the matplotlib figure.
        name: the file stem, made of letters, digits, ``_`` and ``-`` only (no folders, no
            extension).
        formats: the file formats (matplotlib format names such as ``"png"``, ``"pdf"``,
            ``"svg"``), in the order the returned paths follow.
        **savefig_kwargs: passed on to :meth:`Figure.savefig` (e.g. ``bbox_inches="tight"``);
            a ``metadata`` dict is merged over the stable defaults.

    Metadata that changes between runs is left out (PNG ``Software``; PDF ``CreationDate``,
    ``ModDate``, ``Creator`` and ``Producer``; SVG ``Date`` and ``Creator``), so saving the same
    figure again writes the same bytes. The layout (e.g. constrained layout) is computed once and
    shared by all formats. Every file is rendered in memory first and then written atomically
    (temporary file in the same folder + ``os.replace``): a failure or an interruption never
    leaves a half-written figure behind.

    Raises:
        ValueError: ``name`` is not a simple file stem, or a format is not a plain extension.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"Invalid name: {name!r} (expected a file stem of letters, digits, '_' and '-')"
        )
    if isinstance(formats, str):
        formats = (formats,)
    formats = [str(fmt).lower() for fmt in formats]
    for fmt in formats:
        if not _FORMAT_RE.fullmatch(fmt):
            raise ValueError(f"Invalid formats entry: {fmt!r} (expected e.g. 'png' or 'pdf')")
    user_metadata = savefig_kwargs.pop("metadata", None) or {}

    folder = figures_dir()
    # Settle the layout (constrained layout can move things on a second pass, e.g. with
    # colorbars), then keep it off while rendering, so every format gets the same layout and
    # saving the same figure again gives the same bytes.
    _settle_layout(fig)
    engine = fig.get_layout_engine()
    if engine is not None:
        fig.set_layout_engine("none")
    try:
        rendered = []
        for fmt in dict.fromkeys(formats):  # drop duplicates, keep the order
            buf = io.BytesIO()
            metadata = {**_STABLE_METADATA.get(fmt, {}), **user_metadata}
            fig.savefig(buf, format=fmt, metadata=metadata or None, **savefig_kwargs)
            rendered.append((folder / f"{name}.{fmt}", buf.getvalue()))
    finally:
        if engine is not None:
            fig.set_layout_engine(engine)
    for path, data in rendered:
        write_atomically(path, data)
    return SavedFigures(path for path, _ in rendered)


def alpha_colormap() -> mcolors.Colormap:
    """The colormap for Ada2MS's ``alpha`` in ``[0, 1]``: the part of seaborn's perceptually
    uniform ``rocket`` scale from dark (``alpha = 0``, momentum-SGD-like) to light
    (``alpha = 1``, AdamW). Every figure that colours Ada2MS by alpha uses it."""
    lo, hi = _ALPHA_SPAN
    rocket = sns.color_palette("rocket", as_cmap=True)
    return mcolors.LinearSegmentedColormap.from_list(
        "ada2ms_alpha", [rocket(lo + (hi - lo) * x) for x in np.linspace(0, 1, 64)]
    )


def alpha_colors(
    alphas: Iterable[float], cmap: str | mcolors.Colormap | None = None
) -> list[tuple[float, float, float, float]]:
    """One RGBA colour per Ada2MS ``alpha`` value (each in ``[0, 1]``), in the given order.

    By default the colours come from :func:`alpha_colormap`, Ada2MS's scale in every figure.
    ``cmap`` picks another colormap instead (a name such as ``"viridis"`` or seaborn's
    ``"crest"``, or a Colormap), evaluated at ``alpha`` (for quantities other than Ada2MS's
    alpha, which should not look like it).

    Raises:
        ValueError: an alpha is not a number in ``[0, 1]``.
    """
    values = [float(a) for a in alphas]
    for a in values:
        if not 0.0 <= a <= 1.0:  # also rejects NaN
            raise ValueError(f"Invalid alphas entry: {a!r} (expected a number in [0, 1])")
    if cmap is None:
        colormap = alpha_colormap()
    elif isinstance(cmap, str):
        colormap = sns.color_palette(cmap, as_cmap=True)
    else:
        colormap = cmap
    return [tuple(float(c) for c in colormap(a)) for a in values]


OPTIMIZER_COLORS["ada2ms"] = mcolors.to_hex(alpha_colors([_ADA2MS_DEFAULT_ALPHA])[0])


def optimizer_color(name: str, alpha=None) -> str:
    """The colour of an optimizer configuration, the same in every figure: ``name`` as
    ``make_optimizer`` knows it (any case); for Ada2MS, ``alpha`` a number in ``[0, 1]`` (on
    :func:`alpha_colormap`), a schedule (any callable: :data:`ADA2MS_SCHEDULE_COLOR`) or
    ``None`` (the default alpha, 0.5). Returns a hex string.

    Raises:
        ValueError: an unknown name, or an alpha outside ``[0, 1]``.
    """
    key = str(name).lower()
    if key not in OPTIMIZER_COLORS:
        raise ValueError(f"Invalid name: {name!r} (expected one of {tuple(OPTIMIZER_COLORS)})")
    if key != "ada2ms" or alpha is None:
        return OPTIMIZER_COLORS[key]
    if callable(alpha):
        return ADA2MS_SCHEDULE_COLOR
    return mcolors.to_hex(alpha_colors([alpha])[0])


def optimizer_style(name: str, alpha=None) -> dict:
    """``color`` (:func:`optimizer_color`) and ``linestyle`` of an optimizer configuration:
    AdamW and Ada2MS at ``alpha = 1`` (which is AdamW) dashed, so that paths they share with
    Adam stay visible; an alpha schedule dash-dotted; everything else solid."""
    key = str(name).lower()
    style = "-"
    if key == "adamw":
        style = _LINESTYLES["adamw"]
    elif key == "ada2ms" and callable(alpha):
        style = "-."
    elif key == "ada2ms" and alpha is not None:
        style = _LINESTYLES.get(float(alpha), "-")
    return {"color": optimizer_color(key, alpha), "linestyle": style}


set_style()


# -- toy problems and optimizer trajectories -------------------------------------------------
# Functions below take toy problems (analysis_lib.problems.toy.ToyProblem) and trajectories
# (analysis_lib.trajectory.Trajectory) or anything with the same attributes.

#: Light background colormap for toy-problem contours (white valleys, grey walls), so that the
#: optimizers' colours stand out.
TOY_CMAP = mcolors.LinearSegmentedColormap.from_list("toy_background", ["#ffffff", "#b4bec9"])

_LINESTYLES = {"adamw": (0, (5, 2)), 1.0: (0, (5, 2)), 0.5: "-", 0.0: (0, (1.2, 1.2))}


def trajectory_style(trajectory) -> dict:
    """Line colour, style and label of a trajectory (or a :class:`~analysis_lib.trajectory.Method`
    or a :class:`~analysis_lib.trajectory.TuneResult`): :func:`optimizer_style` of its
    optimizer and alpha, with its label."""
    name = trajectory.optimizer
    alpha = (trajectory.hparams or {}).get("alpha")
    if name not in OPTIMIZER_COLORS:
        return {"color": "0.3", "linestyle": "-", "label": trajectory.label}
    return {**optimizer_style(name, alpha), "label": trajectory.label}


def _as_list(trajectories) -> list:
    return list(trajectories.values()) if isinstance(trajectories, dict) else list(trajectories)


def _styles(trajectories, colors=None) -> list[dict]:
    """:func:`trajectory_style` of each trajectory; a dict's keys become the labels and
    ``colors`` (one per trajectory) replace the optimizer colours."""
    items = _as_list(trajectories)
    styles = [trajectory_style(t) for t in items]
    if isinstance(trajectories, dict):
        for style, label in zip(styles, trajectories, strict=True):
            style["label"] = str(label)
    if colors is not None:
        for style, color in zip(styles, colors, strict=True):
            style.update(color=color, linestyle="-")
    return styles


def draw_problem(
    problem, ax=None, *, n: int = 160, levels: int = 14, colorbar: bool = True, minima: bool = True
):
    """Filled contours of ``problem`` over its plot bounds (on a log colour scale when the
    problem asks for one), thin contour lines, its minima as white stars and a colour bar of
    the loss. Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5))
    xx, yy, ff = problem.grid(n)
    lv = problem.levels(levels, grid=n)
    if not problem.log_scale:  # round numbers on a linear scale
        lv = mticker.MaxNLocator(levels).tick_values(lv[0], lv[-1])
    if problem.log_scale:
        norm = mcolors.LogNorm(vmin=lv[0], vmax=lv[-1])
        ff = np.maximum(ff, lv[0] * 0.5)  # keep the valley floor drawable on the log scale
    else:
        norm = mcolors.Normalize(vmin=lv[0], vmax=lv[-1])
    filled = ax.contourf(xx, yy, ff, levels=lv, norm=norm, cmap=TOY_CMAP, extend="both")
    ax.contour(xx, yy, ff, levels=lv, norm=norm, colors="0.55", linewidths=0.4, alpha=0.6)
    if minima and problem.minima:
        mx, my = np.array(problem.minima).T
        ax.plot(
            mx,
            my,
            ls="none",
            marker="*",
            ms=14,
            mfc="white",
            mec="black",
            mew=1.0,
            zorder=5,
            label="global minimum",
        )
    (x0, x1), (y0, y1) = problem.bounds
    ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="$x$", ylabel="$y$")
    ax.set_aspect("equal")
    ax.grid(False)
    if colorbar:
        _loss_colorbar(problem, ax.figure.colorbar(filled, ax=ax, shrink=0.85, pad=0.02))
    return ax


def _loss_colorbar(problem, cb) -> None:
    cb.set_label("loss $f(x, y)$" + ("  (log scale)" if problem.log_scale else ""))
    if problem.log_scale:  # decades only, written as powers of ten
        cb.ax.yaxis.set_major_locator(mticker.LogLocator(numticks=8))
        cb.ax.yaxis.set_major_formatter(mticker.LogFormatterSciNotation())
        cb.ax.yaxis.set_minor_locator(mticker.NullLocator())


def draw_trajectories(
    problem,
    trajectories,
    ax=None,
    *,
    background: bool = True,
    colorbar: bool = True,
    markers: bool = True,
    legend: bool = False,
    colors=None,
    linewidth: float = 1.6,
    opacity: float = 1.0,
):
    """``problem``'s contours with each trajectory's path on top (points marked when
    ``markers``), the start as a black circle. ``trajectories`` is a list, or a dict whose keys
    are the labels; ``colors`` replace the optimizer colours; ``linewidth`` and ``opacity``
    (thin, translucent paths let a noisy path that fills the plane show what lies beneath).
    Returns the axes; ``legend=True`` puts a legend outside the axes, on the right."""
    styles = _styles(trajectories, colors)
    trajectories = _as_list(trajectories)
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4.5))
    if background:
        draw_problem(problem, ax, colorbar=colorbar)
    for t, style in zip(trajectories, styles, strict=True):
        ax.plot(
            t.points[:, 0],
            t.points[:, 1],
            lw=linewidth,
            alpha=opacity,
            marker="o" if markers else None,
            ms=2.2,
            **style,
            zorder=3,
        )
    if trajectories:
        x0, y0 = trajectories[0].points[0]
        ax.plot([x0], [y0], ls="none", marker="o", ms=7, color="black", zorder=6, label="start")
    if legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=9)
    return ax


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


def _opaque(handle):
    from matplotlib.lines import Line2D

    if not isinstance(handle, Line2D):
        return handle
    proxy = Line2D([], [])
    proxy.update_from(handle)
    proxy.set_alpha(1.0)
    return proxy


def plot_race(
    problem,
    trajectories,
    *,
    title: str | None = None,
    markers: bool = False,
    colors=None,
    smooth: int | None = None,
    linewidth: float = 1.6,
    opacity: float = 1.0,
) -> Figure:
    """Two panels: the trajectories on ``problem``'s contours and their losses against the
    step, with one legend outside both, below them. ``trajectories`` is a list or a dict whose
    keys are the labels; ``colors`` (one per trajectory) replace the optimizer colours;
    ``smooth``, ``linewidth`` and ``opacity`` as in :func:`draw_losses` and
    :func:`draw_trajectories` (for noisy runs)."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12.5, 5.4), width_ratios=[1.15, 1])
    draw_trajectories(
        problem,
        trajectories,
        ax,
        markers=markers,
        colors=colors,
        linewidth=linewidth,
        opacity=opacity,
    )
    draw_losses(problem, trajectories, bx, colors=colors, smooth=smooth)
    handles, labels = ax.get_legend_handles_labels()
    if opacity < 1:  # the legend shows the colours at full strength
        handles = [_opaque(h) for h in handles]
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 5), fontsize=10)
    fig.suptitle(title or f"{problem.label}:  ${problem.formula}$")
    return fig


def plot_small_multiples(
    problem, trajectories, *, ncols: int = 4, title: str | None = None, markers: bool = True
) -> Figure:
    """One panel per trajectory on ``problem``'s contours (shared colour bar), titled with the
    method and its learning rate."""
    trajectories = _as_list(trajectories)
    nrows = -(-len(trajectories) // ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(3.1 * ncols + 1.0, 3.0 * nrows + 0.6),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for ax, t in zip(axes.flat, trajectories, strict=False):
        draw_trajectories(problem, [t], ax, colorbar=False, markers=markers)
        extra = f", diverged at step {t.steps}" if t.diverged else ""
        ax.set_title(f"{t.label}\nlr = {t.lr:.2g}{extra}", fontsize=10)
    for ax in axes.flat[len(trajectories) :]:
        ax.set_visible(False)
    for ax in axes.flat:
        if not ax.get_subplotspec().is_last_row():
            ax.set_xlabel("")
        if not ax.get_subplotspec().is_first_col():
            ax.set_ylabel("")
    mappable = next(c for c in axes.flat[0].collections if hasattr(c, "get_cmap"))
    _loss_colorbar(problem, fig.colorbar(mappable, ax=axes, shrink=0.8, pad=0.01))
    fig.suptitle(title or f"{problem.label}: each method at its own learning rate")
    return fig


def plot_lr_tuning(results, *, ax=None, title: str | None = None) -> Figure:
    """The tuning curves: the distance of the final point to the nearest minimum against the
    learning rate, one line per method (:class:`~analysis_lib.trajectory.TuneResult`), the
    chosen learning rate as a large dot and diverged runs as crosses along the top."""
    results = _as_list(results)
    if ax is None:
        fig, ax = plt.subplots(figsize=(9, 4.8))
    fig = ax.figure
    finite = np.concatenate([r.final_distance[np.isfinite(r.final_distance)] for r in results])
    top = 10 ** np.ceil(np.log10(max(finite.max(), 1e-12))) * 3 if finite.size else 1.0
    low = max(finite.min(), 1e-16) if finite.size else 1e-16
    for r in results:
        style = trajectory_style(r)
        d = np.maximum(r.final_distance, low)
        ax.plot(r.lrs, np.where(np.isfinite(d), d, np.nan), marker="o", ms=3.5, lw=1.5, **style)
        ax.plot(
            r.lrs[r.diverged],
            np.full(r.diverged.sum(), top),
            ls="none",
            marker="x",
            ms=6,
            color=style["color"],
        )
        if r.best_index is not None:
            ax.plot(
                [r.lrs[r.best_index]],
                [d[r.best_index]],
                marker="o",
                ms=10,
                color=style["color"],
                mec="black",
                zorder=4,
            )
    ax.axhline(top, color="0.6", lw=0.8, ls=":")
    ax.text(
        1.0,
        top,
        " diverged",
        transform=ax.get_yaxis_transform(),
        va="center",
        ha="left",
        fontsize=9,
        color="0.3",
    )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="learning rate (log scale)",
        ylabel="distance of the final point\nto the nearest minimum (log scale)",
        title=title or "Learning-rate tuning (large dots: chosen)",
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.12, 1.0), borderaxespad=0, fontsize=9)
    return fig


def plot_step_sizes(
    trajectories, *, title: str | None = None, marks: dict[str, float] | None = None
) -> Figure:
    """The per-coordinate effective step size η/(√d + ε) of adaptive trajectories against the
    step (log axes), one panel per coordinate; ``marks`` (label -> step) draws labelled
    vertical lines."""
    trajectories = [t for t in _as_list(trajectories) if t.step_sizes is not None]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
    for i, (ax, axis) in enumerate(zip(axes, "xy", strict=True)):
        for t in trajectories:
            steps = np.arange(1, len(t.step_sizes) + 1)
            ax.plot(steps, t.step_sizes[:, i], lw=1.6, **trajectory_style(t))
        for k, (label, step) in enumerate((marks or {}).items()):
            ax.axvline(
                step, color="0.35", ls=(0, (1, 2)) if k % 2 == 0 else "--", lw=1.2, label=label
            )
        ax.set(xscale="log", yscale="log", xlabel="step (log scale)", title=f"coordinate ${axis}$")
    axes[0].set_ylabel(r"effective step size $\eta/(\sqrt{d}+\epsilon)$  (log scale)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def plot_alpha_sweep(problem, trajectories, *, title: str | None = None) -> Figure:
    """Ada2MS trajectories at several alphas (a mapping alpha -> trajectory) on ``problem``'s
    contours and their losses, coloured by alpha with :func:`alpha_colormap` (a colour bar
    from SGD-like alpha = 0 to AdamW-like alpha = 1)."""
    items = sorted(trajectories.items())
    colors = alpha_colors([a for a, _ in items])
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12.5, 5.0), width_ratios=[1.1, 1])
    draw_problem(problem, ax, colorbar=False)
    has_min = problem.min_value is not None
    for (_, t), c in zip(items, colors, strict=True):
        ax.plot(t.points[:, 0], t.points[:, 1], color=c, lw=1.5)
        y = t.losses - (problem.min_value or 0.0) * problem.scale if has_min else t.losses
        bx.plot(np.arange(len(y)), np.maximum(y, 1e-30) if has_min else y, color=c, lw=1.5)
    x0, y0 = items[0][1].points[0]
    ax.plot([x0], [y0], ls="none", marker="o", ms=7, color="black", zorder=6, label="start")
    ax.legend(loc="lower right", fontsize=9, framealpha=0.9, frameon=True)
    if has_min:
        bx.set_yscale("log")
        gaps = np.concatenate([t.losses for _, t in items]) - (problem.min_value or 0.0)
        top, bottom = np.nanmax(gaps), np.nanmin(np.maximum(gaps, 1e-300))
        bx.set_ylim(bottom=max(bottom, top * 1e-16) / 3)  # rounding noise lies below
    bx.set(xlabel="step", ylabel=r"loss gap $f - f^*$  (log scale)" if has_min else "loss")
    sm = plt.cm.ScalarMappable(norm=mcolors.Normalize(0, 1), cmap=alpha_colormap())
    cb = fig.colorbar(sm, ax=[ax, bx], shrink=0.85, pad=0.01)
    cb.set_label(r"Ada2MS $\alpha$  (0: momentum SGD, 1: AdamW)")
    fig.suptitle(title or f"Ada2MS from AdamW to SGD on the {problem.label.lower()}")
    return fig


def animate_trajectories(
    problem,
    trajectories,
    *,
    frames: int = 30,
    dpi: int = 60,
    figsize: tuple[float, float] = (7.2, 4.4),
    interval: int = 150,
):
    """A :class:`matplotlib.animation.FuncAnimation` of the trajectories appearing step by step
    on ``problem``'s contours (``frames`` frames, steps spaced evenly on a square-root scale so
    the fast early motion is not lost). Display it with ``HTML(anim.to_jshtml())``; the figure
    is closed, so it is not also drawn as a still."""
    from matplotlib.animation import FuncAnimation

    trajectories = _as_list(trajectories)
    fig, ax = plt.subplots(figsize=figsize, dpi=dpi)
    draw_problem(problem, ax, n=120, colorbar=False)
    longest = max(len(t.points) for t in trajectories)
    marks = np.unique(np.round(np.linspace(0, 1, frames) ** 2 * (longest - 1)).astype(int))
    lines, heads = [], []
    for t in trajectories:
        style = trajectory_style(t)
        (line,) = ax.plot([], [], lw=1.8, **style)
        (head,) = ax.plot([], [], marker="o", ms=6, color=style["color"], ls="none")
        lines.append(line)
        heads.append(head)
    x0, y0 = trajectories[0].points[0]
    ax.plot([x0], [y0], ls="none", marker="o", ms=7, color="black", zorder=6, label="start")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=9)
    label = ax.set_title("")

    def draw(k):
        step = int(marks[k])
        for t, line, head in zip(trajectories, lines, heads, strict=True):
            pts = t.points[: step + 1]
            line.set_data(pts[:, 0], pts[:, 1])
            head.set_data(pts[-1:, 0], pts[-1:, 1])
        label.set_text(f"{problem.title}: step {step}")
        return [*lines, *heads, label]

    anim = FuncAnimation(fig, draw, frames=len(marks), interval=interval, blit=False)
    plt.close(fig)
    return anim


def animation_html(problem, trajectories, *, frames: int = 30, dpi: int = 72, **kwargs) -> str:
    """:func:`animate_trajectories` rendered as self-contained HTML/JavaScript
    (``FuncAnimation.to_jshtml``), every frame a JPEG at ``dpi`` (not the house ``savefig``
    resolution): about 20 kB a frame, so that a notebook embedding it stays small. Display it
    with ``IPython.display.HTML``."""
    anim = animate_trajectories(problem, trajectories, frames=frames, dpi=dpi, **kwargs)
    with plt.rc_context({"savefig.dpi": dpi, "animation.frame_format": "jpeg"}):
        html = anim.to_jshtml(default_mode="once")
    # matplotlib names the player's elements with a random uuid4: replace it by a hash of the
    # content, so that re-running a notebook writes the same output (and git stays quiet)
    ids = set(re.findall(r"(?<=_anim_img)[0-9a-f]{32}", html))
    for old_id in ids:
        stable = hashlib.sha256(html.replace(old_id, "").encode()).hexdigest()[:32]
        html = html.replace(old_id, stable)
    return html


def draw_explorer(
    problem,
    optimizer: str = "adam",
    lr: float = 0.1,
    beta1: float = 0.9,
    beta2: float = 0.999,
    alpha: float = 0.5,
    steps: int = 200,
) -> Figure:
    """One trajectory of ``optimizer`` with the given hyperparameters (``beta1`` is SGD's
    momentum for ``"sgdm"``; ``beta2`` and ``alpha`` apply where the optimizer has them) on
    ``problem``: path and loss. The view behind :func:`trajectory_explorer`."""
    from .trajectory import run

    hp: dict = {"lr": float(lr)}
    if optimizer == "sgdm":
        hp["momentum"] = float(beta1)
    elif optimizer in ("adam", "adamw", "adamnx", "ada2ms"):
        hp["betas"] = (float(beta1), float(beta2))
    if optimizer == "ada2ms":
        hp["alpha"] = float(alpha)
    t = run(problem, optimizer, int(steps), **hp)
    fig = plot_race(
        problem,
        [t],
        title=(
            f"{problem.title}: {t.label}, lr = {lr:.3g}, {t.steps} steps"
            + (f" (diverged: {t.stop_reason})" if t.diverged else "")
        ),
    )
    return fig


def trajectory_explorer(problems, *, steps: int = 200):
    """An ipywidgets explorer (returned; a notebook displays it): dropdowns for the problem
    (from ``problems``, a list of toy problems) and the optimizer, sliders for lr (log scale),
    beta1, beta2, alpha and steps; each change redraws :func:`draw_explorer`. Needs ipywidgets
    and a live kernel."""
    import ipywidgets as widgets
    from IPython.display import display

    by_name = {p.title: p for p in problems}

    def show(problem, optimizer, lr, beta1, beta2, alpha, steps):
        fig = draw_explorer(by_name[problem], optimizer, lr, beta1, beta2, alpha, steps)
        display(fig)
        plt.close(fig)

    slider = dict(continuous_update=False, readout_format=".3f")
    return widgets.interactive(
        show,
        problem=widgets.Dropdown(options=list(by_name)),
        optimizer=widgets.Dropdown(
            options=["sgd", "sgdm", "adam", "adamw", "adamnx", "ada2ms"], value="adam"
        ),
        lr=widgets.FloatLogSlider(
            value=0.1,
            base=10,
            min=-4,
            max=1,
            step=0.1,
            continuous_update=False,
            readout_format=".2g",
        ),
        beta1=widgets.FloatSlider(value=0.9, min=0.0, max=0.99, step=0.01, **slider),
        beta2=widgets.FloatSlider(value=0.999, min=0.9, max=0.9999, step=0.0001, **slider),
        alpha=widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, **slider),
        steps=widgets.IntSlider(value=steps, min=10, max=2000, step=10, continuous_update=False),
    )


def plot_problem_gallery(problems, *, ncols: int = 4) -> Figure:
    """Every problem's contours in one figure (one panel each, with its own colour bar), its
    minima as stars and its suggested start as a black circle."""
    problems = list(problems)
    nrows = -(-len(problems) // ncols)
    # a fixed layout: constrained layout would take several passes over 2 * len(problems) axes
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.3 * ncols, 3.7 * nrows), squeeze=False, layout="none"
    )
    fig.subplots_adjust(left=0.05, right=0.97, bottom=0.07, top=0.86, wspace=0.45, hspace=0.55)
    for ax, p in zip(axes.flat, problems, strict=False):
        draw_problem(p, ax, n=120, levels=12)
        ax.plot(*p.start, marker="o", ms=6, color="black", ls="none", zorder=6)
        ax.set_title(f"{p.title}\n${p.formula}$", fontsize=10)
    for ax in axes.flat[len(problems) :]:
        ax.set_visible(False)
    fig.suptitle("The toy problems (star: global minimum, dot: start)")
    return fig


# -- the AdamW-to-SGD transition (notebook 03) -------------------------------------------------------
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


# -- loss landscapes -------------------------------------------------------------------------
# Functions below take analysis_lib.landscape.LandscapeGrid results (alphas, betas, loss with
# loss[i, j] at (alphas[i], betas[j])) and Directions (for the PCA path).


def _landscape_range(grids, vmin=None, vmax=None) -> tuple[float, float]:
    values = np.concatenate([np.ravel(g.loss) for g in grids])
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) == 0:
        raise ValueError("Invalid grid: no finite positive loss to draw on a log scale")
    return (
        float(values.min()) if vmin is None else float(vmin),
        float(values.max()) if vmax is None else float(vmax),
    )


def landscape_levels(grids, levels: int = 12, vmin=None, vmax=None) -> np.ndarray:
    """``levels`` log-spaced contour levels from the smallest to the largest loss of ``grids``
    (one grid or several, for a shared scale), or between ``vmin`` and ``vmax``."""
    grids = grids if isinstance(grids, list | tuple) else [grids]
    lo, hi = _landscape_range(grids, vmin, vmax)
    if not hi > lo:
        hi = lo * 1.001
    return np.geomspace(lo, hi, levels)


def _check_2d(grid) -> None:
    if getattr(grid, "betas", None) is None or np.ndim(grid.loss) != 2:
        raise ValueError("Invalid grid: a 2-D landscape grid is needed (landscape.surface_2d)")


def draw_landscape_contour(
    grid,
    ax=None,
    *,
    levels=12,
    labels: bool = True,
    color="0.2",
    linewidths: float = 0.8,
    fmt: str = "%.3g",
):
    """Contour lines of a 2-D landscape at log-spaced levels (an int: that many between the
    grid's smallest and largest loss; or the levels themselves), labelled with their loss.
    The centre (0, 0) is marked. Returns the axes."""
    _check_2d(grid)
    ax = ax or plt.subplots(figsize=(5, 4.4))[1]
    if np.isscalar(levels):
        levels = landscape_levels(grid, int(levels))
    cs = ax.contour(
        grid.alphas, grid.betas, grid.loss.T, levels=levels, colors=color, linewidths=linewidths
    )
    if labels:
        ax.clabel(cs, cs.levels[::2], inline=True, fontsize=7, fmt=fmt)
    ax.plot(0, 0, marker="x", color="k", ms=6, mew=1.5, ls="none")
    ax.set(xlabel="α (direction 1)", ylabel="β (direction 2)", aspect="equal")
    ax.xaxis.set_major_locator(mticker.MaxNLocator(5))
    ax.yaxis.set_major_locator(mticker.MaxNLocator(5))
    return ax


def draw_landscape_filled(
    grid,
    ax=None,
    *,
    levels: int = 30,
    vmin=None,
    vmax=None,
    cmap: str = "viridis",
    colorbar: bool = True,
    lines: int = 10,
):
    """A filled contour of a 2-D landscape on a logarithmic colour scale (``vmin``/``vmax`` fix
    it, e.g. to share it between panels), with ``lines`` labelled log-spaced contour lines over
    it (0: none) and a colour bar. Returns (axes, the filled contour set)."""
    _check_2d(grid)
    ax = ax or plt.subplots(figsize=(5.4, 4.4))[1]
    fill_levels = landscape_levels(grid, levels, vmin, vmax)
    loss = np.clip(grid.loss, fill_levels[0], fill_levels[-1])
    cf = ax.contourf(
        grid.alphas,
        grid.betas,
        loss.T,
        levels=fill_levels,
        cmap=cmap,
        norm=mcolors.LogNorm(fill_levels[0], fill_levels[-1]),
    )
    if lines:
        draw_landscape_contour(
            grid,
            ax,
            levels=landscape_levels(grid, lines, vmin, vmax),
            color="white",
            linewidths=0.6,
        )
    if colorbar:
        _log_colorbar(ax.figure.colorbar(cf, ax=ax, label="loss  (log scale)"))
    ax.grid(False)
    return ax, cf


def _log_colorbar(cb) -> None:
    """Ticks of a log-scaled loss colour bar at powers of ten (and 2 and 5 times them when
    it spans less than two decades), not at the contour levels."""
    lo, hi = cb.mappable.norm.vmin, cb.mappable.norm.vmax
    subs = (1.0,) if hi / lo >= 100 else (1.0, 2.0, 5.0)
    cb.set_ticks([t for t in mticker.LogLocator(subs=subs).tick_values(lo, hi) if lo <= t <= hi])
    cb.ax.yaxis.set_major_formatter(mticker.LogFormatterSciNotation())
    cb.ax.yaxis.set_minor_locator(mticker.NullLocator())


def draw_landscape_surface(grid, ax=None, *, cmap: str = "viridis", log: bool = True):
    """A 3-D surface of a 2-D landscape (log10 of the loss with ``log``) on 3-D axes (made
    when ``ax`` is None). Returns the axes."""
    _check_2d(grid)
    if ax is None:
        ax = plt.figure(figsize=(6, 5)).add_subplot(projection="3d")
    a, b = np.meshgrid(grid.alphas, grid.betas, indexing="ij")
    z = np.log10(grid.loss) if log else grid.loss
    ax.plot_surface(
        a,
        b,
        z,
        cmap=cmap,
        linewidth=0,
        antialiased=True,
        rcount=len(grid.alphas),
        ccount=len(grid.betas),
    )
    ax.set(xlabel="α", ylabel="β")
    ax.set_zlabel("log$_{10}$ loss" if log else "loss", labelpad=10)
    return ax


def draw_pca_path(
    directions, ax=None, *, color="k", label: str | None = None, axis_labels: bool = True
):
    """A trajectory projected on its PCA plane (``landscape.pca_directions``): the path, its
    start (circle) and end (star, at the origin); the axes name each component's explained
    variance. Returns the axes."""
    path = getattr(directions, "path", None)
    if path is None:
        raise ValueError("Invalid directions: no projected path (use landscape.pca_directions)")
    ax = ax or plt.subplots(figsize=(5, 4.4))[1]
    ax.plot(path[:, 0], path[:, 1], color=color, lw=1.6, label=label)
    ax.plot(*path[0], marker="o", color=color, ms=6, mec="white", ls="none")
    ax.plot(*path[-1], marker="*", color=color, ms=12, mec="white", ls="none")
    if axis_labels:
        ev = directions.explained_variance_ratio
        ax.set(xlabel=f"PC 1 ({100 * ev[0]:.1f}% of the path)", ylabel=f"PC 2 ({100 * ev[1]:.1f}%)")
    return ax


def plot_landscapes(
    grids,
    *,
    ncols: int | None = None,
    paths=None,
    colors=None,
    levels: int = 30,
    lines: int = 10,
    title: str | None = None,
    panel_size: float = 3.6,
):
    """2-D landscapes (a dict ``label -> grid``) side by side on one logarithmic colour scale
    with one colour bar; ``paths`` (``label -> Directions`` from ``pca_directions``) are drawn
    over their panels in ``colors[label]``. Returns (figure, axes)."""
    grids = dict(grids)
    if not grids:
        raise ValueError("Invalid grids: empty (expected a dict label -> LandscapeGrid)")
    ncols = ncols or len(grids)
    nrows = -(-len(grids) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel_size * ncols + 1.2, panel_size * nrows + 0.4), squeeze=False
    )
    lo, hi = _landscape_range(list(grids.values()))
    cf = None
    for ax, (label, grid) in zip(axes.flat, grids.items(), strict=False):
        _, cf = draw_landscape_filled(
            grid, ax, levels=levels, vmin=lo, vmax=hi, colorbar=False, lines=lines
        )
        if paths is not None and label in paths:
            color = (colors or {}).get(label, "w")
            draw_pca_path(paths[label], ax, color=color)
            ev = paths[label].explained_variance_ratio
            # equal scales on both components, so the path's turns are not exaggerated
            ax.set(
                xlabel=f"PC 1 ({100 * ev[0]:.0f}%)",
                ylabel=f"PC 2 ({100 * ev[1]:.0f}%)",
                aspect="equal",
            )
        ax.set_title(label)
    for ax in list(axes.flat)[len(grids) :]:
        ax.set_visible(False)
    _log_colorbar(fig.colorbar(cf, ax=axes, label="loss  (log scale)", shrink=0.9))
    if title:
        fig.suptitle(title)
    return fig, axes


def plot_interpolation(
    curves,
    *,
    names: tuple[str, str] = ("A", "B"),
    axes=None,
    colors=None,
    title: str | None = None,
    **line_kwargs,
):
    """Loss (log axis) and accuracy along a linear interpolation, one line per entry of
    ``curves`` (``label -> LandscapeGrid`` from ``landscape.interpolate``, e.g. train and
    test); alpha = 0 and 1 are marked with ``names``. Returns (figure, axes)."""
    curves = dict(curves)
    if not curves:
        raise ValueError("Invalid curves: empty (expected a dict label -> LandscapeGrid)")
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    fig = axes[0].figure
    styles = ["-", "--", ":", "-."]
    for i, (label, c) in enumerate(curves.items()):
        kw = {
            "color": (colors or {}).get(label, f"C{i}"),
            "ls": styles[i % 4],
            "lw": 1.8,
            **line_kwargs,
        }
        axes[0].plot(c.alphas, c.loss, label=label, **kw)
        axes[1].plot(c.alphas, c.accuracy, label=label, **kw)
    for ax in axes:
        for x in (0.0, 1.0):
            ax.axvline(x, color="0.6", lw=0.8, ls=":")
        top = ax.secondary_xaxis("top")  # the two solutions named above the axes
        top.set_xticks([0.0, 1.0], labels=list(names), fontsize=9, color="0.3")
        top.tick_params(length=0)
        ax.set_xlabel("α   (θ = (1 − α) θ$_A$ + α θ$_B$)")
    axes[0].set(yscale="log", ylabel="loss")
    axes[1].set(ylabel="accuracy")
    axes[0].legend(loc="best")
    if title:
        fig.suptitle(title)
    return fig, axes
