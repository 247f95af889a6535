"""Objectives the optimizers are run on: learning tasks (data + model factory + loss)."""

from .digits import digits_tensors

__all__ = ["digits_tensors"]
