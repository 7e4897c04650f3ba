"""`todo-server`: run the TaskService until SIGTERM or SIGINT, then drain and exit 0."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from server.app import build_server
from server.config import ConfigError, Settings, load_migrate_database_url, load_settings
from server.db.schema import SchemaError, current_revision
from server.db.session import Database
from server.log_format import configure_logging
from server.open_files import raise_open_files_limit
from server.workers import STOP_SIGNALS, run_workers

_log = logging.getLogger("todo.server")


def migrate(argv: Sequence[str]) -> int:
    """`todo-server migrate`: run the Alembic migrations up to head and exit."""
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        url = load_migrate_database_url(argv)
    except ConfigError as error:
        return _refuse(error)
    database = Database(url, pool_size=1)
    try:
        database.migrate()
        _log.info("the database schema is at revision %s", current_revision(database.engine))
    except SQLAlchemyError as error:
        print(f"todo-server migrate: the database refused the migration ({type(error).__name__})", file=sys.stderr)
        return 1
    finally:
        database.dispose()
    return 0


def _refuse(error: Exception) -> int:
    # One line that says what is wrong and how to fix it: an operator's first read, not a traceback.
    print(f"todo-server: {error}", file=sys.stderr)
    return 2


def _stop_on_signals() -> threading.Event:
    stopping = threading.Event()
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda *_: stopping.set())
    # A forked worker starts with them blocked (see run_workers): one sent meanwhile arrives now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    return stopping


def serve(settings: Settings) -> int:
    """Serves in this process until SIGTERM or SIGINT, then drains; the exit status."""
    stopping = _stop_on_signals()
    try:
        todo_server = build_server(settings)
    except (ConfigError, SchemaError) as error:
        return _refuse(error)
    todo_server.start()
    transport = "TLS" if settings.tls_certificate_chain else "plaintext"
    _log.info("serving todo.v1.TaskService on %s (port %d) over %s", settings.listen, todo_server.port, transport)
    if todo_server.metrics_port is not None:
        _log.info("serving Prometheus metrics on %s (port %d)", settings.metrics_listen, todo_server.metrics_port)
    # Python runs signal handlers on the main thread only: a SIGTERM the kernel hands to one of gRPC's threads
    # would leave a bare wait() blocked for good. Waking twice a second lets the handler run.
    while not stopping.wait(0.5):
        pass
    todo_server.stop(settings.grace_seconds, drain_delay=settings.drain_delay_seconds)
    _log.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["migrate"]:
        return migrate(argv[1:])
    try:
        settings = load_settings(argv)
    except ConfigError as error:
        return _refuse(error)
    if "--check-config" in argv:
        for name, value in settings.describe().items():
            print(f"{name} = {value}")
        return 0
    configure_logging(settings.log_level, settings.log_format)
    # Alembic's chatter about its context belongs to `todo-server migrate`, not to every start.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    raise_open_files_limit()  # before the workers fork: they inherit it
    if settings.workers == 1:
        return serve(settings)
    try:
        return run_workers(settings, serve, _stop_on_signals())
    except (ConfigError, SchemaError) as error:
        return _refuse(error)


if __name__ == "__main__":
    sys.exit(main())
