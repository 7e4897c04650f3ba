"""`--workers N`: N server processes on one port (SO_REUSEPORT), since one Python process uses one core."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import socket
import threading
from collections.abc import Callable, Iterator

from server.config import ConfigError, Settings
from server.db.session import Database

_log = logging.getLogger("todo.server")


def _host_and_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    try:
        return host.strip("[]") or "::", int(port)
    except ValueError:
        raise ConfigError(f"cannot share {listen!r} between workers: give it as host:port") from None


@contextlib.contextmanager
def reserved_port(listen: str) -> Iterator[int]:
    """Holds `listen`'s port (a free one for port 0) with SO_REUSEPORT, not listening, while workers bind it.

    Holding it keeps a server started without --workers from taking the port, and tells every worker
    which port to share when `listen` asks for any.
    """
    host, port = _host_and_port(listen)
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            holder.bind((host, port))
        except OSError as error:
            raise ConfigError(f"cannot listen on {listen!r}: {error.strerror}") from None
        yield holder.getsockname()[1]


def run_workers(settings: Settings, serve: Callable[[Settings], int], stopping: threading.Event) -> int:
    """Forks `settings.workers` processes that each `serve` on one shared port; 0 if all exit cleanly.

    Raises ConfigError if the port is taken, SchemaBehindError if the database needs migrating.

    `stopping` (set by the parent's signal handlers) sends SIGTERM to every worker, which drains as
    one server would. A worker that dies stops the others: a half-size pool should not pass for healthy.
    """
    if settings.metrics_listen is not None:
        raise ConfigError("--metrics-listen does not work with --workers > 1 yet: workers would share its port")
    # Migrate (with --migrate) and check the schema once, here, rather than N times in a race.
    database = Database(settings.database_url, pool_size=1)
    try:
        if settings.migrate:
            database.migrate()
        database.require_current_schema()
    finally:
        database.dispose()
    settings = dataclasses.replace(settings, migrate=False)
    # fork, before this process has made any grpc object: each worker builds its own server.
    context = multiprocessing.get_context("fork")
    with reserved_port(settings.listen) as port:
        host, _ = _host_and_port(settings.listen)
        shared = dataclasses.replace(settings, listen=f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        workers = [
            context.Process(target=_exit_with, args=(serve, shared), name=f"todo-worker-{n}", daemon=False)
            for n in range(settings.workers)
        ]
        for worker in workers:
            worker.start()
        _log.info("started %d workers sharing port %d", len(workers), port)
        while not stopping.wait(0.5):
            if any(not worker.is_alive() for worker in workers):
                _log.error("a worker exited; stopping the others")
                break
        for worker in workers:
            if worker.is_alive():
                worker.terminate()  # SIGTERM: the worker drains in-flight calls, then exits 0
        for worker in workers:
            worker.join(settings.grace_seconds + 10)
            if worker.is_alive():
                worker.kill()
                worker.join()
    return 0 if stopping.is_set() and all(worker.exitcode == 0 for worker in workers) else 1


def _exit_with(serve: Callable[[Settings], int], settings: Settings) -> None:
    raise SystemExit(serve(settings))
