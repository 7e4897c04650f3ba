"""A log handler that never makes a request thread wait: records go to one writer thread, which formats
them and writes them out in batches.

A plain StreamHandler formats and writes under a lock on the thread that logs: with one access log line per
RPC, 16 pool threads queued on that lock and on stderr's write(), about a fifth of a GetTask.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import weakref
from typing import TextIO

# Lines waiting to be written, at most; past that (stderr blocked, say) lines are counted and dropped
# rather than kept in memory without bound or making calls wait.
MAX_PENDING = 100_000
_BATCH = 512
_STOP = object()


class BackgroundLogHandler(logging.Handler):
    """Hands each record to a writer thread; `close()` (run by logging at exit) writes what is left."""

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
        self._pending: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._dropped = 0
        self._writer = threading.Thread(target=self._write_until_stopped, name="log-writer", daemon=True)
        self._writer.start()

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        # No lock: SimpleQueue.put is atomic, and emit() does nothing else.
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        if self._pending.qsize() >= self._max_pending:
            self._dropped += 1
            return
        self._pending.put(record)

    def flush(self) -> None:
        """Waits until every record handed over so far is written."""
        if not self._writer.is_alive():
            return
        written = threading.Event()
        self._pending.put(written)
        written.wait(timeout=5)

    def close(self) -> None:
        if self._writer.is_alive():
            self._pending.put(_STOP)
            self._writer.join(timeout=5)
        super().close()

    def _write_until_stopped(self) -> None:
        while True:
            batch = [self._pending.get()]
            while len(batch) < _BATCH:
                try:
                    batch.append(self._pending.get_nowait())
                except queue.Empty:
                    break
            lines, done, stop = [], [], False
            for item in batch:
                if item is _STOP:
                    stop = True
                elif isinstance(item, threading.Event):
                    done.append(item)
                elif isinstance(item, logging.LogRecord):
                    lines.append(self._format(item))
            if self._dropped:
                dropped, self._dropped = self._dropped, 0
                lines.append(f"log-writer: {dropped} log lines dropped: the log output could not keep up")
            if lines:
                self._write("\n".join(lines) + "\n")
            for event in done:
                event.set()
            if stop:
                return

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
