"""``--scheduler`` never hangs: at an address where something accepts the connection and never
speaks, where an HTTP server answers, or where nothing listens, the CLI fails within its
``--timeout`` with exit 2 and a message naming the address and what is there (no traceback),
and leaves no output folder behind. Only 127.0.0.1 is contacted; every server is a thread of
the test, closed at its end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from analysis_lib.sweep import run_sweep
from analysis_lib.sweep.__main__ import main as cli_main
from analysis_lib.sweep.scheduler import connect_scheduler, probe_scheduler

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[2]
CONFIG = {
    "name": "remote",
    "seeds": [0],
    "task": {"name": "digits", "args": {"model": "mlp", "hidden": [8]}},
    "budget": {"steps": 3, "batch_size": 32},
    "optimizers": [{"name": "sgd", "lrs": [0.1]}],
}
TOML = """name = 'remote'
seeds = [0]
[task]
name = 'digits'
args = { model = 'mlp', hidden = [8] }
[budget]
steps = 3
batch_size = 32
[[optimizers]]
name = 'sgd'
lrs = [0.1]
"""


@contextmanager
def silent_server() -> Iterator[str]:
    """Accepts connections and never sends a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    stop, conns = threading.Event(), []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            conns.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in conns:
            conn.close()
        listener.close()


class _Quiet(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args) -> None:
        pass


@contextmanager
def http_server() -> Iterator[str]:
    """A plain HTTP server (as Dask's dashboard is)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def eager_http_server() -> Iterator[str]:
    """Answers whatever it is sent at once with an HTTP error (Dask then read 'HTTP/1.1' as a
    message length of 3 EiB)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    time.sleep(0.2)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@contextmanager
def closed_port() -> Iterator[str]:
    """A port that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield f"tcp://127.0.0.1:{port}"


CASES = {
    "silent": (silent_server, "sent no Dask handshake"),
    "http": (http_server, "an HTTP server"),
    "eager-http": (eager_http_server, "an HTTP server"),
    "closed": (closed_port, "nothing listens there"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_the_cli_fails_fast_naming_the_address_and_what_is_there(tmp_path, case):
    serve, found = CASES[case]
    config = tmp_path / "remote.toml"
    config.write_text(TOML)
    out = tmp_path / "out"
    with serve() as address:
        cmd = [sys.executable, "-m", "analysis_lib.sweep", str(config), "--out", str(out)]
        cmd += ["--scheduler", address, "--timeout", "2"]
        start = time.monotonic()
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=90, cwd=ROOT,
                env={**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT)},
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            pytest.fail(f"the CLI hung at {case} {address}")
        wall = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr
    assert address in proc.stderr and found in proc.stderr
    assert "Traceback" not in proc.stderr
    assert wall < 60  # Python and torch starting included; the wait itself is timed below
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_the_wait_is_bounded_by_the_timeout(case):
    serve, found = CASES[case]
    with serve() as address:
        start = time.monotonic()
        with pytest.raises(ConnectionError, match=found) as err:
            probe_scheduler(address, timeout=1.0)
        wall = time.monotonic() - start
    assert address in str(err.value)
    assert wall < 1.0 + 2.0


@pytest.mark.slow
def test_the_environment_variable_and_run_sweep_get_the_same_check(tmp_path, monkeypatch):
    with silent_server() as address:
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)
        start = time.monotonic()
        with pytest.raises(ConnectionError, match="sent no Dask handshake") as err:
            run_sweep(CONFIG, tmp_path / "out", connect_timeout=1, progress=False)
        assert time.monotonic() - start < 5
    assert address in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "soon"])
def test_a_bad_timeout_is_refused(tmp_path, bad, capsys):
    config = tmp_path / "remote.toml"
    config.write_text(TOML)
    with pytest.raises(SystemExit) as exit_:
        cli_main([str(config), "--out", str(tmp_path / "out"), "--timeout", bad])
    assert exit_.value.code == 2
    assert "--timeout" in capsys.readouterr().err
    with pytest.raises(ValueError, match="connect_timeout"):
        run_sweep(CONFIG, tmp_path / "out", connect_timeout=0, progress=False)


def test_an_address_without_a_port_is_named():
    with pytest.raises(ConnectionError, match="no port"):
        probe_scheduler("tcp://127.0.0.1", timeout=1)


@pytest.mark.slow
def test_a_real_scheduler_is_found_and_runs_the_sweep(tmp_path):
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=":0",
    ) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        start = time.monotonic()
        probe_scheduler(address, timeout=2)
        assert time.monotonic() - start < 2
        with connect_scheduler(address, timeout=2) as client:
            assert client.scheduler_info()["address"] == address
        result = run_sweep(CONFIG, tmp_path / "out", scheduler=address, progress=False)
    assert result.ran == 1 and set(result.trials["status"]) == {"ok"}
