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
