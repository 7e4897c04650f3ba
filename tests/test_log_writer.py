"""The background log handler: lines come out whole, in order, all of them, also from a forked worker."""

from __future__ import annotations

import io
import logging
import os
import threading

import pytest

from server.log_writer import BackgroundLogHandler


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    return logger


def test_lines_from_many_threads_are_all_written_whole_and_in_each_threads_order() -> None:
    stream = io.StringIO()
    handler = BackgroundLogHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = _logger(handler, "test.log_writer.threads")

    def write(thread: int) -> None:
        for n in range(2000):
            logger.info("thread=%d n=%d", thread, n)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handler.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 8 * 2000
    for t in range(8):
        assert [line for line in lines if line.startswith(f"thread={t} ")] == [
            f"thread={t} n={n}" for n in range(2000)
        ]
    handler.close()


def test_close_writes_what_is_still_pending() -> None:
    stream = io.StringIO()
    handler = BackgroundLogHandler(stream)
    logger = _logger(handler, "test.log_writer.close")
    for n in range(500):
        logger.info("line %d", n)
    handler.close()
    assert stream.getvalue().splitlines()[-1] == "line 499"


class _Blocked(io.StringIO):
    """A stream whose writes wait until released, like stderr whose reader stopped reading."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.release.wait(10)
        return super().write(text)


def test_a_blocked_stream_never_blocks_the_caller_and_the_drops_are_reported() -> None:
    stream = _Blocked()
    handler = BackgroundLogHandler(stream, max_pending=100)
    logger = _logger(handler, "test.log_writer.blocked")
    for n in range(1000):  # returns at once although nothing can be written
        logger.info("line %d", n)
    stream.release.set()
    handler.flush()
    handler.close()
    output = stream.getvalue()
    assert "log lines dropped: the log output could not keep up" in output
    assert 100 <= len(output.splitlines()) < 1000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_writes_its_own_lines(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "log.txt"
    with path.open("w") as stream:
        handler = BackgroundLogHandler(stream)
        logger = _logger(handler, "test.log_writer.fork")
        logger.info("parent before fork")
        pid = os.fork()
        if pid == 0:  # the child: log, write out, leave without running the parent's cleanup
            try:
                logger.info("child")
                handler.close()
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        logger.info("parent after fork")
        handler.close()
    assert os.waitstatus_to_exitcode(status) == 0
    lines = path.read_text().splitlines()
    assert lines.count("parent before fork") == 1  # written before the fork, not again by the child
    assert "child" in lines
    assert "parent after fork" in lines
