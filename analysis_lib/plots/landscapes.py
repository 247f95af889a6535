"""Loss landscapes: contours, filled contours and surfaces of 2-D grids, a trajectory's PCA path,
landscapes side by side on one scale, and 1-D interpolations.

Functions here take :class:`analysis_lib.landscape.LandscapeGrid` results (``alphas``,
``betas``, ``loss`` with ``loss[i, j]`` at ``(alphas[i], betas[j])``) and ``Directions`` (for
the PCA path).
"""

from __future__ import annotations

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np

__all__ = [
    "draw_landscape_contour",
    "draw_landscape_filled",
    "draw_landscape_surface",
    "draw_pca_path",
    "landscape_levels",
    "plot_interpolation",
    "plot_landscapes",
]


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
    (one grid or several, for a shared scale), or between ``vmin`` and ``vmax``.

    Args:
        grids: a grid (anything with a ``loss`` array) or a list or tuple of grids.
        levels: the number of levels.
        vmin: the lowest level (None: the smallest finite positive loss).
        vmax: the highest level (None: the largest finite positive loss).

    Returns:
        A 1-D NumPy array of ``levels`` increasing values (a tiny range when all losses are
        equal).

    Raises:
        ValueError: no grid has a finite positive loss.

    Examples:
        >>> from types import SimpleNamespace
        >>> grid = SimpleNamespace(loss=[[1.0, 0.0], [100.0, float("nan")]])
        >>> landscape_levels(grid, 3).tolist()
        [1.0, 10.0, 100.0]
    """
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
    The centre (0, 0) is marked. Returns the axes.

    Args:
        grid: a 2-D ``LandscapeGrid`` (``alphas``, ``betas``, ``loss``).
        ax: the matplotlib Axes (None: a new figure).
        levels: the number of levels, or the levels themselves.
        labels: label the lines with their loss.
        color: the line colour.
        linewidths: the line width.
        fmt: the format of the line labels.

    Returns:
        The matplotlib Axes.

    Raises:
        ValueError: ``grid`` is not 2-D or has no finite positive loss.
    """
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
    it (0: none) and a colour bar. Returns (axes, the filled contour set).

    Args:
        grid: a 2-D ``LandscapeGrid``.
        ax: the matplotlib Axes (None: a new figure).
        levels: the number of filled levels.
        vmin: the bottom of the colour scale (None: the grid's smallest positive loss).
        vmax: the top of the colour scale (None: the grid's largest loss).
        cmap: the colormap.
        colorbar: add a colour bar.
        lines: the number of contour lines over the fill (0: none).

    Returns:
        A tuple ``(ax, QuadContourSet)``.

    Raises:
        ValueError: ``grid`` is not 2-D or has no finite positive loss.
    """
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
    when ``ax`` is None). Returns the axes.

    Args:
        grid: a 2-D ``LandscapeGrid``.
        ax: 3-D matplotlib Axes (None: a new figure).
        cmap: the colormap.
        log: draw ``log10`` of the loss.

    Returns:
        The 3-D Axes.

    Raises:
        ValueError: ``grid`` is not 2-D.
    """
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
    variance. Returns the axes.

    Args:
        directions: ``Directions`` from ``landscape.pca_directions`` (with ``path`` and
            ``explained_variance_ratio``).
        ax: the matplotlib Axes (None: a new figure).
        color: the path colour.
        label: the path's legend label (None: none).
        axis_labels: name the axes ``PC 1`` and ``PC 2`` with their explained variance.

    Returns:
        The matplotlib Axes.

    Raises:
        ValueError: ``directions`` has no projected path.
    """
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
    over their panels in ``colors[label]``. Returns (figure, axes).

    Args:
        grids: a mapping ``label -> LandscapeGrid`` (2-D).
        ncols: panels per row (None: all in one row).
        paths: a mapping ``label -> Directions`` to draw over the matching panels (None: none).
        colors: a mapping ``label -> colour`` for the paths (default white).
        levels: the number of filled levels.
        lines: the number of contour lines per panel (0: none).
        title: the figure title (None: none).
        panel_size: the size of one panel, in inches.

    Returns:
        A tuple ``(Figure, axes)``, ``axes`` a 2-D array of Axes (unused ones hidden).

    Raises:
        ValueError: ``grids`` is empty, a grid is not 2-D, or no grid has a finite positive loss.
    """
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
    test); alpha = 0 and 1 are marked with ``names``. Returns (figure, axes).

    Args:
        curves: a mapping ``label -> LandscapeGrid`` of 1-D curves (``alphas``, ``loss``,
            ``accuracy``).
        names: the names of the end points at alpha = 0 and alpha = 1.
        axes: two matplotlib Axes (loss, accuracy); None: a new figure.
        colors: a mapping ``label -> colour`` (default ``C0``, ``C1``, ...).
        title: the figure title (None: none).
        **line_kwargs: passed on to ``Axes.plot``, overriding the defaults.

    Returns:
        A tuple ``(Figure, axes)``.

    Raises:
        ValueError: ``curves`` is empty.
    """
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
