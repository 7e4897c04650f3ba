"""Opening a PostgreSQL connection ends at the call's deadline: a database host that accepts TCP and never
answers (a stuck proxy, a failover half done) holds a call's thread no longer than its caller waits."""

from __future__ import annotations

import contextvars
import socket
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, exc

from server import call_deadline
from server.db.connections import POSTGRES_CONNECT_TIMEOUT_SECONDS, CallExpired, configure, create_engine_for

# psycopg (like libpq) waits at least 2 s for a connection, whatever connect_timeout asks for.
_SHORTEST_CONNECT_WAIT_SECONDS = 2


@pytest.fixture
def silent_host() -> Iterator[str]:
    """The URL of a "database" whose port accepts connections (the kernel's backlog) and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{listener.getsockname()[1]}/todo"


@pytest.fixture
def engine(silent_host: str) -> Iterator[Engine]:
    engine = create_engine_for(silent_host, pool_size=1)
    configure(engine)
    yield engine
    engine.dispose()


def _connect_in_a_call(engine: Engine, seconds_remaining: float) -> float:
    """Seconds a call with `seconds_remaining` waited for its connection, which never came."""

    def connect() -> float:
        call_deadline.set_call_deadline(seconds_remaining)
        started = time.monotonic()
        with pytest.raises((exc.OperationalError, CallExpired)):
            engine.connect()
        return time.monotonic() - started

    return contextvars.Context().run(connect)


def test_a_call_with_a_short_deadline_waits_for_a_silent_host_only_as_long_as_psycopg_allows(
    engine: Engine,
) -> None:
    waited = _connect_in_a_call(engine, 0.3)
    assert waited < _SHORTEST_CONNECT_WAIT_SECONDS + 1 < POSTGRES_CONNECT_TIMEOUT_SECONDS


def test_a_call_whose_deadline_passed_does_not_try_to_connect(engine: Engine) -> None:
    with pytest.raises(CallExpired):
        contextvars.Context().run(lambda: (call_deadline.set_call_deadline(-1), engine.connect()))
