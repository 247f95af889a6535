"""Reference optimizers: AdamNX and Ada2MS, and ``make_optimizer`` for every optimizer by name."""

from .ada2ms import Ada2MS, ExponentialAlpha
from .adamnx import AdamNX, adamnx_betas
from .diagnostics import effective_step_sizes
from .factory import OPTIMIZERS, make_optimizer

__all__ = ["OPTIMIZERS", "Ada2MS", "AdamNX", "ExponentialAlpha", "adamnx_betas",
           "effective_step_sizes", "make_optimizer"]
