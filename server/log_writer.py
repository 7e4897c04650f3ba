"""A log handler that never makes a request thread wait: records are left in a queue that one writer thread
empties every few milliseconds, formatting them and writing them out in batches.

A plain StreamHandler formats and writes under a lock on the thread that logs: with one access log line per
RPC, 16 pool threads queued on that lock and on stderr's write(), about a fifth of a GetTask. Waking the
writer for every record (a blocking queue) cost nearly as much, in GIL hand-offs; so the writer polls.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import weakref
from typing import TextIO

# Lines waiting to be written, at most; past that (stderr blocked, say) lines are counted and dropped
# rather than kept in memory without bound or making calls wait.
MAX_PENDING = 100_000
# How long a line may wait to be written: short enough to read the log live, long enough to batch.
WRITE_INTERVAL_SECONDS = 0.02


class BackgroundLogHandler(logging.Handler):
    """Hands each record to a writer thread; `flush()` waits for it, `close()` (at exit) writes the rest."""

    def __init__(self, stream: TextIO, *, max_pending: int = MAX_PENDING) -> None:
        super().__init__()
        self._stream = stream
        self._max_pending = max_pending
        self._start_writer()
        # A forked child (--workers) has no writer thread: start its own, after writing out what the
        # parent had pending, so that no write is cut in half at the fork.
        this = weakref.ref(self)
        os.register_at_fork(
            before=lambda: (handler := this()) is not None and handler.flush(),
            after_in_child=lambda: (handler := this()) is not None and handler._start_writer(),
        )

    def _start_writer(self) -> None:
        # deque.append and popleft are atomic: no lock for the threads that log, none for the writer.
        self._pending: collections.deque[logging.LogRecord | threading.Event] = collections.deque()
        self._dropped = 0
        self._wake = threading.Event()
        self._stopping = False
        self._writer = threading.Thread(target=self._write_until_stopped, name="log-writer", daemon=True)
        self._writer.start()

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        # Without Handler's lock: emit() only appends.
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        if len(self._pending) >= self._max_pending:
            self._dropped += 1  # approximate under races; it is only reported
            return
        self._pending.append(record)

    def flush(self) -> None:
        """Returns once every record handed over before the call is written (or after 5 s)."""
        if not self._writer.is_alive():
            return
        written = threading.Event()
        self._pending.append(written)
        self._wake.set()
        written.wait(timeout=5)

    def close(self) -> None:
        if self._writer.is_alive():
            self._stopping = True
            self._wake.set()
            self._writer.join(timeout=5)
        super().close()

    def _write_until_stopped(self) -> None:
        while True:
            self._wake.wait(WRITE_INTERVAL_SECONDS)
            self._wake.clear()
            stopping = self._stopping
            self._write_pending()
            if stopping:
                self._write_pending()
                return

    def _write_pending(self) -> None:
        lines: list[str] = []
        pending = self._pending
        while pending:
            item = pending.popleft()
            if isinstance(item, threading.Event):  # a flush() waiting for the lines before it
                self._write_lines(lines)
                lines = []
                item.set()
            else:
                lines.append(self._format(item))
        self._write_lines(lines)

    def _write_lines(self, lines: list[str]) -> None:
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            lines.append(f"log-writer: {dropped} log lines dropped: the log output could not keep up")
        if lines:
            self._write("\n".join(lines) + "\n")

    def _format(self, record: logging.LogRecord) -> str:
        try:
            return self.format(record)
        except Exception:
            return f"log-writer: a {record.levelname} line from {record.name} could not be formatted"

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            pass  # stderr closed or broken: nowhere left to say so
