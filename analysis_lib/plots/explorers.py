"""Explorers that need no kernel: trajectories on toy problems precomputed on a grid of the
controls (problem, method, learning rate, Ada2MS's alpha, ...) and drawn by Vega-Lite in the
browser, through Altair.

:func:`explorer_paths` runs the grid (one batched run per problem and method, with
:func:`analysis_lib.trajectory.run_batch`) and keeps each path as one row of lists;
:func:`kernel_free_explorer` draws it: a drop-down menu per text control, a slider per numeric
control, the path on the problem's landscape and its loss, redrawn by Vega-Lite whenever a
control moves. The result displays as a Vega-Lite output (:data:`VEGALITE_MIMETYPE`), which
JupyterLab draws without a kernel, even in an untrusted notebook, and which the book draws with
the copies of Vega, Vega-Lite and vega-embed it serves itself. Nothing is fetched from a CDN.

Altair is optional (the ``dev`` extra installs it): this module imports without it, and only
:func:`kernel_free_explorer` needs it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from .palette import trajectory_style

__all__ = [
    "VEGALITE_MIMETYPE",
    "KernelFreeChart",
    "explorer_paths",
    "explorer_surfaces",
    "kernel_free_explorer",
]

#: The output type of a Vega-Lite 5 chart in a notebook (JupyterLab's own renderer draws it).
VEGALITE_MIMETYPE = "application/vnd.vegalite.v5+json"
#: The lowest loss above the minimum drawn on the loss panel's log scale.
LOSS_FLOOR = 1e-12


def _numbers(values: Iterable[float], digits: int) -> str:
    """``values`` to ``digits`` significant digits, as one space-separated string (a notebook
    stores it in one line, where a list would take one line per number)."""
    text = (f"{float(v):.{digits}g}" for v in values)
    return " ".join(t.replace("e-0", "e-").replace("e+0", "e+") for t in text)


def _short(number: str) -> str:
    """A fixed-point number without the zeros it does not need: ``"-0.500"`` -> ``"-.5"``."""
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    number = number.replace("-0.", "-.")
    if number.startswith("0."):
        number = number[1:]
    return "0" if number in ("", "-0") else number


def _summary(t) -> str:
    """One line on how a run ended: its final loss, or where it diverged."""
    head = f"{t.label}, lr = {t.lr:.3g}"
    if t.diverged:
        return f"{head}: diverged at step {t.steps} ({t.stop_reason})"
    if t.problem.minima:
        return f"{head}: {t.steps} steps, final distance to a minimum {t.final_distance:.2g}"
    return f"{head}: {t.steps} steps, final loss {float(t.losses[-1]):.3g}"


def _path_row(t, floor: float, resolution: float) -> dict[str, Any]:
    """One trajectory as a row: its points inside the plot (up to the first one outside),
    rounded to ``resolution`` times the plot's width and height (a point equal to the one
    before it after rounding is left out), and its loss above ``floor`` at every step, down to
    1e-12, to two digits."""
    (x0, x1), (y0, y1) = t.problem.bounds
    p = t.points
    inside = (p[:, 0] >= x0) & (p[:, 0] <= x1) & (p[:, 1] >= y0) & (p[:, 1] <= y1)
    p = p[: len(p) if inside.all() else int(np.argmin(inside))]
    decimals = [
        max(0, math.ceil(-math.log10(resolution * (hi - lo)))) for lo, hi in t.problem.bounds
    ]
    rounded = [(f"{a:.{decimals[0]}f}", f"{b:.{decimals[1]}f}") for a, b in p]
    kept = [q for i, q in enumerate(rounded) if i == 0 or q != rounded[i - 1]]
    gap = t.losses - floor
    gap = np.maximum(gap[np.isfinite(gap)], LOSS_FLOOR)
    return {
        "x": " ".join(_short(q[0]) for q in kept),
        "y": " ".join(_short(q[1]) for q in kept),
        "gap": _numbers(gap, 2),
        "color": trajectory_style(t)["color"],
        "summary": _summary(t),
    }


def explorer_paths(
    problems: Iterable,
    methods: Iterable,
    lrs: Sequence[float],
    steps: int,
    *,
    resolution: float = 1e-3,
) -> pd.DataFrame:
    """The paths of every method at every learning rate on every problem, one row each, for
    :func:`kernel_free_explorer`.

    Each (problem, method) pair is one batched run over ``lrs``
    (:func:`analysis_lib.trajectory.run_batch`). A path keeps its points up to the first one
    outside the problem's plot bounds; its loss is kept at every step as the gap to the
    problem's minimum value (to the lowest loss of that problem's runs when it has none),
    floored at 1e-12 for a log scale.

    Args:
        problems: toy problems.
        methods: :class:`analysis_lib.trajectory.Method` objects (optimizer and fixed
            hyperparameters; the learning rate is the grid's).
        lrs: the learning rates (> 0).
        steps: the steps of each run (>= 1).
        resolution: the coordinates are kept to this fraction of the plot's width and height
            (rounded to a power of ten; in (0, 0.1]), and a point that repeats the one before
            it at that precision is left out (the loss keeps two digits at every step).

    Returns:
        A DataFrame with columns ``problem`` (its name), ``method`` (its label), ``optimizer``,
        ``alpha`` (Ada2MS's, else NaN), ``lr``, ``log_lr`` (log10, rounded to 6 decimals),
        ``x``, ``y``, ``gap`` (lists), ``color`` (the method's colour) and ``summary`` (how
        the run ended, in words).

    Raises:
        ValueError: bad ``lrs``, ``steps`` or ``resolution``, or a bad method (from
            :func:`~analysis_lib.trajectory.run_batch`).
    """
    from ..trajectory import run_batch

    if not (isinstance(resolution, int | float) and 0 < resolution <= 0.1):
        raise ValueError(f"Invalid resolution: {resolution!r} (a number in (0, 0.1])")
    methods, rows = list(methods), []
    for problem in problems:
        runs = [
            t
            for m in methods
            for t in run_batch(problem, m.optimizer, steps, lrs, **dict(m.hparams))
        ]
        if problem.minima:
            floor = (problem.min_value or 0.0) * problem.scale
        else:
            floor = min(float(np.nanmin(t.losses)) for t in runs)
        for t in runs:
            alpha = t.hparams.get("alpha")
            rows.append(
                {
                    "problem": problem.name,
                    "method": t.label,
                    "optimizer": t.optimizer,
                    "alpha": float(alpha) if isinstance(alpha, int | float) else math.nan,
                    "lr": t.lr,
                    "log_lr": round(math.log10(t.lr), 6),
                    **_path_row(t, floor, resolution),
                }
            )
    return pd.DataFrame(rows)


def explorer_surfaces(problems: Iterable, n: int = 30) -> pd.DataFrame:
    """The background of each problem for :func:`kernel_free_explorer`: its loss on an ``n`` x
    ``n`` grid of cells over the plot bounds, as a shade from 0 to 99 (of the log of the gap to
    the minimum when the problem asks for a log scale), and its minima.

    Args:
        problems: toy problems.
        n: cells along each axis (>= 2).

    Returns:
        A DataFrame, one row per problem: ``problem`` (its name), ``x0``, ``x1``, ``y0``,
        ``y1`` (its plot bounds), ``n``, ``shade`` (the ``n * n`` shades, row by row from the
        bottom left, as one space-separated string), ``minima_x`` and ``minima_y`` (the
        coordinates of its minima, likewise).

    Raises:
        ValueError: ``n`` < 2.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"Invalid n: {n!r} (an integer >= 2)")
    rows = []
    for p in problems:
        (x0, x1), (y0, y1) = p.bounds
        hx, hy = (x1 - x0) / (2 * n), (y1 - y0) / (2 * n)
        xx, yy = np.meshgrid(
            np.linspace(x0 + hx, x1 - hx, n), np.linspace(y0 + hy, y1 - hy, n), indexing="xy"
        )
        f = p.value(torch.as_tensor(np.stack([xx, yy], -1), dtype=torch.float64)).numpy()
        if p.log_scale:
            f = np.log10(np.maximum(f - (p.min_value or 0.0) * p.scale, 1e-12))
        lo, hi = float(f.min()), float(f.max())
        shade = np.rint(99 * (f - lo) / (hi - lo)) if hi > lo else np.zeros_like(f)
        minima = np.asarray(p.minima, dtype=np.float64).reshape(-1, 2)
        rows.append(
            {
                "problem": p.name,
                "x0": float(x0), "x1": float(x1), "y0": float(y0), "y1": float(y1),
                "n": n,
                "shade": " ".join(str(int(v)) for v in shade.ravel()),
                "minima_x": _numbers(minima[:, 0], 6),
                "minima_y": _numbers(minima[:, 1], 6),
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class KernelFreeChart:
    """A Vega-Lite chart that a notebook displays as :data:`VEGALITE_MIMETYPE` only (no HTML
    that would load Vega from a CDN).

    Attributes:
        spec: the Vega-Lite specification, data included (a JSON-able dict).
        description: the plain-text stand-in shown where Vega-Lite is not drawn.
    """

    spec: dict
    description: str

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        return {VEGALITE_MIMETYPE: self.spec, "text/plain": self.description}


def _controls(paths: pd.DataFrame, controls: Mapping[str, str], initial: Mapping[str, Any]):
    """One Vega-Lite parameter per control (a menu for text, a slider for evenly spaced
    numbers) and the filter expression that keeps the row they select."""
    import altair as alt

    params, tests = [], []
    for column, label in controls.items():
        if column not in paths:
            raise ValueError(f"Invalid controls: no column {column!r} in paths")
        values = sorted(paths[column].dropna().unique())
        start = initial.get(column, values[0])
        if start not in values:
            raise ValueError(f"Invalid initial: {column} = {start!r} is not in the grid")
        if isinstance(values[0], str):
            bind = alt.binding_select(options=values, name=f"{label} ")
            tests.append(f"datum.{column} === {column}")
        else:
            steps = np.diff(values) if len(values) > 1 else np.array([1.0])
            if not np.allclose(steps, steps[0], rtol=1e-6, atol=1e-9):
                raise ValueError(f"Invalid paths: the {column} values are not evenly spaced")
            step = float(steps[0])
            bind = alt.binding_range(
                min=float(values[0]), max=float(values[-1]), step=step, name=f"{label} "
            )
            tests.append(f"abs(datum.{column} - {column}) < {step / 2!r}")
            start = float(start)
        params.append(alt.param(name=column, value=start, bind=bind))
    return params, " && ".join(tests)


def _records(frame: pd.DataFrame) -> list[dict]:
    """The rows of ``frame`` as JSON-able dicts (NaN as None)."""
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


def _numbers_of(chart, *fields: str):
    """``chart`` with each of ``fields`` (a string of numbers) split into one row per number,
    their position in the string as ``index``."""
    for f in fields:
        chart = chart.transform_calculate(**{f: f"split(datum.{f}, ' ')"})
    chart = chart.transform_flatten(list(fields)).transform_window(index="row_number()")
    for f in fields:
        chart = chart.transform_calculate(**{f: f"toNumber(datum.{f})"})
    return chart.transform_calculate(index="datum.index - 1")


def _path_panel(paths, surfaces, keep: str, problem_test: str, color, size: tuple[int, int]):
    """The problem's landscape, its minima, the selected path and its start."""
    import altair as alt

    width, height = size
    x = alt.X("x:Q", scale=alt.Scale(zero=False, nice=False), title="x")
    y = alt.Y("y:Q", scale=alt.Scale(zero=False, nice=False), title="y")
    ground = alt.Chart(surfaces).transform_filter(problem_test)
    cells = (
        _numbers_of(ground, "shade")
        .transform_calculate(
            x="datum.x0 + (datum.index % datum.n + 0.5) * (datum.x1 - datum.x0) / datum.n",
            y="datum.y0 + (floor(datum.index / datum.n) + 0.5) * (datum.y1 - datum.y0) / datum.n",
            x_lo="datum.x0 + (datum.index % datum.n) * (datum.x1 - datum.x0) / datum.n",
            y_lo="datum.y0 + floor(datum.index / datum.n) * (datum.y1 - datum.y0) / datum.n",
        )
        .transform_calculate(
            x_hi="datum.x_lo + (datum.x1 - datum.x0) / datum.n",
            y_hi="datum.y_lo + (datum.y1 - datum.y0) / datum.n",
        )
        .mark_rect()
        .encode(
            x=alt.X("x_lo:Q", scale=alt.Scale(zero=False, nice=False), title="x"),
            x2="x_hi:Q",
            y=alt.Y("y_lo:Q", scale=alt.Scale(zero=False, nice=False), title="y"),
            y2="y_hi:Q",
            color=alt.Color(
                "shade:Q", scale=alt.Scale(domain=[0, 99], range=["#ffffff", "#b4bec9"]),
                legend=None,
            ),
        )
    )  # fmt: skip
    minima = (
        _numbers_of(ground.transform_filter("length(datum.minima_x) > 0"), "minima_x", "minima_y")
        .transform_calculate(x="datum.minima_x", y="datum.minima_y")
        .mark_point(shape="diamond", size=90, filled=True, color="white", stroke="black")
        .encode(x, y)
    )
    path = _numbers_of(alt.Chart(paths).transform_filter(keep), "x", "y").transform_filter(
        "isValid(datum.x) && isFinite(datum.x)"
    )
    line = path.mark_line(point=alt.OverlayMarkDef(size=12), strokeWidth=1.5, clip=True).encode(
        x, y, order="index:Q", color=color
    )
    start = path.transform_filter("datum.index === 0").mark_point(
        size=60, filled=True, color="black"
    )
    return alt.layer(cells, minima, line, start.encode(x, y)).properties(width=width, height=height)


def kernel_free_explorer(
    paths: pd.DataFrame,
    surfaces: pd.DataFrame,
    controls: Mapping[str, str],
    *,
    initial: Mapping[str, Any] | None = None,
    title: str = "",
    size: tuple[int, int] = (260, 230),
) -> KernelFreeChart:
    """An explorer that needs no kernel: a menu or slider per control, the selected path on
    its problem's landscape (its start a black dot, the minima diamonds) and its loss above the
    minimum on a log scale, with a line on how the run ended. Vega-Lite redraws it in the
    browser whenever a control moves.

    Args:
        paths: :func:`explorer_paths` of the grid (every combination of the controls' values
            present once).
        surfaces: :func:`explorer_surfaces` of the problems in ``paths``.
        controls: column of ``paths`` -> the control's label, in the order shown: a text column
            gets a drop-down menu, a numeric one a slider over its (evenly spaced) values, e.g.
            ``{"problem": "problem", "method": "optimizer", "log_lr": "log10 lr"}``. Without a
            ``"problem"`` control ``paths`` must hold one problem.
        initial: the controls' starting values (default: each one's smallest value).
        title: the chart's title.
        size: (width, height) in pixels of each of the two panels.

    Returns:
        A :class:`KernelFreeChart` (a notebook displays it as Vega-Lite).

    Raises:
        ValueError: a control that is not a column, uneven slider values, an initial value
            off the grid, or several problems and no ``"problem"`` control.
        ImportError: Altair is not installed.
    """
    import altair as alt

    params, keep = _controls(paths, controls, dict(initial or {}))
    datasets = {
        "paths": _records(
            paths[list(dict.fromkeys([*controls, "method", "x", "y", "gap", "summary"]))]
        ),
        "surfaces": _records(surfaces),
    }
    paths_data, surfaces_data = alt.NamedData(name="paths"), alt.NamedData(name="surfaces")
    colors = paths.drop_duplicates("method")
    color = alt.Color(
        "method:N",
        scale=alt.Scale(domain=list(colors["method"]), range=list(colors["color"])),
        legend=None,
    )
    if "problem" in controls:
        problem_test = "datum.problem === problem"
    elif paths["problem"].nunique() == 1:
        problem_test = f"datum.problem === {paths['problem'].iloc[0]!r}"
    else:
        raise ValueError("Invalid controls: paths hold several problems and no problem control")
    steps = int(paths["gap"].str.count(" ").max())
    loss = (
        _numbers_of(alt.Chart(paths_data).transform_filter(keep), "gap")
        .transform_filter("isValid(datum.gap) && isFinite(datum.gap)")
        .mark_line(strokeWidth=1.5)
        .encode(
            x=alt.X("index:Q", scale=alt.Scale(domain=[0, steps], nice=False), title="step"),
            y=alt.Y(
                "gap:Q",
                scale=alt.Scale(type="log"),
                axis=alt.Axis(format="~e"),
                title="loss above the minimum",
            ),
            color=color,
        )
        .properties(width=size[0], height=size[1])
    )
    summary = (
        alt.Chart(paths_data)
        .transform_filter(keep)
        .mark_text(align="left", baseline="middle", fontSize=13)
        .encode(text="summary:N", x=alt.value(0), y=alt.value(10))
        .properties(width=2 * size[0], height=20)
    )
    path = _path_panel(paths_data, surfaces_data, keep, problem_test, color, size)
    chart = alt.vconcat(alt.hconcat(path, loss), summary, title=title, datasets=datasets)
    chart = chart.add_params(*params)
    chart = chart.configure_view(stroke=None).configure_concat(spacing=12)
    names = ", ".join(controls.values())
    return KernelFreeChart(chart.to_dict(), f"<kernel-free explorer: {names}>")
