"""What the readiness checks log: a warning when a server that was ready stops being so, not while it starts."""

from __future__ import annotations

import logging

import pytest

from server.readiness import Readiness


def test_a_check_still_loading_at_start_is_not_a_warning_but_a_later_failure_is(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loaded = {"jwks": False}
    changes: list[bool] = []
    readiness = Readiness(interval_seconds=1, on_change=changes.append)
    readiness.add_check("jwks", lambda: loaded["jwks"])
    try:
        with caplog.at_level(logging.INFO, logger="todo.readiness"):
            assert not readiness.check_now()  # the first JWKS fetch has not finished yet
            loaded["jwks"] = True
            assert readiness.check_now()
            loaded["jwks"] = False
            assert not readiness.check_now()
            loaded["jwks"] = True
            assert readiness.check_now()
    finally:
        readiness.stop()
    logged = [(record.levelname, record.getMessage()) for record in caplog.records]
    assert logged == [
        ("INFO", "not ready yet: waiting for jwks"),
        ("INFO", "ready"),
        ("WARNING", "not ready: jwks failing"),
        ("INFO", "ready again"),
    ]
    assert changes == [False, True, False, True]
