"""The shared argument check: integers (Python's or NumPy's) at or above a bound, named in the
error otherwise."""

import numpy as np
import pytest

from analysis_lib._checks import check_int
from analysis_lib.problems import toy


def test_check_int_accepts_integers_and_returns_python_ints():
    assert check_int("n", 3, 1) == 3
    value = check_int("n", np.int64(7), 0)
    assert value == 7 and type(value) is int


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "3", None, np.float64(4)])
def test_check_int_names_the_argument_and_value(bad):
    with pytest.raises(ValueError, match=r"Invalid steps: .* \(expected an integer >= 1\)"):
        check_int("steps", bad, 1)


def test_modules_share_it():
    with pytest.raises(ValueError, match=r"Invalid n: 1 \(expected an integer >= 2\)"):
        toy.rosenbrock().grid(1)
    assert toy.rosenbrock().grid(np.int32(3))[0].shape == (3, 3)


def test_check_float_accepts_real_numbers_and_returns_python_floats():
    from analysis_lib._checks import check_float, check_positive

    for value in (2, 2.5, np.int64(2), np.float32(0.5), np.float64(3.0)):
        out = check_float("x", value)
        assert type(out) is float and out == float(value)
    assert check_float("x", float("inf"), 0.0, allow_inf=True) == float("inf")
    assert check_float("x", 0.0, 0.0, 1.0, high_open=True) == 0.0
    assert check_positive("x", np.float16(0.25)) == 0.25


@pytest.mark.parametrize(
    ("bad", "kwargs", "expected"),
    [
        (float("inf"), {}, "a finite number"),
        (float("-inf"), {}, "a finite number"),
        (float("nan"), {}, "a finite number"),
        (float("nan"), {"allow_inf": True}, "a number"),
        (True, {}, "a finite number"),
        (np.bool_(True), {}, "a finite number"),
        ("0.1", {}, "a finite number"),
        (None, {}, "a finite number"),
        (np.array([0.1]), {}, "a finite number"),
        (0.0, {"low": 0.0, "low_open": True}, "a finite number > 0"),
        (1.0, {"low": 0.0, "high": 1.0, "high_open": True}, "a finite number >= 0 and < 1"),
        (-0.5, {"low": 0.0}, "a finite number >= 0"),
    ],
)
def test_check_float_names_the_argument_and_what_was_expected(bad, kwargs, expected):
    from analysis_lib._checks import check_float

    with pytest.raises(ValueError, match=rf"Invalid noise: .* \(expected {expected}\)"):
        check_float("noise", bad, **kwargs)


def test_toy_plot_helpers_refuse_bad_numbers():
    problem = toy.rosenbrock()
    with pytest.raises(ValueError, match=r"Invalid n: 0 \(expected an integer >= 1\)"):
        problem.levels(0)
    with pytest.raises(ValueError, match="Invalid factor: nan"):
        problem.inside(np.zeros((1, 2)), factor=float("nan"))
    assert problem.levels(np.int64(3)).shape == (3,)


def test_optimizers_take_numpy_numbers_and_refuse_the_rest():
    import torch

    from analysis_lib.optim import Ada2MS, AdamNX

    p = [torch.nn.Parameter(torch.ones(2))]
    for cls in (AdamNX, Ada2MS):
        opt = cls(p, lr=np.float32(1e-3), betas=(np.float64(0.9), 0.99), eps=np.float64(1e-8))
        group = opt.param_groups[0]
        assert type(group["lr"]) is float and group["lr"] == float(np.float32(1e-3))
        assert group["betas"] == (0.9, 0.99) and type(group["betas"][0]) is float
        for bad in (True, float("nan"), float("inf"), "1e-3", torch.tensor(1e-3)):
            with pytest.raises(ValueError, match=r"Invalid lr: .* \(expected a finite number"):
                cls(p, lr=bad)
    assert Ada2MS(p, alpha=np.float32(0.5)).param_groups[0]["alpha"] == 0.5


def test_check_betas_and_check_grid():
    from analysis_lib._checks import check_betas, check_grid

    assert check_betas("betas", [np.float32(0.5), 0]) == (0.5, 0.0)
    for bad in ((0.9,), (0.9, 1.0), (True, 0.9), "ab", None):
        with pytest.raises(ValueError, match=r"Invalid betas: .* \(expected two finite"):
            check_betas("betas", bad)
    grid = check_grid("alphas", [0, np.float32(0.5), 1])
    assert grid.dtype == np.float64 and grid.tolist() == [0.0, 0.5, 1.0]
    for bad in ([], [[1.0]], [1.0, np.nan], [True, False], "1", None, [1.0, float("inf")]):
        with pytest.raises(ValueError, match=r"Invalid alphas: .* \(expected a non-empty 1-D"):
            check_grid("alphas", bad)
    with pytest.raises(ValueError, match=r"finite numbers > 0\)"):
        check_grid("lrs", [0.1, 0.0], 0.0, low_open=True)
