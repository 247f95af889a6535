"""Connecting to an existing Dask scheduler without ever hanging.

``distributed.Client(address, timeout=...)`` bounds only the TCP connection: a server that
accepts it and never speaks keeps the handshake waiting for ever, one that answers HTTP has its
first bytes read as a message length (an allocation of exabytes), and a closed port is retried
until the timeout. :func:`connect_scheduler` first checks the address within ``timeout``
seconds: a TCP connection (refused, unreachable or unresolvable fails at once), then Dask's own
handshake under a deadline. Whatever is wrong becomes a :class:`ConnectionError` naming the
address and what was found there (nothing listening, a server that stays silent, an HTTP server
such as the dashboard, some other protocol); only a server that answers Dask's handshake gets a
``Client``.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

from .._checks import check_float

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "check_timeout", "connect_scheduler", "probe_scheduler"]

#: Seconds to wait for a scheduler to accept the connection and answer Dask's handshake.
DEFAULT_CONNECT_TIMEOUT = 10.0


def check_timeout(value, name: str = "connect_timeout") -> float:
    """``value`` as a finite number of seconds > 0 (the library's one argument rule), else a
    ValueError naming ``name``.

    Args:
        value: the number of seconds.
        name: the argument's name, for the message.

    Returns:
        ``value`` as a float.

    Raises:
        ValueError: ``value`` is not a finite number > 0.

    Examples:
        >>> check_timeout(2)
        2.0
        >>> check_timeout(0, "timeout")
        Traceback (most recent call last):
        ...
        ValueError: Invalid timeout: 0 (expected a finite number > 0)
    """
    return check_float(name, value, 0.0, low_open=True)


def _fail(address: str, what: str) -> ConnectionError:
    return ConnectionError(
        f"no Dask scheduler at {address}: {what}. Start one (dask scheduler; its default port "
        "is 8786) or leave --scheduler / DASK_SCHEDULER_ADDRESS unset for a LocalCluster"
    )


def _tcp_check(address: str, host: str, port: int, timeout: float) -> None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except socket.gaierror as e:
        raise _fail(address, f"the host name {host!r} cannot be resolved ({e.strerror})") from None
    except ConnectionRefusedError:
        raise _fail(address, "nothing listens there (connection refused)") from None
    except TimeoutError:
        raise _fail(
            address,
            f"no answer to a connection within {timeout:g} s (the host is down, or a firewall "
            "drops the connection)",
        ) from None
    except OSError as e:
        raise _fail(address, f"cannot connect ({type(e).__name__}: {e.strerror or e})") from None


def _sniff(host: str, port: int, timeout: float) -> bytes:
    """The first bytes a server answers to an HTTP request (b"" when it says nothing)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
            return sock.recv(200)
    except OSError:
        return b""


def _handshake(address: str, timeout: float) -> BaseException | None:
    """Dask's connect-and-handshake to ``address`` under a deadline of ``timeout`` seconds, in
    a thread with its own event loop (so it works where a loop already runs, e.g. Jupyter).
    Returns the exception it ended with, or None when the server answered as Dask does."""
    from distributed.comm import connect

    outcome: dict[str, BaseException | None] = {}

    async def attempt() -> None:
        comm = await connect(address, timeout=timeout, deserialize=False)
        await comm.close()

    def run() -> None:
        try:
            asyncio.run(asyncio.wait_for(attempt(), timeout))
            outcome["error"] = None
        except BaseException as e:  # reported to the caller
            outcome["error"] = e

    thread = threading.Thread(target=run, name="sweep-scheduler-probe", daemon=True)
    thread.start()
    thread.join(timeout + 2.0)
    if thread.is_alive() or "error" not in outcome:
        return TimeoutError(f"no handshake within {timeout:g} s")
    return outcome["error"]


def probe_scheduler(address: str, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
    """Check within about ``timeout`` seconds that a Dask scheduler answers at ``address``.

    Args:
        address: the scheduler's address, e.g. ``"tcp://host:8786"``.
        timeout: seconds to wait, > 0.

    Raises:
        ConnectionError: it does not; the message names the address and what is there.
        ValueError: ``timeout`` is not a number of seconds > 0.
    """
    from distributed.comm.addressing import parse_address, parse_host_port

    timeout = check_timeout(timeout, "timeout")
    start = time.monotonic()
    try:
        scheme, loc = parse_address(address, strict=False)
    except (ValueError, TypeError) as e:
        raise _fail(address, f"not an address ({e})") from None
    host = port = None
    if scheme == "tcp":
        try:
            host, port = parse_host_port(loc)
        except (ValueError, TypeError):
            raise _fail(
                address, "the address has no port (expected e.g. tcp://host:8786)"
            ) from None
        _tcp_check(address, host, port, timeout)
    left = max(timeout - (time.monotonic() - start), 0.5)
    error = _handshake(address, left)
    if error is None:
        return
    timed_out = isinstance(error, TimeoutError | asyncio.TimeoutError)
    if isinstance(error, OSError) and "Timed out trying to connect" in str(error):
        raise _fail(address, f"cannot connect within {timeout:g} s ({error})")
    # what is there? An HTTP server (e.g. the dashboard) may wait for a request's end
    reply = _sniff(host, port, min(1.0, timeout / 2)) if host is not None else b""
    if reply.startswith(b"HTTP/"):
        status = reply.split(b"\r\n", 1)[0].decode("latin-1")
        raise _fail(
            address,
            f"an HTTP server answers there ({status!r}), not a Dask scheduler (a scheduler's "
            "dashboard, port 8787 by default, is one; its own port is 8786 by default)",
        )
    if timed_out:
        raise _fail(
            address,
            f"a server accepted the connection but sent no Dask handshake within {timeout:g} s "
            "(not a Dask scheduler, or one too busy to answer; --timeout waits longer)",
        )
    found = f"it sent {reply[:40]!r}" if reply else f"{type(error).__name__}: {error}"[:200]
    raise _fail(address, f"the server there does not speak Dask's protocol ({found})")


def connect_scheduler(address: str, timeout: float = DEFAULT_CONNECT_TIMEOUT):
    """A ``distributed.Client`` of the scheduler at ``address``, after :func:`probe_scheduler`
    found one there; Dask's own connect timeout is ``timeout`` too.

    Args:
        address: the scheduler's address, e.g. ``"tcp://host:8786"``.
        timeout: seconds to wait, > 0.

    Returns:
        A connected ``distributed.Client``; the caller closes it.

    Raises:
        ConnectionError: no Dask scheduler answers at ``address`` within ``timeout`` seconds.
        ValueError: ``timeout`` is not a number of seconds > 0.
    """
    import dask
    from distributed import Client

    probe_scheduler(address, timeout)
    with dask.config.set({"distributed.comm.timeouts.connect": f"{timeout}s"}):
        try:
            return Client(address, timeout=timeout)
        except (OSError, TimeoutError) as e:
            raise _fail(address, f"{type(e).__name__}: {e}") from e
