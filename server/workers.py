"""`--workers N`: N server processes on one port (SO_REUSEPORT), since one Python process uses one core."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator

from server.config import ConfigError, Settings
from server.db.session import Database
from server.metrics import check_metrics_address, serve_shared_metrics, share_between_processes

_log = logging.getLogger("todo.server")

# The signals that stop a server (and each worker) gracefully.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


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

    Raises ConfigError if the port is taken, SchemaError if the server cannot run on the database's schema.

    `stopping` (set by the parent's signal handlers) sends SIGTERM to every worker, which drains as
    one server would. A worker that dies stops the others: a half-size pool should not pass for healthy.
    """
    # Migrate (with --migrate) and check the schema once, here, rather than N times in a race.
    database = Database(settings.database_url, pool_size=1)
    try:
        if settings.migrate:
            database.migrate()
        database.require_current_schema()
    finally:
        database.dispose()
    settings = dataclasses.replace(settings, migrate=False)
    with _shared_metrics_directory(settings.metrics_listen) as metrics_directory:
        return _fork_workers(settings, serve, stopping, metrics_directory)


@contextlib.contextmanager
def _shared_metrics_directory(metrics_listen: str | None) -> Iterator[str | None]:
    """With --metrics-listen, a fresh directory the workers write their metrics to (removed at the end)."""
    if metrics_listen is None:
        yield None
        return
    check_metrics_address(metrics_listen)  # a taken port stops the start before any worker exists
    directory = tempfile.mkdtemp(prefix="todo-metrics-")
    try:
        share_between_processes(directory)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _fork_workers(
    settings: Settings,
    serve: Callable[[Settings], int],
    stopping: threading.Event,
    metrics_directory: str | None,
) -> int:
    # fork, before this process has made any grpc object: each worker builds its own server.
    context = multiprocessing.get_context("fork")
    with reserved_port(settings.listen) as port:
        host, _ = _host_and_port(settings.listen)
        # The workers do not serve metrics themselves: this process serves their sum.
        shared = dataclasses.replace(
            settings, listen=f"[{host}]:{port}" if ":" in host else f"{host}:{port}", metrics_listen=None
        )
        workers = [
            context.Process(target=_exit_with, args=(serve, shared), name=f"todo-worker-{n}", daemon=False)
            for n in range(settings.workers)
        ]
        # Until a worker has its own signal handlers, SIGTERM would reach the parent's, copied at fork, and
        # be lost: the worker would serve on. Blocked here, it waits for the worker to unblock it.
        inherited = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            for worker in workers:
                worker.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, inherited)
        _log.info("started %d workers sharing port %d", len(workers), port)
        metrics_server = None
        try:
            if metrics_directory is not None and settings.metrics_listen is not None:
                # Started after the fork, so no worker inherits its socket or its thread.
                metrics_server = serve_shared_metrics(metrics_directory, settings.metrics_listen)
                _log.info(
                    "serving Prometheus metrics of all %d workers on %s (port %d)",
                    len(workers), settings.metrics_listen, metrics_server.server_port,
                )  # fmt: skip
            while not stopping.wait(0.5):
                if any(not worker.is_alive() for worker in workers):
                    _log.error("a worker exited; stopping the others")
                    break
        finally:
            _stop(workers, settings.drain_delay_seconds + settings.grace_seconds)
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
    return 0 if stopping.is_set() and all(worker.exitcode == 0 for worker in workers) else 1


def _stop(workers: list[multiprocessing.process.BaseProcess], stop_seconds: float) -> None:
    for worker in workers:
        if worker.is_alive():
            worker.terminate()  # SIGTERM: the worker drains in-flight calls, then exits 0
    for worker in workers:
        worker.join(stop_seconds + 10)
        if worker.is_alive():
            worker.kill()
            worker.join()


def _exit_with(serve: Callable[[Settings], int], settings: Settings) -> None:
    try:
        raise SystemExit(serve(settings))
    finally:
        # A forked worker leaves through os._exit, past atexit: write out its last log lines here.
        logging.shutdown()
