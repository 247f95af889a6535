"""Toy problems and optimizer trajectories on them: contours, paths, races, small multiples,
learning-rate tuning, step sizes, alpha sweeps, animations, the interactive explorer and the
gallery.

Functions here take toy problems (:class:`analysis_lib.problems.toy.ToyProblem`) and
trajectories (:class:`analysis_lib.trajectory.Trajectory`) or anything with the same attributes.
"""

from __future__ import annotations

import hashlib
import re

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
from matplotlib.figure import Figure

from .palette import (
    alpha_colormap,
    alpha_colors,
    trajectory_list,
    trajectory_style,
    trajectory_styles,
)
from .training import draw_losses

__all__ = [
    "TOY_CMAP",
    "animate_trajectories",
    "animation_html",
    "draw_explorer",
    "draw_problem",
    "draw_trajectories",
    "plot_alpha_sweep",
    "plot_explorer",
    "plot_lr_tuning",
    "plot_problem_gallery",
    "plot_race",
    "plot_small_multiples",
    "plot_step_sizes",
    "trajectory_explorer",
]

#: Light background colormap for toy-problem contours (white valleys, grey walls), so that the
#: optimizers' colours stand out.
TOY_CMAP = mcolors.LinearSegmentedColormap.from_list("toy_background", ["#ffffff", "#b4bec9"])


def draw_problem(
    problem, ax=None, *, n: int = 160, levels: int = 14, colorbar: bool = True, minima: bool = True
):
    """Filled contours of ``problem`` over its plot bounds (on a log colour scale when the
    problem asks for one), thin contour lines, its minima as white stars and a colour bar of
    the loss. Returns the axes.

    Args:
        problem: a toy problem (``grid``, ``levels``, ``log_scale``, ``minima``, ``bounds``).
        ax: the matplotlib Axes (None: a new figure).
        n: the grid resolution per axis.
        levels: the number of contour levels.
        colorbar: add a colour bar.
        minima: mark the minima.

    Returns:
        The matplotlib Axes.
    """
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
    Returns the axes; ``legend=True`` puts a legend outside the axes, on the right.

    Args:
        problem: a toy problem.
        trajectories: a list of trajectories, or a dict ``label -> trajectory``.
        ax: the matplotlib Axes (None: a new figure).
        background: draw :func:`draw_problem` under the paths.
        colorbar: give the background a colour bar.
        markers: mark every point.
        legend: add a legend outside the axes.
        colors: colours, one per trajectory (None: the optimizer palette).
        linewidth: the path width.
        opacity: the path alpha.

    Returns:
        The matplotlib Axes.

    Raises:
        ValueError: ``colors`` does not have one entry per trajectory.
    """
    styles = trajectory_styles(trajectories, colors)
    trajectories = trajectory_list(trajectories)
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
    :func:`draw_trajectories` (for noisy runs).

    Args:
        problem: a toy problem.
        trajectories: a list of trajectories, or a dict ``label -> trajectory``.
        title: the figure title (None: none).
        markers: mark every point of the paths.
        colors: colours, one per trajectory (None: the optimizer palette).
        smooth: the rolling window of the loss panel (None: raw).
        linewidth: the path width.
        opacity: the path alpha.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: ``colors`` does not have one entry per trajectory, or ``smooth`` is not an
            integer >= 1.
    """
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
    method and its learning rate.

    Args:
        problem: a toy problem.
        trajectories: a list of trajectories, or a dict ``label -> trajectory``.
        ncols: panels per row.
        title: the figure title (None: none).
        markers: mark every point of the paths.

    Returns:
        The matplotlib Figure.
    """
    trajectories = trajectory_list(trajectories)
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
    chosen learning rate as a large dot and diverged runs as crosses along the top.

    Args:
        results: a list of ``TuneResult`` or a dict of them (its values are used).
        ax: the matplotlib Axes (None: a new figure).
        title: the axes title (None: a default).

    Returns:
        The matplotlib Figure holding the axes.
    """
    results = trajectory_list(results)
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
    vertical lines.

    Args:
        trajectories: a list of trajectories, or a dict ``label -> trajectory``; those
            without ``step_sizes`` are left out.
        title: the figure title (None: none).
        marks: a mapping ``label -> step`` of vertical lines (None: none).

    Returns:
        The matplotlib Figure.
    """
    trajectories = [t for t in trajectory_list(trajectories) if t.step_sizes is not None]
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
    from SGD-like alpha = 0 to AdamW-like alpha = 1).

    Args:
        problem: a toy problem.
        trajectories: a mapping ``alpha -> trajectory``, alphas in ``[0, 1]``.
        title: the figure title (None: none).

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: an alpha outside ``[0, 1]``.
    """
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
    is closed, so it is not also drawn as a still.

    Args:
        problem: a toy problem.
        trajectories: a list of trajectories, or a dict ``label -> trajectory``.
        frames: the largest number of frames (fewer for short trajectories).
        dpi: the figure resolution.
        figsize: the figure size, in inches.
        interval: the delay between frames, in milliseconds.

    Returns:
        The ``FuncAnimation``.

    Raises:
        ValueError: ``trajectories`` is empty.
    """
    from matplotlib.animation import FuncAnimation

    trajectories = trajectory_list(trajectories)
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
    with ``IPython.display.HTML``.

    Args:
        problem: a toy problem.
        trajectories: a list of trajectories, or a dict ``label -> trajectory``.
        frames: the largest number of frames.
        dpi: the frame resolution.
        **kwargs: passed on to :func:`animate_trajectories` (``figsize``, ``interval``).

    Returns:
        The HTML text, with element ids derived from its content (the same input gives the same
        text).

    Raises:
        ValueError: ``trajectories`` is empty.
    """
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


def plot_explorer(problem, trajectory) -> Figure:
    """The explorer's view of one trajectory on ``problem``: :func:`plot_race` of its path and
    loss, titled with the method, its learning rate, the steps taken and why a diverged run
    stopped.

    Args:
        problem: a toy problem.
        trajectory: one trajectory.

    Returns:
        The matplotlib Figure.
    """
    t = trajectory
    title = f"{problem.title}: {t.label}, lr = {t.lr:.3g}, {t.steps} steps"
    if t.diverged:
        title += f" (diverged: {t.stop_reason})"
    return plot_race(problem, [t], title=title)


def draw_explorer(
    problem,
    optimizer: str = "adam",
    lr: float = 0.1,
    beta1: float = 0.9,
    beta2: float = 0.999,
    alpha: float = 0.5,
    steps: int = 200,
) -> Figure:
    """:func:`plot_explorer` of the trajectory of ``optimizer`` on ``problem`` with the
    explorer's slider values (``beta1`` is SGD's momentum for ``"sgdm"``; ``beta2`` and
    ``alpha`` apply where the optimizer has them). The view behind :func:`trajectory_explorer`;
    the run itself is :func:`analysis_lib.trajectory.run`.

    Args:
        problem: a toy problem.
        optimizer: the optimizer's name (``"sgd"``, ``"sgdm"``, ``"adam"``, ``"adamw"``,
            ``"adamnx"``, ``"ada2ms"``).
        lr: the learning rate.
        beta1: the first-moment (or momentum) coefficient.
        beta2: the second-moment coefficient.
        alpha: Ada2MS's alpha.
        steps: the number of steps.

    Returns:
        The matplotlib Figure.
    """
    from ..trajectory import run, slider_hparams

    hparams = slider_hparams(optimizer, beta1, beta2, alpha)
    return plot_explorer(problem, run(problem, optimizer, int(steps), lr=float(lr), **hparams))


def trajectory_explorer(problems, *, steps: int = 200):
    """An ipywidgets explorer (returned; a notebook displays it): dropdowns for the problem
    (from ``problems``, a list of toy problems) and the optimizer, sliders for lr (log scale),
    beta1, beta2, alpha and steps; each change redraws :func:`draw_explorer`. Needs ipywidgets
    and a live kernel.

    Args:
        problems: a list of toy problems (named by ``title``).
        steps: the initial value of the steps slider.

    Returns:
        An ``ipywidgets.interactive`` widget.

    Raises:
        ImportError: ipywidgets or IPython is not installed.
    """
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
    minima as stars and its suggested start as a black circle.

    Args:
        problems: the toy problems.
        ncols: panels per row.

    Returns:
        The matplotlib Figure.
    """
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
