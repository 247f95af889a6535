"""Reference optimizers: AdamNX and Ada2MS; the optimizer registry (name -> constructor, display
name, colour, family, stability-threshold kind) and ``make_optimizer`` for every optimizer by
name."""

from .ada2ms import Ada2MS, ExponentialAlpha
from .adamnx import (
    AdamNX,
    adam_gradient_weights,
    adamnx_betas,
    adamnx_gradient_weights,
    adamnx_horizon,
)
from .diagnostics import effective_step_sizes, momentum_directions, transition_measures
from .factory import make_optimizer
from .registry import OPTIMIZERS, OptimizerSpec, is_adaptive, optimizer_spec, spec_of
from .replay import replay

__all__ = [
    "OPTIMIZERS",
    "Ada2MS",
    "AdamNX",
    "ExponentialAlpha",
    "OptimizerSpec",
    "adam_gradient_weights",
    "adamnx_betas",
    "adamnx_gradient_weights",
    "adamnx_horizon",
    "effective_step_sizes",
    "is_adaptive",
    "make_optimizer",
    "momentum_directions",
    "optimizer_spec",
    "replay",
    "spec_of",
    "transition_measures",
]
