"""Building the gRPC server: one function shared by the CLI, the tests and the benchmarks."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from todo.v1 import task_service_pb2, task_service_pb2_grpc

from server.access_log import AccessLogInterceptor
from server.auth.interceptor import AuthInterceptor
from server.auth.tokens import TokenVerifier
from server.config import ConfigError, Settings
from server.db.repository import TaskRepository
from server.db.session import Database
from server.deadline_interceptor import DeadlineInterceptor
from server.limits import server_options
from server.reflection import V1_SERVICE, V1ALPHA_SERVICE, enable_reflection
from server.request_decoding import RequestDecodingInterceptor
from server.services.page_tokens import PageTokenCodec
from server.services.task_service import TaskService
from server.status import ErrorStatusInterceptor

TASK_SERVICE = task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name
# The only services reachable without a token. Everything else, including methods added later, needs one.
PUBLIC_SERVICES = frozenset({health.SERVICE_NAME, V1_SERVICE, V1ALPHA_SERVICE})

_log = logging.getLogger("todo.server")


@dataclass
class TodoServer:
    """A built server: the grpc.Server, the port it bound, and what shutting it down needs."""

    grpc_server: grpc.Server
    port: int
    health: health.HealthServicer
    database: Database

    def start(self) -> None:
        self.grpc_server.start()
        for service in ("", TASK_SERVICE):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float | None) -> None:
        """Health turns NOT_SERVING, new calls are refused, in-flight calls get `grace` seconds to end."""
        self.health.enter_graceful_shutdown()
        self.grpc_server.stop(grace).wait()
        self.database.dispose()


def build_server(settings: Settings) -> TodoServer:
    """A configured, bound, not yet started server for `settings`.

    Raises ConfigError, or SchemaBehindError when the database needs `todo-server migrate`.
    """
    if settings.better_auth_secret is None:
        raise ConfigError("no token verification key is configured")
    database = Database(settings.database_url, pool_size=settings.max_workers)
    if settings.migrate:
        database.migrate()
    database.require_current_schema()  # SchemaBehindError: never serve on a schema older than this code
    verifier = TokenVerifier(
        hs256_secret=settings.better_auth_secret.reveal(), leeway_seconds=settings.jwt_leeway_seconds
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="rpc"),
        interceptors=[
            AccessLogInterceptor(),
            ErrorStatusInterceptor(),
            AuthInterceptor(verifier, public_services=PUBLIC_SERVICES),
            DeadlineInterceptor(),
            RequestDecodingInterceptor(),
        ],
        options=server_options(),
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    service = TaskService(TaskRepository(database), PageTokenCodec(settings.page_token_key()))
    task_service_pb2_grpc.add_TaskServiceServicer_to_server(service, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(server, (TASK_SERVICE, health.SERVICE_NAME))
    port = server.add_insecure_port(settings.listen)
    if port == 0:
        raise ConfigError(f"cannot listen on {settings.listen!r}: is the address in use?")
    return TodoServer(grpc_server=server, port=port, health=health_servicer, database=database)


@contextlib.contextmanager
def run_server(settings: Settings) -> Iterator[TodoServer]:
    """A started server that is stopped (without grace) when the block ends."""
    todo_server = build_server(settings)
    todo_server.start()
    try:
        yield todo_server
    finally:
        todo_server.stop(grace=None)
