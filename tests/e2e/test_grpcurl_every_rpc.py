"""grpcurl against the running todo-server, over plaintext and TLS: list, describe and every RPC."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, ServerProcess, run, start_server, stop_server
from tests.support import mint_token
from tests.tls import TlsFiles, make_tls_files

pytestmark = pytest.mark.e2e

RPCS = ("CreateTask", "GetTask", "ListTasks", "UpdateTask", "DeleteTask")


class Grpcurl:
    """grpcurl pointed at one server, the way a developer types it: -plaintext, or -cacert for TLS."""

    def __init__(self, binary: str, server: ServerProcess, transport_flags: list[str]) -> None:
        self.binary = binary
        self.server = server
        self.transport_flags = transport_flags

    def run(self, *args: str, body: dict | None = None, token: str | None = None):  # type: ignore[no-untyped-def]
        headers = ["-H", f"authorization: Bearer {token}"] if token else []
        data = ["-d", json.dumps(body)] if body is not None else []
        return run(self.binary, *self.transport_flags, *headers, *data, self.server.address, *args)

    def call(self, rpc: str, body: dict, token: str) -> dict:
        result = self.run(f"todo.v1.TaskService/{rpc}", body=body, token=token)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def failure(self, rpc: str, body: dict, token: str | None) -> str:
        result = self.run(f"todo.v1.TaskService/{rpc}", body=body, token=token)
        assert result.returncode != 0, result.stdout
        return result.stderr


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(params=["plaintext", "tls"])
def grpcurl_to(
    request: pytest.FixtureRequest, grpcurl: str, tmp_path: Path, tls_files: TlsFiles
) -> Iterator[Grpcurl]:
    if request.param == "tls":
        tls_args = ("--tls-cert", str(tls_files.server_cert), "--tls-key", str(tls_files.server_key))
        server = start_server(tmp_path, *tls_args)
        flags = ["-cacert", str(tls_files.ca_cert)]
    else:
        server = start_server(tmp_path)
        flags = ["-plaintext"]
    yield Grpcurl(grpcurl, server, flags)
    stop_server(server)


def test_list_and_describe_show_the_contract(grpcurl_to: Grpcurl) -> None:
    listed = grpcurl_to.run("list")
    assert listed.returncode == 0, listed.stderr
    assert "todo.v1.TaskService" in listed.stdout.split()
    described = grpcurl_to.run("describe", "todo.v1.TaskService")
    assert described.returncode == 0, described.stderr
    for rpc in RPCS:
        assert f"rpc {rpc} ( .todo.v1.{rpc}Request ) returns ( .todo.v1.{rpc}Response );" in described.stdout
    message = grpcurl_to.run("describe", "todo.v1.Task")
    assert "string etag = 10;" in message.stdout


def test_every_rpc_with_json_and_a_bearer_token(grpcurl_to: Grpcurl) -> None:
    token = mint_token(grpcurl_to.server.secret.encode(), "alice")
    request_id = str(uuid.uuid4())
    create = {
        "parent": "users/me",
        "task": {"title": "Buy milk", "priority": "PRIORITY_HIGH"},
        "request_id": request_id,
    }
    created = grpcurl_to.call("CreateTask", create, token)["task"]
    assert created["name"].startswith("users/alice/tasks/")
    assert (created["title"], created["priority"]) == ("Buy milk", "PRIORITY_HIGH")
    assert grpcurl_to.call("CreateTask", create, token)["task"] == created  # same request_id: same task

    assert grpcurl_to.call("GetTask", {"name": created["name"]}, token) == {"task": created}
    listed = grpcurl_to.call("ListTasks", {"parent": "users/me", "page_size": 10}, token)
    assert listed == {"tasks": [created], "total_size": 1}

    update = {
        "task": {"name": created["name"], "title": "Buy oat milk", "completed": True},
        "update_mask": {"paths": ["title", "completed"]},
    }
    updated = grpcurl_to.call("UpdateTask", update, token)["task"]
    assert (updated["title"], updated["completed"]) == ("Buy oat milk", True)
    assert "complete_time" in updated

    stale = grpcurl_to.failure("DeleteTask", {"name": created["name"], "etag": created["etag"]}, token)
    assert "Code: Aborted" in stale
    assert grpcurl_to.call("DeleteTask", {"name": created["name"], "etag": updated["etag"]}, token) == {}
    gone = grpcurl_to.failure("GetTask", {"name": created["name"]}, token)
    assert "Code: NotFound" in gone


def test_errors_come_back_as_grpcurl_codes(grpcurl_to: Grpcurl) -> None:
    token = mint_token(grpcurl_to.server.secret.encode(), "alice")
    assert "Code: Unauthenticated" in grpcurl_to.failure("ListTasks", {"parent": "users/me"}, None)
    assert "Code: PermissionDenied" in grpcurl_to.failure("ListTasks", {"parent": "users/bob"}, token)
    invalid = grpcurl_to.failure("CreateTask", {"parent": "users/me", "task": {"title": ""}}, token)
    assert "Code: InvalidArgument" in invalid
    assert "task.title" in invalid


def test_a_tls_server_refuses_plaintext_grpcurl(grpcurl: str, tmp_path: Path, tls_files: TlsFiles) -> None:
    server = start_server(
        tmp_path, "--tls-cert", str(tls_files.server_cert), "--tls-key", str(tls_files.server_key)
    )
    try:
        assert "over TLS" in server.log()
        result = run(grpcurl, "-plaintext", "-max-time", "5", server.address, "list")
        assert result.returncode != 0
        unknown_ca = run(grpcurl, "-max-time", "5", server.address, "list")  # the system CAs do not know ours
        assert unknown_ca.returncode != 0
        assert "certificate" in unknown_ca.stderr
    finally:
        stop_server(server)


def test_an_unreadable_certificate_stops_the_server_at_start(tmp_path: Path, tls_files: TlsFiles) -> None:
    missing = tmp_path / "missing.pem"
    result = run(
        str(BIN / "todo-server"),
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        str(missing),
        "--tls-key",
        str(tls_files.server_key),
        env={"BETTER_AUTH_SECRET": "s" * 48, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"todo-server: --tls-cert '{missing}' cannot be read: No such file or directory"
    ]
