"""The shared cases of the tests, in one place (as curvlinops' tests keep theirs): small
models and batches with a known shape, the small task several modules train on, and the
independent references that tests in several folders compare against (float64 NumPy
transcriptions of the optimizers' update rules, the loss surface point by point).

Importable from every test module as ``cases`` (``pythonpath = ["tests"]`` in pyproject.toml).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from analysis_lib.problems import tasks

# -- optimizers: gradient sequences, parameters, float64 references ----------------------------
SHAPES = [(4, 3), (3,), (2, 2, 2)]


def gradient_sequence(steps, shapes=SHAPES, seed=0, scales=None):
    """Fixed gradients g_t for each tensor, with a scale that varies over steps and tensors."""
    rng = np.random.default_rng(seed)
    if scales is None:
        scales = np.exp(rng.uniform(-3, 3, size=(steps, len(shapes))))
    return [
        [scales[t, k] * rng.standard_normal(s) for k, s in enumerate(shapes)] for t in range(steps)
    ]


def make_params(shapes=SHAPES, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


def drive(opt, params, grads):
    """Step ``opt`` with the given gradients; return the parameters after every step."""
    out = []
    for gs in grads:
        for p, gr in zip(params, gs, strict=True):
            p.grad = torch.as_tensor(gr, dtype=p.dtype)
        opt.step()
        out.append([p.detach().clone() for p in params])
    return out


# ---------------------------------------------------------------------------------------------
# Independent float64 references, transcribed from the equations (no code shared with the library)
def ref_adamnx(theta, grads, lr, betas, eps, weight_decay):
    b1, b2 = betas
    a = b2 ** (1 - b2)
    theta = [np.array(x, dtype=np.float64) for x in theta]
    m = [np.zeros_like(x) for x in theta]
    v = [np.zeros_like(x) for x in theta]
    for t, gs in enumerate(grads, start=1):
        b1h = (b1 - b1**t) / (1 - b1**t)
        b2h = (1 - a ** (t - 1)) / (1 - a**t)
        for k, g in enumerate(gs):
            theta[k] = theta[k] * (1 - lr * weight_decay)
            m[k] = b1h * m[k] + (1 - b1h) * g
            v[k] = b2h * v[k] + (1 - b2h) * g**2
            theta[k] = theta[k] - lr * m[k] / (np.sqrt(v[k]) + eps)
    return theta, m, v


def ref_ada2ms(theta, grads, lr, betas, eps, weight_decay, alpha, scope, groups=None):
    """``groups``: the param group of each tensor (default: one group); ``lr`` and
    ``weight_decay`` may then be lists with one value per group."""
    b1, b2 = betas
    groups = [0] * len(theta) if groups is None else groups
    lrs = [lr[g] if isinstance(lr, list) else lr for g in groups]
    wds = [weight_decay[g] if isinstance(weight_decay, list) else weight_decay for g in groups]
    theta = [np.array(x, dtype=np.float64) for x in theta]
    m = [np.zeros_like(x) for x in theta]
    v = [np.zeros_like(x) for x in theta]
    for t, gs in enumerate(grads, start=1):
        al = alpha(t) if callable(alpha) else alpha
        for k, g in enumerate(gs):
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g**2
        mh = [x / (1 - b1**t) for x in m]
        vh = [x / (1 - b2**t) for x in v]
        members = {
            "global": [list(range(len(vh)))] * len(vh),
            "group": [
                [j for j in range(len(vh)) if groups[j] == groups[k]] for k in range(len(vh))
            ],
            "tensor": [[k] for k in range(len(vh))],
        }[scope]
        s = [np.concatenate([vh[j].ravel() for j in js]).mean() for js in members]
        for k in range(len(theta)):
            # d = exp(al log vh + (1 - al) log s), written as powers so that vh = 0 and s = 0
            # give d = 0 (0^0 = 1)
            d = vh[k] ** al * s[k] ** (1 - al)
            step = np.divide(mh[k], np.sqrt(d) + eps, out=np.zeros_like(d), where=mh[k] != 0)
            theta[k] = theta[k] * (1 - lrs[k] * wds[k]) - lrs[k] * step
    return theta, m, v


def assert_close_list(actual, expected, rtol, atol=0.0):
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(
            torch.as_tensor(a).detach().double().numpy(), e, rtol=rtol, atol=atol
        )


# -- models, batches and the loss surface by hand ---------------------------------------------
ALPHAS = np.linspace(-1.0, 1.0, 5)
BETAS = np.linspace(-0.5, 1.0, 4)  # contains 0


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 3)
    ).double()


class Residual(nn.Module):
    """Not a Sequential: the generic path only."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.inp = nn.Linear(5, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        return self.out(h + h.pow(2))


def cnn() -> nn.Sequential:
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(3, 4, 3),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 3),
    ).double()


def bn_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3))
    with torch.no_grad():  # running statistics far from the data's
        model[1].running_mean.uniform_(-2, 2)
        model[1].running_var.uniform_(0.2, 3)
    return model.double()


def batches(n: int = 23, size: int = 8, image: bool = False, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    shape = (n, 1, 4, 4) if image else (n, 5)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=gen)
    return [(x[i : i + size], y[i : i + size]) for i in range(0, n, size)]  # ragged last batch


def loop_loss(model, loss_fn, data, point: dict):
    """The model with ``point`` written into its parameters, in eval mode: the sample-weighted
    mean loss and accuracy over the batches."""
    m = copy.deepcopy(model).eval()
    with torch.no_grad():
        for k, p in m.named_parameters():
            p.copy_(point[k])
        n = sum(len(x) for x, _ in data)
        loss = sum(float(loss_fn(m(x), y)) * len(x) for x, y in data) / n
        acc = sum(float((m(x).argmax(-1) == y).double().sum()) for x, y in data) / n
    return loss, acc


def loop_grid(model, data, d1, d2, alphas, betas):
    theta = {k: p.detach() for k, p in model.named_parameters()}
    loss = np.empty((len(alphas), len(betas)))
    acc = np.empty_like(loss)
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            point = {k: theta[k] + a * d1[k] + b * d2[k] for k in theta}
            loss[i, j], acc[i, j] = loop_loss(model, F.cross_entropy, data, point)
    return loss, acc


# -- small tasks ---------------------------------------------------------------------------------
def small_teacher_student(**kwargs) -> tasks.Task:
    """A teacher-student task small enough to train for a few steps in every test."""
    args = dict(
        input_dim=4, teacher_hidden=(6,), student_hidden=(8,), n_train=64, n_val=16, n_test=16
    )
    return tasks.teacher_student(**(args | kwargs))
