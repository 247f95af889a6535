"""Where the chunks of a grid run: in this process or as tasks on a Dask client's workers, with
the finished chunks kept in a resumable partial file.

Owns the :class:`Job` (what a chunk of points needs, checked before it is built; what travels to
the workers, once per grid), the :class:`Progress` of a grid chunk by chunk (saved atomically to a
``.partial.npz`` file after each chunk, so an interrupted computation resumes where it stopped and
gives identical arrays) and :func:`compute`, which runs the missing chunks here or on a client.

With a ``dask.distributed.Client`` the chunks are tasks on the client's workers, the way Li et
al.'s code spreads a grid over GPUs with MPI: the job is scattered to every worker once, each task
carries the coefficients of a group of consecutive chunks (large groups first, single chunks last,
so the workers finish together) and runs on one torch thread, and the chunks are recorded (and
saved to the partial file) as they finish. The chunk size is chosen by the caller, so every point
goes through the same arithmetic as in process: the grid is bit-identical to one computed here on
one torch thread.
"""

from __future__ import annotations

import copy
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import Tensor, nn

from .. import io, progress_bar
from .._evaluation import eval_mode as _eval_mode
from ..cluster import map_as_completed, one_torch_thread
from .evaluator import Evaluator, check_inputs, chunk_bounds, chunk_size_for
from .grid import Grid, SurfaceSettings


@dataclass
class Job:
    """Everything a chunk of points needs: what travels to the Dask workers, once per grid. A
    worker builds its evaluator (the first layer's terms included) on its first chunk, from its
    own copy of the model in eval mode, and keeps it for the others (one per thread: an
    evaluator's work buffers are not shared). Its fields are checked once, where they enter
    (:meth:`checked`); nothing deeper checks them again."""

    model: nn.Module
    loss_fn: Callable
    batches: list[tuple[Tensor, Tensor]]
    directions: list[dict[str, Tensor]]
    accuracy_fn: Callable | None
    first_layer: str
    _evaluators: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def checked(cls, model, loss_fn, data, directions, settings: SurfaceSettings) -> Job:
        """The job of evaluating ``model`` along ``directions`` over ``data``: the model,
        directions, data and loss checked (:func:`~.evaluator.check_inputs`: the data read once
        and moved to the model's device), ``settings`` already checked.

        Args:
            model: the network.
            loss_fn: ``loss_fn(outputs, targets)``, the mean loss of a batch.
            data: an iterable of ``(inputs, targets)`` batches.
            directions: the directions, dicts keyed like ``model.named_parameters()``.
            settings: the checked :class:`SurfaceSettings` (``accuracy_fn``, ``first_layer``).

        Returns:
            The :class:`Job`.

        Raises:
            ValueError: anything :func:`~.evaluator.check_inputs` refuses.
            NonFiniteError: a batch holds NaN or infinite values.
        """
        batches, dirs = check_inputs(model, loss_fn, data, directions)
        return cls(model, loss_fn, batches, dirs, settings.accuracy_fn, settings.first_layer)

    def evaluator(self) -> Evaluator:
        """An evaluator of ``self.model`` as it is (the caller holds it in eval mode).

        Returns:
            A new :class:`~.evaluator.Evaluator`.
        """
        return Evaluator(
            self.model,
            self.loss_fn,
            self.batches,
            self.directions,
            self.accuracy_fn,
            self.first_layer,
        )

    def worker_evaluator(self) -> Evaluator:
        """This thread's evaluator of a private eval-mode copy of the model.

        Returns:
            The cached :class:`~.evaluator.Evaluator` of the calling thread (made on first use).
        """
        ev = self._evaluators.get(threading.get_ident())
        if ev is None:
            model = copy.deepcopy(self.model).eval()
            ev = Evaluator(
                model,
                self.loss_fn,
                self.batches,
                self.directions,
                self.accuracy_fn,
                self.first_layer,
            )
            self._evaluators[threading.get_ident()] = ev
        return ev

    def __getstate__(self):
        return {**self.__dict__, "_evaluators": {}}


def _dask_chunks(job: Job, chunks: list[np.ndarray]) -> tuple[list, str]:
    """Chunks of points (their coefficient rows) on a Dask worker, one after the other, on one
    torch thread (restored afterwards), as a sweep trial runs: the numbers do not depend on the
    worker's core count. Returns ``[(loss, accuracy), ...]`` and the evaluator's method."""
    with one_torch_thread():
        ev = job.worker_evaluator()
        return [ev(coeffs) for coeffs in chunks], ev.method


@dataclass
class Progress:
    """The values of a grid so far, chunk by chunk; with a ``path``, saved there (atomically)
    after every chunk until the grid is complete, so that an interrupted computation resumes."""

    size: int
    loss: np.ndarray
    accuracy: np.ndarray
    done: np.ndarray
    path: Path | None = None
    config: dict | None = None

    @classmethod
    def start(cls, points: int, size: int, path=None, config=None) -> Progress:
        """A fresh grid of ``points`` in chunks of ``size``, or the finished chunks of an
        interrupted computation when ``path`` holds them for the same ``config`` (in its chunk
        size).

        Args:
            points: the number of grid points.
            size: the chunk size of a fresh start.
            path: the partial file to resume from and save to, or None.
            config: the configuration the partial file must hold (a JSON-able dict), or None.

        Returns:
            The :class:`Progress`; a missing, corrupt or mismatching partial file gives a fresh one.
        """

        fresh = cls(
            size,
            np.full(points, np.nan),
            np.full(points, np.nan),
            np.zeros(math.ceil(points / size), dtype=bool),
            path,
            config,
        )
        if path is None or not path.is_file():
            return fresh
        try:
            arrays, meta = io.load_arrays(path)
        except io.CacheCorruptError:
            return fresh
        if meta.get("config") != config or arrays["loss"].shape != (points,):
            return fresh
        size = int(meta["chunk_size"])
        if arrays["done"].shape != (math.ceil(points / size),):  # a fresh start in its size
            return cls.start(points, size)._at(path, config)
        return cls(
            size,
            arrays["loss"].copy(),
            arrays["accuracy"].copy(),
            arrays["done"].copy(),
            path,
            config,
        )

    def _at(self, path, config) -> Progress:
        self.path, self.config = path, config
        return self

    def chunks(self) -> list[tuple[int, int]]:
        """The ``(lo, hi)`` point ranges of the chunks, in order (:func:`chunk_bounds`)."""
        return chunk_bounds(len(self.loss), self.size)

    def todo(self) -> list[int]:
        """The indices of the chunks not done yet, in order."""
        return [i for i in range(len(self.done)) if not self.done[i]]

    def record(self, results: Mapping[int, tuple[np.ndarray, np.ndarray]]) -> None:
        """Chunk ``i``'s ``(loss, accuracy)`` for each ``i`` of ``results``; then saved.

        Args:
            results: chunk index -> ``(loss, accuracy)`` arrays of that chunk's length.
        """

        chunks = self.chunks()
        for i, (loss, accuracy) in results.items():
            lo, hi = chunks[i]
            self.loss[lo:hi], self.accuracy[lo:hi] = loss, accuracy
            self.done[i] = True
        if self.path is not None and not self.done.all():
            io.save_arrays(
                self.path,
                {"loss": self.loss, "accuracy": self.accuracy, "done": self.done},
                {"config": self.config, "chunk_size": self.size},
            )


def run_here(job: Job, coeffs: np.ndarray, state: Progress, progress: bool) -> str:
    """The missing chunks in this process; returns the evaluator's method.

    Args:
        job: the checked job.
        coeffs: the coefficient rows of all points, shape ``(points, len(directions))``.
        state: the progress, updated chunk by chunk.
        progress: show a progress bar.

    Returns:
        ``"first-layer"``, ``"vmap"`` or ``"per-point"``.
    """
    with _eval_mode(job.model):
        ev = job.evaluator()
        chunks = state.chunks()
        for i in progress_bar(state.todo(), desc="landscape", unit="chunk", progress=progress):
            lo, hi = chunks[i]
            state.record({i: ev(coeffs[lo:hi])})
    return ev.method


def _guided_groups(todo: list[int], threads: int) -> list[list[int]]:
    """``todo`` cut into consecutive groups that shrink as the grid fills (guided scheduling):
    each group takes ``1 / (2 threads)`` of the chunks still unassigned (at least one), so the
    first tasks are large (few of them to schedule) and the last are single chunks (the workers
    finish together instead of one waiting for another's large last task)."""
    groups, start = [], 0
    while start < len(todo):
        size = max(1, (len(todo) - start) // (2 * threads))
        groups.append(todo[start : start + size])
        start += size
    return groups


def _run_on_dask(client, job: Job, coeffs: np.ndarray, state: Progress, progress) -> str:
    """The missing chunks as tasks on ``client``'s workers, recorded as they finish. The job
    (model, loss, data, directions) is scattered to every worker once; each task carries only
    the coefficient rows of its chunks, consecutive chunks in the shrinking groups of
    :func:`_guided_groups` (a task per chunk spent more time scheduling than computing on a
    loaded machine; equal groups left one worker waiting for the other's last group, about a
    tenth of the wall time of a 41 x 41 grid on two workers). On an error or an interruption
    the outstanding tasks are cancelled (the chunks finished so far are kept in the partial file)."""
    todo = state.todo()
    if not todo:
        return run_here(job, coeffs, state, progress)
    chunks = state.chunks()
    threads = max(1, sum(client.nthreads().values()))
    groups = _guided_groups(todo, threads)
    [remote] = client.scatter([job], broadcast=True, hash=False)
    token = uuid.uuid4().hex[:12]
    methods = ["vmap"]

    def on_done(group: list[int], fut) -> None:
        results, method = fut.result()
        state.record(dict(zip(group, results, strict=True)))
        methods.append(method)
        bar.update(len(results))

    bar = progress_bar(desc="landscape", unit="chunk", total=len(todo), progress=progress)
    try:
        map_as_completed(  # one graph for all the tasks: less work here than a submit each
            client,
            _dask_chunks,
            [remote] * len(groups),
            [[coeffs[slice(*chunks[i])] for i in group] for group in groups],
            key=[f"landscape-{token}-{group[0]}" for group in groups],
            tags=groups,
            on_done=on_done,
        )
    finally:
        bar.close()
        client.cancel([remote])
    return methods[-1]


def compute(job: Job, grid: Grid, settings: SurfaceSettings, partial=None):
    """The grid's arrays (resuming from ``partial`` = (path, config) when given) and how they
    were computed: seconds, chunk size, method.

    Args:
        job: the checked job.
        grid: the grid of coefficients.
        settings: the checked settings (``chunk_size``, ``memory``, ``client``, ``progress``).
        partial: ``(path, config)`` of the partial file, or None to keep no partial results.

    Returns:
        ``(arrays, run)``: the grid's arrays (see :meth:`Grid.arrays`) and
        ``{"seconds": ..., "chunk_size": ..., "method": ...}``.
    """
    start = time.perf_counter()
    coeffs = grid.coefficients
    size = settings.chunk_size
    if size is None:
        size = chunk_size_for(job.model, job.batches, len(coeffs), settings.memory)
    state = Progress.start(len(coeffs), size, *(partial or ()))
    if settings.client is None:
        method = run_here(job, coeffs, state, settings.progress)
    else:
        method = _run_on_dask(settings.client, job, coeffs, state, settings.progress)
    run = {"seconds": time.perf_counter() - start, "chunk_size": state.size, "method": method}
    return grid.arrays(state.loss, state.accuracy), run
