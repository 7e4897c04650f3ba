"""Without PostgreSQL, its tests skip and say why; where it is required (TODO_REQUIRE_POSTGRES=1, CI) they fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.postgres import REQUIRE_POSTGRES_VARIABLE, TEST_DATABASE_URL_VARIABLE
from tests.support import unused_port

_ROOT = Path(__file__).resolve().parent.parent
_A_POSTGRES_TEST = "tests/test_connection_pool.py::test_the_pool_is_sized_to_the_rpc_threads_and_never_overflows"


def _pytest_without_postgres(**env: str) -> subprocess.CompletedProcess[str]:
    """Runs one PostgreSQL test in a child pytest, its PostgreSQL URL pointing at a port nobody listens on."""
    child_env = {key: value for key, value in os.environ.items() if key != REQUIRE_POSTGRES_VARIABLE}
    child_env[TEST_DATABASE_URL_VARIABLE] = f"postgresql+psycopg://postgres@127.0.0.1:{unused_port()}/test"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", _A_POSTGRES_TEST],
        cwd=_ROOT,
        env={**child_env, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_developer_without_postgresql_gets_skips_with_the_reason() -> None:
    run = _pytest_without_postgres()
    assert run.returncode == 0, run.stdout
    assert "1 skipped" in run.stdout
    assert "PostgreSQL tests skipped: PostgreSQL at 127.0.0.1:" in run.stdout
    assert "is unreachable" in run.stdout


def test_where_postgresql_is_required_its_absence_fails_the_run() -> None:
    run = _pytest_without_postgres(**{REQUIRE_POSTGRES_VARIABLE: "1"})
    assert run.returncode == 1, run.stdout
    assert "1 error" in run.stdout
    assert f"PostgreSQL is required ({REQUIRE_POSTGRES_VARIABLE}=1, as .ci/run sets), but" in run.stdout
    assert "Traceback" not in run.stdout
