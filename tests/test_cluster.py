"""analysis_lib.cluster: a real LocalCluster with the library's settings, in its workers too,
without touching the settings of anything else."""

from __future__ import annotations

import dask
import pytest

from analysis_lib.cluster import COMPUTE_CONFIG, local_cluster

pytestmark = pytest.mark.slow  # real Dask LocalClusters

distributed = pytest.importorskip("distributed")


def _worker_settings() -> dict:
    import dask as d

    return {key: d.config.get(key) for key in COMPUTE_CONFIG}


def test_workers_run_with_the_compute_settings_and_nothing_else_changes():
    before = {key: dask.config.get(key) for key in COMPUTE_CONFIG}
    assert before != COMPUTE_CONFIG  # Dask's defaults differ, so the check below can fail
    with local_cluster(2) as cluster, distributed.Client(cluster) as client:
        assert client.nthreads() and all(n == 1 for n in client.nthreads().values())
        assert len(client.nthreads()) == 2
        settings = client.run(_worker_settings)
        assert all(s == COMPUTE_CONFIG for s in settings.values())
        assert client.submit(sum, [1, 2, 3]).result() == 6
    assert {key: dask.config.get(key) for key in COMPUTE_CONFIG} == before


def test_a_second_cluster_beside_the_first_takes_a_free_dashboard_port():
    with local_cluster(1) as one, local_cluster(1) as two:
        ports = [c.scheduler_info["services"]["dashboard"] for c in (one, two)]
        assert ports[0] != ports[1]
        with distributed.Client(two) as client:
            assert client.submit(abs, -2).result() == 2


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"workers": 0}, "workers"),
        ({"workers": 1.5}, "workers"),
        ({"workers": True}, "workers"),
        ({"threads_per_worker": 0}, "threads_per_worker"),
        ({"preload": "torch"}, "preload"),
        ({"preload": ["torch", 3]}, "preload"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, name):
    with pytest.raises(ValueError, match=f"Invalid {name}"):
        local_cluster(**kwargs)
