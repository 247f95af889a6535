"""AdamNX and Ada2MS against independent references: closed forms, a float64 NumPy transcription
of the update rules in ALGORITHMS.md, and torch's own AdamW."""

from __future__ import annotations

import inspect
import io
import math

import numpy as np
import pytest
import torch
from cases import (
    SHAPES,
    assert_close_list,
    drive,
    gradient_sequence,
    make_params,
    ref_ada2ms,
    ref_adamnx,
)

from analysis_lib.optim import (
    OPTIMIZERS,
    Ada2MS,
    AdamNX,
    ExponentialAlpha,
    adam_gradient_weights,
    adamnx_betas,
    adamnx_gradient_weights,
    effective_step_sizes,
    make_optimizer,
)

PATHS = [dict(foreach=False), dict(foreach=True), dict(fused=True)]
PATH_IDS = ["loop", "foreach", "fused"]


# ---------------------------------------------------------------------------------------------
# AdamNX
def test_adamnx_defaults_are_the_papers():
    sig = inspect.signature(AdamNX)
    got = {k: sig.parameters[k].default for k in ("lr", "betas", "eps", "weight_decay")}
    assert got == dict(lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01)


@pytest.mark.parametrize("beta1,beta2", [(0.9, 0.99), (0.5, 0.9), (0.0, 0.5), (0.9, 0.999)])
def test_adamnx_betas_match_their_definition(beta1, beta2):
    a = beta2 ** (1 - beta2)
    for t in [1, 2, 3, 10, 100, 1000]:
        b1h, b2h = adamnx_betas(beta1, beta2, t)
        assert b1h == pytest.approx((beta1 - beta1**t) / (1 - beta1**t), rel=1e-12, abs=1e-15)
        assert b2h == pytest.approx((1 - a ** (t - 1)) / (1 - a**t), rel=1e-9, abs=1e-15)
    assert adamnx_betas(beta1, beta2, 1) == (0.0, 0.0)
    b2s = [adamnx_betas(beta1, beta2, t)[1] for t in range(1, 2000)]
    assert np.all(np.diff(b2s) >= -1e-15) and np.all(np.diff(b2s[:20]) > 0) and b2s[-1] <= 1


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("beta2", [0.99, 0.9, 0.5])
def test_adamnx_second_moment_equals_closed_form(path, beta2):
    """v_t = sum_i a^(i-1) g_i^2 / sum_i a^(i-1) over hundreds of steps of wildly varying scale."""
    steps = 300
    grads = gradient_sequence(steps)
    params = make_params()
    opt = AdamNX(params, lr=1e-3, betas=(0.9, beta2), **path)
    drive(opt, params, grads)
    a = beta2 ** (1 - beta2)
    w = a ** np.arange(steps)
    for k, p in enumerate(params):
        g2 = np.stack([gs[k] ** 2 for gs in grads])
        closed = np.tensordot(w, g2, axes=1) / w.sum()
        np.testing.assert_allclose(opt.state[p]["exp_avg_sq"].numpy(), closed, rtol=1e-10)


def authors_adamnx_step(theta, g, m, v, t, *, lr, beta1, beta2, eps, weight_decay):
    """One step of AdamNX on one array, as the authors' public update rule states it (float64):
    step-dependent decays, decoupled weight decay first, eps outside the square root."""
    a = beta2 ** (1.0 - beta2)
    beta1_hat = (beta1 - beta1**t) / (1.0 - beta1**t)
    beta2_hat = (1.0 - a ** (t - 1)) / (1.0 - a**t)
    theta = theta - lr * weight_decay * theta
    m = beta1_hat * m + (1.0 - beta1_hat) * g
    v = beta2_hat * v + (1.0 - beta2_hat) * g * g
    theta = theta - lr * m / (np.sqrt(v) + eps)
    return theta, m, v


@pytest.mark.parametrize("path", PATHS[:2], ids=PATH_IDS[:2])
def test_adamnx_matches_the_authors_update_rule_with_several_groups(path):
    """Three param groups with their own lr, betas, eps and weight decay, and a parameter that
    gets its first gradient at step 4 (its decays then start from t = 1), against the rule
    applied array by array."""
    rng = np.random.default_rng(7)
    shapes = [(5, 4), (3,), (2, 3), (6,)]
    hps = [
        dict(lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.01),
        dict(lr=3e-2, beta1=0.5, beta2=0.9, eps=1e-3, weight_decay=0.0),
        dict(lr=5e-3, beta1=0.0, beta2=0.5, eps=1e-6, weight_decay=0.2),
    ]
    group_of = [0, 0, 1, 2]
    late = 3  # the parameter with no gradient before step 4
    theta = [rng.standard_normal(s) for s in shapes]
    params = [torch.tensor(x).requires_grad_() for x in theta]
    groups = [
        {
            "params": [p for p, gi in zip(params, group_of, strict=True) if gi == k],
            "lr": hp["lr"],
            "betas": (hp["beta1"], hp["beta2"]),
            "eps": hp["eps"],
            "weight_decay": hp["weight_decay"],
        }
        for k, hp in enumerate(hps)
    ]
    opt = AdamNX(groups, **path)
    m = [np.zeros(s) for s in shapes]
    v = [np.zeros(s) for s in shapes]
    t = [0] * len(shapes)
    for step in range(1, 9):
        grads = [rng.standard_normal(s) * 10.0 ** rng.uniform(-2, 2) for s in shapes]
        for k, p in enumerate(params):
            p.grad = None if (k == late and step < 4) else torch.tensor(grads[k])
            if p.grad is not None:
                t[k] += 1
                theta[k], m[k], v[k] = authors_adamnx_step(
                    theta[k], grads[k], m[k], v[k], t[k], **hps[group_of[k]]
                )
        opt.step()
        assert_close_list(params, theta, rtol=1e-12, atol=1e-15)
    assert_close_list([opt.state[p]["exp_avg"] for p in params], m, rtol=1e-12, atol=1e-15)
    assert_close_list([opt.state[p]["exp_avg_sq"] for p in params], v, rtol=1e-12)
    assert [int(opt.state[p]["step"]) for p in params] == [8, 8, 8, 5]


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_adamnx_first_moment_equals_adams_bias_corrected_momentum(path):
    steps, beta1 = 200, 0.9
    grads = gradient_sequence(steps)
    params = make_params()
    opt = AdamNX(params, betas=(beta1, 0.99), **path)
    drive(opt, params, grads)
    for k, p in enumerate(params):
        m = np.zeros(SHAPES[k])
        for gs in grads:
            m = beta1 * m + (1 - beta1) * gs[k]
        m_hat = m / (1 - beta1**steps)
        np.testing.assert_allclose(opt.state[p]["exp_avg"].numpy(), m_hat, rtol=1e-10)


def test_adamnx_first_step_uses_the_raw_gradient():
    params = make_params()
    opt = AdamNX(params, weight_decay=0.0)
    grads = gradient_sequence(1)
    drive(opt, params, grads)
    for k, p in enumerate(params):
        assert torch.equal(opt.state[p]["exp_avg"], torch.as_tensor(grads[0][k]))
        assert torch.equal(opt.state[p]["exp_avg_sq"], torch.as_tensor(grads[0][k] ** 2))


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_adamnx_trajectory_matches_reference(path):
    grads = gradient_sequence(150)
    params = make_params()
    theta0 = [p.detach().numpy().copy() for p in params]
    hp = dict(lr=3e-3, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)
    drive(AdamNX(params, **hp, **path), params, grads)
    theta, _, _ = ref_adamnx(theta0, grads, **hp)
    assert_close_list(params, theta, rtol=1e-10)


def test_adamnx_beta2_hat_reports_the_last_step():
    params = make_params()
    opt = AdamNX(params)
    assert opt.beta2_hat() == 0.0
    drive(opt, params, gradient_sequence(5))
    assert opt.beta2_hat() == adamnx_betas(0.9, 0.99, 5)[1]


# ---------------------------------------------------------------------------------------------
# Ada2MS
def test_ada2ms_defaults():
    sig = inspect.signature(Ada2MS)
    got = {
        k: sig.parameters[k].default
        for k in ("lr", "betas", "eps", "weight_decay", "alpha", "scope")
    }
    assert got == dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, alpha=0.5, scope="global"
    )
    assert "reconstruction" in Ada2MS.__doc__
    assert all(f'``"{scope}"``' in Ada2MS.__doc__ for scope in ("global", "group", "tensor"))


def _mlp_and_data(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 8, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (64,), generator=g)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    return model.to(dtype), x, y


def _train(make, steps=100, dtype=torch.float32, scale=1.0):
    model, x, y = _mlp_and_data(dtype)
    opt = make(model.parameters())
    for _ in range(steps):
        opt.zero_grad()
        loss = scale * torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_ada2ms_alpha_one_is_adamw(path):
    hp = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05)
    # 100 steps of real training in float64 ...
    ours = _train(lambda p: Ada2MS(p, alpha=1.0, **hp, **path), dtype=torch.float64)
    ref = _train(lambda p: torch.optim.AdamW(p, **hp), dtype=torch.float64)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    assert (
        ours - _train(lambda p: torch.optim.SGD(p, lr=1e-2), dtype=torch.float64)
    ).abs().max() > 1e-2
    # ... and 100 steps of a fixed float32 gradient sequence (no feedback that amplifies rounding)
    grads = gradient_sequence(100)
    runs = []
    for make in (
        lambda p: Ada2MS(p, alpha=1.0, **hp, **path),
        lambda p: torch.optim.AdamW(p, **hp),
    ):
        params = make_params(dtype=torch.float32)
        drive(make(params), params, grads)
        runs.append(torch.cat([p.detach().flatten() for p in params]))
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-6, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("foreach", [False, True])
def test_ada2ms_alpha_one_eager_is_bitwise_adamw(foreach):
    """The eager paths perform torch's AdamW floating-point operations, so even 100 steps of
    float32 training with feedback through the loss give identical bits."""
    hp = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05, foreach=foreach)
    ours = _train(lambda p: Ada2MS(p, alpha=1.0, **hp))
    assert torch.equal(ours, _train(lambda p: torch.optim.AdamW(p, **hp)))


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_ada2ms_alpha_zero_is_momentum_sgd_with_one_global_scale(path):
    params = make_params()
    grads = gradient_sequence(20)
    beta1, beta2, lr, eps = 0.9, 0.999, 1e-2, 1e-8
    opt = Ada2MS(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=0.0, alpha=0.0, **path)
    drive(opt, params, grads[:-1])
    before = [p.detach().clone() for p in params]
    drive(opt, params, grads[-1:])
    t = len(grads)
    m_hat = torch.cat([opt.state[p]["exp_avg"].flatten() for p in params]) / (1 - beta1**t)
    v_hat = torch.cat([opt.state[p]["exp_avg_sq"].flatten() for p in params]) / (1 - beta2**t)
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(params, before, strict=True)])
    expected_scale = -lr / (v_hat.mean().sqrt() + eps)
    torch.testing.assert_close(
        step / m_hat, torch.full_like(step, expected_scale), rtol=1e-10, atol=0
    )


@pytest.mark.parametrize("scope", ["global", "group", "tensor"])
@pytest.mark.parametrize("alpha", [1.0, 0.75, 0.5, 0.25, 0.0])
def test_ada2ms_trajectory_matches_reference(scope, alpha):
    grads = gradient_sequence(60)
    params = make_params()
    theta0 = [p.detach().numpy().copy() for p in params]
    hp = dict(lr=1e-2, betas=(0.85, 0.97), eps=1e-7, weight_decay=0.05)
    opt = Ada2MS(params, alpha=alpha, scope=scope, **hp)
    drive(opt, params, grads)
    theta, _, v = ref_ada2ms(theta0, grads, alpha=alpha, scope=scope, **hp)
    assert_close_list(params, theta, rtol=1e-10)
    assert_close_list([opt.state[p]["exp_avg_sq"] for p in params], v, rtol=1e-12)


@pytest.mark.parametrize("path", PATHS[:2], ids=PATH_IDS[:2])
@pytest.mark.parametrize("scope", ["global", "group", "tensor"])
@pytest.mark.parametrize("alpha", [0.7, 0.0])
def test_ada2ms_scopes_with_two_groups_match_reference(scope, alpha, path):
    """The usual decay / no-decay split: scope="global" is one mean over both groups, "group"
    one per group; the reference computes both from the definition."""
    grads = gradient_sequence(40, scales=np.tile([1e-2, 1.0, 30.0], (40, 1)))
    params = make_params()
    theta0 = [p.detach().numpy().copy() for p in params]
    hp = dict(betas=(0.85, 0.97), eps=1e-7)
    groups = [
        {"params": [params[0], params[2]], "lr": 1e-2, "weight_decay": 0.05},
        {"params": [params[1]], "lr": 3e-3, "weight_decay": 0.0},
    ]
    opt = Ada2MS(groups, alpha=alpha, scope=scope, **hp, **path)
    drive(opt, params, grads)
    theta, _, _ = ref_ada2ms(
        theta0,
        grads,
        lr=[1e-2, 3e-3],
        weight_decay=[0.05, 0.0],
        alpha=alpha,
        scope=scope,
        groups=[0, 1, 0],
        **hp,
    )
    assert_close_list(params, theta, rtol=1e-10)
    if scope != "tensor":  # the two readings of "global" really differ here
        other = ref_ada2ms(
            theta0,
            grads,
            lr=[1e-2, 3e-3],
            weight_decay=[0.05, 0.0],
            alpha=alpha,
            scope="group" if scope == "global" else "global",
            groups=[0, 1, 0],
            **hp,
        )[0]
        assert not np.allclose(params[1].detach().numpy(), other[1], rtol=1e-3)


def test_ada2ms_scopes_differ_as_defined():
    """With tensors of very different gradient scales the global mean pulls the small ones up
    (scope="group") while scope="tensor" normalises each tensor by its own mean."""
    scales = np.tile([1e-3, 1.0, 1e2], (30, 1))
    grads = gradient_sequence(30, scales=scales)
    ends = {}
    for scope in ("group", "tensor"):
        params = make_params()
        theta0 = [p.detach().numpy().copy() for p in params]
        drive(Ada2MS(params, lr=1e-2, alpha=0.0, weight_decay=0.0, scope=scope), params, grads)
        ends[scope] = [(p.detach().numpy() - t0) for p, t0 in zip(params, theta0, strict=True)]
    # alpha=0, scope="tensor": every tensor moves about lr per step; scope="group": the tensor
    # with gradients 1e-3 of the largest barely moves
    small_group = np.abs(ends["group"][0]).max()
    small_tensor = np.abs(ends["tensor"][0]).max()
    assert small_group < 1e-3 * small_tensor
    assert np.abs(ends["tensor"][2]).max() == pytest.approx(small_tensor, rel=1.0)


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.0])
def test_ada2ms_with_zero_eps_is_invariant_to_loss_scale(alpha):
    def run(scale):
        return _train(
            lambda p: Ada2MS(p, lr=1e-2, eps=0.0, alpha=alpha),
            steps=40,
            dtype=torch.float64,
            scale=scale,
        )

    torch.testing.assert_close(run(1.0), run(1000.0), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(run(1.0), run(1e-3), rtol=1e-9, atol=1e-12)


def test_ada2ms_schedule_is_evaluated_at_the_step_being_taken():
    seen = []

    def alpha(t):
        seen.append(t)
        return 1.0 / t

    grads = gradient_sequence(8)
    params = make_params()
    theta0 = [p.detach().numpy().copy() for p in params]
    hp = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0)
    drive(Ada2MS(params, alpha=alpha, **hp), params, grads)
    assert seen == list(range(1, 9))  # once per step
    theta, _, _ = ref_ada2ms(theta0, grads, alpha=lambda t: 1.0 / t, scope="group", **hp)
    assert_close_list(params, theta, rtol=1e-10)


def test_exponential_alpha_schedule():
    sched = ExponentialAlpha(final=0.2, tau=10.0)
    assert sched(1) == 1.0
    assert sched(11) == pytest.approx(0.2 + 0.8 * math.exp(-1))
    assert sched(10_000) == pytest.approx(0.2)
    reach = ExponentialAlpha.reaching(final=0.0, steps=101, within=0.01)
    assert reach(101) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="final"):
        ExponentialAlpha(final=1.5)
    with pytest.raises(ValueError, match="tau"):
        ExponentialAlpha(tau=0)


def test_ada2ms_schedule_out_of_range_raises_before_any_state_changes():
    params = make_params()
    opt = Ada2MS(params, alpha=lambda t: 1.0 if t < 3 else 2.0)
    grads = gradient_sequence(3)
    drive(opt, params, grads[:2])
    before = [p.detach().clone() for p in params]
    state_before = {k: v.clone() for k, v in opt.state[params[0]].items()}
    with pytest.raises(ValueError, match=r"alpha .*step 3.*2\.0"):
        drive(opt, params, grads[2:])
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))
    assert all(torch.equal(opt.state[params[0]][k], v) for k, v in state_before.items())


# ---------------------------------------------------------------------------------------------
# Execution paths, dtypes, and the torch.optim contract
def _multi_group_setup(cls, dtype, path, **hp):
    params = make_params(dtype=dtype)
    frozen = torch.zeros(2, dtype=dtype, requires_grad=True)  # never gets a gradient
    groups = [
        {"params": [params[0], frozen]},
        {"params": params[1:], "lr": 3e-3, "weight_decay": 0.0},
    ]
    return params, frozen, cls(groups, lr=1e-2, **hp, **path)


CASES = [
    (AdamNX, {}),
    (Ada2MS, {}),
    (Ada2MS, dict(scope="tensor", alpha=0.3)),
    (Ada2MS, dict(alpha=ExponentialAlpha(0.0, 5.0))),
    (Ada2MS, dict(scope="group", alpha=0.6)),
]
CASE_IDS = ["adamnx", "ada2ms", "ada2ms-tensor", "ada2ms-schedule", "ada2ms-group"]


@pytest.mark.parametrize("cls,hp", CASES, ids=CASE_IDS)
@pytest.mark.parametrize(
    "dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)], ids=["float64", "float32"]
)
def test_paths_agree(cls, hp, dtype, tol):
    grads = gradient_sequence(25)
    results = []
    for path in PATHS:
        params, frozen, opt = _multi_group_setup(cls, dtype, path, **hp)
        drive(opt, params, grads)
        assert torch.equal(frozen, torch.zeros(2, dtype=dtype)) and frozen not in opt.state
        results.append(torch.cat([p.detach().flatten() for p in params]))
    for other in results[1:]:
        torch.testing.assert_close(other, results[0], rtol=tol, atol=tol)


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("cls,hp", CASES[:3], ids=CASE_IDS[:3])
def test_bfloat16_keeps_state_in_param_dtype_and_tracks_float32(cls, hp, path):
    grads = gradient_sequence(20, scales=np.ones((20, 3)))
    runs = {}
    for dtype in (torch.bfloat16, torch.float32):
        params = make_params(dtype=dtype)
        opt = cls(params, lr=1e-2, **hp, **path)
        drive(opt, params, grads)
        assert all(opt.state[p]["exp_avg"].dtype == dtype for p in params)
        assert all(opt.state[p]["exp_avg_sq"].dtype == dtype for p in params)
        runs[dtype] = torch.cat([p.detach().float().flatten() for p in params])
    assert torch.isfinite(runs[torch.bfloat16]).all()
    torch.testing.assert_close(runs[torch.bfloat16], runs[torch.float32], rtol=0.05, atol=0.05)


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("cls,hp", CASES, ids=CASE_IDS)
def test_state_dict_round_trip_resumes_bit_identically(cls, hp, path):
    grads = gradient_sequence(20)
    params, _, opt = _multi_group_setup(cls, torch.float32, path, **hp)
    uninterrupted = drive(opt, params, grads)[-1]

    params, _, opt = _multi_group_setup(cls, torch.float32, path, **hp)
    drive(opt, params, grads[:10])
    buf = io.BytesIO()
    torch.save({"params": [p.detach() for p in params], "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)

    params2, _, opt2 = _multi_group_setup(cls, torch.float32, path, **hp)
    with torch.no_grad():
        for p, s in zip(params2, saved["params"], strict=True):
            p.copy_(s)
    opt2.load_state_dict(saved["opt"])
    resumed = drive(opt2, params2, grads[10:])[-1]
    assert all(torch.equal(a, b) for a, b in zip(resumed, uninterrupted, strict=True))


def test_state_dict_with_an_opaque_alpha_callable_needs_it_at_load():
    params = make_params()
    opt = Ada2MS(params, alpha=lambda t: 0.5)
    drive(opt, params, gradient_sequence(2))
    sd = opt.state_dict()
    assert sd["param_groups"][0]["alpha"] == "callable"
    with pytest.raises(ValueError, match="callable alpha"):
        Ada2MS(make_params(), alpha=0.5).load_state_dict(sd)
    fresh = Ada2MS(make_params(), alpha=lambda t: 0.25)
    fresh.load_state_dict(sd)
    assert callable(fresh.param_groups[0]["alpha"]) and fresh.param_groups[0]["alpha"](1) == 0.25


@pytest.mark.parametrize("cls", [AdamNX, Ada2MS])
def test_closure_is_called_and_its_loss_returned(cls):
    model, x, y = _mlp_and_data()
    opt = cls(model.parameters(), lr=1e-2)
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    first = opt.step(closure)
    for _ in range(30):
        last = opt.step(closure)
    assert len(calls) == 31 and last < first


@pytest.mark.parametrize("cls", [AdamNX, Ada2MS])
def test_works_with_lr_schedulers(cls):
    grads = gradient_sequence(6)
    params = make_params()
    opt = cls(params, lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0 if epoch < 3 else 0.0)
    history = []
    for gs in grads:
        history.append(drive(opt, params, [gs])[-1])
        sched.step()
    assert opt.param_groups[0]["lr"] == 0.0
    assert not torch.equal(history[2][0], history[1][0])
    assert torch.equal(history[5][0], history[3][0])  # lr = 0 (and so no weight decay): frozen


@pytest.mark.parametrize("cls", [AdamNX, Ada2MS])
def test_param_group_hyperparameters_are_their_own(cls):
    params = make_params()
    opt = cls([{"params": params[:1]}, {"params": params[1:], "lr": 0.0}], lr=1e-2)
    before = [p.detach().clone() for p in params]
    drive(opt, params, gradient_sequence(3))
    assert not torch.equal(params[0], before[0])
    assert all(torch.equal(p, b) for p, b in zip(params[1:], before[1:], strict=True))


def test_fused_does_not_recompile_when_hyperparameters_change():
    params = make_params(dtype=torch.float32)
    opt = Ada2MS(params, lr=1e-2, alpha=ExponentialAlpha(0.0, 3.0), fused=True)
    grads = gradient_sequence(6)
    drive(opt, params, grads[:1])  # compiles
    with torch._dynamo.config.patch(error_on_recompile=True):
        for k, gs in enumerate(grads[1:]):
            opt.param_groups[0]["lr"] = 1e-3 * (k + 1)
            opt.param_groups[0]["weight_decay"] = 0.01 * k
            drive(opt, params, [gs])


# ---------------------------------------------------------------------------------------------
# Bad input
BAD = [
    (dict(lr=-1e-3), "lr", "-0.001"),
    (dict(lr=float("nan")), "lr", "nan"),
    (dict(eps=-1.0), "eps", "-1.0"),
    (dict(weight_decay=-0.1), "weight_decay", "-0.1"),
    (dict(betas=(1.0, 0.9)), "betas", "1.0"),
    (dict(betas=(0.9, -0.5)), "betas", "-0.5"),
    (dict(betas=(0.9,)), "betas", "0.9"),
]


@pytest.mark.parametrize("cls", [AdamNX, Ada2MS])
@pytest.mark.parametrize("kwargs,arg,value", BAD)
def test_bad_hyperparameters_are_named(cls, kwargs, arg, value):
    with pytest.raises(ValueError, match=rf"Invalid {arg}.*{value}"):
        cls(make_params(), **kwargs)


@pytest.mark.parametrize(
    "kwargs,arg",
    [(dict(alpha=1.5), "alpha"), (dict(alpha=-0.1), "alpha"), (dict(scope="layer"), "scope")],
)
def test_bad_ada2ms_arguments_are_named(kwargs, arg):
    with pytest.raises(ValueError, match=rf"Invalid {arg}.*{next(iter(kwargs.values()))}"):
        Ada2MS(make_params(), **kwargs)


@pytest.mark.parametrize("cls", [AdamNX, Ada2MS])
def test_bad_values_in_a_param_group_name_the_group(cls):
    params = make_params()
    with pytest.raises(ValueError, match=r"Invalid lr in param group 1: -1"):
        cls([{"params": params[:1]}, {"params": params[1:], "lr": -1}])


@pytest.mark.parametrize("cls", [AdamNX, Ada2MS])
def test_unsupported_parameters_and_flags(cls):
    with pytest.raises(ValueError, match="complex"):
        cls([torch.zeros(3, dtype=torch.complex64, requires_grad=True)])
    with pytest.raises(ValueError, match="int64"):
        cls([torch.zeros(3, dtype=torch.int64)])
    with pytest.raises(ValueError, match="foreach and fused"):
        cls(make_params(), foreach=True, fused=True)


@pytest.mark.parametrize("cls", [AdamNX, Ada2MS])
def test_sparse_gradients_raise_before_any_state_changes(cls):
    params = make_params()
    opt = cls(params)
    drive(opt, params, gradient_sequence(1))
    before = [p.detach().clone() for p in params]
    state = [opt.state[p]["exp_avg"].clone() for p in params]
    for p in params[:-1]:
        p.grad = torch.ones_like(p)
    params[-1].grad = torch.ones_like(params[-1]).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))
    assert all(torch.equal(opt.state[p]["exp_avg"], s) for p, s in zip(params, state, strict=True))


def test_hyperparameters_edited_after_construction_are_checked_at_step():
    params = make_params()
    opt = AdamNX(params)
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="Invalid lr in param group 0"):
        drive(opt, params, gradient_sequence(1))
    assert not opt.state


# ---------------------------------------------------------------------------------------------
# make_optimizer
@pytest.mark.parametrize(
    "name,cls",
    [
        ("sgd", torch.optim.SGD),
        ("sgdm", torch.optim.SGD),
        ("adam", torch.optim.Adam),
        ("adamw", torch.optim.AdamW),
        ("AdamNX", AdamNX),
        ("ada2ms", Ada2MS),
    ],
)
def test_make_optimizer(name, cls):
    opt = make_optimizer(name, make_params(), lr=0.1)
    assert type(opt) is cls and opt.param_groups[0]["lr"] == 0.1
    if name == "sgdm":
        assert opt.param_groups[0]["momentum"] == 0.9
    if name == "sgd":
        assert opt.param_groups[0]["momentum"] == 0


def test_make_optimizer_passes_hyperparameters_and_rejects_unknown_names():
    opt = make_optimizer("ada2ms", make_params(), alpha=0.25, scope="tensor")
    assert opt.param_groups[0]["alpha"] == 0.25 and opt.param_groups[0]["scope"] == "tensor"
    assert make_optimizer("sgdm", make_params(), momentum=0.5).param_groups[0]["momentum"] == 0.5
    with pytest.raises(ValueError, match=r"Unknown optimizer: 'lion'.*adamnx.*ada2ms"):
        make_optimizer("lion", make_params())
    assert set(OPTIMIZERS) == {"sgd", "sgdm", "adam", "adamw", "adamnx", "ada2ms"}


# ---------------------------------------------------------------------------------------------
# Effective step sizes
def test_effective_step_sizes_of_adamnx_are_lr_over_sqrt_v_plus_eps():
    params = make_params()
    opt = AdamNX(params, lr=0.1, eps=1e-3)
    drive(opt, params, gradient_sequence(7))
    sizes = effective_step_sizes(opt)
    for p in params:
        expected = 0.1 / (opt.state[p]["exp_avg_sq"].sqrt() + 1e-3)
        torch.testing.assert_close(sizes[p], expected, rtol=1e-14, atol=0)


def test_effective_step_sizes_of_ada2ms_span_adamw_to_a_single_value():
    grads = gradient_sequence(10)
    sizes = {}
    for name, make in [
        ("adamw", lambda p: torch.optim.AdamW(p, lr=0.1)),
        ("a1", lambda p: Ada2MS(p, lr=0.1, alpha=1.0)),
        ("a0", lambda p: Ada2MS(p, lr=0.1, alpha=0.0)),
        ("a0-tensor", lambda p: Ada2MS(p, lr=0.1, alpha=0.0, scope="tensor")),
    ]:
        params = make_params()
        opt = make(params)
        drive(opt, params, grads)
        sizes[name] = [effective_step_sizes(opt)[p] for p in params]
        if name == "a0":
            v_hat = torch.cat([opt.state[p]["exp_avg_sq"].flatten() for p in params])
            v_hat = v_hat / (1 - 0.999**10)
            expected = 0.1 / (v_hat.mean().sqrt() + 1e-8)
    assert_close_list(sizes["a1"], [s.numpy() for s in sizes["adamw"]], rtol=1e-12)
    for s in sizes["a0"]:
        torch.testing.assert_close(s, torch.full_like(s, expected.item()), rtol=1e-12, atol=0)
    for s in sizes["a0-tensor"]:  # one value per tensor, different across tensors
        assert torch.allclose(s, s.flatten()[0].expand_as(s), rtol=1e-12)
    assert len({round(float(s.flatten()[0]), 12) for s in sizes["a0-tensor"]}) == 3
    with pytest.raises(TypeError, match="Adam-family"):
        effective_step_sizes(torch.optim.SGD(make_params(), lr=0.1))


def test_gradient_weights_reproduce_the_second_moments():
    grads = gradient_sequence(50, shapes=[(5,)])
    g2 = np.stack([g[0] ** 2 for g in grads])
    params = make_params(shapes=[(5,)])
    nx = AdamNX(params, betas=(0.9, 0.9))
    drive(nx, params, grads)
    w = adamnx_gradient_weights(0.9, 50)
    np.testing.assert_allclose(nx.state[params[0]]["exp_avg_sq"].numpy(), w @ g2, rtol=1e-12)
    assert w.sum() == pytest.approx(1.0) and np.all(np.diff(w) < 0)  # older weigh more
    params = make_params(shapes=[(5,)])
    adam = torch.optim.Adam(params, betas=(0.9, 0.9))
    drive(adam, params, grads)
    v_hat = adam.state[params[0]]["exp_avg_sq"].numpy() / (1 - 0.9**50)
    np.testing.assert_allclose(v_hat, adam_gradient_weights(0.9, 50) @ g2, rtol=1e-12)


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_ada2ms_running_square_sum_equals_the_sum_of_v(path):
    """Ada2MS keeps sum(v) per tensor by the linearity of the EMA (one read of g per step): in
    float64 it matches an exact float64 v to float32 summation error, over 300 steps of wildly
    varying scale (the float32 v itself drifts further, by its own rounding)."""
    grads = gradient_sequence(300)
    params = make_params(dtype=torch.float32)
    theta0 = [p.detach().double().numpy() for p in params]
    hp = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    opt = Ada2MS(params, **hp, **path)
    drive(opt, params, grads)
    _, _, v_exact = ref_ada2ms(theta0, grads, alpha=0.5, scope="group", **hp)
    for p, v in zip(params, v_exact, strict=True):
        total = opt.state[p]["exp_avg_sq_sum"]
        assert total.dtype == torch.float64
        assert total.shape == (1,) and total.item() == pytest.approx(v.sum(), rel=1e-6)


def test_ada2ms_alpha_one_continues_an_adamw_state_dict():
    grads = gradient_sequence(20)
    hp = dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.05)
    params = make_params()
    adamw = torch.optim.AdamW(params, **hp)
    drive(adamw, params, grads[:10])
    ours_params = [p.detach().clone().requires_grad_() for p in params]
    ours = Ada2MS(ours_params, alpha=1.0, **hp)
    buf = io.BytesIO()
    torch.save(adamw.state_dict(), buf)
    buf.seek(0)
    ours.load_state_dict(torch.load(buf, weights_only=True))
    assert ours.param_groups[0]["alpha"] == 1.0 and ours.param_groups[0]["scope"] == "global"
    a = drive(adamw, params, grads[10:])[-1]
    b = drive(ours, ours_params, grads[10:])[-1]
    assert_close_list(b, [x.numpy() for x in a], rtol=1e-12)


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 2e-6), (torch.float64, 1e-13)])
@pytest.mark.parametrize("e", [0.0, 0.125, 0.375, 0.5])
def test_compiled_power_with_a_tensor_exponent_matches_pow(dtype, rtol, e):
    """The fused path's x**e for a scheduled alpha (exp(e log x)) against torch.pow, the edge
    cases included: 0**0 = 1, 0**e = 0, tiny and huge x."""
    from analysis_lib.optim._backends import CompiledOps

    tiny = torch.finfo(dtype).tiny
    x = torch.tensor([0.0, tiny, 1e-30, 3e-8, 0.5, 1.0, 7.0, 1e20], dtype=dtype)
    (out,) = CompiledOps.pow([x], torch.tensor(e, dtype=dtype))
    torch.testing.assert_close(out, x.pow(e), rtol=rtol, atol=0)
    compiled = torch.compile(lambda t, p: CompiledOps.pow([t], p)[0], fullgraph=True)
    torch.testing.assert_close(
        compiled(x, torch.tensor(e, dtype=dtype)), x.pow(e), rtol=rtol, atol=0
    )


# -- AdamNX's horizon -----------------------------------------------------------------------------
@pytest.mark.parametrize("beta2", [0.9, 0.99, 0.999, 0.9999])
def test_adamnx_horizon_is_the_time_constant_of_the_freeze(beta2):
    """1 / (1 - a) with a = beta2^(1 - beta2), and it is what AdamNX's schedule does: early on
    the newest gradient's weight 1 - beta2_hat_t is 1/t (a plain average); at t = horizon it has
    fallen to 1 / ((e - 1) t); and the first `horizon` gradients end up carrying 1 - 1/e of v_t."""
    from analysis_lib.optim import adamnx_horizon

    h = adamnx_horizon(beta2)
    assert h == pytest.approx(1.0 / (1.0 - beta2 ** (1.0 - beta2)), rel=1e-6)
    assert (1.0 - adamnx_betas(0.9, beta2, 3)[1]) * 3 == pytest.approx(1.0, rel=3 / h)
    t = round(h)
    newest = 1.0 - adamnx_betas(0.9, beta2, t)[1]
    assert newest * t == pytest.approx(1.0 / (math.e - 1.0), rel=3 / h + 1e-6)
    if h < 2e4:  # the weights of a history of 20 horizons: cheap enough to compute
        share = adamnx_gradient_weights(beta2, 20 * t)[:t].sum()
        assert share == pytest.approx(1.0 - math.exp(-1.0), rel=3 / h)


def test_adamnx_horizon_edges_and_bad_input():
    from analysis_lib.optim import adamnx_horizon

    assert adamnx_horizon(0.0) == 1.0  # v keeps the first g^2: frozen after one step
    assert adamnx_betas(0.9, 0.0, 2)[1] == 1.0
    assert adamnx_horizon(0.99) == pytest.approx(10_000, rel=0.01)
    for bad in (1.0, -0.1, float("nan"), "0.9", True, None):
        with pytest.raises(ValueError, match="Invalid beta2"):
            adamnx_horizon(bad)


# -- replaying a gradient history -----------------------------------------------------------------
def _history(steps, shapes=SHAPES, seed=1):
    return [
        [torch.as_tensor(g) for g in step] for step in gradient_sequence(steps, shapes, seed=seed)
    ]


@pytest.mark.parametrize(
    "name,hp",
    [
        ("sgdm", dict(lr=0.01)),
        ("adamw", dict(lr=0.01)),
        ("adamnx", dict(lr=0.01, betas=(0.9, 0.95))),
        ("ada2ms", dict(lr=0.01, alpha=0.5)),
        ("ADA2MS", dict(lr=0.01, alpha=0.0, scope="tensor")),
    ],
)
def test_replay_is_the_optimizer_run_directly_on_the_same_gradients(name, hp):
    from analysis_lib.optim import replay

    history = _history(12)
    kept = [[g.clone() for g in step] for step in history]
    start = make_params()
    before = [p.detach().clone() for p in start]
    # the reference: the optimizer stepped by hand
    params = [p.detach().clone().requires_grad_() for p in start]
    direct = make_optimizer(name, params, **hp)
    for step in history:
        for p, g in zip(params, step, strict=True):
            p.grad = g.clone()
        direct.step()
    replayed = replay(name, start, history, **hp)
    copies = replayed.param_groups[0]["params"]
    for p, q in zip(params, copies, strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=0)
        for key, value in direct.state[p].items():
            torch.testing.assert_close(replayed.state[q][key], value, rtol=0, atol=0)
    for p, b in zip(start, before, strict=True):  # the starting values are not touched
        torch.testing.assert_close(p, b, rtol=0, atol=0)
    for step, copy in zip(history, kept, strict=True):  # nor is the history
        for g, c in zip(step, copy, strict=True):
            torch.testing.assert_close(g, c, rtol=0, atol=0)
    assert type(replayed) is type(direct)


def test_replay_takes_a_callable_and_checks_the_history_before_stepping():
    from analysis_lib.optim import replay

    history = _history(3)
    opt = replay(lambda ps: AdamNX(ps, lr=0.1), make_params(), history)
    assert int(opt.state[opt.param_groups[0]["params"][0]]["step"]) == 3
    with pytest.raises(ValueError, match="Unknown optimizer: 'lion'"):
        replay("lion", make_params(), history)
    with pytest.raises(ValueError, match="Invalid hparams"):
        replay(lambda ps: AdamNX(ps), make_params(), history, lr=0.1)
    with pytest.raises(ValueError, match=r"Invalid history\[2\]: 2"):
        replay("adamw", make_params(), [*history[:2], history[2][:2]])
    wrong = [*history[:2], [history[2][0].T, *history[2][1:]]]
    with pytest.raises(ValueError, match=r"Invalid history\[2\]\[0\]"):
        replay("adamw", make_params(), wrong)
    with pytest.raises(ValueError, match=r"Invalid history\[0\]\[1\]"):
        replay("adamw", make_params(), [[history[0][0], history[0][1].float(), history[0][2]]])
    with pytest.raises(TypeError, match="Invalid history"):
        replay("adamw", make_params(), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="Invalid params"):
        replay("adamw", [], history)
