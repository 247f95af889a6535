import os

import pytest

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


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
