"""The process's limit on open files, raised at start-up to what the system allows."""

from __future__ import annotations

import logging
import resource

_log = logging.getLogger("todo.server")


def raise_open_files_limit() -> None:
    """Raises the soft limit on open files (RLIMIT_NOFILE) to the hard limit, as Go programs do at start-up.

    Every connection, finished or not, takes a descriptor. Under a soft limit of 1024 (systemd's default, and
    many shells'), 1,020 idle TCP connections, without any credentials, left grpc core no descriptor to accept
    another client ("File descriptor limit reached") until its handshake timeout (120 s) dropped them.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit is not a value every system takes for the soft one (macOS caps it): leave it.
    if hard == resource.RLIM_INFINITY or soft >= hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as error:
        _log.warning("open files limit left at %d: raising it to %d failed (%s)", soft, hard, error)
        return
    _log.debug("open files limit raised from %d to %d", soft, hard)
