"""A token from a real Better Auth app (npm `better-auth`, jwt plugin), verified via BETTER_AUTH_URL alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from server.app import run_server
from server.config import Secret, Settings
from tests.jwks_support import assert_keys_loaded

APP_DIR = Path(__file__).parent / "better_auth"


@pytest.fixture(scope="module")
def better_auth_app() -> Iterator[dict[str, str]]:
    """The Better Auth app's base URL, a user's JWT from /api/auth/token and that user's id."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("the Better Auth test needs Node.js and npm on PATH (it runs npm's better-auth)")
    if not (APP_DIR / "node_modules" / "better-auth").is_dir():
        installed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=APP_DIR, capture_output=True, timeout=300
        )
        if installed.returncode != 0:
            pytest.fail(f"npm ci in {APP_DIR} failed: {installed.stderr.decode()[-2000:]}")
    app = subprocess.Popen(
        [node, "issue_token.mjs"], cwd=APP_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(app.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout=60)
        if not line or not line[0]:
            pytest.fail("the Better Auth app printed no token within 60 s")
        yield json.loads(line[0])
    finally:
        app.stdin.close()  # type: ignore[union-attr]
        try:
            app.wait(timeout=10)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait()


def test_a_real_better_auth_token_is_verified_via_better_auth_url_alone(
    better_auth_app: dict[str, str], tmp_path: Path
) -> None:
    settings = Settings(
        listen="127.0.0.1:0",
        database_url=f"sqlite:///{tmp_path / 'todo.db'}",
        better_auth_url=better_auth_app["baseURL"],
        page_token_secret=Secret(b"p" * 32),
        max_workers=2,
        migrate=True,
    )
    with run_server(settings) as server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        assert_keys_loaded(server)
        stub = pb_grpc.TaskServiceStub(channel)
        metadata = [("authorization", f"Bearer {better_auth_app['token']}")]
        task = stub.CreateTask(
            pb.CreateTaskRequest(parent="users/me", task=pb.Task(title="from Better Auth")),
            metadata=metadata,
            timeout=10,
        ).task
        assert task.name.startswith(f"users/{better_auth_app['userId']}/tasks/")
        assert [
            t.title for t in stub.ListTasks(pb.ListTasksRequest(parent="users/me"), metadata=metadata).tasks
        ] == ["from Better Auth"]
