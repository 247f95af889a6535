"""The same checks on every device present: the CPU always, CUDA when there is one.

Each test compares what runs on ``device`` with an independent float64 reference computed on the
CPU (the equations transcribed in NumPy, or an explicit per-point loop), so the CPU instance is a
real test too, and the CUDA instance checks the paths that only run there: the optimizers'
multi-tensor default, the compiled update on CUDA, the landscape evaluator's vmap path and
automatic chunk size, training with the data on the GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cases import (
    ALPHAS,
    BETAS,
    Residual,
    assert_close_list,
    batches,
    gradient_sequence,
    loop_grid,
    make_params,
    mlp,
    ref_ada2ms,
    ref_adamnx,
)

from analysis_lib import landscape, training
from analysis_lib.optim import Ada2MS, AdamNX
from analysis_lib.optim._base import FOREACH, LOOP
from analysis_lib.problems import tasks

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    ),
]
PATHS = {
    "default": {},
    "loop": dict(foreach=False),
    "foreach": dict(foreach=True),
    "fused": dict(fused=True),
}


def _on(device, tensors):
    return [t.detach().to(device).requires_grad_() for t in tensors]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", ["adamnx", "ada2ms-0.5", "ada2ms-0.25-tensor"])
def test_optimizers_match_the_float64_reference(device, path, name):
    grads = gradient_sequence(30)
    params = _on(device, make_params())
    theta0 = [p.detach().cpu().numpy().copy() for p in params]
    hp = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-7, weight_decay=0.05)
    if name == "adamnx":
        opt = AdamNX(params, **hp, **PATHS[path])
        theta, _, v = ref_adamnx(theta0, grads, **hp)
    else:
        _, alpha, *scope = name.split("-")
        scope = scope[0] if scope else "group"
        opt = Ada2MS(params, alpha=float(alpha), scope=scope, **hp, **PATHS[path])
        theta, _, v = ref_ada2ms(theta0, grads, alpha=float(alpha), scope=scope, **hp)
    for gs in grads:
        for p, g in zip(params, gs, strict=True):
            p.grad = torch.as_tensor(g, dtype=p.dtype, device=device)
        opt.step()
    assert all(p.device.type == device for p in params)
    assert all(
        s.device.type == device for p in params for k, s in opt.state[p].items() if k != "step"
    )
    assert_close_list([p.cpu() for p in params], theta, rtol=1e-10)
    assert_close_list([opt.state[p]["exp_avg_sq"].cpu() for p in params], v, rtol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_default_path_is_foreach_on_cuda_and_a_loop_on_cpu(device):
    params = _on(device, make_params())
    opt = Ada2MS(params)
    expected = FOREACH if device == "cuda" else LOOP
    assert opt._runner(opt.param_groups[0], params) is expected


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("make", [mlp, Residual], ids=["first-layer", "generic"])
def test_landscape_matches_the_loop(device, make):
    model = make().double()
    data = batches()
    dirs = landscape.random_directions(model, seed=3, one_d="keep")
    ref_loss, ref_acc = loop_grid(model, data, dirs.d1, dirs.d2, ALPHAS, BETAS)
    moved = make().double().to(device)
    moved.load_state_dict(model.state_dict())
    grid = landscape.surface_2d(
        moved,
        F.cross_entropy,
        [(x.to(device), y.to(device)) for x, y in data],
        {k: d.to(device) for k, d in dirs.d1.items()},
        {k: d.to(device) for k, d in dirs.d2.items()},
        ALPHAS,
        BETAS,
    )
    np.testing.assert_allclose(grid.loss, ref_loss, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grid.accuracy, ref_acc, rtol=0, atol=1e-12)
    generic = "vmap" if device == "cuda" else "per-point"
    assert grid.method == ("first-layer" if make is mlp else generic)
    assert grid.chunk_size >= 1


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_training_on_the_device_matches_the_cpu(device):
    task = tasks.digits(hidden=(16,), seed=0)
    runs = [
        training.train(
            task.to(d),
            "ada2ms",
            steps=40,
            batch_size=64,
            lr=3e-3,
            seed=1,
            device=d,
            progress=False,
            alpha=0.5,
        )
        for d in ("cpu", device)
    ]
    cpu, dev = (r.history["loss"].to_numpy() for r in runs)
    assert not runs[1].diverged and next(runs[1].model.parameters()).device.type == device
    np.testing.assert_allclose(dev, cpu, rtol=1e-4)
    assert dev[-5:].mean() < dev[:5].mean()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path", ["default", "loop", "foreach"])
@pytest.mark.parametrize("scope", ["global", "tensor"])
def test_ada2ms_scopes_over_two_groups_with_an_unused_tensor(device, path, scope):
    """scope="global" spans both groups; a tensor whose gradients are all zero makes no
    adaptive step (weight decay only) and nothing becomes non-finite."""
    grads = [[g[0], np.zeros_like(g[1]), g[2]] for g in gradient_sequence(12)]
    params = _on(device, make_params())
    theta0 = [p.detach().cpu().numpy().copy() for p in params]
    hp = dict(betas=(0.9, 0.95), eps=1e-7, alpha=0.4, scope=scope)
    groups = [
        {"params": [params[0], params[1]], "lr": 1e-2, "weight_decay": 0.05},
        {"params": [params[2]], "lr": 3e-3, "weight_decay": 0.0},
    ]
    opt = Ada2MS(groups, **hp, **PATHS[path])
    for gs in grads:
        for p, g in zip(params, gs, strict=True):
            p.grad = torch.as_tensor(g, dtype=p.dtype, device=device)
        opt.step()
    theta, _, _ = ref_ada2ms(
        theta0, grads, lr=[1e-2, 3e-3], weight_decay=[0.05, 0.0], groups=[0, 0, 1], **hp
    )
    assert all(torch.isfinite(p).all() for p in params)
    assert_close_list([p.cpu() for p in params], theta, rtol=1e-10)
