"""The optimizer registry: names, colours, families, and recognising instances."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from analysis_lib import optim
from analysis_lib.optim import (
    OPTIMIZERS,
    Ada2MS,
    AdamNX,
    OptimizerSpec,
    is_adaptive,
    make_optimizer,
    momentum_directions,
    optimizer_spec,
    spec_of,
)

NAMES = ("sgd", "sgdm", "adam", "adamw", "adamnx", "ada2ms")
CLASSES = {
    "sgd": torch.optim.SGD,
    "sgdm": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adamnx": AdamNX,
    "ada2ms": Ada2MS,
}


def params():
    return [torch.nn.Parameter(torch.linspace(-1.0, 2.0, 6).reshape(2, 3))]


def test_the_registry_lists_every_optimizer_once_in_order():
    assert tuple(OPTIMIZERS) == NAMES
    displays = [s.display for s in OPTIMIZERS.values()]
    assert displays == ["SGD", "SGD+momentum", "Adam", "AdamW", "AdamNX", "Ada2MS"]
    colors = [s.color for s in OPTIMIZERS.values()]
    assert len(set(colors)) == len(colors)
    for spec in OPTIMIZERS.values():
        assert isinstance(spec, OptimizerSpec) and spec.name == spec.name.lower()
        assert re.fullmatch(r"#[0-9a-f]{6}", spec.color), spec.color
    assert {n: s.family for n, s in OPTIMIZERS.items()} == {
        "sgd": "plain",
        "sgdm": "momentum",
        **dict.fromkeys(("adam", "adamw", "adamnx", "ada2ms"), "adaptive"),
    }
    assert {n: s.threshold for n, s in OPTIMIZERS.items()} == {
        "sgd": "gd",
        "sgdm": "momentum",
        **dict.fromkeys(("adam", "adamw", "adamnx", "ada2ms"), "adaptive"),
    }
    with pytest.raises(TypeError):
        OPTIMIZERS["lion"] = OPTIMIZERS["sgd"]  # read-only


def test_the_colours_are_the_figures_colours():
    from analysis_lib import plots

    assert {n: s.color for n, s in OPTIMIZERS.items()} == dict(plots.OPTIMIZER_COLORS)


@pytest.mark.slow
def test_the_registry_does_not_import_matplotlib():
    code = "import sys; import analysis_lib.optim.registry; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize("name", ["adamw", "AdamW", "ADAMW", "aDaMw"])
def test_names_are_case_insensitive(name):
    assert optimizer_spec(name) is OPTIMIZERS["adamw"]
    assert type(make_optimizer(name, params(), lr=0.1)) is torch.optim.AdamW


@pytest.mark.parametrize("name", ["lion", "", "adam ", 3, None])
def test_an_unknown_name_has_one_message(name):
    message = f"Unknown optimizer: {name!r} (known: sgd, sgdm, adam, adamw, adamnx, ada2ms)"
    with pytest.raises(ValueError, match=re.escape(message)):
        optimizer_spec(name)
    with pytest.raises(ValueError, match=re.escape(message)):
        make_optimizer(name, params())


@pytest.mark.parametrize("name", NAMES)
def test_a_built_optimizer_is_recognised_as_its_own_spec(name):
    opt = make_optimizer(name, params(), lr=0.1)
    assert type(opt) is CLASSES[name]
    assert spec_of(opt) is OPTIMIZERS[name]
    assert is_adaptive(opt) == (name in {"adam", "adamw", "adamnx", "ada2ms"})
    # a spec still builds like the constructor that OPTIMIZERS held before
    assert type(OPTIMIZERS[name](params(), lr=0.1)) is CLASSES[name]


def test_sgd_is_sgdm_exactly_when_a_group_has_momentum():
    assert optim.make_optimizer("sgdm", params(), lr=0.1).defaults["momentum"] == 0.9
    assert make_optimizer("sgdm", params(), lr=0.1, momentum=0.5).defaults["momentum"] == 0.5
    assert spec_of(torch.optim.SGD(params(), lr=0.1, momentum=0.0)).name == "sgd"
    a, b = params(), params()
    mixed = torch.optim.SGD([{"params": a}, {"params": b, "momentum": 0.3}], lr=0.1)
    assert spec_of(mixed).name == "sgdm"


def test_subclasses_count_as_their_base_and_strangers_as_nothing():
    class MyAdamNX(AdamNX):
        pass

    assert spec_of(MyAdamNX(params())).name == "adamnx"
    assert spec_of(torch.optim.AdamW(params())).name == "adamw"  # not its base class Adam
    rms = torch.optim.RMSprop(params())
    assert spec_of(rms) is None and not is_adaptive(rms)
    assert spec_of("adam") is None and not is_adaptive(object())


def test_momentum_is_bias_corrected_alike_for_every_adam_family_member():
    """After the same gradients, AdamNX's m_t, Ada2MS's and AdamW's corrected EMAs are all
    torch Adam's m_hat = m / (1 - beta1^t) (AdamNX's decays fold the correction in)."""
    torch.manual_seed(0)
    grads = [torch.randn(2, 3, dtype=torch.float64) for _ in range(5)]
    out = {}
    for name in ("adam", "adamw", "adamnx", "ada2ms"):
        p = torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))
        opt = make_optimizer(name, [p], lr=1e-3, betas=(0.8, 0.99))
        for g in grads:
            p.grad = g.clone()
            opt.step()
        out[name] = momentum_directions(opt)[p]
    m = torch.zeros(2, 3, dtype=torch.float64)
    for g in grads:
        m = 0.8 * m + 0.2 * g
    expected = m / (1 - 0.8**5)
    for name, got in out.items():
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-15, msg=name)


@pytest.mark.parametrize("name", ["adam", "adamw", "adamnx", "ada2ms"])
def test_couples_coordinates_says_whether_one_gradient_moves_another_coordinate(name):
    """Scaling the gradient of coordinate 0 alone changes the step of coordinate 1 exactly for
    the optimizers that say they couple coordinates (Ada2MS, through its mean second moment)."""
    steps = []
    for scale in (1.0, 100.0):
        p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
        opt = make_optimizer(name, [p], lr=0.1, weight_decay=0.0)
        for _ in range(3):
            p.grad = torch.tensor([scale, 1.0], dtype=torch.float64)
            opt.step()
        steps.append(float(p.detach()[1]))
    coupled = getattr(OPTIMIZERS[name].cls, "couples_coordinates", False)
    assert (steps[0] != steps[1]) == coupled == (name == "ada2ms")
