"""One palette for every figure: each optimizer's colour and line style, Ada2MS's alphas on one
sequential scale, and the style of a toy-problem trajectory."""

from __future__ import annotations

from collections.abc import Iterable

import matplotlib.colors as mcolors
import numpy as np
import seaborn as sns

from ..optim.registry import OPTIMIZERS

__all__ = [
    "ADA2MS_SCHEDULE_COLOR",
    "OPTIMIZER_COLORS",
    "alpha_colormap",
    "alpha_colors",
    "optimizer_color",
    "optimizer_colors",
    "optimizer_linestyles",
    "optimizer_style",
    "optimizer_styles",
    "trajectory_style",
]

# One palette for every figure. The fixed colours are the optimizer registry's
# (``analysis_lib.optim.OPTIMIZERS``): Okabe & Ito's colour-blind safe set, the SGD family blue,
# Adam green, AdamW orange, AdamNX reddish purple. Ada2MS is one method with a dial, so its
# constant alphas lie on one sequential scale (seaborn's perceptually uniform "rocket", dark at
# alpha = 0 to light at alpha = 1: adjacent levels differ in lightness, which colour-blind readers
# see too), whose point at its default alpha is the registry's Ada2MS colour; a schedule of alpha
# is a neutral mid grey (drawn dash-dotted), far in lightness from alpha = 0's near-black end.
#: Fixed colour (hex string) of each optimizer, shared by all figures: the registry's. The
#: ``"ada2ms"`` entry is its default alpha (0.5); :func:`optimizer_color` gives any other alpha
#: or a schedule.
OPTIMIZER_COLORS: dict[str, str] = {name: spec.color for name, spec in OPTIMIZERS.items()}
#: The colour of Ada2MS with a schedule of alpha (e.g. ``ExponentialAlpha``, 1 -> 0).
ADA2MS_SCHEDULE_COLOR = "#7f7f7f"
# The part of "rocket" that Ada2MS's alpha in [0, 1] maps to: its darkest end is black and its
# lightest is too pale for lines on white.
_ALPHA_SPAN = (0.12, 0.74)


def alpha_colormap() -> mcolors.Colormap:
    """The colormap for Ada2MS's ``alpha`` in ``[0, 1]``: the part of seaborn's perceptually
    uniform ``rocket`` scale from dark (``alpha = 0``, momentum-SGD-like) to light
    (``alpha = 1``, AdamW). Every figure that colours Ada2MS by alpha uses it.

    Returns:
        A 256-entry ``LinearSegmentedColormap`` named ``"ada2ms_alpha"``.

    Examples:
        >>> cmap = alpha_colormap()
        >>> cmap.name, cmap.N
        ('ada2ms_alpha', 256)
    """
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

    Args:
        alphas: the alpha values, each a number in ``[0, 1]``.
        cmap: a colormap name or Colormap; None (default) is :func:`alpha_colormap`.

    Returns:
        A list of ``(r, g, b, a)`` float tuples, one per alpha.

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


def optimizer_color(name: str, alpha=None) -> str:
    """The colour of an optimizer configuration, the same in every figure: ``name`` as
    ``make_optimizer`` knows it (any case); for Ada2MS, ``alpha`` a number in ``[0, 1]`` (on
    :func:`alpha_colormap`), a schedule (any callable: :data:`ADA2MS_SCHEDULE_COLOR`) or
    ``None`` (the default alpha, 0.5). Returns a hex string.

    Args:
        name: the optimizer's registry name, in any case.
        alpha: Ada2MS's alpha (a number, a callable schedule, or None); ignored for other
            optimizers.

    Raises:
        ValueError: an unknown name, or an alpha outside ``[0, 1]``.

    Examples:
        >>> optimizer_color("Adam")
        '#009e73'
        >>> optimizer_color("ada2ms", lambda t: 1.0)
        '#7f7f7f'
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
    Adam stay visible; an alpha schedule dash-dotted; everything else solid.

    Args:
        name: the optimizer's registry name, in any case.
        alpha: Ada2MS's alpha, as for :func:`optimizer_color`.

    Returns:
        A dict with keys ``"color"`` (hex string) and ``"linestyle"`` (a matplotlib line style).

    Raises:
        ValueError: an unknown name, or an alpha outside ``[0, 1]`` (from
            :func:`optimizer_color`).

    Examples:
        >>> optimizer_style("adamw")
        {'color': '#e69f00', 'linestyle': (0, (5, 2))}
    """
    key = str(name).lower()
    style = "-"
    if key == "adamw":
        style = _LINESTYLES["adamw"]
    elif key == "ada2ms" and callable(alpha):
        style = "-."
    elif key == "ada2ms" and alpha is not None:
        style = _LINESTYLES.get(float(alpha), "-")
    return {"color": optimizer_color(key, alpha), "linestyle": style}


def _configuration(config) -> tuple[str, object]:
    """(name, alpha) of a configuration: a name, or a tuple (name, hyperparameters, ...)."""
    if isinstance(config, str):
        return config, None
    if not isinstance(config, tuple | list) or not config or not isinstance(config[0], str):
        raise ValueError(
            f"Invalid configs entry: {config!r} (expected a name or (name, hyperparameters, ...))"
        )
    hparams = config[1] if len(config) > 1 and config[1] is not None else {}
    return config[0], dict(hparams).get("alpha")


def optimizer_styles(configs) -> dict[str, dict]:
    """:func:`optimizer_style` of every configuration of a mapping ``label -> name`` or
    ``label -> (name, hyperparameters, ...)`` (a notebook's table of runs), by label; an
    Ada2MS ``alpha`` among the hyperparameters picks its colour on the alpha scale.

    Args:
        configs: a mapping ``label -> name`` or ``label -> (name, hyperparameters, ...)``.

    Returns:
        A dict ``label -> {"color": ..., "linestyle": ...}``.

    Raises:
        ValueError: a configuration is neither a name nor a tuple starting with one, or its name
            or alpha is invalid.
    """
    return {label: optimizer_style(*_configuration(c)) for label, c in dict(configs).items()}


def optimizer_colors(configs) -> dict[str, str]:
    """The ``color`` of :func:`optimizer_styles`, by label.

    Args:
        configs: as for :func:`optimizer_styles`.

    Returns:
        A dict ``label -> hex colour string``.

    Raises:
        ValueError: as for :func:`optimizer_styles`.

    Examples:
        >>> optimizer_colors({"base": "adam", "a0": ("ada2ms", {"alpha": 0.0})})
        {'base': '#009e73', 'a0': '#2d1738'}
    """
    return {label: style["color"] for label, style in optimizer_styles(configs).items()}


def optimizer_linestyles(configs) -> dict[str, object]:
    """The ``linestyle`` of :func:`optimizer_styles`, by label.

    Args:
        configs: as for :func:`optimizer_styles`.

    Returns:
        A dict ``label -> matplotlib line style``.

    Raises:
        ValueError: as for :func:`optimizer_styles`.
    """
    return {label: style["linestyle"] for label, style in optimizer_styles(configs).items()}


_LINESTYLES = {"adamw": (0, (5, 2)), 1.0: (0, (5, 2)), 0.5: "-", 0.0: (0, (1.2, 1.2))}


def trajectory_style(trajectory) -> dict:
    """Line colour, style and label of a trajectory (or a :class:`~analysis_lib.trajectory.Method`
    or a :class:`~analysis_lib.trajectory.TuneResult`): :func:`optimizer_style` of its
    optimizer and alpha, with its label.

    Args:
        trajectory: any object with ``optimizer``, ``hparams`` and ``label`` attributes. An
            optimizer outside the registry gets a solid dark grey (``"0.3"``).

    Returns:
        A dict with keys ``"color"``, ``"linestyle"`` and ``"label"``.

    Raises:
        ValueError: an Ada2MS ``alpha`` outside ``[0, 1]``.
    """
    name = trajectory.optimizer
    alpha = (trajectory.hparams or {}).get("alpha")
    if name not in OPTIMIZER_COLORS:
        return {"color": "0.3", "linestyle": "-", "label": trajectory.label}
    return {**optimizer_style(name, alpha), "label": trajectory.label}


def trajectory_list(trajectories) -> list:
    """The trajectories of a list or of a dict's values (label -> trajectory), as a list.

    Args:
        trajectories: a list (or other iterable) of trajectories, or a dict ``label -> trajectory``.

    Returns:
        A new list.

    Examples:
        >>> trajectory_list({"a": 1, "b": 2})
        [1, 2]
    """
    return list(trajectories.values()) if isinstance(trajectories, dict) else list(trajectories)


def trajectory_styles(trajectories, colors=None) -> list[dict]:
    """:func:`trajectory_style` of each trajectory; a dict's keys become the labels and
    ``colors`` (one per trajectory) replace the optimizer colours.

    Args:
        trajectories: a list of trajectories or a dict ``label -> trajectory``.
        colors: optional colours, one per trajectory; they also make every line solid.

    Returns:
        A list of style dicts (``color``, ``linestyle``, ``label``), one per trajectory.

    Raises:
        ValueError: ``colors`` does not have one entry per trajectory (from ``zip(strict=True)``),
            or an invalid Ada2MS alpha.
    """
    items = trajectory_list(trajectories)
    styles = [trajectory_style(t) for t in items]
    if isinstance(trajectories, dict):
        for style, label in zip(styles, trajectories, strict=True):
            style["label"] = str(label)
    if colors is not None:
        for style, color in zip(styles, colors, strict=True):
            style.update(color=color, linestyle="-")
    return styles
