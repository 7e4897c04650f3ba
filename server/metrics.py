"""Prometheus metrics: go-grpc-prometheus's server metrics, auth failures, JWKS refreshes, the database pool.

With `--workers N` the workers write their metrics to files in one directory (prometheus_client's
multiprocess mode) and the parent serves their sum on `--metrics-listen`: one scrape sees the whole server.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from server import metrics_endpoint
from server.call_pipeline import Layer
from server.config import ConfigError
from server.errors import TodoError, Unauthenticated
from server.rpc_handlers import Behavior, final_code, wrap_method_handler

_RPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
# How often a worker copies its pool's counts into the shared files (a scrape of N workers cannot ask them).
_POOL_SAMPLE_SECONDS = 1.0
_shared_directory: str | None = None


def share_between_processes(directory: str) -> None:
    """Makes every metric created from now on in this process, and in processes forked from it, write its
    value to a file in `directory`, so that `serve_shared_metrics(directory, ...)` can serve their sum.

    prometheus_client picks its value class from PROMETHEUS_MULTIPROC_DIR when it is imported; this
    process imported it before --workers was known, so the choice is made again here, before the fork.
    """
    global _shared_directory
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    values.ValueClass = values.get_value_class()
    _shared_directory = directory


def _grpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


class _PoolCollector(Collector):
    """Reads the SQLAlchemy pool at scrape time, so the request path pays nothing for it."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if not hasattr(self._pool, "checkedout"):
            return  # pools without counts (SQLite :memory:) have nothing to report
        connections = GaugeMetricFamily(
            "todo_db_pool_connections", "Database connections in the pool by state.", labels=["state"]
        )
        connections.add_metric(["checked_out"], self._pool.checkedout())
        connections.add_metric(["idle"], self._pool.checkedin())
        yield connections
        yield GaugeMetricFamily("todo_db_pool_size", "Connections the pool keeps open at most.", self._pool.size())


def _start_pool_sampler(pool: Any, registry: CollectorRegistry) -> None:
    """Copies `pool`'s counts into shared gauges every second, for a parent that serves the workers' sum."""
    connections = Gauge(
        "todo_db_pool_connections", "Database connections in the pool by state.", ["state"],
        registry=registry, multiprocess_mode="livesum",
    )  # fmt: skip
    checked_out, idle = connections.labels("checked_out"), connections.labels("idle")
    size = Gauge(
        "todo_db_pool_size", "Connections the pool keeps open at most.", registry=registry,
        multiprocess_mode="livesum",
    )  # fmt: skip
    size.set(pool.size())

    def sample() -> None:
        while True:
            checked_out.set(pool.checkedout())
            idle.set(pool.checkedin())
            time.sleep(_POOL_SAMPLE_SECONDS)

    # A daemon: it only reads two numbers, and the worker process ends with its server.
    threading.Thread(target=sample, name="pool-metrics", daemon=True).start()


class ServerMetrics:
    """One registry per server (tests run several in one process); the interceptor records into it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.started = Counter(
            "grpc_server_started_total", "RPCs started on the server.", _RPC_LABELS, registry=self.registry
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, regardless of success or failure.",
            (*_RPC_LABELS, "grpc_code"),
            registry=self.registry,
        )
        self.handling_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time the server took to handle an RPC, until its last response.",
            _RPC_LABELS,
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "todo_auth_failures_total", "Calls refused as unauthenticated, by reason.", ("reason",),
            registry=self.registry,
        )  # fmt: skip
        self.jwks_refreshes = Counter(
            "todo_jwks_refreshes_total", "JWKS fetches, by result (ok or error).", ("result",),
            registry=self.registry,
        )  # fmt: skip

        self.msg_received = Counter(
            "grpc_server_msg_received_total", "RPC stream messages received on the server.", _RPC_LABELS,
            registry=self.registry,
        )  # fmt: skip
        self.msg_sent = Counter(
            "grpc_server_msg_sent_total", "gRPC stream messages sent on the server.", _RPC_LABELS,
            registry=self.registry,
        )  # fmt: skip

    def watch_pool(self, pool: Any) -> None:
        """Reports `pool`'s connections at every scrape (with --workers: as sampled every second)."""
        if _shared_directory is None:
            self.registry.register(_PoolCollector(pool))
        elif hasattr(pool, "checkedout"):
            _start_pool_sampler(pool, self.registry)

    def record_error(self, error: TodoError) -> None:
        """Counts a domain error on its way to the caller (only its class and reason, nothing it carries)."""
        if isinstance(error, Unauthenticated):
            self.auth_failures.labels(error.reason).inc()

    def record_jwks_refresh(self, *, ok: bool) -> None:
        """For the JWKS fetcher: call once per fetch attempt."""
        self.jwks_refreshes.labels("ok" if ok else "error").inc()


class _MethodMetrics:
    """One method's label children, made once so a call only increments and observes."""

    __slots__ = ("_handled", "_labels", "_metrics", "handling_seconds", "received", "sent", "started")

    def __init__(self, metrics: ServerMetrics, labels: tuple[str, str, str]) -> None:
        self._metrics = metrics
        self._labels = labels
        self._handled: dict[grpc.StatusCode, Any] = {}
        self.started = metrics.started.labels(*labels)
        self.handling_seconds = metrics.handling_seconds.labels(*labels)
        self.received = metrics.msg_received.labels(*labels)
        self.sent = metrics.msg_sent.labels(*labels)

    def handled(self, code: grpc.StatusCode) -> Any:
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = self._metrics.handled.labels(*self._labels, code.name)
        return child


def _finished(
    per_method: _MethodMetrics, context: grpc.ServicerContext, started: float, failed: bool
) -> grpc.StatusCode:
    per_method.handling_seconds.observe(time.perf_counter() - started)
    code = final_code(context, failed)
    per_method.handled(code).inc()
    return code


def _counted(requests: Iterable[Any], received: Any) -> Iterator[Any]:
    for request in requests:
        received.inc()
        yield request


class MetricsInterceptor(Layer):
    """Outermost, so it counts every call with the status its caller got (auth failures included)."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        # Once per method (CallPipeline): the label children are made here, a call only increments.
        service, _, name = method[1:].rpartition("/")
        per_method = _MethodMetrics(self._metrics, (_grpc_type(handler), service, name))
        received, sent = per_method.received, per_method.sent
        request_streaming = handler.request_streaming

        # As go-grpc-prometheus: a unary request counts as received when the call starts, a unary response
        # as sent when the call succeeds; streamed messages count one by one.
        def wrap(behavior: Behavior, response_streaming: bool) -> Behavior:
            if response_streaming:

                def streaming(request: Any, context: grpc.ServicerContext) -> Any:
                    per_method.started.inc()
                    if request_streaming:
                        request = _counted(request, received)
                    else:
                        received.inc()
                    started = time.perf_counter()
                    failed = True
                    try:
                        for response in behavior(request, context):
                            sent.inc()  # on hand-over: after the yield would miss a last one cut by a cancel
                            yield response
                        failed = False
                    finally:
                        _finished(per_method, context, started, failed)

                return streaming

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                per_method.started.inc()
                if request_streaming:
                    request = _counted(request, received)
                else:
                    received.inc()
                started = time.perf_counter()
                failed = True
                try:
                    response = behavior(request, context)
                    failed = False
                    return response
                finally:
                    if _finished(per_method, context, started, failed) is grpc.StatusCode.OK:
                        sent.inc()

            return unary

        return wrap_method_handler(handler, wrap)


def serve_metrics(metrics: ServerMetrics, listen: str) -> Any:
    """Starts the `/metrics` HTTP endpoint on `listen` (host:port, `[::]:9464`); returns the WSGI server."""
    return _serve(metrics.registry, listen)


def serve_shared_metrics(directory: str, listen: str) -> Any:
    """Serves on `listen` the sum of the metrics every process sharing `directory` has written."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return _serve(registry, listen)


def check_metrics_address(listen: str) -> None:
    """Raises the ConfigError that serving on `listen` would, without serving: --workers checks before it forks."""
    host, port = _host_and_port(listen)
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the HTTP server will
            probe.bind((host, port))
    except OSError as error:
        raise ConfigError(f"cannot serve metrics on {listen!r}: {error.strerror}; pick a free port") from None


def _host_and_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    try:
        return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104
    except ValueError:
        raise ConfigError(f"--metrics-listen {listen!r} is not host:port (for example 0.0.0.0:9464)") from None


def _serve(registry: CollectorRegistry, listen: str) -> Any:
    host, port = _host_and_port(listen)
    try:
        return metrics_endpoint.serve(registry, host, port)
    except OSError as error:
        raise ConfigError(f"cannot serve metrics on {listen!r}: {error.strerror}; pick a free port") from None
