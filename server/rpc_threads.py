"""The executor grpcio runs calls on: a thread per call in flight, so a stalled call costs a parked thread.

grpcio's sync server waits for a unary call's request message on the executor's thread, before any of our
code runs. With a fixed pool, a client that sends HEADERS and never the message holds a worker per call,
and `--max-workers` such calls starve everyone (docs/reliability.md). Here a call never waits behind
another for a thread: an idle one takes it, or a new one is started, up to `max_threads`. How many calls
run our code at once is bounded elsewhere, once their request has arrived (server/running_calls.py).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

_log = logging.getLogger("todo.server")

_WorkItem = tuple[futures.Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class ElasticThreadPool(futures.Executor):
    """Runs each submitted call at once on an idle thread or a new one, up to `max_threads` threads.

    Past `max_threads` a call waits for a thread to finish (grpcio's `maximum_concurrent_rpcs`, set to the
    same number, refuses the excess first). A thread idle for `idle_seconds` exits, so a burst of stalled
    calls does not leave its threads behind. The last thread to go idle is the first reused, so a steady
    load keeps a few threads busy and lets the rest time out.
    """

    def __init__(self, *, max_threads: int, idle_seconds: float = 30.0, thread_name_prefix: str = "rpc") -> None:
        if max_threads < 1:
            raise ValueError(f"max_threads must be at least 1, not {max_threads}")
        self._max_threads = max_threads
        self._idle_seconds = idle_seconds
        self._name_prefix = thread_name_prefix
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._started = 0
        # Each idle thread waits on its own queue for its next item (None: exit); the list is a stack.
        self._idle: list[queue.SimpleQueue[_WorkItem | None]] = []
        self._backlog: collections.deque[_WorkItem] = collections.deque()  # only past max_threads
        self._shutdown = False

    @property
    def thread_count(self) -> int:
        """Threads alive now, busy or idle."""
        with self._lock:
            return len(self._threads)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        future: futures.Future[Any] = futures.Future()
        item: _WorkItem = (future, fn, args, kwargs)
        new_thread = None
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit a call to a thread pool that was shut down")
            if self._idle:
                handoff = self._idle.pop()
            elif len(self._threads) < self._max_threads:
                new_thread, handoff = self._new_thread()
            else:
                self._backlog.append(item)
                return future
        handoff.put(item)
        if new_thread is not None:
            self._start(new_thread, handoff)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._backlog:
                    self._backlog.popleft()[0].cancel()
            idle, self._idle = self._idle, []
            threads = list(self._threads)
        for handoff in idle:
            handoff.put(None)
        if wait:
            for thread in threads:
                if thread.is_alive():  # one a submit made but has not started yet runs its call unjoined
                    thread.join()

    def _new_thread(self) -> tuple[threading.Thread, queue.SimpleQueue[_WorkItem | None]]:
        handoff: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()
        self._started += 1
        thread = threading.Thread(
            target=self._run, args=(handoff,), name=f"{self._name_prefix}_{self._started}", daemon=True
        )
        self._threads.add(thread)
        return thread, handoff

    def _start(self, thread: threading.Thread, handoff: queue.SimpleQueue[_WorkItem | None]) -> None:
        """Starts `thread` outside the lock (threads finishing their calls need it meanwhile)."""
        try:
            thread.start()
        except RuntimeError as error:  # the OS refused one more thread (a container's pids limit, say)
            with self._lock:
                self._threads.discard(thread)
                self._backlog.append(handoff.get_nowait())  # the next thread to finish a call runs it
                running = len(self._threads)
            _log.warning("cannot start RPC thread %d (%s): the call waits for a running one", running + 1, error)

    def _run(self, handoff: queue.SimpleQueue[_WorkItem | None]) -> None:
        item = handoff.get()  # the call this thread was started for
        while item is not None:
            _run_work_item(item)
            del item  # hold no finished call's objects while idle
            item = self._next_item(handoff)
        with self._lock:
            self._threads.discard(threading.current_thread())

    def _next_item(self, handoff: queue.SimpleQueue[_WorkItem | None]) -> _WorkItem | None:
        """The next call for this thread; None once it has been idle too long or the pool is shut down."""
        with self._lock:
            if self._backlog:
                return self._backlog.popleft()
            if self._shutdown:
                return None
            self._idle.append(handoff)
        try:
            return handoff.get(timeout=self._idle_seconds)
        except queue.Empty:
            pass
        with self._lock:
            if handoff in self._idle:
                self._idle.remove(handoff)
                # Uncounted at once, so a submit at max_threads starts a thread instead of waiting for this one.
                self._threads.discard(threading.current_thread())
                return None
        return handoff.get()  # a submit took this thread just as it timed out: its item is on the way


def _run_work_item(item: _WorkItem) -> None:
    future, fn, args, kwargs = item
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = fn(*args, **kwargs)
    except BaseException as error:  # handed to the future, as ThreadPoolExecutor does
        future.set_exception(error)
    else:
        future.set_result(result)
