"""Fault runs: short in `make test`, long in `make soak`, which also writes their table to docs/reliability.md."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.report import FaultRow, write_report

SOAK = os.environ.get("TODO_SOAK") == "1"
_REPORT = os.environ.get("TODO_RELIABILITY_REPORT")


@pytest.fixture(scope="session")
def load_seconds() -> float:
    """How long load runs before and after each fault: a moment in `make test`, longer in `make soak`."""
    return 15.0 if SOAK else 0.5


@pytest.fixture(scope="session")
def fault_report() -> Iterator[list[FaultRow]]:
    rows: list[FaultRow] = []
    yield rows
    if _REPORT and rows:
        write_report(Path(_REPORT), sorted(rows, key=lambda row: row.fault), command="make soak")
