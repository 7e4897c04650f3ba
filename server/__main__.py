"""`todo-server`: run the TaskService until SIGTERM or SIGINT, then drain and exit 0."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence

from server.app import build_server
from server.config import ConfigError, load_settings

_log = logging.getLogger("todo.server")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except ConfigError as error:
        print(f"todo-server: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        todo_server = build_server(settings)
    except ConfigError as error:
        print(f"todo-server: {error}", file=sys.stderr)
        return 2

    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    todo_server.start()
    _log.info("serving todo.v1.TaskService on %s (port %d)", settings.listen, todo_server.port)
    stopping.wait()
    _log.info("stopping: draining in-flight calls for up to %.0fs", settings.grace_seconds)
    todo_server.stop(settings.grace_seconds)
    _log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
