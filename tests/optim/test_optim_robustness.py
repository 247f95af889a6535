"""AdamNX and Ada2MS under hostile but fair use: zero second moments, steps that must fail,
foreign or ill-fitting state, unsupported dtypes. Each test checks the behaviour against an
independent expectation (a NumPy transcription of the update, torch's own AdamW, or the
optimizer's state before the failing call)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from cases import assert_close_list, drive, gradient_sequence, make_params, ref_ada2ms

from analysis_lib.optim import Ada2MS, AdamNX, ExponentialAlpha, _native, transition_measures

EAGER = {"loop": dict(foreach=False), "foreach": dict(foreach=True)}


def _zero_second_tensor(grads):
    """The gradient sequence with the second tensor's gradients all zero (an unused head)."""
    return [[g[0], np.zeros_like(g[1]), g[2]] for g in grads]


def _snapshot(opt, params):
    return (
        [p.detach().clone() for p in params],
        {
            id(p): {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[p].items()}
            for p in params
            if opt.state.get(p)
        },
        copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]),
    )


def _assert_unchanged(opt, params, snap):
    before, state, groups = snap
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))
    now = {id(p): opt.state[p] for p in params if opt.state.get(p)}
    assert now.keys() == state.keys()
    for key, entries in state.items():
        assert now[key].keys() == entries.keys()
        assert all(torch.equal(now[key][k], v) for k, v in entries.items())
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups


# ---------------------------------------------------------------------------------------------
# 1. Zero second moments: no adaptive step, weight decay only, nothing non-finite
@pytest.mark.parametrize("path", list(EAGER))
@pytest.mark.parametrize("scope", ["tensor", "group", "global"])
@pytest.mark.parametrize("alpha", [0.5, 0.0, 1.0])
@pytest.mark.parametrize("eps", [1e-8, 0.0])
def test_zero_second_moments_give_no_adaptive_step(path, scope, alpha, eps):
    grads = _zero_second_tensor(gradient_sequence(6))
    params = make_params()
    theta0 = [p.detach().numpy().copy() for p in params]
    hp = dict(lr=1e-2, betas=(0.9, 0.99), eps=eps, weight_decay=0.1)
    opt = Ada2MS(params, alpha=alpha, scope=scope, **hp, **EAGER[path])
    drive(opt, params, grads)
    assert all(torch.isfinite(p).all() for p in params)
    # the unused tensor only decays: theta0 (1 - lr wd)^t
    np.testing.assert_allclose(params[1].detach().numpy(), theta0[1] * (1 - 1e-3) ** 6, rtol=1e-14)
    theta, _, _ = ref_ada2ms(theta0, grads, alpha=alpha, scope=scope, **hp)
    assert_close_list(params, theta, rtol=1e-10)


def test_an_all_zero_group_or_optimizer_steps_without_error_or_nan():
    """The issue's cases: a whole group (scope "group") or every parameter (scope "global")
    with zero gradients, beside groups that have gradients."""
    a, b = torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
    for scope in ("group", "global"):
        for split in (True, False):
            groups = [{"params": [a]}, {"params": [b]}] if split else [a, b]
            a.grad, b.grad = torch.randn(3), torch.zeros(2)
            if not split and scope == "global":
                a.grad = torch.zeros(3)
            with torch.no_grad():
                a.fill_(1.0), b.fill_(1.0)
            opt = Ada2MS(groups, scope=scope, lr=0.1, weight_decay=0.5)
            opt.step()
            assert torch.isfinite(a).all() and torch.equal(b, torch.full((2,), 0.95))


def _fused_zero_run(scope, native, monkeypatch):
    """Fused steps with a zero tensor (eps > 0, then eps = 0, with no recompilation), against
    the loop path."""
    grads = _zero_second_tensor(gradient_sequence(4))
    groups = lambda ps: [{"params": ps[:2]}, {"params": ps[2:], "weight_decay": 0.0}]  # noqa: E731
    runs = []
    for path in (dict(foreach=False), dict(fused=True)):
        params = make_params(dtype=torch.float32)
        opt = Ada2MS(groups(params), lr=1e-2, alpha=0.5, scope=scope, **path)
        opt._native_reduction = native
        drive(opt, params, grads[:2])
        opt.param_groups[0]["eps"] = 0.0
        drive(opt, params, grads[2:])
        runs.append(params)
    for a, b in zip(*runs, strict=True):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)
    theta0 = make_params(dtype=torch.float32)[1].detach()
    torch.testing.assert_close(runs[1][1].detach(), theta0 * (1 - 1e-4) ** 4)


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["tensor", "global"])
def test_zero_second_moments_on_the_fused_path(scope, monkeypatch, native_kernel_calls):
    calls = native_kernel_calls
    _fused_zero_run(scope, native=scope == "global", monkeypatch=monkeypatch)
    if scope == "global" and _native.library() is not None:
        assert calls and all(calls)  # the native kernel computed the sums
    if scope == "tensor":
        assert not calls  # the compiled reduction


# ---------------------------------------------------------------------------------------------
# 2. A step that raises changes nothing
@pytest.mark.parametrize("bad", [2.0, float("nan"), "0.5", None, -0.1])
@pytest.mark.parametrize("scope", ["tensor", "global"])
def test_a_bad_alpha_at_step_3_leaves_everything_as_after_step_2(bad, scope):
    calls = []

    def alpha(t):
        calls.append(t)
        return 0.5 if t < 3 else bad

    params = make_params()
    groups = [{"params": params[:1]}, {"params": params[1:], "alpha": 0.3}]
    opt = Ada2MS(groups, alpha=alpha, scope=scope)
    grads = gradient_sequence(3)
    drive(opt, params, grads[:2])
    assert calls == [1, 2]  # called once per step
    snap = _snapshot(opt, params)
    with pytest.raises(ValueError, match=r"Invalid alpha \(schedule value at step 3\) in param"):
        drive(opt, params, grads[2:])
    _assert_unchanged(opt, params, snap)


def test_a_parameter_turned_float16_after_construction_is_refused_before_any_change():
    params = make_params(dtype=torch.float32)
    for cls in (AdamNX, Ada2MS):
        opt = cls(params)
        drive(opt, params, gradient_sequence(1))
        snap = _snapshot(opt, params)
        kept = params[2].data
        params[2].data = kept.half()
        params[2].grad = torch.ones_like(params[2])
        with pytest.raises(ValueError, match=r"float16.*param group 0"):
            opt.step()
        params[2].data = kept
        params[2].grad = None
        _assert_unchanged(opt, params, snap)


# ---------------------------------------------------------------------------------------------
# 3. Loading state
def _trained(cls, params=None, steps=2, **hp):
    params = make_params() if params is None else params
    opt = cls(params, **hp)
    drive(opt, params, gradient_sequence(steps))
    return opt, params


def _foreign_state_dicts():
    p = make_params()
    sgd = torch.optim.SGD(p, lr=0.1, momentum=0.9)
    drive(sgd, p, gradient_sequence(2))
    return {
        "sgd": sgd.state_dict(),
        "adamnx": _trained(AdamNX)[0].state_dict(),
        "ada2ms": _trained(Ada2MS)[0].state_dict(),
        "adamw-amsgrad": _trained(torch.optim.AdamW, amsgrad=True)[0].state_dict(),
        "adam-l2": _trained(torch.optim.Adam, weight_decay=0.1)[0].state_dict(),
        "adamw": _trained(torch.optim.AdamW)[0].state_dict(),
    }


REFUSED = {
    AdamNX: {
        "sgd": "lacks 'betas', 'eps'",
        "ada2ms": "Ada2MS's, not AdamNX's",
        "adamw": "Adam/AdamW's, not AdamNX's",
        "adamw-amsgrad": "Adam/AdamW's, not AdamNX's",
    },
    Ada2MS: {
        "sgd": "lacks 'betas', 'eps'",
        "adamnx": "lacks 'alpha' and 'scope'",
        "adamw-amsgrad": "amsgrad",
        "adam-l2": "L2",
    },
}


@pytest.mark.parametrize("cls", [AdamNX, Ada2MS])
def test_foreign_state_is_refused_saying_what_is_missing_and_changes_nothing(cls):
    dicts = _foreign_state_dicts()
    opt, params = _trained(cls)
    snap = _snapshot(opt, params)
    for name, message in REFUSED[cls].items():
        with pytest.raises(ValueError, match=message):
            opt.load_state_dict(dicts[name])
        _assert_unchanged(opt, params, snap)
    drive(opt, params, gradient_sequence(1))  # still steps
    if cls is Ada2MS:  # torch's AdamW state stays loadable (documented)
        opt.load_state_dict(dicts["adamw"])


def _edited(sd, edit):
    sd = copy.deepcopy(sd)
    edit(sd)
    return sd


BAD_STATES = [
    ("exp_avg of another shape", lambda sd: sd["state"][0].update(exp_avg=torch.zeros(3, 4)), "exp_avg is \\(3, 4\\), the parameter's shape is \\(4, 3\\)"),
    ("exp_avg_sq missing", lambda sd: sd["state"][1].pop("exp_avg_sq"), "lacks 'exp_avg_sq'"),
    ("integer moments", lambda sd: sd["state"][1].update(exp_avg=torch.zeros(3, dtype=torch.int64)), "dtype torch.int64"),
    ("unknown key", lambda sd: sd["state"][2].update(momentum_buffer=torch.zeros(2, 2, 2)), "unknown 'momentum_buffer'"),
    ("negative step", lambda sd: sd["state"][0].update(step=torch.tensor(-1.0)), "step is"),
    ("nan step", lambda sd: sd["state"][0].update(step=torch.tensor(float("nan"))), "step is"),
    ("index of no parameter", lambda sd: sd["state"].update({7: sd["state"][0]}), "no parameter"),
    ("bad lr", lambda sd: sd["param_groups"][0].update(lr=-1.0), "Invalid lr in state_dict param group 0"),
    ("another group count", lambda sd: sd["param_groups"].append(dict(sd["param_groups"][0])), "2 param groups"),
    ("another parameter count", lambda sd: sd["param_groups"][0]["params"].pop(), "has 2 parameters"),
    ("not a state_dict", lambda sd: sd.pop("state"), "expected a dict with 'state'"),
]  # fmt: skip


@pytest.mark.parametrize("cls", [AdamNX, Ada2MS])
@pytest.mark.parametrize("case,edit,message", BAD_STATES, ids=[b[0] for b in BAD_STATES])
def test_ill_fitting_state_is_refused_before_anything_changes(cls, case, edit, message):
    source, _ = _trained(cls)
    opt, params = _trained(cls, steps=3)
    snap = _snapshot(opt, params)
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(_edited(source.state_dict(), edit))
    _assert_unchanged(opt, params, snap)


def test_ada2ms_refuses_a_bad_alpha_or_sum_in_its_state():
    source, _ = _trained(Ada2MS, alpha=ExponentialAlpha(0.2, 5.0))
    opt, params = _trained(Ada2MS)
    snap = _snapshot(opt, params)
    for edit, message in [
        (lambda sd: sd["param_groups"][0].update(alpha={"schedule": "cosine"}), "unknown alpha"),
        (lambda sd: sd["param_groups"][0]["alpha"].update(tau=-1.0), "Invalid tau"),
        (lambda sd: sd["param_groups"][0].update(alpha=1.5), "Invalid alpha"),
        (lambda sd: sd["param_groups"][0].update(scope="layer"), "Invalid scope"),
        (lambda sd: sd["param_groups"][0].pop("scope"), "lacks 'scope'"),
        (lambda sd: sd["state"][0].update(exp_avg_sq_sum=torch.zeros(3)), "exp_avg_sq_sum"),
    ]:
        with pytest.raises(ValueError, match=message):
            opt.load_state_dict(_edited(source.state_dict(), edit))
        _assert_unchanged(opt, params, snap)


def test_fresh_ada2ms_gives_the_same_clear_errors_as_adamnx():
    from analysis_lib.curvature.operators import adam_preconditioner

    model = torch.nn.Linear(3, 2)
    for cls in (AdamNX, Ada2MS):
        opt = cls(model.parameters())
        assert opt.effective_step_sizes() == {}
        with pytest.raises(ValueError, match="has not taken a step yet"):
            transition_measures(opt)
        with pytest.raises(ValueError, match="take an optimizer step first"):
            adam_preconditioner(opt, model)


# ---------------------------------------------------------------------------------------------
# 4. Dtypes
@pytest.mark.parametrize("cls", [AdamNX, Ada2MS])
def test_float16_parameters_are_refused_naming_the_dtype(cls):
    half = torch.zeros(3, dtype=torch.float16, requires_grad=True)
    with pytest.raises(ValueError, match=r"float32, float64 and bfloat16.*torch\.float16"):
        cls([half])
    opt = cls(make_params(dtype=torch.float32))
    with pytest.raises(ValueError, match=r"torch\.float16 in param group 1"):
        opt.add_param_group({"params": [half]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("cls", [AdamNX, Ada2MS])
def test_bfloat16_small_gradients_stay_finite(cls):
    """bfloat16 has float32's exponent range: eps and tiny squared gradients do not underflow."""
    p = torch.ones(4, dtype=torch.bfloat16, requires_grad=True)
    opt = cls([p], lr=1e-2)
    for _ in range(5):
        p.grad = torch.full_like(p, 1e-6)
        opt.step()
    assert torch.isfinite(p).all() and (p < 1).all()
    assert not math.isclose(float(p[0].detach()), 1.0)
