"""`todo token --alg EdDSA` and `todo jwks --serve`: the JWKS path by hand, without a Better Auth app."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import grpc
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from server.app import run_server
from server.config import Secret, Settings
from tests.jwks_support import assert_keys_loaded

TODO = [sys.executable, "-m", "client.cli"]


def test_eddsa_token_from_the_cli_verifies_against_the_cli_served_jwks(tmp_path: Path) -> None:
    key_file = str(tmp_path / "dev.pem")
    jwks = subprocess.Popen(
        [*TODO, "jwks", "--key-file", key_file, "--serve", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        announced = jwks.stdout.readline()  # type: ignore[union-attr]
        match = re.search(r"BETTER_AUTH_URL=(http://127\.0\.0\.1:\d+)", announced)
        assert match, announced
        url = match.group(1)
        token = subprocess.run(
            [*TODO, "token", "--alg", "EdDSA", "--key-file", key_file, "--sub", "dev", "--issuer", url],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        settings = Settings(
            listen="127.0.0.1:0",
            database_url=f"sqlite:///{tmp_path / 'todo.db'}",
            better_auth_url=url,
            page_token_secret=Secret(b"p" * 32),
            max_workers=2,
            migrate=True,
        )
        with run_server(settings) as server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            assert_keys_loaded(server)
            stub = pb_grpc.TaskServiceStub(channel)
            metadata = [("authorization", f"Bearer {token}")]
            task = stub.CreateTask(
                pb.CreateTaskRequest(parent="users/me", task=pb.Task(title="t")), metadata=metadata
            )
            assert task.task.name.startswith("users/dev/tasks/")
    finally:
        jwks.terminate()
        jwks.wait(timeout=10)


def test_jwks_prints_the_public_key_only(tmp_path: Path) -> None:
    key_file = str(tmp_path / "dev.pem")
    printed = subprocess.run(
        [*TODO, "jwks", "--key-file", key_file], check=True, capture_output=True, text=True
    ).stdout
    assert '"kty": "OKP"' in printed
    assert '"d"' not in printed
