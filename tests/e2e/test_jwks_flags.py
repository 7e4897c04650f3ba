"""The JWKS refresh interval and unknown-kid refetch limit, set by flag on a real todo-server process."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import grpc
import pytest
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from tests.e2e.conftest import start_server, stop_server
from tests.jwks_support import JwksServer, claims_for, new_key
from tests.support import failure_of, wait_until

pytestmark = pytest.mark.e2e


def test_refresh_interval_and_refetch_limit_flags_reach_the_key_cache(tmp_path: Path) -> None:
    key = new_key()
    with JwksServer([key]).running() as jwks:
        server = start_server(
            tmp_path,
            *("--jwks-refresh-seconds", "0.3", "--jwks-min-refetch-seconds", "0.05"),
            env={"BETTER_AUTH_URL": jwks.base_url, "TODO_PAGE_TOKEN_SECRET": secrets.token_urlsafe(48)},
        )
        try:
            assert wait_until(lambda: jwks.fetches >= 1)
            first = jwks.fetches
            time.sleep(1.5)
            assert jwks.fetches - first >= 3  # every 0.3 s, not every 300 s

            with grpc.insecure_channel(server.address) as channel:
                stub = pb_grpc.TaskServiceStub(channel)
                request = pb.ListTasksRequest(parent="users/me")
                claims = claims_for("kidflood", issuer=jwks.base_url, audience=jwks.base_url)
                before = jwks.fetches
                started = time.monotonic()
                for i in range(20):
                    time.sleep(0.06)  # just over the 0.05 s limit: each unknown kid may refetch
                    forged = new_key().sign(claims, kid=f"made-up-{i}")
                    metadata = [("authorization", f"Bearer {forged}")]
                    failure = failure_of(lambda m=metadata: stub.ListTasks(request, metadata=m, timeout=10))
                    assert failure.reason == "TOKEN_INVALID"
                elapsed = time.monotonic() - started
            # The default limit (one refetch per 10 s) would allow 1 or 2 here, the 0.3 s refreshes a few more.
            refetches = jwks.fetches - before
            assert refetches >= 12, (refetches, elapsed)
            assert refetches > elapsed / 0.3 + 2, (refetches, elapsed)
        finally:
            assert stop_server(server) == 0
