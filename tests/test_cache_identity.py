"""The identity of callables (io.callable_identity) and what the caches do with it: landscape
grids keyed by their loss function's content, refresh, and read-only cache folders."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis_lib import io, landscape
from analysis_lib.landscape import evaluator


def tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x = torch.randn(16, 3)
    y = torch.randint(0, 2, (16,))
    direction = {k: torch.randn_like(p) for k, p in model.named_parameters()}
    return model, [(x, y)], direction


ALPHAS = np.linspace(-1.0, 1.0, 5)


def reference(model, loss_fn, data, direction, alphas):
    """The 1-D surface point by point, by hand."""
    out = []
    x, y = data[0]
    base = {k: p.detach().clone() for k, p in model.named_parameters()}
    for a in alphas:
        params = {k: base[k] + float(a) * direction[k] for k in base}
        logits = torch.func.functional_call(model, params, (x,))
        out.append(float(loss_fn(logits, y)))
    return np.array(out)


# -- the identity of a callable -------------------------------------------------------------------
def scaled(c):
    return lambda t: c * t


def test_lambdas_and_partials_with_one_qualified_name_get_different_identities():
    a, b = scaled(1.0), scaled(2.0)
    assert a.__qualname__ == b.__qualname__
    assert io.callable_identity(a) != io.callable_identity(b)
    assert io.callable_identity(a) == io.callable_identity(scaled(1.0))  # same code, same cell
    f, g = (lambda t: 1.0), (lambda t: 0.5)
    assert f.__qualname__ == g.__qualname__
    assert io.callable_identity(f) != io.callable_identity(g)
    p1 = functools.partial(F.cross_entropy, label_smoothing=0.0)
    p2 = functools.partial(F.cross_entropy, label_smoothing=0.2)
    assert io.callable_identity(p1) != io.callable_identity(p2)
    assert io.callable_identity(p1) == io.callable_identity(
        functools.partial(F.cross_entropy, label_smoothing=0.0)
    )
    t1, t2 = torch.ones(3), torch.ones(3)
    t2[1] = 2.0
    assert io.callable_identity(scaled(t1)) != io.callable_identity(scaled(t2))
    m1, m2 = nn.CrossEntropyLoss(), nn.CrossEntropyLoss(label_smoothing=0.1)
    assert repr(m1) == repr(m2)  # what a name-based key would have seen
    assert io.callable_identity(m1) != io.callable_identity(m2)
    json.dumps(io.callable_identity(p1))  # JSON-able


def test_a_callable_that_cannot_be_identified_is_refused_with_its_place():
    class Opaque:
        __slots__ = ("scale",)

        def __call__(self, t):
            return t

    with pytest.raises(io.UnidentifiableError, match=r"loss_fn.*Opaque"):
        io.callable_identity(Opaque(), "loss_fn")
    hidden = Opaque()
    with pytest.raises(io.UnidentifiableError, match=r"closure variable hidden"):
        io.callable_identity(lambda t: hidden(t))
    with pytest.raises(io.UnidentifiableError, match="not a callable"):
        io.callable_identity(3.0)


_PROBE = """
import json, sys
from analysis_lib import io
f = lambda x: x in {"alpha", "beta", "gamma", "delta"} and 0.5
print(json.dumps(io.callable_identity(f)))
"""


@pytest.mark.slow
def test_identity_is_the_same_in_processes_with_other_hash_seeds():
    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True
        )
        outs.append(json.loads(done.stdout))
    assert outs[0] == outs[1]


# -- landscape caches -----------------------------------------------------------------------------
def test_two_loss_lambdas_with_one_name_do_not_share_a_cached_grid(cache_dir):
    model, data, d = tiny()
    losses = [(lambda o, y: F.cross_entropy(o, y)), (lambda o, y: 2 * F.cross_entropy(o, y))]
    assert losses[0].__qualname__ == losses[1].__qualname__
    grids = [landscape.surface_1d(model, fn, data, d, ALPHAS, cache=True) for fn in losses]
    assert not grids[1].from_cache
    for fn, grid in zip(losses, grids, strict=True):
        np.testing.assert_allclose(
            grid.loss, reference(model, fn, data, d, ALPHAS), rtol=1e-6, atol=0
        )


def test_two_partials_do_not_share_a_cached_grid(cache_dir):
    model, data, d = tiny()
    for smoothing in (0.0, 0.3):
        fn = functools.partial(F.cross_entropy, label_smoothing=smoothing)
        grid = landscape.surface_1d(model, fn, data, d, ALPHAS, cache=True)
        assert not grid.from_cache
        np.testing.assert_allclose(
            grid.loss, reference(model, fn, data, d, ALPHAS), rtol=1e-6, atol=0
        )
    again = landscape.surface_1d(
        model, functools.partial(F.cross_entropy, label_smoothing=0.3), data, d, ALPHAS, cache=True
    )
    assert again.from_cache  # an equal partial built again is a hit


def test_an_unidentifiable_loss_needs_an_explicit_key(cache_dir, monkeypatch):
    model, data, d = tiny()

    class Loss:
        __slots__ = ()

        def __call__(self, o, y):
            return F.cross_entropy(o, y)

    calls = []
    real = evaluator.Evaluator.__call__
    monkeypatch.setattr(evaluator.Evaluator, "__call__", lambda s, c: calls.append(1) or real(s, c))
    with pytest.raises(ValueError, match=r"loss_fn.*cache_key"):
        landscape.surface_1d(model, Loss(), data, d, ALPHAS, cache=True)
    assert not calls and not list(cache_dir.glob("*.npz"))
    grid = landscape.surface_1d(model, Loss(), data, d, ALPHAS, cache=True, cache_key="ce")
    assert not grid.from_cache
    assert landscape.surface_1d(
        model, Loss(), data, d, ALPHAS, cache=True, cache_key="ce"
    ).from_cache
    with pytest.raises(ValueError, match="cache_key"):
        landscape.surface_1d(model, Loss(), data, d, ALPHAS, cache=True, cache_key="")


def test_refresh_discards_the_partial_grid_of_an_interrupted_run(cache_dir, monkeypatch):
    model, data, d = tiny()
    real = evaluator.Evaluator.__call__
    calls = []

    def stale(self, coeffs):  # the interrupted run computed wrong numbers, then stopped
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        loss, acc = real(self, coeffs)
        return loss + 100.0, acc

    monkeypatch.setattr(evaluator.Evaluator, "__call__", stale)
    with pytest.raises(KeyboardInterrupt):
        landscape.surface_1d(model, F.cross_entropy, data, d, ALPHAS, chunk_size=1, cache=True)
    assert len(list(cache_dir.glob("*.partial.npz"))) == 1
    monkeypatch.setattr(evaluator.Evaluator, "__call__", real)
    grid = landscape.surface_1d(
        model, F.cross_entropy, data, d, ALPHAS, chunk_size=1, cache=True, refresh=True
    )
    np.testing.assert_allclose(
        grid.loss, reference(model, F.cross_entropy, data, d, ALPHAS), rtol=1e-6, atol=0
    )
    assert not list(cache_dir.glob("*.partial.npz"))


def _refuse_writes_in(monkeypatch, folder: Path):
    """Make ``folder`` read-only for this process (root ignores permission bits)."""
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        if Path(path).parent == folder and flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)


def test_a_read_only_cache_folder_fails_before_a_one_chunk_grid_is_computed(cache_dir, monkeypatch):
    model, data, d = tiny()
    cache_dir.mkdir(parents=True)
    calls = []
    real = evaluator.Evaluator.__call__
    monkeypatch.setattr(evaluator.Evaluator, "__call__", lambda s, c: calls.append(1) or real(s, c))
    _refuse_writes_in(monkeypatch, cache_dir)
    with pytest.raises(ValueError, match=f"cache folder.*{cache_dir.name}"):
        landscape.surface_1d(model, F.cross_entropy, data, d, ALPHAS, chunk_size=8, cache=True)
    assert not calls


def test_io_cached_checks_the_folder_before_computing(cache_dir, monkeypatch):
    cache_dir.mkdir(parents=True)
    calls = []
    _refuse_writes_in(monkeypatch, cache_dir)
    with pytest.raises(ValueError, match=f"cache folder.*{cache_dir.name}"):
        io.cached("demo", {"k": 1}, lambda: calls.append(1) or {"a": np.arange(3)})
    assert not calls


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_a_chmod_read_only_cache_folder_fails_before_computing(cache_dir):
    cache_dir.mkdir(parents=True)
    cache_dir.chmod(0o555)
    calls = []
    try:
        with pytest.raises(ValueError, match="cache folder"):
            io.cached("demo", {"k": 1}, lambda: calls.append(1) or {"a": np.arange(3)})
    finally:
        cache_dir.chmod(0o755)
    assert not calls


def test_an_intact_entry_holding_another_grid_is_recomputed(cache_dir):
    model, data, d = tiny()
    first = landscape.surface_1d(model, F.cross_entropy, data, d, ALPHAS, cache=True)
    (path,) = cache_dir.glob("landscape_1d-*.npz")
    arrays, meta = io.load_arrays(path)
    io.save_arrays(path, {**arrays, "loss": arrays["loss"][:3]}, meta)  # checksum right
    with pytest.warns(RuntimeWarning, match="another grid"):
        again = landscape.surface_1d(model, F.cross_entropy, data, d, ALPHAS, cache=True)
    np.testing.assert_array_equal(again.loss, first.loss)
    assert landscape.surface_1d(model, F.cross_entropy, data, d, ALPHAS, cache=True).from_cache
