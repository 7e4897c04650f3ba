"""Building the gRPC server: one function shared by the CLI, the tests and the benchmarks."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy.exc import SQLAlchemyError
from todo.v1 import task_service_pb2, task_service_pb2_grpc

from server.access_log import AccessLogInterceptor
from server.answer_buffer import UnreadAnswersLimit
from server.auth.interceptor import AuthInterceptor
from server.auth.jwks import JwksCache
from server.auth.tokens import TokenVerifier
from server.auth.verified_cache import VerifiedTokenCache
from server.call_deadline import begin_drain
from server.call_limits import CallerCallsLimit, PublicCallsLimit
from server.call_pipeline import CallPipeline, Layer
from server.config import ConfigError, Settings, masked_database_url
from server.db.repository import TaskRepository
from server.db.session import Database
from server.deadline_interceptor import DeadlineInterceptor
from server.health import HealthServicer
from server.limits import caller_calls_limit, public_calls_limits, server_options
from server.metrics import MetricsInterceptor, ServerMetrics, serve_metrics
from server.readiness import Readiness
from server.reflection import V1_SERVICE, V1ALPHA_SERVICE, enable_reflection
from server.request_decoding import RequestDecodingInterceptor
from server.rpc_threads import ElasticThreadPool
from server.running_calls import RunningCallsInterceptor
from server.services.page_tokens import PageTokenCodec
from server.services.task_service import TaskService
from server.status import ErrorStatusInterceptor

TASK_SERVICE = task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name
# The only services reachable without a token. Everything else, including methods added later, needs one.
PUBLIC_SERVICES = frozenset({health.SERVICE_NAME, V1_SERVICE, V1ALPHA_SERVICE})

_log = logging.getLogger("todo.server")


@dataclass
class TodoServer:
    """A built server: the grpc.Server, the port it bound, and what running and stopping it needs."""

    grpc_server: grpc.Server
    port: int
    health: HealthServicer
    readiness: Readiness
    database: Database
    metrics: ServerMetrics
    metrics_port: int | None = None
    # Run in order after the gRPC server has stopped (metrics endpoint, tracer flush, database).
    closers: list[Callable[[], Any]] = field(default_factory=list)
    jwks: JwksCache | None = None

    def start(self) -> None:
        """Serves; health follows readiness (database reachable, JWKS keys loaded) from the first check on."""
        self.grpc_server.start()
        if self.jwks is not None:
            self.jwks.start()
        self.readiness.start()

    def stop(self, grace: float | None, *, drain_delay: float = 0.0) -> None:
        """Health turns NOT_SERVING; calls are still taken for `drain_delay` seconds, then new calls are
        refused and in-flight calls get `grace` seconds to end."""
        self.readiness.stop()
        self.health.enter_graceful_shutdown()
        self.health.end_watches()
        if drain_delay > 0:
            _log.info(
                "stopping: health is NOT_SERVING; taking calls for %gs more while load balancers move away",
                drain_delay,
            )
            time.sleep(drain_delay)
        if grace is not None:  # None: in-flight calls are cancelled (tests)
            _log.info("stopping: draining in-flight calls for up to %gs", grace)
            # grpcio cancels the calls still running when `grace` ends, and their callers are told UNAVAILABLE
            # (nothing written; retried elsewhere): their database work ends a little earlier, committed and
            # answered, or rolled back and answered UNAVAILABLE, so that no write outlives its call.
            begin_drain(grace - drain_margin(grace))
        self.grpc_server.stop(grace).wait()
        for close in self.closers:
            close()


# Between the end of the calls' database work and grpcio's grace: time for a cancelled COMMIT to roll back,
# and for the answer to leave.
_DRAIN_MARGIN_SECONDS = 1.0


def drain_margin(grace: float) -> float:
    """How much sooner than grpcio's `grace` the calls' database work must end: 1 s, or a quarter of a short
    grace."""
    return min(_DRAIN_MARGIN_SECONDS, grace / 4)


def build_verifier(
    settings: Settings,
    on_keys_loaded: Callable[[], None] | None = None,
    on_jwks_refresh: Callable[[bool], None] | None = None,
) -> TokenVerifier:
    """The token verifier `settings` describe: HS256 secret, JWKS, or both. The JWKS cache is not started."""
    jwks_url = settings.jwks_url()
    if settings.better_auth_secret is None and jwks_url is None:
        raise ConfigError("no token verification key is configured: set BETTER_AUTH_URL or BETTER_AUTH_SECRET")
    jwks = None
    if jwks_url is not None:
        jwks = JwksCache(
            jwks_url,
            refresh_seconds=settings.jwks_refresh_seconds,
            min_refetch_seconds=settings.jwks_min_refetch_seconds,
            # Waiters hold run slots and made-up kids are free to send: most slots stay for other calls.
            max_unknown_kid_waiters=max(1, settings.max_workers // 4),
            on_first_load=on_keys_loaded,
            on_refresh=on_jwks_refresh,
        )
    try:
        return TokenVerifier(
            hs256_secret=settings.better_auth_secret.reveal() if settings.better_auth_secret else None,
            jwks=jwks,
            issuer=settings.expected_issuer(),
            audience=settings.expected_audience(),
            algorithms=settings.jwt_algorithms,
            leeway_seconds=settings.jwt_leeway_seconds,
            cache=VerifiedTokenCache(settings.verified_token_cache_size),
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _health_following(health_servicer: HealthServicer) -> Callable[[bool], None]:
    """Sets the overall and the TaskService health to what readiness says."""

    def set_serving(ready: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", TASK_SERVICE):
            health_servicer.set(service, status)

    return set_serving


def _open_database(settings: Settings) -> Database:
    """The database, reachable and at this code's schema; ConfigError or SchemaError say the fix."""
    # One connection per call allowed to run (RunningCallsInterceptor), and one for the readiness check,
    # so that a replica whose calls all hold a connection still answers its health probe as SERVING.
    database = Database(settings.database_url, pool_size=settings.max_workers + 1)
    try:
        if settings.migrate:
            database.migrate()
        database.require_current_schema()  # SchemaError: never serve on a schema this code cannot run on
    except SQLAlchemyError as error:
        database.dispose()
        cause = str(getattr(error, "orig", None) or type(error).__name__).strip().splitlines()[0][:200]
        raise ConfigError(
            f"cannot use the database at {masked_database_url(settings.database_url)} ({cause}): "
            "check that it is up and that DATABASE_URL (or --database-url) points at it"
        ) from None
    return database


def build_server(settings: Settings, *, tracer_provider: Any = None) -> TodoServer:
    """A configured, bound, not yet started server for `settings`.

    `tracer_provider` (an OpenTelemetry TracerProvider) turns tracing on with it; without one, tracing is
    on only when `settings.tracing` is, exporting over OTLP. Raises ConfigError, or SchemaError when
    this code cannot run on the database's schema (it needs `todo-server migrate`, or a newer release).
    """
    # The JWKS cache's first load re-checks readiness at once rather than at the next round.
    on_keys_loaded: list[Callable[[], Any]] = []
    metrics = ServerMetrics()
    verifier = build_verifier(
        settings,
        on_keys_loaded=lambda: [callback() for callback in on_keys_loaded],
        on_jwks_refresh=lambda ok: metrics.record_jwks_refresh(ok=ok),
    )
    page_token_key = settings.page_token_key()
    closers: list[Callable[[], Any]] = []
    interceptors: list[grpc.ServerInterceptor] = []
    layers: list[Layer] = []
    trace_id_of = None
    if tracer_provider is None and settings.tracing:
        from server.tracing import otlp_tracer_provider

        tracer_provider = otlp_tracer_provider(settings.service_name)
        closers.append(tracer_provider.shutdown)  # flushes the spans still queued
    if tracer_provider is not None:
        from server.tracing import SpanStatusInterceptor, current_trace_id, tracing_interceptor

        interceptors.append(tracing_interceptor(tracer_provider))
        layers.append(SpanStatusInterceptor())
        trace_id_of = current_trace_id
    database = _open_database(settings)
    closers.append(database.dispose)
    metrics.watch_pool(database.engine.pool)
    public_limit, public_per_peer = public_calls_limits(settings.max_concurrent_rpcs)
    server = grpc.server(
        ElasticThreadPool(max_threads=settings.max_concurrent_rpcs),
        interceptors=[
            *interceptors,
            # Outermost first. One interceptor for all of them: each method's handler is built once.
            CallPipeline(
                # At dispatch: a call without a valid token, or one too many (public, or one user's), ends at once.
                before_request=[
                    *layers,
                    MetricsInterceptor(metrics),
                    AccessLogInterceptor(trace_id_of=trace_id_of),
                    ErrorStatusInterceptor(on_error=metrics.record_error),
                    PublicCallsLimit(PUBLIC_SERVICES, limit=public_limit, per_peer=public_per_peer),
                    AuthInterceptor(verifier, public_services=PUBLIC_SERVICES),
                    CallerCallsLimit(PUBLIC_SERVICES, limit=caller_calls_limit(settings.max_concurrent_rpcs)),
                    UnreadAnswersLimit(
                        PUBLIC_SERVICES,
                        limit_bytes=settings.max_unread_answer_bytes,
                        per_user_bytes=settings.max_unread_answer_bytes_per_user,
                    ),
                ],
                # Once the request message is in.
                after_request=[
                    RunningCallsInterceptor(settings.max_workers),
                    DeadlineInterceptor(),
                    RequestDecodingInterceptor(),
                ],
            ),
        ],
        options=server_options(share_port=settings.workers > 1),
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    service = TaskService(
        TaskRepository(database, max_tasks_per_user=settings.max_tasks_per_user or None),
        PageTokenCodec(page_token_key),
    )
    task_service_pb2_grpc.add_TaskServiceServicer_to_server(service, server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection:
        enable_reflection(server, (TASK_SERVICE, health.SERVICE_NAME))
    port = _add_port(server, settings)
    if port == 0:
        raise ConfigError(
            f"cannot listen on {settings.listen!r}: the port is in use (another todo-server?), "
            "or the host is not an address of this machine; pick another with --listen or TODO_LISTEN"
        )
    metrics_port = None
    if settings.metrics_listen is not None:
        httpd = serve_metrics(metrics, settings.metrics_listen)
        metrics_port = httpd.server_port
        closers[:0] = [httpd.shutdown, httpd.server_close]
    readiness = Readiness(
        interval_seconds=settings.health_check_seconds, on_change=_health_following(health_servicer)
    )
    readiness.add_check("database", database.ping)
    if verifier.jwks is not None:
        readiness.add_check("jwks", lambda: verifier.jwks is not None and verifier.jwks.loaded)
        on_keys_loaded.append(readiness.check_now)
        closers.insert(0, verifier.jwks.stop)
    return TodoServer(
        grpc_server=server,
        port=port,
        health=health_servicer,
        readiness=readiness,
        database=database,
        metrics=metrics,
        metrics_port=metrics_port,
        closers=closers,
        jwks=verifier.jwks,
    )


def _add_port(server: grpc.Server, settings: Settings) -> int:
    """The port bound for `settings.listen` (TLS when a certificate is set), or 0 if it cannot be bound."""
    try:
        if settings.tls_certificate_chain is None or settings.tls_private_key is None:
            return server.add_insecure_port(settings.listen)
        credentials = grpc.ssl_server_credentials(
            [(settings.tls_private_key.reveal(), settings.tls_certificate_chain)],
            root_certificates=settings.tls_client_ca,
            require_client_auth=settings.tls_client_ca is not None,
        )
        return server.add_secure_port(settings.listen, credentials)
    except RuntimeError:  # grpcio >= 1.66 raises where older versions returned 0
        return 0


@contextlib.contextmanager
def run_server(settings: Settings) -> Iterator[TodoServer]:
    """A started server that is stopped (without grace) when the block ends."""
    todo_server = build_server(settings)
    todo_server.start()
    try:
        yield todo_server
    finally:
        todo_server.stop(grace=None)
