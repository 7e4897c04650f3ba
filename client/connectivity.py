"""Whether a connection to the server comes up: up, failed at once (nothing listening, a TLS mismatch), or
still silent when time runs out. A failed attempt is known in milliseconds; a call, or channel_ready_future,
would keep retrying until its deadline, and a newcomer would wait seconds to learn the port is wrong."""

from __future__ import annotations

import enum
import socket
import threading

import grpc

_GRPC_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:")


class Connection(enum.Enum):
    READY = "ready"
    FAILED = "failed"  # an attempt failed: refused, unresolvable, or the TLS or HTTP/2 handshake did not complete
    SILENT = "silent"  # still connecting when the time ran out: packets dropped, or a server too busy to answer


def first_connection(channel: grpc.Channel, timeout: float) -> Connection:
    """How the channel's first connection attempt ends, waiting at most `timeout` seconds."""
    settled = threading.Event()
    outcome = [Connection.SILENT]

    def watch(state: grpc.ChannelConnectivity) -> None:
        if state is grpc.ChannelConnectivity.READY:
            outcome[0] = Connection.READY
        elif state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN):
            outcome[0] = Connection.FAILED
        else:
            return
        settled.set()

    channel.subscribe(watch, try_to_connect=True)
    try:
        settled.wait(timeout)
    finally:
        channel.unsubscribe(watch)
    return outcome[0]


def tcp_problem(target: str, timeout: float = 1.0) -> str | None:
    """Why a plain TCP connection to a `host:port` target fails ("connection refused", ...), or None when it
    connects (then what failed is TLS or HTTP/2) or the target is not a plain host:port."""
    address = _host_and_port(target)
    if address is None:
        return None
    try:
        socket.create_connection(address, timeout=timeout).close()
    except socket.gaierror:
        return f"cannot resolve {address[0]}"
    except TimeoutError:
        return None
    except OSError as error:
        return (error.strerror or str(error)).lower()
    return None


def _host_and_port(target: str) -> tuple[str, int] | None:
    if target.startswith(_GRPC_SCHEMES) or "://" in target:
        return None
    host, colon, port = target.rpartition(":")
    if not colon:
        return target, 443
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:  # an IPv6 address without brackets: not a form to guess at
        return None
    return (host, int(port)) if port.isdigit() else None
