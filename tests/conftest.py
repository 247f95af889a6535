import os

import pytest

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A fresh, not yet existing cache folder for the test (``ANALYSIS_LIB_DATA`` points at
    it), so that no test reads or writes the project's data/."""
    from analysis_lib import io

    folder = tmp_path / "cache"
    monkeypatch.setenv(io.DATA_ENV_VAR, str(folder))
    return folder


@pytest.fixture
def native_kernel_calls(monkeypatch):
    """Every result of Ada2MS's native square-sums kernel while the test runs (True: it did the
    sums), recorded by a spy around the real kernel."""
    from analysis_lib.optim import _native

    calls = []
    kernel = _native.square_sums_ema_

    def spy(grads, sums, beta2):
        done = kernel(grads, sums, beta2)
        calls.append(done)
        return done

    monkeypatch.setattr(_native, "square_sums_ema_", spy)
    return calls
