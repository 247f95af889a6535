"""The trajectory runner and learning-rate tuning against independent references: the real
optimizer classes driven by hand one learning rate at a time, gradient descent's closed form on
a quadratic, and the analytic best learning rate of gradient descent."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis_lib import trajectory as tr
from analysis_lib.optim import effective_step_sizes, make_optimizer
from analysis_lib.problems import toy

METHODS = list(tr.DEFAULT_METHODS)
METHOD_IDS = [m.label for m in METHODS]


@pytest.fixture(autouse=True)
def data(tmp_path, monkeypatch):
    """Every test caches into its own folder."""
    monkeypatch.setenv("ANALYSIS_LIB_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


def reference(problem, name, lr, steps, start=None, seed=0, **hp):
    """The real optimizer class at learning rate ``lr`` on one 2-D parameter, driven by hand:
    the points after each step and the effective step sizes (adaptive methods)."""
    p = torch.tensor(start or problem.start, dtype=torch.float64, requires_grad=True)
    opt = make_optimizer(name, [p], lr=lr, **{"weight_decay": 0.0, **hp})
    gen = torch.Generator().manual_seed(seed)
    points, sizes = [p.detach().clone()], []
    for _ in range(steps):
        opt.zero_grad()
        problem.value(p).backward()
        if problem.noise:
            with torch.no_grad():
                p.grad += (
                    problem.scale
                    * problem.noise
                    * torch.randn(2, generator=gen, dtype=torch.float64)
                )
        opt.step()
        points.append(p.detach().clone())
        if name in tr.ADAPTIVE:
            sizes.append(effective_step_sizes(opt)[p].clone())
    return torch.stack(points).numpy(), (torch.stack(sizes).numpy() if sizes else None)


# -- batched runs equal the real optimizer, one learning rate at a time -----------------------
@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
@pytest.mark.parametrize(
    "problem",
    [toy.rosenbrock(), toy.badly_scaled().with_noise(0.3)],
    ids=["rosenbrock", "noisy_badly_scaled"],
)
def test_batched_rows_equal_the_real_optimizer_at_each_lr(problem, method):
    lrs = [1e-4, 3e-3, 0.05, 0.3, 3.0]  # includes learning rates that diverge
    steps = 60
    batch = tr.run_batch(
        problem, method.optimizer, steps, lrs, seed=7, record_step_sizes=True, **method.hparams
    )
    for lr, t in zip(lrs, batch, strict=True):
        ref_points, ref_sizes = reference(
            problem, method.optimizer, lr, steps, seed=7, **method.hparams
        )
        n = t.steps
        assert n == steps or t.diverged
        np.testing.assert_allclose(t.points, ref_points[: n + 1], rtol=1e-11, atol=1e-12)
        if ref_sizes is not None:
            np.testing.assert_allclose(t.step_sizes, ref_sizes[:n], rtol=1e-11, atol=0)
        else:
            assert t.step_sizes is None
        single = tr.run(problem, method.optimizer, steps, seed=7, lr=lr, **method.hparams)
        assert single.steps == n and single.stop_reason == t.stop_reason
        np.testing.assert_allclose(single.points, ref_points[: n + 1], rtol=1e-14, atol=1e-15)


def test_ada2ms_batched_grid_keeps_each_points_own_global_statistic():
    """With alpha = 0 each grid point's step is scaled by its own mean second moment: sharing
    one statistic across the grid would change every row."""
    p = toy.badly_scaled()
    lrs = [0.01, 0.1, 0.5]
    batch = tr.run_batch(p, "ada2ms", 40, lrs, alpha=0.0, record_step_sizes=True)
    for lr, t in zip(lrs, batch, strict=True):
        ref, ref_sizes = reference(p, "ada2ms", lr, 40, alpha=0.0)
        np.testing.assert_allclose(t.points, ref, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(t.step_sizes, ref_sizes, rtol=1e-12)
        # alpha = 0: one step size for both coordinates
        np.testing.assert_allclose(t.step_sizes[:, 0], t.step_sizes[:, 1], rtol=1e-12)


# -- runs against closed forms ----------------------------------------------------------------
def test_gradient_descent_on_the_quadratic_follows_the_closed_form():
    p = toy.rotated_quadratic(condition=20.0, angle=30.0)
    t = math.radians(30.0)
    u, w = np.array([math.cos(t), math.sin(t)]), np.array([-math.sin(t), math.cos(t)])
    a = np.outer(u, u) / 20.0 + np.outer(w, w)
    lr, steps = 0.7, 50
    traj = tr.run(p, "sgd", steps, lr=lr)
    x0 = np.array(p.start)
    expected = np.stack(
        [np.linalg.matrix_power(np.eye(2) - lr * a, k) @ x0 for k in range(steps + 1)]
    )
    np.testing.assert_allclose(traj.points, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        traj.losses, 0.5 * np.einsum("ti,ij,tj->t", expected, a, expected), rtol=1e-11, atol=1e-300
    )
    np.testing.assert_allclose(traj.grad_norms, np.linalg.norm(expected @ a, axis=1), rtol=1e-12)
    # no clipping by default: each step is exactly lr times the gradient
    np.testing.assert_allclose(traj.step_lengths, lr * traj.grad_norms[:-1], rtol=1e-12)
    assert traj.step_sizes is None and not traj.diverged and traj.stop_reason == "completed"


def test_clipping_caps_the_step_only_when_asked():
    p = toy.rosenbrock()
    free = tr.run(p, "sgd", 5, lr=1e-3)
    clipped = tr.run(p, "sgd", 5, lr=1e-3, clip=1.0)
    assert free.step_lengths[0] == pytest.approx(1e-3 * free.grad_norms[0])
    assert free.step_lengths[0] > 1e-3 * 1.0  # the start's gradient norm is > 1
    np.testing.assert_allclose(
        clipped.step_lengths, 1e-3 * np.minimum(clipped.grad_norms[:-1], 1.0), rtol=1e-12
    )


def test_adam_is_invariant_to_the_loss_scale_and_sgd_is_not():
    p = toy.badly_scaled()
    adam = tr.run(p, "adam", 100, lr=0.05)
    adam_scaled = tr.run(p.scaled(100.0), "adam", 100, lr=0.05)
    np.testing.assert_allclose(adam_scaled.points, adam.points, rtol=0, atol=1e-6)
    sgd = tr.run(p, "sgd", 100, lr=1e-4)
    sgd_scaled = tr.run(p.scaled(100.0), "sgd", 100, lr=1e-4)  # 100 times the step
    assert not sgd.diverged and not sgd_scaled.diverged
    assert np.abs(sgd_scaled.points - sgd.points).max() > 0.5


def test_ada2ms_alpha_one_retraces_adamw():
    p = toy.rosenbrock()
    a = tr.run(p, "ada2ms", 200, lr=0.05, alpha=1.0)
    b = tr.run(p, "adamw", 200, lr=0.05)
    np.testing.assert_allclose(a.points, b.points, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(a.step_sizes, b.step_sizes, rtol=1e-13)


def test_trajectory_fields_are_consistent():
    p = toy.beale()
    t = tr.run(p, "adamnx", 30, lr=0.01)
    assert t.points.shape == (31, 2) and t.losses.shape == (31,) and t.grad_norms.shape == (31,)
    assert t.step_lengths.shape == (30,) and t.step_sizes.shape == (30, 2)
    f, g = p.value_and_grad(torch.tensor(t.points))
    np.testing.assert_allclose(t.losses, f.numpy(), rtol=1e-15)
    np.testing.assert_allclose(t.grad_norms, g.norm(dim=-1).numpy(), rtol=1e-15)
    np.testing.assert_allclose(t.step_lengths, np.linalg.norm(np.diff(t.points, axis=0), axis=1))
    assert t.hparams == {"lr": 0.01, "weight_decay": 0.0} and t.label == "AdamNX"
    frame = t.to_frame()
    assert len(frame) == 31 and {"x", "y", "loss", "step_size_x"} <= set(frame.columns)


# -- divergence ---------------------------------------------------------------------------------
def test_divergence_is_flagged_not_raised():
    p = toy.rosenbrock()
    t = tr.run(p, "sgd", 100, lr=0.1)
    assert t.diverged and t.stop_reason == "left the region" and t.steps < 100
    assert np.isfinite(t.points).all()
    assert not p.inside(t.final_point, 10.0) and p.inside(t.points[:-1], 10.0).all()
    assert t.final_distance == math.inf


def test_overflow_is_flagged_as_non_finite():
    p = toy.rosenbrock()
    t = tr.run(p, "sgd", 100, lr=0.1, bounds_factor=1e300)
    assert t.diverged and t.stop_reason == "non-finite"
    assert np.isfinite(t.points).all()


def test_a_diverged_row_does_not_disturb_the_others():
    p = toy.rotated_quadratic()
    alone = tr.run_batch(p, "sgdm", 80, [0.1])[0]
    together = tr.run_batch(p, "sgdm", 80, [0.1, 50.0])
    assert together[1].diverged and not together[0].diverged
    np.testing.assert_array_equal(together[0].points, alone.points)


# -- tuning ------------------------------------------------------------------------------------
def test_tuned_gradient_descent_picks_the_analytic_best_rate():
    """On a quadratic, gradient descent contracts by max|1 - lr λ| per step; the grid point with
    the smallest factor converges fastest, so it must win."""
    p = toy.rotated_quadratic(condition=20.0)
    grid = tr.lr_grid(1e-3, 10.0, per_decade=4)
    result = tr.tune_lr(p, "sgd", 300, grid)
    rate = np.maximum(np.abs(1 - grid / 20.0), np.abs(1 - grid))
    assert result.best_lr == pytest.approx(grid[np.argmin(rate)])
    assert (result.diverged == (rate > 1)).all()


def test_tuning_scores_match_the_runs_and_follow_the_stated_criterion():
    p = toy.rosenbrock()
    grid = [1e-4, 1e-3, 3e-3, 1e-2, 0.1]
    result = tr.tune_lr(p, "sgdm", 150, grid, tolerance=1e-3)
    for i, lr in enumerate(grid):
        t = tr.run(p, "sgdm", 150, lr=lr)
        assert result.diverged[i] == t.diverged
        if t.diverged:
            assert result.final_distance[i] == math.inf and result.mean_loss[i] == math.inf
        else:
            assert result.final_distance[i] == pytest.approx(
                np.linalg.norm(t.final_point - [1.0, 1.0]), rel=1e-9
            )
            assert result.mean_loss[i] == pytest.approx(t.losses.mean(), rel=1e-9)
    d, m = result.final_distance, result.mean_loss
    ties = [i for i in range(len(grid)) if d[i] <= d.min() + max(1e-3, 1e-3 * d.min())]
    lowest = min(m[i] for i in ties)
    near = [i for i in ties if m[i] <= lowest * (1 + 1e-3)]
    assert result.best_index == min(near, key=lambda i: grid[i])


def test_ties_are_broken_by_the_mean_loss():
    p = toy.rotated_quadratic(condition=4.0)
    grid = [0.3, 0.6, 1.0, 1.5]  # all converge to ~1e-16 in 400 steps
    result = tr.tune_lr(p, "sgd", 400, grid, tolerance=1e-6)
    assert (result.final_distance < 1e-6).all()
    assert result.best_index == int(np.argmin(result.mean_loss))
    strict = tr.tune_lr(p, "sgd", 400, grid, tolerance=0.0, rtol=0.0)
    assert strict.best_index == int(np.argmin(strict.final_distance))


def test_near_ties_in_distance_are_broken_by_the_mean_loss_not_by_rounding():
    """SGD on Rastrigin: every small rate stalls in the same local minimum, at distances that
    differ in the fifth digit by how far each crept. With no relative tolerance the smallest
    rate wins by that digit (it moved least); with the stated rule the fastest of them wins."""
    p = toy.rastrigin()
    grid = tr.lr_grid(1e-5, 0.1, per_decade=4)
    result = tr.tune_lr(p, "sgd", 1000, grid, cache=False)
    d, m = result.final_distance, result.mean_loss
    stalled = np.abs(d - np.median(d[:8])) < 1e-3 * np.median(d[:8])
    assert stalled[:8].all() and stalled.sum() < len(grid)
    assert result.best_index == int(np.flatnonzero(stalled)[np.argmin(m[stalled])])
    assert not result.on_edge
    exact = tr.tune_lr(p, "sgd", 1000, grid, cache=False, rtol=0.0)
    assert exact.best_index == 0 and exact.on_edge  # the rounding's choice: the grid's edge
    # perturbing the distances by 1e-5 relative (far more than rounding) does not move it
    noise = np.random.default_rng(0).uniform(-1e-5, 1e-5, size=d.shape)
    from analysis_lib.trajectory.tuning import _choose  # the private rule, tested on purpose

    assert _choose(grid, d * (1 + noise), m, 1e-6, 1e-3) == result.best_index


def test_edge_and_knife_edge_flags():
    def made(d, m, lrs=(0.01, 0.1, 1.0), best=1):
        return tr.TuneResult(
            "sgd",
            {},
            np.array(lrs),
            np.array(d),
            np.array(m),
            np.zeros(len(lrs), bool),
            np.zeros((len(lrs), 2)),
            best,
            1e-6,
            1e-3,
        )

    clear = made([1.0, 0.1, 1.0], [5.0, 1.0, 5.0])
    assert not clear.on_edge and not clear.knife_edge
    assert made([0.1, 1.0, 1.0], [1.0, 5.0, 5.0], best=0).on_edge
    assert made([1.0, 0.1, 0.1005], [5.0, 1.0, 5.0]).knife_edge  # a distance 5 bands away
    assert made([1.0, 0.1, 0.1], [5.0, 1.0, 1.005]).knife_edge  # a mean loss 5 rtol away
    assert not made([1.0, 0.1, 0.1], [5.0, 1.0, 1.02]).knife_edge
    assert not made([np.inf] * 3, [np.inf] * 3, best=None).on_edge


def test_tuning_is_deterministic_for_a_seed():
    p = toy.rotated_quadratic().with_noise(0.2)
    grid = tr.lr_grid(1e-3, 1.0, 2)
    a = tr.tune_lr(p, "adam", 100, grid, seed=3, cache=False)
    b = tr.tune_lr(p, "adam", 100, grid, seed=3, cache=False)
    c = tr.tune_lr(p, "adam", 100, grid, seed=4, cache=False)
    np.testing.assert_array_equal(a.final_points, b.final_points)
    assert a.best_lr == b.best_lr
    assert not np.array_equal(a.final_points, c.final_points)


def test_tuning_cache_hits_return_identical_arrays(data, monkeypatch):
    p = toy.himmelblau()
    grid = tr.lr_grid(1e-3, 1.0, 2)
    first = tr.tune_lr(p, "adamnx", 80, grid)
    assert len(list(data.glob("tune_lr-*.npz"))) == 1

    def no_compute(*args, **kwargs):
        raise AssertionError("recomputed on a cache hit")

    monkeypatch.setattr(tr.tuning, "simulate", no_compute)
    second = tr.tune_lr(p, "adamnx", 80, grid)
    for name in ("lrs", "final_distance", "mean_loss", "diverged", "final_points"):
        np.testing.assert_array_equal(getattr(second, name), getattr(first, name))
    assert second.best_lr == first.best_lr
    with pytest.raises(AssertionError, match="recomputed"):
        tr.tune_lr(p, "adamnx", 81, grid)  # another configuration is a miss


def test_kept_best_trajectory_survives_the_cache(data):
    p = toy.beale()
    grid = tr.lr_grid(1e-3, 1.0, 2)
    first = tr.tune_lr(p, "ada2ms", 60, grid, keep_best=True, alpha=0.5)
    second = tr.tune_lr(p, "ada2ms", 60, grid, keep_best=True, alpha=0.5)
    assert first.best is not None and first.best.lr == first.best_lr
    for name in ("points", "losses", "grad_norms", "step_lengths", "step_sizes"):
        np.testing.assert_array_equal(getattr(second.best, name), getattr(first.best, name))
    ref, ref_sizes = reference(p, "ada2ms", first.best_lr, 60, alpha=0.5)
    np.testing.assert_allclose(first.best.points, ref, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(first.best.step_sizes, ref_sizes, rtol=1e-11)
    assert tr.tune_lr(p, "ada2ms", 60, grid, alpha=0.5).best is None


def test_corrupt_tuning_cache_is_recomputed(data):
    p = toy.badly_scaled()
    grid = [0.01, 0.1]
    first = tr.tune_lr(p, "adam", 50, grid)
    (path,) = data.glob("tune_lr-*.npz")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.warns(RuntimeWarning, match="corrupt"):
        again = tr.tune_lr(p, "adam", 50, grid)
    np.testing.assert_array_equal(again.final_points, first.final_points)


def test_compare_runs_each_method_at_its_tuned_rate():
    p = toy.rotated_quadratic()
    grid = tr.lr_grid(1e-2, 3.0, 2)
    c = tr.compare(p, ["sgd", tr.Method("ada2ms", {"alpha": 0.5})], 120, grid=grid, progress=False)
    assert list(c.trajectories) == ["SGD", "Ada2MS α=0.5"]
    for label, t in c.trajectories.items():
        assert t.lr == c.tuning[label].best_lr
        assert t.final_distance == c.tuning[label].final_distance[c.tuning[label].best_index]
        alone = tr.run(p, t.optimizer, 120, **t.hparams)  # the real optimizer at that lr
        np.testing.assert_allclose(t.points, alone.points, rtol=1e-11, atol=1e-13)
        if t.optimizer in tr.ADAPTIVE:
            np.testing.assert_allclose(t.step_sizes, alone.step_sizes, rtol=1e-11)
        else:
            assert t.step_sizes is None and alone.step_sizes is None
        np.testing.assert_allclose(t.losses, alone.losses, rtol=1e-9, atol=1e-300)
    fixed = tr.compare(toy.saddle(), ["sgd", "adam"], 50, lr=0.05, progress=False)
    assert fixed.tuning == {} and all(t.lr == 0.05 for t in fixed.trajectories.values())
    assert list(fixed.table().columns[:3]) == ["method", "lr", "tuned"]


# -- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        (dict(steps=0), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(start=(1.0,)), "start"),
        (dict(start=(0.0, float("inf"))), "start"),
        (dict(seed=-1), "seed"),
        (dict(clip=0.0), "clip"),
        (dict(optimizer="lbfgs"), "optimizer"),
        (dict(problem="rosenbrock"), "problem"),
        (dict(bounds_factor=0.5), "bounds_factor"),
    ],
)
def test_bad_arguments_are_named(kwargs, arg):
    call = {"problem": toy.rosenbrock(), "optimizer": "adam", "steps": 10, **kwargs}
    with pytest.raises(ValueError, match=f"(Invalid|Unknown) {arg}"):
        tr.run(call.pop("problem"), call.pop("optimizer"), call.pop("steps"), **call)


def test_bad_tuning_arguments_are_named():
    p = toy.rosenbrock()
    with pytest.raises(ValueError, match="Invalid grid"):
        tr.tune_lr(p, "adam", 10, [0.1, -1.0])
    with pytest.raises(ValueError, match="Invalid grid"):
        tr.tune_lr(p, "adam", 10, [])
    with pytest.raises(ValueError, match="Invalid tolerance"):
        tr.tune_lr(p, "adam", 10, [0.1], tolerance=-1.0)
    with pytest.raises(ValueError, match="Invalid problem"):
        tr.tune_lr(toy.saddle(), "adam", 10, [0.1])
    with pytest.raises(ValueError, match="Invalid betas"):  # the optimizer's own check
        tr.tune_lr(p, "adamnx", 10, [0.1], betas=(1.5, 0.9), cache=False)
    with pytest.raises(ValueError, match="config"):  # a callable has no cache key
        tr.tune_lr(p, "ada2ms", 10, [0.1], alpha=lambda step: 0.5)


def test_lr_grid():
    g = tr.lr_grid(1e-4, 1.0, per_decade=4)
    assert len(g) == 17 and g[0] == pytest.approx(1e-4) and g[-1] == pytest.approx(1.0)
    np.testing.assert_allclose(np.diff(np.log10(g)), 0.25)
    with pytest.raises(ValueError, match="Invalid high"):
        tr.lr_grid(1.0, 0.1)


# -- plots of trajectories ----------------------------------------------------------------------
@pytest.fixture
def race():
    import matplotlib

    matplotlib.use("Agg")
    p = toy.rosenbrock()
    runs = {m.label: tr.run(p, m.optimizer, 30, lr=0.02, **m.hparams) for m in METHODS}
    return p, runs


def test_race_figure_has_log_losses_and_a_legend_outside_the_data(race):
    import matplotlib.pyplot as plt

    from analysis_lib import plots

    p, runs = race
    fig = plots.plot_race(p, runs)
    fig.canvas.draw()
    ax, bx = [a for a in fig.axes if a.get_label() != "<colorbar>"][:2]
    assert bx.get_yscale() == "log" and ax.get_aspect() == 1.0
    (legend,) = fig.legends
    box = legend.get_window_extent()
    for a in (ax, bx):
        assert not box.overlaps(a.get_window_extent())
    assert len(ax.get_lines()) >= len(runs)
    (sgd_line,) = [ln for ln in ax.get_lines() if ln.get_label() == "SGD"]
    np.testing.assert_array_equal(sgd_line.get_xydata(), runs["SGD"].points)
    plt.close(fig)
    saddle = tr.run(toy.saddle(), "sgd", 20, lr=0.05)
    fig = plots.plot_race(toy.saddle(), [saddle])
    assert fig.axes[1].get_yscale() == "linear"
    plt.close(fig)


def test_styles_tell_the_methods_apart(race):
    from analysis_lib import plots

    _, runs = race
    styles = {label: plots.trajectory_style(t) for label, t in runs.items()}
    colors = {s["color"] for s in styles.values()}
    assert len(colors) == len(runs)
    assert styles["AdamW"]["linestyle"] != styles["Adam"]["linestyle"]
    assert {styles[f"Ada2MS α={a}"]["color"] for a in ("1", "0.5", "0")} <= colors
    assert styles["SGD"]["color"] == plots.OPTIMIZER_COLORS["sgd"]


def test_animation_draws_every_path_up_to_its_last_point(race):
    from analysis_lib import plots

    p, runs = race
    anim = plots.animate_trajectories(p, list(runs.values()), frames=5)
    html = anim.to_jshtml()  # renders every frame, ending on the last
    project_root = str(Path(__file__).resolve().parents[2])
    assert html.count("data:image/png;base64") == 5 and project_root not in html
    lines = anim._fig.axes[0].get_lines()
    (adam,) = [ln for ln in lines if ln.get_label() == "Adam"]
    np.testing.assert_array_equal(adam.get_xydata(), runs["Adam"].points)
    small = plots.animation_html(p, list(runs.values()), frames=4)
    assert small.count("data:image/jpeg;base64") == 4 and len(small) < 200_000


# -- the explorer's sliders ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "optimizer, expected",
    [
        ("sgd", {}),
        ("sgdm", {"momentum": 0.8}),
        ("SGDM", {"momentum": 0.8}),
        ("adam", {"betas": (0.8, 0.95)}),
        ("adamw", {"betas": (0.8, 0.95)}),
        ("adamnx", {"betas": (0.8, 0.95)}),
        ("ada2ms", {"betas": (0.8, 0.95), "alpha": 0.25}),
    ],
)
def test_slider_hparams(optimizer, expected):
    hp = tr.slider_hparams(optimizer, np.float64(0.8), 0.95, 0.25)  # a slider may give NumPy's
    assert hp == expected
    assert all(type(x) is float for v in hp.values() for x in (v if isinstance(v, tuple) else [v]))
    make_optimizer(optimizer, [torch.zeros(2, requires_grad=True)], lr=0.1, **hp)  # accepted


def test_slider_hparams_unknown_optimizer():
    with pytest.raises(ValueError, match="Unknown optimizer"):
        tr.slider_hparams("rmsprop", 0.9, 0.999, 0.5)
