"""When TaskClient sends an UpdateTask or DeleteTask again, which the channel never does: a reply lost to a
broken connection (a replica killed, a network cut) says nothing of whether the write was done, and sent again
it would fail on its own change (ABORTED, NOT_FOUND). Only the server's own UNAVAILABLE, which carries its
ErrorInfo, says that nothing was written; that one is sent again, as the channel's policy would."""

from __future__ import annotations

import random
from collections.abc import Iterator

import grpc

from client.channel import RETRY_POLICY
from client.errors import COMMIT_OUTCOME_UNKNOWN, TaskServiceError

_MAX_ATTEMPTS = int(RETRY_POLICY["maxAttempts"])
_INITIAL_BACKOFF = float(str(RETRY_POLICY["initialBackoff"]).removesuffix("s"))
_MAX_BACKOFF = float(str(RETRY_POLICY["maxBackoff"]).removesuffix("s"))


def nothing_written(error: TaskServiceError) -> bool:
    """Whether the server itself said that nothing was written: UNAVAILABLE with its ErrorInfo reason."""
    return error.code == grpc.StatusCode.UNAVAILABLE and error.reason not in (None, COMMIT_OUTCOME_UNKNOWN)


def backoffs() -> Iterator[float]:
    """The waits before each attempt after the first, drawn as gRPC draws the channel's (gRFC A6)."""
    ceiling = _INITIAL_BACKOFF
    for _ in range(_MAX_ATTEMPTS - 1):
        yield random.uniform(0, ceiling)  # noqa: S311 -- jitter, not a secret
        ceiling = min(ceiling * 2, _MAX_BACKOFF)
