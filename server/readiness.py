"""Readiness: named checks run by one background thread, never on the request path; health follows them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

_log = logging.getLogger("todo.readiness")

Check = Callable[[], bool]


class Readiness:
    """Ready when every named check passes. `on_change(ready)` is called whenever that flips.

    Add checks before `start()`, e.g. `readiness.add_check("jwks", fetcher.has_keys)`. A check must return
    quickly-ish and must not raise (an exception counts as not ready); it runs on the checker thread.
    """

    def __init__(self, *, interval_seconds: float, on_change: Callable[[bool], None]) -> None:
        self._interval = interval_seconds
        self._on_change = on_change
        self._checks: dict[str, Check] = {}
        self._failing: frozenset[str] | None = None  # None until the first round
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def add_check(self, name: str, check: Check) -> None:
        if self._thread is not None:
            raise RuntimeError("add readiness checks before start()")
        self._checks[name] = check

    @property
    def failing(self) -> frozenset[str]:
        """The names of the checks that failed in the last round."""
        return self._failing or frozenset()

    def check_now(self) -> bool:
        """Runs every check once, reports a change of readiness, and returns whether all passed."""
        failing = frozenset(name for name, check in self._checks.items() if not _passes(name, check))
        first_round, self._failing, previous = self._failing is None, failing, self._failing
        if failing != previous:
            if failing:
                _log.warning("not ready: %s failing", ", ".join(sorted(failing)))
            elif not first_round:
                _log.info("ready again")
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
            self._thread.join(timeout=self._interval + 5)

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            self.check_now()


def _passes(name: str, check: Check) -> bool:
    try:
        return bool(check())
    except Exception as error:
        _log.warning("readiness check %s raised %s", name, type(error).__name__)
        return False
