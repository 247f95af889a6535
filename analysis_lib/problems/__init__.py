"""Objectives the optimizers are run on: learning tasks (data + model factory + loss)."""

from . import mnist1d, tasks, toy
from .digits import digits_tensors
from .tasks import Task
from .toy import TOY_PROBLEMS, ToyProblem, toy_problem, toy_problems

__all__ = [
    "TOY_PROBLEMS",
    "Task",
    "ToyProblem",
    "digits_tensors",
    "mnist1d",
    "tasks",
    "toy",
    "toy_problem",
    "toy_problems",
]
