"""Optimizer guards (issue 21, section 4): one hyperparameter rule for every optimizer of
make_optimizer, and Ada2MS refusing parameters on two devices in one group before any state
changes."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from analysis_lib.optim import OPTIMIZERS, Ada2MS, make_optimizer


def params():
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(2))]


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("lr", [math.nan, math.inf, -math.inf, -0.1, "0.1", True])
def test_every_optimizer_refuses_a_bad_lr_with_one_message(name, lr):
    with pytest.raises(ValueError, match=r"^Invalid lr: .* \(expected a finite number >= 0\)$"):
        make_optimizer(name, params(), lr=lr)


@pytest.mark.parametrize("name", ["sgd", "sgdm", "adam", "adamw"])
def test_torch_optimizers_follow_the_rule_for_other_hyperparameters_and_groups(name):
    with pytest.raises(ValueError, match=r"Invalid weight_decay: nan"):
        make_optimizer(name, params(), lr=0.1, weight_decay=math.nan)
    p = params()
    groups = [{"params": [p[0]]}, {"params": [p[1]], "lr": math.nan}]
    with pytest.raises(ValueError, match=r"Invalid lr in param group 1: nan"):
        make_optimizer(name, groups, lr=0.1)
    if name.startswith("sgd"):
        with pytest.raises(ValueError, match=r"Invalid momentum: nan"):
            make_optimizer(name, params(), lr=0.1, momentum=math.nan)
    else:
        with pytest.raises(ValueError, match=r"Invalid betas"):
            make_optimizer(name, params(), lr=0.1, betas=(math.nan, 0.9))
        with pytest.raises(ValueError, match=r"Invalid eps: inf"):
            make_optimizer(name, params(), lr=0.1, eps=math.inf)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_good_hyperparameters_still_build(name):
    opt = make_optimizer(name, params(), lr=0.1)
    assert opt.param_groups[0]["lr"] == 0.1
    assert (make_optimizer("sgdm", params(), lr=0.1).defaults["momentum"]) == 0.9


def _two_device_group(scope):
    cpu = torch.nn.Parameter(torch.randn(3))
    meta = torch.nn.Parameter(torch.empty(2, device="meta"))
    opt = Ada2MS([cpu, meta], lr=0.1, scope=scope)
    return opt, cpu, meta


@pytest.mark.parametrize("scope", ["global", "group", "tensor"])
def test_ada2ms_refuses_two_devices_in_one_group_before_any_state_changes(scope):
    opt, cpu, meta = _two_device_group(scope)
    # a first step with only the CPU parameter (the meta one has no gradient: skipped)
    cpu.grad = torch.ones(3)
    opt.step()
    before = copy.deepcopy(opt.state_dict())
    value = cpu.detach().clone()
    meta.grad = torch.empty(2, device="meta")
    cpu.grad = torch.full((3,), 2.0)
    with pytest.raises(
        ValueError, match=r"Invalid params in param group 0: .*one device.*cpu.*meta"
    ):
        opt.step()
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    assert after["state"].keys() == before["state"].keys()
    for k, entry in before["state"].items():
        for key, v in entry.items():
            assert torch.equal(after["state"][k][key], v), (k, key)
    assert float(opt.state[cpu]["step"]) == 1.0 and meta not in opt.state
    assert torch.equal(cpu.detach(), value)


def test_ada2ms_refuses_two_devices_on_its_first_step_leaving_no_state():
    opt, cpu, meta = _two_device_group("global")
    cpu.grad, meta.grad = torch.ones(3), torch.empty(2, device="meta")
    with pytest.raises(ValueError, match="one device"):
        opt.step()
    assert opt.state_dict()["state"] == {}


def test_ada2ms_takes_parameters_of_one_device_per_group():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    a.grad, b.grad = torch.ones(3), torch.ones(2)
    opt = Ada2MS([{"params": [a]}, {"params": [b]}], lr=0.1)
    opt.step()
    assert float(opt.state[a]["step"]) == 1.0 == float(opt.state[b]["step"])
