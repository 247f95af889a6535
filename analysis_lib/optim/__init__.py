"""Reference optimizers: AdamNX and Ada2MS, and ``make_optimizer`` for every optimizer by name."""

from .ada2ms import Ada2MS, ExponentialAlpha
from .adamnx import AdamNX, adam_gradient_weights, adamnx_betas, adamnx_gradient_weights
from .diagnostics import effective_step_sizes, momentum_directions, transition_measures
from .factory import OPTIMIZERS, make_optimizer

__all__ = [
    "OPTIMIZERS",
    "Ada2MS",
    "AdamNX",
    "ExponentialAlpha",
    "adam_gradient_weights",
    "adamnx_betas",
    "adamnx_gradient_weights",
    "effective_step_sizes",
    "make_optimizer",
    "momentum_directions",
    "transition_measures",
]
