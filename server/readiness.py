"""Readiness: named checks run in the background, never on the request path; health follows them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent import futures

_log = logging.getLogger("todo.readiness")

Check = Callable[[], bool]


class Readiness:
    """Ready when every named check passes within the interval. `on_change(ready)` is called on each flip.

    Add checks before `start()`, e.g. `readiness.add_check("database", database.ping)`. Each check runs on
    a thread of its own; one that raises, returns false, or has not answered within `interval_seconds`
    (a database that hangs instead of refusing) counts as failing until it answers true again.
    """

    def __init__(self, *, interval_seconds: float, on_change: Callable[[bool], None]) -> None:
        self._interval = interval_seconds
        self._on_change = on_change
        self._checks: dict[str, Check] = {}
        self._running: dict[str, futures.Future[bool]] = {}
        self._failing: frozenset[str] | None = None  # None until the first round
        self._was_ready = False
        self._round = threading.Lock()  # the checker thread and callers like the JWKS cache may both run one
        self._stopping = threading.Event()
        self._executor: futures.ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None

    def add_check(self, name: str, check: Check) -> None:
        if self._executor is not None:
            raise RuntimeError("add readiness checks before start()")
        self._checks[name] = check

    @property
    def failing(self) -> frozenset[str]:
        """The names of the checks that failed in the last round."""
        return self._failing or frozenset()

    def check_now(self) -> bool:
        """Runs every check once, reports a change of readiness, and returns whether all passed.

        Safe from any thread (the JWKS cache calls it when its first keys load); rounds never overlap.
        """
        with self._round:
            if self._executor is None:
                self._executor = futures.ThreadPoolExecutor(
                    max_workers=max(1, len(self._checks)), thread_name_prefix="readiness"
                )
            for name, check in self._checks.items():
                if name not in self._running or self._running[name].done():  # a hung check is not run twice
                    self._running[name] = self._executor.submit(_passes, name, check)
            futures.wait(self._running.values(), timeout=self._interval)
            failing = frozenset(
                name for name, running in self._running.items() if not (running.done() and running.result())
            )
            first_round, self._failing, previous = self._failing is None, failing, self._failing
            if failing != previous:
                names = ", ".join(sorted(failing))
                if failing and self._was_ready:
                    _log.warning("not ready: %s failing", names)
                elif failing:  # still starting (the first JWKS fetch, say): what fails to load warns itself
                    _log.info("not ready yet: waiting for %s", names)
                elif not first_round:
                    _log.info("ready again" if self._was_ready else "ready")
            self._was_ready = self._was_ready or not failing
            if first_round or bool(failing) != bool(previous):
                self._on_change(not failing)
            return not failing

    def start(self) -> None:
        """Checks once now (so a server starts with a true status), then every interval on a daemon thread."""
        self.check_now()
        self._thread = threading.Thread(target=self._run, name="readiness", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self._interval + 5)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)  # never wait on a hung check

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            self.check_now()


def _passes(name: str, check: Check) -> bool:
    try:
        return bool(check())
    except Exception as error:
        _log.warning("readiness check %s raised %s", name, type(error).__name__)
        return False
