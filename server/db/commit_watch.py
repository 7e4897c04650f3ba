"""Cancels a PostgreSQL COMMIT still running when its call must be done (server/call_deadline.py: the call's
deadline, or the end of the server's drain).

statement_timeout does not reach a COMMIT: PostgreSQL turns it off before the commit's own work (deferred
constraint triggers, the WAL flush, a synchronous standby's reply) begins (`finish_xact_command` in
postgres.c; `tests/faults/test_deadlines.py` shows a COMMIT running 3 s past a 0.5 s timeout). A cancel request
does reach it, and PostgreSQL's contract for one is: the command ends with an error, its transaction rolled
back, or, if it came too late, nothing happens (the COMMIT answers as usual). So the caller is told what
happened either way: OK and saved, or DEADLINE_EXCEEDED / UNAVAILABLE and nothing saved, before grpcio ends the
call. The one part a cancel cannot cut is the commit record's own write and flush (PostgreSQL holds interrupts
there): a disk that stalls it past the drain's margin is the limit left (docs/reliability.md).

One thread watches every COMMIT in flight; it costs a COMMIT a lock and a set entry, and a cancel request (a
connection to the server) only when one runs out of time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from server import call_deadline

_log = logging.getLogger("todo.db")

# A cancel that reached the server before the COMMIT did is ignored there: sent again until the COMMIT ends.
_RESEND_SECONDS = 0.1


class _Commit:
    __slots__ = ("call_expires_at", "cancel", "done", "lock", "resend_at")

    def __init__(self, cancel: Callable[[], None], call_expires_at: float | None) -> None:
        self.cancel = cancel
        self.call_expires_at = call_expires_at
        self.lock = threading.Lock()  # held while cancelling: once `done` is set, no cancel is sent any more
        self.done = False
        self.resend_at: float | None = None

    def expires_at(self, drain_ends_at: float | None) -> float | None:
        if self.resend_at is not None:
            return self.resend_at
        return call_deadline.sooner(self.call_expires_at, drain_ends_at)


class CommitWatch:
    """`with watch.watching(cancel): connection.commit()` has `cancel` called if the COMMIT is still running
    when the running call must be done, even if the server's drain begins meanwhile."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._running: set[_Commit] = set()
        self._thread: threading.Thread | None = None
        self._wakes_at: float | None = None  # when the thread next looks, None: when told to
        call_deadline.on_drain(self._wake)

    @contextmanager
    def watching(self, cancel: Callable[[], None]) -> Iterator[None]:
        commit = _Commit(cancel, call_deadline.expires_at())
        with self._condition:
            self._running.add(commit)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="commit-watch", daemon=True)
                self._thread.start()
            expires_at = commit.expires_at(call_deadline.drain_ends_at())
            if expires_at is not None and (self._wakes_at is None or expires_at < self._wakes_at):
                self._condition.notify()
        try:
            yield
        finally:
            with commit.lock:
                commit.done = True
            with self._condition:
                self._running.discard(commit)

    def _wake(self) -> None:
        with self._condition:
            self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                due = self._due(time.monotonic())
                if not due:
                    wait = None if self._wakes_at is None else self._wakes_at - time.monotonic()
                    self._condition.wait(wait)
                    continue
            for commit in due:
                with commit.lock:
                    if commit.done:
                        continue
                    try:
                        commit.cancel()
                    except Exception as error:  # the server unreachable: the COMMIT ends with its connection
                        _log.warning("could not cancel a COMMIT past its deadline: %s", type(error).__name__)

    def _due(self, now: float) -> list[_Commit]:
        """The COMMITs to cancel now; sets when to look next."""
        drain_ends_at = call_deadline.drain_ends_at()
        due, wakes_at = [], None
        for commit in self._running:
            expires_at = commit.expires_at(drain_ends_at)
            if expires_at is None:
                continue
            if expires_at <= now:
                due.append(commit)
                commit.resend_at = expires_at = now + _RESEND_SECONDS
            wakes_at = expires_at if wakes_at is None else min(wakes_at, expires_at)
        self._wakes_at = wakes_at
        return due


COMMITS = CommitWatch()
