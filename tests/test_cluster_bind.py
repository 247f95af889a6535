"""analysis_lib.cluster serves only on the loopback interface unless the caller asks otherwise:
the scheduler, the workers, their nannies and the dashboard, checked on the listening sockets."""

from __future__ import annotations

import os
from urllib.parse import urlparse

import pytest

from analysis_lib.cluster import local_cluster

distributed = pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _listening(process) -> list[tuple[str, int]]:
    connections = getattr(process, "net_connections", None) or process.connections
    return [
        (c.laddr.ip, c.laddr.port)
        for c in connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]


@pytest.mark.slow
def test_the_scheduler_dashboard_and_workers_listen_on_the_loopback_only():
    with local_cluster(1) as cluster:
        info = cluster.scheduler_info
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert urlparse(cluster.dashboard_link).hostname == "127.0.0.1"
        dashboard = info["services"]["dashboard"]
        ports = {_port(cluster.scheduler_address), dashboard}
        for address, worker in info["workers"].items():
            assert worker["host"] == "127.0.0.1"
            assert address.startswith("tcp://127.0.0.1:")
            ports.add(_port(address))
            if worker.get("nanny"):
                assert worker["nanny"].startswith("tcp://127.0.0.1:")
                ports.add(_port(worker["nanny"]))
        me = psutil.Process(os.getpid())
        children = me.children(recursive=True)
        assert children  # the worker processes, whose sockets are checked too
        here = [s for s in _listening(me) if s[1] in ports]
        there = [s for child in children for s in _listening(child)]
        # the dashboard is really served (else the check below would be empty)
        assert ("127.0.0.1", dashboard) in here
        exposed = [s for s in here + there if s[0] != "127.0.0.1"]
        assert not exposed, f"listening beyond the loopback: {exposed}"


class _Recorded(Exception):
    pass


@pytest.mark.parametrize(
    ("kwargs", "host", "dashboard"),
    [
        ({}, "127.0.0.1", "127.0.0.1:0"),
        ({"host": "0.0.0.0"}, "0.0.0.0", "0.0.0.0:0"),
        ({"host": "tcp://10.1.2.3:8786"}, "tcp://10.1.2.3:8786", "10.1.2.3:0"),
        ({"host": "::1"}, "::1", "[::1]:0"),
        ({"dashboard_address": ":8787"}, "127.0.0.1", ":8787"),
        ({"host": "0.0.0.0", "dashboard_address": "127.0.0.1:0"}, "0.0.0.0", "127.0.0.1:0"),
        ({"interface": "lo"}, None, "127.0.0.1:0"),
        ({"protocol": "tcp://"}, None, "127.0.0.1:0"),
    ],
)
def test_the_callers_keywords_choose_where_it_listens(monkeypatch, kwargs, host, dashboard):
    seen = {}

    def fake(**options):
        seen.update(options)
        raise _Recorded

    monkeypatch.setattr(distributed, "LocalCluster", fake)
    with pytest.raises(_Recorded):
        local_cluster(1, **kwargs)
    assert seen.get("host") == host
    assert seen["dashboard_address"] == dashboard
    assert seen.get("worker_dashboard_address") is None  # workers serve no dashboard
