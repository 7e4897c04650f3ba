"""Prometheus metrics: go-grpc-prometheus's server metrics, auth failures, JWKS refreshes, the database pool."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from server.config import ConfigError
from server.errors import TodoError, Unauthenticated
from server.rpc_handlers import Behavior, wrap_method_handler

_RPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")


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

    def watch_pool(self, pool: Any) -> None:
        """Reports `pool`'s connections at every scrape."""
        self.registry.register(_PoolCollector(pool))

    def record_error(self, error: TodoError) -> None:
        """Counts a domain error on its way to the caller (only its class and reason, nothing it carries)."""
        if isinstance(error, Unauthenticated):
            self.auth_failures.labels(error.reason).inc()

    def record_jwks_refresh(self, *, ok: bool) -> None:
        """For the JWKS fetcher: call once per fetch attempt."""
        self.jwks_refreshes.labels("ok" if ok else "error").inc()


class _MethodMetrics:
    """One method's label children, made once so a call only increments and observes."""

    __slots__ = ("_handled", "_labels", "_metrics", "handling_seconds", "started")

    def __init__(self, metrics: ServerMetrics, labels: tuple[str, str, str]) -> None:
        self._metrics = metrics
        self._labels = labels
        self._handled: dict[grpc.StatusCode, Any] = {}
        self.started = metrics.started.labels(*labels)
        self.handling_seconds = metrics.handling_seconds.labels(*labels)

    def handled(self, code: grpc.StatusCode) -> Any:
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = self._metrics.handled.labels(*self._labels, code.name)
        return child


def _finished(per_method: _MethodMetrics, context: grpc.ServicerContext, started: float, failed: bool) -> None:
    per_method.handling_seconds.observe(time.perf_counter() - started)
    code = context.code() or (grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK)
    per_method.handled(code).inc()


class MetricsInterceptor(grpc.ServerInterceptor):
    """Outermost, so it counts every call with the status its caller got (auth failures included)."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics
        self._per_method: dict[str, _MethodMetrics] = {}

    def _method_metrics(self, method: str, handler: grpc.RpcMethodHandler) -> _MethodMetrics:
        per_method = self._per_method.get(method)
        if per_method is None:
            service, _, name = method[1:].rpartition("/")
            per_method = self._per_method[method] = _MethodMetrics(
                self._metrics, (_grpc_type(handler), service, name)
            )
        return per_method

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        per_method = self._method_metrics(handler_call_details.method, handler)

        def wrap(behavior: Behavior, response_streaming: bool) -> Behavior:
            if response_streaming:

                def streaming(request: Any, context: grpc.ServicerContext) -> Any:
                    per_method.started.inc()
                    started = time.perf_counter()
                    failed = True
                    try:
                        yield from behavior(request, context)
                        failed = False
                    finally:
                        _finished(per_method, context, started, failed)

                return streaming

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                per_method.started.inc()
                started = time.perf_counter()
                failed = True
                try:
                    response = behavior(request, context)
                    failed = False
                    return response
                finally:
                    _finished(per_method, context, started, failed)

            return unary

        return wrap_method_handler(handler, wrap)


def serve_metrics(metrics: ServerMetrics, listen: str) -> Any:
    """Starts the `/metrics` HTTP endpoint on `listen` (host:port, `[::]:9464`); returns the WSGI server."""
    host, _, port = listen.rpartition(":")
    try:
        httpd, _thread = start_http_server(int(port), host.strip("[]") or "0.0.0.0", metrics.registry)  # noqa: S104
    except ValueError:
        raise ConfigError(f"--metrics-listen {listen!r} is not host:port (for example 0.0.0.0:9464)") from None
    except OSError as error:
        raise ConfigError(f"cannot serve metrics on {listen!r}: {error.strerror}; pick a free port") from None
    return httpd
