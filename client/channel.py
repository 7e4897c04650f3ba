"""Opening a channel to todo-tasks: TLS or plaintext, round robin over the target's addresses, and gRPC's own
retry policy for UNAVAILABLE on the calls that are safe to send twice, throttled while most calls fail."""

from __future__ import annotations

import json
import os
from pathlib import Path

import grpc

TASK_SERVICE = "todo.v1.TaskService"

# gRPC retries UNAVAILABLE itself (gRFC A6): at most 5 attempts, waits drawn from 0.5s doubling to 4s.
# From the server, UNAVAILABLE means nothing was written; but gRPC says UNAVAILABLE too when the connection
# breaks after the server did the call and before its reply came back (a replica killed, a network cut), and
# retries that as well. So only the calls that are safe to send twice are retried here: the reads, and
# CreateTask, whose request_id (the clients always send one) makes a retry return the first task. UpdateTask
# and DeleteTask sent again would fail on their own change (ABORTED, NOT_FOUND): TaskClient retries them only
# on the server's own UNAVAILABLE (client/write_retries.py). UNKNOWN (COMMIT_OUTCOME_UNKNOWN) is never retried.
RETRIED_METHODS = ("GetTask", "ListTasks", "CreateTask")
RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.5s",
    "maxBackoff": "4s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
_SERVICE_CONFIG = {
    # Every address a name resolves to (replicas behind one DNS name) gets its share of the calls.
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": TASK_SERVICE, "method": method} for method in RETRIED_METHODS],
            "retryPolicy": RETRY_POLICY,
        }
    ],
    # Each failed attempt spends a token, each success earns 0.1; at 5 tokens or fewer the channel stops
    # retrying, so a struggling server gets each call once, not five times, until calls succeed again.
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
}
# No healthCheckConfig: each channel would hold a health Watch stream, and with it a server thread.
CHANNEL_OPTIONS = (
    ("grpc.enable_retries", 1),
    ("grpc.service_config", json.dumps(_SERVICE_CONFIG)),
    # Notice a server that came back within a second or two, not after gRPC's default of up to 2 minutes.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)

PathLike = str | os.PathLike[str]
TlsOption = bool | PathLike
# A client certificate and its key (PEM files), for a server that asks for one (--tls-client-ca).
ClientCertificate = tuple[PathLike, PathLike]


def open_channel(
    target: str, *, tls: TlsOption = False, client_cert: ClientCertificate | None = None
) -> grpc.Channel:
    """A channel to `target`. `tls`: False for plaintext, True for TLS checked against the system's CAs,
    or the path of a PEM CA file that signed the server's certificate. `client_cert`: (certificate, key)
    for mutual TLS."""
    credentials = _credentials(tls, client_cert)
    if credentials is None:
        return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(target, credentials, options=CHANNEL_OPTIONS)


def open_aio_channel(
    target: str, *, tls: TlsOption = False, client_cert: ClientCertificate | None = None
) -> grpc.aio.Channel:
    """The grpc.aio twin of `open_channel`: same options, same retry policy."""
    credentials = _credentials(tls, client_cert)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)


def _credentials(tls: TlsOption, client_cert: ClientCertificate | None) -> grpc.ChannelCredentials | None:
    if tls is False:
        if client_cert is not None:
            raise ValueError("a client certificate needs TLS: pass tls=True or tls='ca.pem' too")
        return None
    cert, key = (
        (None, None)
        if client_cert is None
        else (_read("certificate", client_cert[0]), _read("key", client_cert[1]))
    )
    return grpc.ssl_channel_credentials(
        root_certificates=None if tls is True else _read("CA", tls), private_key=key, certificate_chain=cert
    )


def _read(what: str, path: PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"{what} file {str(path)!r} cannot be read: {error.strerror}") from None
