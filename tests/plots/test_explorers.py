"""The kernel-free explorers: the precomputed grid, the landscapes and the Vega-Lite chart."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from analysis_lib import trajectory
from analysis_lib.plots import explorers
from analysis_lib.problems import toy

METHODS = [trajectory.Method("sgd"), trajectory.Method("ada2ms", {"alpha": 0.5})]
LRS = [1e-3, 1e-2, 1e-1]


@pytest.fixture(scope="module")
def grid():
    problems = [toy.rotated_quadratic(), toy.saddle()]
    return problems, explorers.explorer_paths(problems, METHODS, LRS, 40)


def _floats(text: str) -> np.ndarray:
    return np.array([float(v) for v in text.split()])


def test_paths_hold_every_run_of_the_grid_as_one_row(grid):
    problems, paths = grid
    assert len(paths) == len(problems) * len(METHODS) * len(LRS)
    assert set(paths["method"]) == {"SGD", "Ada2MS α=0.5"}
    assert np.allclose(sorted(set(paths["log_lr"])), [-3, -2, -1])
    assert paths.loc[paths["optimizer"] == "sgd", "alpha"].isna().all()
    assert (paths.loc[paths["optimizer"] == "ada2ms", "alpha"] == 0.5).all()


def test_a_path_matches_its_run(grid):
    problems, paths = grid
    row = paths[(paths["problem"] == "rotated_quadratic") & (paths["method"] == "SGD")]
    row = row[np.isclose(row["log_lr"], -1)].iloc[0]
    run = trajectory.run(problems[0], "sgd", 40, lr=0.1)
    x, y, gap = _floats(row["x"]), _floats(row["y"]), _floats(row["gap"])
    assert (x[0], y[0]) == pytest.approx(tuple(run.points[0]), abs=1e-3)
    # the points kept follow the run to the plot's resolution (6 / 1000: 3 decimals)
    assert np.abs(x - run.points[: len(x), 0]).max() < 0.02 or len(x) < len(run.points)
    assert len(gap) == len(run.losses)  # the loss at every step, above the minimum (0)
    assert gap == pytest.approx(np.maximum(run.losses, 1e-12), rel=0.06)
    assert "final distance" in row["summary"]


def test_a_diverged_path_stops_at_the_edge_of_the_plot():
    problem = toy.rotated_quadratic()
    paths = explorers.explorer_paths([problem], [trajectory.Method("sgd")], [3.0], 200)
    row = paths.iloc[0]
    (x0, x1), (y0, y1) = problem.bounds
    x, y = _floats(row["x"]), _floats(row["y"])
    assert ((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)).all()
    assert "diverged" in row["summary"]


def test_problems_without_a_minimum_measure_the_loss_from_the_lowest_seen(grid):
    _, paths = grid
    gaps = np.concatenate([_floats(g) for g in paths.loc[paths["problem"] == "saddle", "gap"]])
    assert gaps.min() == pytest.approx(1e-12)


def test_surfaces_hold_one_shaded_grid_per_problem():
    problems = [toy.rosenbrock(), toy.saddle()]
    surfaces = explorers.explorer_surfaces(problems, n=8)
    assert list(surfaces["problem"]) == ["rosenbrock", "saddle"]
    shades = [np.array(s.split(), dtype=int) for s in surfaces["shade"]]
    assert all(len(s) == 64 and s.min() == 0 and s.max() == 99 for s in shades)
    # Rosenbrock's darkest cell is a corner far from the valley, its lightest on the valley
    assert surfaces.loc[0, "minima_x"] == "1" and surfaces.loc[1, "minima_x"] == ""


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: explorers.explorer_surfaces([toy.saddle()], n=1), "Invalid n"),
        (
            lambda: explorers.explorer_paths([toy.saddle()], METHODS, LRS, 5, resolution=0.5),
            "Invalid resolution",
        ),
    ],
)
def test_bad_arguments_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_chart_binds_a_control_to_each_column_and_shows_only_vega_lite(grid):
    problems, paths = grid
    chart = explorers.kernel_free_explorer(
        paths,
        explorers.explorer_surfaces(problems, n=6),
        {"problem": "problem", "method": "optimizer", "log_lr": "log10 lr"},
        initial={"problem": "saddle", "log_lr": -2.0},
        title="test",
    )
    bundle = chart._repr_mimebundle_()
    assert set(bundle) == {explorers.VEGALITE_MIMETYPE, "text/plain"}
    spec = bundle[explorers.VEGALITE_MIMETYPE]
    assert spec["$schema"].endswith("/v5.20.1.json")
    params = {p["name"]: p for p in spec["params"]}
    assert params["problem"]["bind"]["input"] == "select"
    assert params["problem"]["value"] == "saddle"
    assert params["method"]["value"] == "Ada2MS α=0.5"  # the first, sorted
    assert params["log_lr"]["bind"] == {
        "input": "range", "min": -3.0, "max": -1.0, "step": 1.0, "name": "log10 lr "
    }  # fmt: skip
    assert len(spec["datasets"]["paths"]) == len(paths)
    json.dumps(spec, allow_nan=False)  # valid JSON: no NaN


def test_bad_controls_are_refused(grid):
    problems, paths = grid
    surfaces = explorers.explorer_surfaces(problems, n=4)
    with pytest.raises(ValueError, match="no column 'beta'"):
        explorers.kernel_free_explorer(paths, surfaces, {"beta": "beta"})
    with pytest.raises(ValueError, match="not in the grid"):
        explorers.kernel_free_explorer(paths, surfaces, {"log_lr": "lr"}, initial={"log_lr": 0.5})
    with pytest.raises(ValueError, match="several problems"):
        explorers.kernel_free_explorer(paths, surfaces, {"log_lr": "lr"})
    uneven = paths.assign(log_lr=paths["log_lr"].replace(-1.0, -0.5))
    with pytest.raises(ValueError, match="not evenly spaced"):
        explorers.kernel_free_explorer(uneven, surfaces, {"problem": "p", "log_lr": "lr"})


def test_the_library_imports_without_altair():
    code = (
        "import sys; sys.modules['altair'] = None\n"
        "import analysis_lib.plots as plots\n"
        "try:\n"
        "    plots.kernel_free_explorer(None, None, {})\n"
        "except ImportError:\n"
        "    print('ImportError')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ImportError"
