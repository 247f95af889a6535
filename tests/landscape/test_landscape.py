"""Tests of analysis_lib.landscape against explicit per-point loops and closed forms."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cases import ALPHAS, BETAS, Residual, batches, bn_model, cnn, loop_grid, loop_loss, mlp
from torch import nn

from analysis_lib import io, landscape, training
from analysis_lib.problems import tasks


# -- surfaces against the loop -------------------------------------------------------------------
@pytest.fixture(params=[False, True], ids=["per-point", "vmap"])
def generic_vmap(request, monkeypatch):
    """The generic path as it runs on the CPU (one point at a time) and as on accelerators
    (vmap over a chunk of points), both checked here on the CPU."""
    from analysis_lib.landscape import evaluator

    monkeypatch.setattr(evaluator, "_VMAP_ON_CPU", request.param)
    return request.param


@pytest.mark.parametrize("make, image", [(mlp, False), (Residual, False), (cnn, True)])
@pytest.mark.parametrize("first_layer", ["auto", "off"])
def test_surface_2d_equals_loop(make, image, first_layer, generic_vmap):
    model = make().double()
    data = batches(image=image)
    dirs = landscape.random_directions(model, seed=3, one_d="keep")
    grid = landscape.surface_2d(
        model,
        F.cross_entropy,
        data,
        dirs.d1,
        dirs.d2,
        ALPHAS,
        BETAS,
        first_layer=first_layer,
        chunk_size=7,
    )
    loss, acc = loop_grid(model, data, dirs.d1, dirs.d2, ALPHAS, BETAS)
    assert grid.loss.shape == (len(ALPHAS), len(BETAS))
    np.testing.assert_allclose(grid.loss, loss, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grid.accuracy, acc, rtol=0, atol=1e-12)
    generic = "vmap" if generic_vmap else "per-point"
    expected = "first-layer" if first_layer == "auto" and make is not Residual else generic
    assert grid.method == expected
    assert grid.center_loss == pytest.approx(
        loop_loss(model, F.cross_entropy, data, dict(model.named_parameters()))[0], rel=1e-12
    )


def test_surface_float32_digits_matches_loop_and_eval_mode():
    task = tasks.digits(hidden=(8,), seed=0)
    model = task.make_model(0)
    model.insert(2, nn.Dropout(0.5))  # dropout must be off: eval mode
    model.train()
    data = task.data("val", batch_size=100)
    dirs = landscape.random_directions(model, seed=0)
    grid = landscape.surface_2d(model, task.loss_fn, data, dirs, ALPHAS[:3], BETAS[:2])
    theta = {k: p.detach() for k, p in model.named_parameters()}
    for i, a in enumerate(ALPHAS[:3]):
        for j, b in enumerate(BETAS[:2]):
            point = {k: theta[k] + a * dirs.d1[k] + b * dirs.d2[k] for k in theta}
            ref, _ = loop_loss(model, task.loss_fn, data, point)
            assert grid.loss[i, j] == pytest.approx(ref, rel=2e-6)
    assert model.training and model[2].training  # modes restored


def test_batchnorm_model_uses_running_statistics():
    model = bn_model()
    data = batches()
    dirs = landscape.random_directions(model, seed=0)
    grid = landscape.surface_2d(model, F.cross_entropy, data, dirs.d1, dirs.d2, ALPHAS, BETAS)
    loss, _ = loop_grid(model, data, dirs.d1, dirs.d2, ALPHAS, BETAS)
    np.testing.assert_allclose(grid.loss, loss, rtol=1e-10)
    assert grid.method == "first-layer"


def test_surface_1d_equals_loop():
    model = mlp()
    data = batches()
    d = landscape.random_direction(model, seed=5, norm="layer")
    line = landscape.surface_1d(model, F.cross_entropy, data, d, ALPHAS)
    theta = dict(model.named_parameters())
    ref = [
        loop_loss(model, F.cross_entropy, data, {k: theta[k] + a * d[k] for k in theta})[0]
        for a in ALPHAS
    ]
    assert line.betas is None
    np.testing.assert_allclose(line.loss, ref, rtol=1e-10)
    frame = line.to_frame()
    assert list(frame.columns) == ["alpha", "loss", "accuracy"] and len(frame) == len(ALPHAS)


@pytest.mark.parametrize("first_layer", ["auto", "off"])
def test_chunked_and_unchunked_agree(first_layer, generic_vmap):
    model = mlp()
    data = batches()
    dirs = landscape.random_directions(model, seed=1)
    grids = [
        landscape.surface_2d(
            model,
            F.cross_entropy,
            data,
            dirs.d1,
            dirs.d2,
            ALPHAS,
            BETAS,
            chunk_size=c,
            first_layer=first_layer,
        )
        for c in (1, 3, 7, len(ALPHAS) * len(BETAS), None)
    ]
    for g in grids[1:]:
        np.testing.assert_allclose(g.loss, grids[0].loss, rtol=1e-13)
        np.testing.assert_array_equal(g.accuracy, grids[0].accuracy)


def test_auto_chunk_size_follows_memory():
    model = mlp()
    data = batches()
    small = landscape.auto_chunk_size(model, data, 1000, memory=20_000)
    large = landscape.auto_chunk_size(model, data, 1000, memory=2_000_000)
    assert 1 <= small < large <= 1000
    assert landscape.auto_chunk_size(model, data, 5, memory=10**12) == 5


# -- directions ----------------------------------------------------------------------------------
def test_filter_normalisation_gives_each_filter_the_weight_filter_norm():
    model = cnn()
    d = landscape.random_direction(model, seed=0, norm="filter", one_d="zero")
    for k, p in model.named_parameters():
        p = p.detach()
        if p.dim() <= 1:
            assert torch.count_nonzero(d[k]) == 0, k
            continue
        for i in range(p.shape[0]):  # one filter per output unit / channel
            assert float(d[k][i].norm()) == pytest.approx(float(p[i].norm()), rel=1e-12)


def test_layer_none_and_keep_options():
    model = mlp()
    params = {k: p.detach() for k, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(4)
    raw = {k: torch.randn(p.shape, generator=gen, dtype=torch.float64) for k, p in params.items()}
    layer = landscape.random_direction(model, seed=4, norm="layer", one_d="keep")
    none = landscape.random_direction(model, seed=4, norm="none", one_d="keep")
    none_zero = landscape.random_direction(model, seed=4, norm="none", one_d="zero")
    for k, p in params.items():
        torch.testing.assert_close(none[k], raw[k], rtol=0, atol=0)  # the raw Gaussian draw
        assert float(layer[k].norm()) == pytest.approx(float(p.norm()), rel=1e-12)
        if p.dim() == 1:  # kept biases: one "filter"; zeroed: zero
            assert torch.count_nonzero(none_zero[k]) == 0
        else:
            torch.testing.assert_close(none_zero[k], raw[k], rtol=0, atol=0)
            # direction preserved: a positive multiple of the raw draw
            ratio = layer[k] / raw[k]
            torch.testing.assert_close(
                ratio, torch.full_like(ratio, float(p.norm() / raw[k].norm()))
            )


def test_directions_are_seeded():
    model = mlp()
    a = landscape.random_directions(model, seed=11)
    b = landscape.random_directions(model, seed=11)
    c = landscape.random_directions(model, seed=12)
    assert all(torch.equal(a.d1[k], b.d1[k]) and torch.equal(a.d2[k], b.d2[k]) for k in a.d1)
    assert not torch.equal(a.d1["0.weight"], c.d1["0.weight"])


def test_pca_of_a_planar_trajectory_recovers_plane_and_path():
    model = mlp()
    final = {k: p.detach().clone() for k, p in model.named_parameters()}
    n = sum(p.numel() for p in final.values())
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(n, 2, generator=gen, dtype=torch.float64))
    t = np.linspace(0, 1, 30)
    coords = np.stack([3 * (1 - t), np.sin(4 * t) * (1 - t)], axis=1)  # ends at (0, 0)
    flat_final = landscape.flatten(final)
    snaps = [landscape.unflatten(flat_final + q @ torch.as_tensor(c), final) for c in coords]
    plane = landscape.pca_directions(snaps, steps=np.arange(30) * 10)
    assert plane.explained_variance_ratio.sum() == pytest.approx(1.0, abs=1e-12)
    comps = torch.stack([landscape.flatten(plane.d1), landscape.flatten(plane.d2)])
    torch.testing.assert_close(comps @ comps.T, torch.eye(2, dtype=torch.float64))
    # the projected path reproduces every snapshot, endpoints included
    for s, xy in zip(snaps, plane.path, strict=True):
        back = flat_final + torch.as_tensor(xy) @ comps
        torch.testing.assert_close(back, landscape.flatten(s), rtol=0, atol=1e-10)
    np.testing.assert_allclose(plane.path[-1], 0.0, atol=1e-12)
    assert plane.path[0, 0] > 0 and plane.path[0, 1] >= 0
    assert list(plane.steps) == list(np.arange(30) * 10)


def test_pca_explained_variance_matches_numpy_svd():
    gen = np.random.default_rng(0)
    rows = gen.normal(size=(12, 40)) * np.linspace(3, 0.1, 40)
    snaps = [{"w": torch.as_tensor(r)} for r in rows]
    plane = landscape.pca_directions(snaps, center=False)
    diffs = rows - rows[-1]
    s = np.linalg.svd(diffs, compute_uv=False)
    np.testing.assert_allclose(plane.explained_variance_ratio, s[:2] ** 2 / (s**2).sum())
    centred = landscape.pca_directions(snaps)  # the default, as in Li et al.
    s = np.linalg.svd(diffs - diffs.mean(0), compute_uv=False)
    np.testing.assert_allclose(centred.explained_variance_ratio, s[:2] ** 2 / (s**2).sum())


def test_snapshot_callback_with_training():
    task = tasks.digits(hidden=(8,), seed=0)
    snaps = landscape.SnapshotCallback(every=5)
    snaps.record(task.make_model(seed=0), step=0)
    run = training.train(task, "sgd", 20, lr=0.1, callbacks=[snaps], progress=False, device="cpu")
    assert snaps.steps == [0, 5, 10, 15, 20]
    for k, p in run.model.named_parameters():
        torch.testing.assert_close(snaps.snapshots[-1][k], p.detach().double())
    plane = landscape.pca_directions(snaps, final=run.model)
    assert plane.path.shape == (5, 2) and list(plane.steps) == [0, 5, 10, 15, 20]
    np.testing.assert_allclose(plane.path[-1], 0.0, atol=1e-12)


def test_eigenvector_directions_are_hessian_eigenvectors():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    data = [(torch.randn(16, 3, dtype=torch.float64), torch.randint(0, 2, (16,)))]
    names = [k for k, _ in model.named_parameters()]
    flat = landscape.flatten(dict(model.named_parameters())).detach()

    def loss(v):
        params = landscape.unflatten(v, dict(model.named_parameters()))
        return F.cross_entropy(torch.func.functional_call(model, params, (data[0][0],)), data[0][1])

    hess = torch.autograd.functional.hessian(loss, flat)
    values, vectors = torch.linalg.eigh(hess)
    plane = landscape.eigenvector_directions(model, F.cross_entropy, data, k=2, tol=1e-10)
    np.testing.assert_allclose(plane.eigenvalues, values.flip(0)[:2].numpy(), rtol=1e-6)
    for d, ref in ((plane.d1, vectors[:, -1]), (plane.d2, vectors[:, -2])):
        assert list(d) == names
        assert abs(float(landscape.flatten(d) @ ref)) == pytest.approx(1.0, abs=1e-6)


# -- interpolation -------------------------------------------------------------------------------
def test_interpolation_endpoints_equal_the_models_losses():
    a, b = mlp(0), mlp(1)
    data = batches()
    line = landscape.interpolate(a, b, F.cross_entropy, data, np.linspace(-0.5, 1.5, 9))
    ends = [loop_loss(m, F.cross_entropy, data, dict(m.named_parameters()))[0] for m in (a, b)]
    assert line.loss[2] == pytest.approx(ends[0], rel=1e-12)  # alpha = 0
    assert line.loss[6] == pytest.approx(ends[1], rel=1e-10)  # alpha = 1
    mid = {
        k: 0.5 * pa + 0.5 * pb
        for (k, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True)
    }
    assert line.loss[4] == pytest.approx(loop_loss(a, F.cross_entropy, data, mid)[0], rel=1e-10)


def test_interpolation_recomputes_batchnorm_statistics_when_asked():
    a, b = bn_model(0), bn_model(1)
    data = batches()
    train = [(torch.cat([x for x, _ in data]), torch.cat([y for _, y in data]))]  # one batch
    alphas = np.array([0.0, 0.5, 1.0])
    fresh = landscape.interpolate(a, b, F.cross_entropy, data, alphas, bn_data=train)
    kept = landscape.interpolate(a, b, F.cross_entropy, data, alphas, recompute_bn=False)
    # reference: the running statistics set by hand to the mean and unbiased variance of the
    # batch-norm layer's inputs over all the data
    for i, alpha in enumerate(alphas):
        m = copy.deepcopy(a).eval()
        with torch.no_grad():
            for p, pb in zip(m.parameters(), b.parameters(), strict=True):
                p.copy_((1 - alpha) * p + alpha * pb)
            h = m[0](train[0][0])
            m[1].running_mean.copy_(h.mean(0))
            m[1].running_var.copy_(h.var(0, unbiased=True))
            ref = sum(float(F.cross_entropy(m(x), y)) * len(x) for x, y in data) / 23
        assert fresh.loss[i] == pytest.approx(ref, rel=1e-10)
    own = [loop_loss(m, F.cross_entropy, data, dict(m.named_parameters()))[0] for m in (a, b)]
    assert kept.loss[0] == pytest.approx(own[0], rel=1e-12)
    assert kept.loss[2] == pytest.approx(own[1], rel=1e-10)
    assert abs(fresh.loss[0] - kept.loss[0]) > 1e-3  # the statistics did change
    assert a[1].momentum == 0.1 and a.training  # the models were not touched


# -- caching -------------------------------------------------------------------------------------
class Flaky:
    """Cross-entropy that counts its calls and fails at call ``fail_at`` (an interruption)."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls, self.fail_at = 0, fail_at

    def __call__(self, outputs, targets):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt("interrupted")
        return F.cross_entropy(outputs, targets)


def test_cache_round_trip(cache_dir):
    model = mlp()
    data = [(torch.cat([x for x, _ in batches()]), torch.cat([y for _, y in batches()]))]
    dirs = landscape.random_directions(model, seed=0)
    args = (model, F.cross_entropy, data, dirs.d1, dirs.d2, ALPHAS, BETAS)
    first = landscape.surface_2d(*args, cache=True)
    files = sorted(p.name for p in cache_dir.iterdir())
    assert len(files) == 1 and files[0].startswith("landscape_2d-") and not first.from_cache
    again = landscape.surface_2d(*args, cache=True)
    assert again.from_cache
    np.testing.assert_array_equal(again.loss, first.loss)
    np.testing.assert_array_equal(again.accuracy, first.accuracy)
    np.testing.assert_array_equal(again.alphas, ALPHAS)
    # anything that changes the result changes the key
    landscape.surface_2d(
        model, F.cross_entropy, data, dirs.d1, dirs.d2, ALPHAS, BETAS[:3], cache=True
    )
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[0].bias.add_(1e-3)
    landscape.surface_2d(other, F.cross_entropy, data, dirs.d1, dirs.d2, ALPHAS, BETAS, cache=True)
    assert len(list(cache_dir.iterdir())) == 3


def test_interrupted_grid_resumes_with_identical_arrays(cache_dir):
    model = mlp()
    data = batches()[:1]
    dirs = landscape.random_directions(model, seed=0)
    args = (dirs.d1, dirs.d2, ALPHAS, BETAS)  # 20 points: 7 chunks of 3
    flaky = Flaky(fail_at=4)
    with pytest.raises(KeyboardInterrupt):
        # the two Flaky objects differ in their attributes, hence in their identity: an
        # explicit cache key says that they compute the same loss
        landscape.surface_2d(
            model, flaky, data, *args, chunk_size=3, cache="resume", cache_key="flaky"
        )
    partial = [p for p in cache_dir.iterdir() if p.name.endswith(".partial.npz")]
    assert len(partial) == 1
    arrays, meta = io.load_arrays(partial[0])
    assert arrays["done"].sum() == 3 and meta["chunk_size"] == 3
    resumed_fn = Flaky()
    resumed = landscape.surface_2d(
        model, resumed_fn, data, *args, chunk_size=3, cache="resume", cache_key="flaky"
    )
    assert resumed_fn.calls == 7 - 3  # only the missing chunks
    assert not any(p.name.endswith(".partial.npz") for p in cache_dir.iterdir())
    whole = landscape.surface_2d(model, Flaky(), data, *args, chunk_size=3)
    np.testing.assert_array_equal(resumed.loss, whole.loss)
    np.testing.assert_array_equal(resumed.accuracy, whole.accuracy)
    assert not any(p.name.startswith(".") for p in cache_dir.iterdir())  # no temporary files


# -- bad input -----------------------------------------------------------------------------------
def test_bad_input_raises_clear_errors():
    model = mlp()
    data = batches()
    d = landscape.random_directions(model, seed=0)
    ce = F.cross_entropy
    missing = {k: v for k, v in d.d1.items() if k != "0.bias"}
    with pytest.raises(ValueError, match=r"Invalid d1.*missing"):
        landscape.surface_2d(model, ce, data, missing, d.d2, ALPHAS, BETAS)
    wrong = dict(d.d2, **{"0.weight": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match=r"Invalid d2\['0.weight'\]: shape"):
        landscape.surface_2d(model, ce, data, d.d1, wrong, ALPHAS, BETAS)
    with pytest.raises(ValueError, match="Invalid alphas"):
        landscape.surface_2d(model, ce, data, d.d1, d.d2, [], BETAS)
    with pytest.raises(ValueError, match="Invalid betas"):
        landscape.surface_2d(model, ce, data, d.d1, d.d2, ALPHAS, [0.0, np.nan])
    with pytest.raises(ValueError, match="Invalid alphas"):
        landscape.surface_1d(model, ce, data, d.d1, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="Invalid data"):
        landscape.surface_2d(model, ce, [], d.d1, d.d2, ALPHAS, BETAS)
    with pytest.raises(ValueError, match="Invalid chunk_size"):
        landscape.surface_2d(model, ce, data, d.d1, d.d2, ALPHAS, BETAS, chunk_size=0)
    with pytest.raises(ValueError, match="Invalid first_layer"):
        landscape.surface_2d(model, ce, data, d.d1, d.d2, ALPHAS, BETAS, first_layer="on")
    with pytest.raises(ValueError, match="Invalid norm"):
        landscape.random_directions(model, norm="Filter")
    with pytest.raises(ValueError, match="Invalid one_d"):
        landscape.random_direction(model, one_d="ignore")
    with pytest.raises(ValueError, match="Invalid seed"):
        landscape.random_direction(model, seed=-1)
    with pytest.raises(ValueError, match="Invalid snapshots"):
        landscape.pca_directions([dict(model.named_parameters())])
    with pytest.raises(ValueError, match="Invalid model_b"):
        landscape.interpolate(model, Residual().double(), ce, data, ALPHAS)
    with pytest.raises(ValueError, match="Invalid every"):
        landscape.SnapshotCallback(every=0)


# -- plots ---------------------------------------------------------------------------------------
def test_plot_helpers_draw_and_reject_bad_input():
    import matplotlib.pyplot as plt

    from analysis_lib import plots

    model = mlp()
    data = batches()
    dirs = landscape.random_directions(model, seed=0)
    grid = landscape.surface_2d(model, F.cross_entropy, data, dirs, ALPHAS, BETAS)
    levels = plots.landscape_levels(grid, 7)
    np.testing.assert_allclose(levels[[0, -1]], [grid.loss.min(), grid.loss.max()])
    np.testing.assert_allclose(np.diff(np.log(levels)), np.log(levels[1] / levels[0]))
    fig, axes = plots.plot_landscapes({"a": grid, "b": grid}, ncols=2)
    assert len(fig.axes) == 3  # two panels and one shared colour bar
    ax = plots.draw_landscape_contour(grid)
    assert ax.get_xlabel().startswith("α")
    plots.draw_landscape_surface(grid)
    snaps = [{k: p.detach() * s for k, p in model.named_parameters()} for s in (1.5, 1.2, 1.0)]
    snaps[1]["0.bias"] = snaps[1]["0.bias"] + 0.1
    plane = landscape.pca_directions(snaps)
    ax = plots.draw_pca_path(plane)
    assert "PC 1" in ax.get_xlabel()
    line = landscape.interpolate(model, mlp(1), F.cross_entropy, data, ALPHAS)
    fig, axes = plots.plot_interpolation({"train": line}, names=("a", "b"))
    assert axes[0].get_yscale() == "log"
    with pytest.raises(ValueError, match="Invalid grid"):
        plots.draw_landscape_contour(line)
    with pytest.raises(ValueError, match="Invalid directions"):
        plots.draw_pca_path(dirs)
    with pytest.raises(ValueError, match="Invalid grids"):
        plots.plot_landscapes({})
    plt.close("all")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_tanh_matches_torch(dtype):
    from analysis_lib.landscape.evaluator import _tanh_

    x = torch.linspace(-20, 20, 100_003, dtype=dtype).reshape(-1, 1) * torch.tensor(
        [1.0, 1e-3], dtype=dtype
    )
    ref = torch.tanh(x)
    out = _tanh_(x.clone())
    tiny = torch.finfo(dtype).eps
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=4 * tiny, atol=0)
    assert out[0, 0] == -1 and out[-1, 0] == 1 and _tanh_(torch.zeros(3, dtype=dtype)).eq(0).all()
    strided = x.t().clone()  # not contiguous: torch's own kernel
    assert not strided.is_contiguous()
    np.testing.assert_array_equal(_tanh_(strided).numpy(), torch.tanh(x.t()).numpy())


def test_first_layer_falls_back_when_its_terms_would_not_fit(monkeypatch):
    from analysis_lib.landscape import evaluator

    model = mlp()
    data = batches()
    dirs = landscape.random_directions(model, seed=2)
    fast = landscape.surface_2d(model, F.cross_entropy, data, dirs, ALPHAS, BETAS)
    monkeypatch.setattr(evaluator, "_TERMS_BUDGET", 0)
    slow = landscape.surface_2d(model, F.cross_entropy, data, dirs, ALPHAS, BETAS)
    assert (fast.method, slow.method) == ("first-layer", "per-point")
    np.testing.assert_allclose(slow.loss, fast.loss, rtol=1e-12)


def test_settings_travel_as_one_object_and_keywords_replace_its_fields():
    model = mlp()
    data = batches()
    d = landscape.random_directions(model, seed=0)
    ce = F.cross_entropy
    settings = landscape.SurfaceSettings(chunk_size=3, first_layer="off", progress=False)
    grid = landscape.surface_2d(model, ce, data, d.d1, d.d2, ALPHAS, BETAS, settings=settings)
    assert grid.chunk_size == 3 and grid.method == "per-point"
    keywords = landscape.surface_2d(
        model, ce, data, d.d1, d.d2, ALPHAS, BETAS, chunk_size=3, first_layer="off"
    )
    np.testing.assert_array_equal(grid.loss, keywords.loss)
    over = landscape.surface_1d(model, ce, data, d.d1, ALPHAS, settings=settings, chunk_size=2)
    assert over.chunk_size == 2 and over.method == "per-point"
    assert settings.chunk_size == 3  # replaced in a copy
    with pytest.raises(TypeError, match="'chunksize'"):
        landscape.surface_1d(model, ce, data, d.d1, ALPHAS, chunksize=2)
    with pytest.raises(ValueError, match="Invalid settings"):
        landscape.surface_1d(model, ce, data, d.d1, ALPHAS, settings={"chunk_size": 2})
