"""Loss surfaces on a real Dask LocalCluster (two single-threaded worker processes): the same
bits as in process, every chunk on the workers, eval mode, resume from a partial cache, bad
clients."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cases import mlp
from torch import nn

from analysis_lib import io, landscape
from analysis_lib.cluster import local_cluster
from analysis_lib.landscape import evaluator, execution

pytestmark = pytest.mark.slow  # a Dask LocalCluster of worker processes

distributed = pytest.importorskip("distributed")

ALPHAS = np.linspace(-1.0, 1.0, 7)
BETAS = np.linspace(-0.5, 1.0, 7)  # contains 0; 49 points


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes and a client of them."""
    with local_cluster(2) as cluster, distributed.Client(cluster) as c:
        yield c


def refuse_local_chunks(monkeypatch) -> None:
    """From now on, a chunk evaluated in this process fails the test: with a client, every chunk
    runs on a worker (forked before this patch, so they keep the real evaluator)."""

    def refuse(self, coeffs):
        raise AssertionError("a chunk was evaluated in the client process")

    monkeypatch.setattr(evaluator.Evaluator, "__call__", refuse)


def bn_model() -> nn.Sequential:
    """Batch norm with running statistics far from the data's, and dropout: both differ in
    train mode, so a grid evaluated in the wrong mode does not match."""
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Dropout(0.5), nn.Linear(6, 3)
    )
    with torch.no_grad():
        model[1].running_mean.uniform_(-2, 2)
        model[1].running_var.uniform_(0.2, 3)
    return model.double().train()


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(23, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (23,), generator=g)
    return [(x[:10], y[:10]), (x[10:], y[10:])]  # a ragged last batch


def local(fn, *args, **kw):
    """``fn`` in this process on one torch thread, as the workers run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args, progress=False, **kw)
    finally:
        torch.set_num_threads(threads)


def assert_same(a, b) -> None:
    np.testing.assert_array_equal(a.loss, b.loss)
    np.testing.assert_array_equal(a.accuracy, b.accuracy)


# -- equal to the local grid ---------------------------------------------------------------------
@pytest.mark.parametrize("first_layer", ["auto", "off"])
def test_a_2d_grid_on_two_workers_is_the_local_grid_bit_for_bit(client, monkeypatch, first_layer):
    model, data = mlp(), batches()
    dirs = landscape.random_directions(model, seed=0)
    args = (model, F.cross_entropy, data, dirs.d1, dirs.d2, ALPHAS, BETAS)
    here = local(landscape.surface_2d, *args, chunk_size=4, first_layer=first_layer)
    refuse_local_chunks(monkeypatch)
    threads = client.run(torch.get_num_threads)
    with distributed.get_task_stream(client) as stream:
        there = landscape.surface_2d(
            *args, chunk_size=4, first_layer=first_layer, client=client, progress=False
        )
    assert_same(there, here)
    assert there.method == here.method and there.chunk_size == 4 and not there.from_cache
    tasks = [t for t in stream.data if t["key"].startswith("landscape-")]
    # ceil(49 / 4) = 13 chunks in groups of 3, 2, 2 and six of 1 (guided over 2 threads)
    assert len(tasks) == 9
    assert len({t["worker"] for t in tasks}) == 2  # spread over both workers
    assert client.run(torch.get_num_threads) == threads  # restored after each task


@pytest.mark.parametrize(("chunks", "threads"), [(13, 2), (153, 2), (5, 8), (1, 1), (400, 16)])
def test_chunks_go_out_in_shrinking_groups(chunks, threads):
    """Guided scheduling: consecutive groups covering every chunk once, each a 1 / (2 threads)
    share of what is left, so the workers end on single chunks and finish together."""
    todo = list(range(100, 100 + chunks))
    groups = execution._guided_groups(todo, threads)
    assert [i for g in groups for i in g] == todo
    sizes = [len(g) for g in groups]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 1
    left = chunks
    for size in sizes:
        assert size == max(1, left // (2 * threads))
        left -= size
    assert execution._guided_groups(list(range(13)), 2) == [
        [0, 1, 2], [3, 4], [5, 6], [7], [8], [9], [10], [11], [12]
    ]  # fmt: skip
    # the benchmark's 41 x 41 grid: 153 chunks in 18 tasks on two workers
    sizes = [len(g) for g in execution._guided_groups(list(range(153)), 2)]
    assert sizes == [38, 28, 21, 16, 12, 9, 7, 5, 4, 3, 2, 2, 1, 1, 1, 1, 1, 1]


def test_a_1d_grid_on_workers_is_the_local_grid(client, monkeypatch):
    model, data = mlp(), batches()
    d = landscape.random_direction(model, seed=4)
    alphas = np.linspace(-2.0, 2.0, 9)
    args = (model, F.cross_entropy, data, d, alphas)
    here = local(landscape.surface_1d, *args, chunk_size=2)
    refuse_local_chunks(monkeypatch)
    there = landscape.surface_1d(*args, chunk_size=2, client=client, progress=False)
    assert there.betas is None and there.loss.shape == (9,)
    assert_same(there, here)


@pytest.mark.parametrize("first_layer", ["auto", "off"])
def test_batch_norm_and_dropout_are_evaluated_in_eval_mode(client, first_layer):
    model, data = bn_model(), batches()
    before = copy.deepcopy(model.state_dict())
    dirs = landscape.random_directions(model, seed=0)
    args = (model, F.cross_entropy, data, dirs.d1, dirs.d2, ALPHAS, BETAS)
    there = landscape.surface_2d(*args, first_layer=first_layer, client=client, progress=False)
    assert model.training and model[1].training  # the caller's modes are untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    here = local(landscape.surface_2d, *args, first_layer=first_layer)
    assert_same(there, here)
    # independent check of the centre: the model itself in eval mode
    model.eval()
    with torch.no_grad():
        centre = sum(F.cross_entropy(model(x), y).item() * len(y) for x, y in data) / 23
    np.testing.assert_allclose(there.center_loss, centre, rtol=1e-12)


# -- the chunk cache -----------------------------------------------------------------------------
def _interrupt_after_saves(monkeypatch, saves: int) -> None:
    """The ``saves``-th write of the partial file completes, then the run is interrupted."""
    real, count = io.save_arrays, [0]

    def save(*args, **kw):
        out = real(*args, **kw)
        count[0] += 1
        if count[0] == saves:
            raise KeyboardInterrupt("interrupted")
        return out

    monkeypatch.setattr(io, "save_arrays", save)


def test_chunks_are_saved_as_they_arrive_and_a_client_resumes_only_the_missing(client, cache_dir):
    model, data = mlp(), batches()
    dirs = landscape.random_directions(model, seed=0)
    args = (model, F.cross_entropy, data, dirs.d1, dirs.d2, ALPHAS, BETAS)
    whole = local(landscape.surface_2d, *args, chunk_size=5)  # 10 chunks
    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        _interrupt_after_saves(patch, 3)
        landscape.surface_2d(*args, chunk_size=5, cache=True, client=client, progress=False)
    [partial] = cache_dir.glob("*.partial.npz")
    arrays, meta = io.load_arrays(partial)
    done = arrays["done"]
    assert 3 <= done.sum() < 10 and meta["chunk_size"] == 5  # 3 of 8 tasks, 1 or 2 chunks each
    rows = np.repeat(done, 5)[:49]
    np.testing.assert_array_equal(arrays["loss"][rows], whole.loss.ravel()[rows])
    assert np.isnan(arrays["loss"][~rows]).all()
    # mark the finished chunks: a resumed grid that recomputed them would not keep the marks
    marked = arrays["loss"].copy()
    marked[rows] = -1.0
    io.save_arrays(partial, {**arrays, "loss": marked}, meta)
    resumed = landscape.surface_2d(
        *args, chunk_size=None, cache=True, client=client, progress=False
    )  # the partial file's chunk size wins
    assert resumed.chunk_size == 5
    assert (resumed.loss.ravel()[rows] == -1.0).all()
    np.testing.assert_array_equal(resumed.loss.ravel()[~rows], whole.loss.ravel()[~rows])
    np.testing.assert_array_equal(resumed.accuracy, whole.accuracy)
    assert not list(cache_dir.glob("*.partial.npz")) and not list(cache_dir.glob(".*"))
    again = landscape.surface_2d(*args, cache=True, client=client, progress=False)
    assert again.from_cache and (again.loss.ravel()[rows] == -1.0).all()


# -- bad input -----------------------------------------------------------------------------------
def test_a_bad_client_is_named_before_any_work(client, monkeypatch):
    refuse_local_chunks(monkeypatch)
    model, data = mlp(), batches()
    d = landscape.random_direction(model, seed=0)
    for bad in ("tcp://127.0.0.1:8786", client.cluster):
        with pytest.raises(ValueError, match=r"Invalid client: .*dask\.distributed\.Client"):
            landscape.surface_1d(model, F.cross_entropy, data, d, ALPHAS, client=bad)
    closed = distributed.Client(client.cluster)
    closed.close()
    with pytest.raises(ValueError, match=r"Invalid client: .*closed"):
        landscape.surface_1d(model, F.cross_entropy, data, d, ALPHAS, client=closed)
