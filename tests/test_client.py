"""TaskClient against a real server: the calls, every error class, token refresh, retries and TLS."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from client import (
    Aborted,
    AlreadyExists,
    Connection,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    OutcomeUnknown,
    PermissionDenied,
    TaskClient,
    TaskServiceError,
    Unauthenticated,
    Unavailable,
)
from client.channel import open_aio_channel, open_channel
from server.app import TodoServer, build_server, run_server
from server.config import Secret, Settings
from tests.support import mint_token, unused_port
from tests.tls import TlsFiles, make_tls_files


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The client does not care which database the server uses: SQLite keeps this module quick."""
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'todo.db'}"


@pytest.fixture
def connect(secret: bytes, todo_server: TodoServer) -> Iterator[Callable[..., TaskClient]]:
    """Opens TaskClients to the module's server (as a fresh user unless a token is given), closed after."""
    opened: list[TaskClient] = []

    def open_client(**options: object) -> TaskClient:
        if "token" not in options and "token_provider" not in options:
            options["token"] = mint_token(secret, f"user{secrets.token_hex(6)}")
        client = TaskClient(f"127.0.0.1:{todo_server.port}", **options)  # type: ignore[arg-type]
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


def test_create_get_update_delete_round_trip(connect: Callable[..., TaskClient]) -> None:
    client = connect()
    due = datetime(2030, 1, 2, 9, 30, tzinfo=UTC)
    created = client.create_task("Buy milk", priority="high", due_time=due, description="2 litres")
    assert isinstance(created, pb.Task)
    assert (created.title, created.priority, created.description) == ("Buy milk", pb.PRIORITY_HIGH, "2 litres")
    assert created.due_time.ToDatetime(tzinfo=UTC) == due
    task_id = created.name.rsplit("/", 1)[1]
    assert client.get_task(task_id) == created
    assert client.get_task(created.name) == created

    done = client.update_task(task_id, completed=True, title="Buy oat milk")
    assert (done.completed, done.title, done.priority) == (True, "Buy oat milk", pb.PRIORITY_HIGH)
    client.delete_task(created.name)
    with pytest.raises(NotFound) as raised:
        client.get_task(task_id)
    assert raised.value.code == grpc.StatusCode.NOT_FOUND


def test_update_can_clear_the_due_date_priority_and_description(connect: Callable[..., TaskClient]) -> None:
    client = connect()
    due = datetime(2030, 1, 2, 9, 30, tzinfo=UTC)
    task = client.create_task("Dentist", priority="high", due_time=due, description="bring the card")
    cleared = client.update_task(task.name, clear=["due_time", "priority", "description"])
    assert not cleared.HasField("due_time")
    assert (cleared.priority, cleared.description, cleared.title) == (pb.PRIORITY_UNSPECIFIED, "", "Dentist")
    assert client.get_task(task.name) == cleared
    with pytest.raises(ValueError, match="both set and cleared"):
        client.update_task(task.name, due_time=due, clear=["due_time"])
    with pytest.raises(ValueError, match="cannot clear 'title'"):
        client.update_task(task.name, clear=["title"])


def test_iter_tasks_walks_every_page_with_filters(connect: Callable[..., TaskClient]) -> None:
    client = connect()
    titles = [f"task {n}" for n in range(5)]
    for title in titles:
        client.create_task(title)
    client.update_task(client.list_tasks(query="task 3").tasks[0].name, completed=True)

    first_page = client.list_tasks(page_size=2, order_by="title")
    assert [t.title for t in first_page.tasks] == ["task 0", "task 1"]
    assert first_page.next_page_token
    assert [t.title for t in client.iter_tasks(page_size=2, order_by="title")] == titles
    assert [t.title for t in client.iter_tasks(page_size=2, completed=False, order_by="title")] == [
        "task 0",
        "task 1",
        "task 2",
        "task 4",
    ]
    assert [t.title for t in client.iter_tasks(completed=True)] == ["task 3"]


def test_the_client_fills_request_id_so_a_repeated_create_is_one_task(connect: Callable[..., TaskClient]) -> None:
    client = connect()
    request_id = "7d0e9a0c-52a4-4b55-9d0c-1f6f1e2f5a11"
    first = client.create_task("once", request_id=request_id)
    assert client.create_task("once", request_id=request_id) == first
    # Without one, each call gets its own UUID: two creates are two tasks.
    assert client.create_task("twice").name != client.create_task("twice").name


def test_a_request_id_reused_for_another_task_raises_already_exists(connect: Callable[..., TaskClient]) -> None:
    client = connect()
    reused = "0b5ad7a2-4f7e-4d64-9a51-3c1e4f0f2b77"
    first = client.create_task("buy milk", request_id=reused)
    with pytest.raises(AlreadyExists) as raised:
        client.create_task("pay rent", request_id=reused)
    assert (raised.value.code, raised.value.reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    assert raised.value.request_id == reused
    assert [task.title for task in client.iter_tasks()] == [first.title]


def test_bad_fields_raise_invalid_argument_with_violations(connect: Callable[..., TaskClient]) -> None:
    with pytest.raises(InvalidArgument) as raised:
        connect().create_task("")
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.reason == "INVALID_ARGUMENT"  # ErrorInfo on every error, BadRequest beside it
    assert "task.title" in raised.value.violations
    assert "task.title" in str(raised.value)


def test_another_users_task_raises_permission_denied(connect: Callable[..., TaskClient]) -> None:
    with pytest.raises(PermissionDenied) as raised:
        connect().get_task(f"users/someone-else/tasks/{secrets.token_hex(16)}")
    assert raised.value.reason == "RESOURCE_NOT_OWNED"


def test_a_stale_etag_raises_aborted(connect: Callable[..., TaskClient]) -> None:
    client = connect()
    task = client.create_task("draft")
    client.update_task(task.name, title="edited elsewhere")
    with pytest.raises(Aborted):
        client.update_task(task.name, title="mine", etag=task.etag)
    with pytest.raises(Aborted):
        client.delete_task(task.name, etag=task.etag)


def test_first_connection_says_at_once_that_nothing_listens(
    connect: Callable[..., TaskClient], secret: bytes
) -> None:
    assert connect().first_connection(5) is Connection.READY
    with TaskClient(f"127.0.0.1:{unused_port()}", token=mint_token(secret)) as nobody:
        started = time.monotonic()
        assert nobody.first_connection(5) is Connection.FAILED
        assert time.monotonic() - started < 0.5
        assert not nobody.wait_until_connected(0.5)  # which waits for a server to come up


def test_a_bad_token_raises_unauthenticated_with_its_reason(connect: Callable[..., TaskClient]) -> None:
    with pytest.raises(Unauthenticated) as raised:
        connect(token=mint_token(b"not the server's secret, but long enough", "mallory")).list_tasks()
    assert raised.value.reason == "TOKEN_INVALID"


def test_a_fixed_expired_token_is_not_retried(connect: Callable[..., TaskClient], secret: bytes) -> None:
    with pytest.raises(Unauthenticated) as raised:
        connect(token=mint_token(secret, "alice", ttl=-600)).list_tasks()
    assert raised.value.reason == "TOKEN_EXPIRED"


def test_an_expired_token_is_refreshed_once_from_the_provider(
    connect: Callable[..., TaskClient], secret: bytes
) -> None:
    user = f"user{secrets.token_hex(6)}"
    tokens = [mint_token(secret, user, ttl=-600), mint_token(secret, user)]
    calls: list[str] = []

    def provider() -> str:
        calls.append(tokens[len(calls)])
        return calls[-1]

    client = connect(token_provider=provider)
    assert client.create_task("after refresh").name.startswith(f"users/{user}/tasks/")
    assert len(calls) == 2
    client.list_tasks()
    assert len(calls) == 2  # the fresh token is kept, not fetched per call


def test_a_provider_that_keeps_giving_expired_tokens_fails_after_one_retry(
    connect: Callable[..., TaskClient], secret: bytes
) -> None:
    calls: list[int] = []

    def provider() -> str:
        calls.append(1)
        return mint_token(secret, "alice", ttl=-600)

    with pytest.raises(Unauthenticated):
        connect(token_provider=provider).list_tasks()
    assert len(calls) == 2


def test_a_call_past_its_deadline_raises_deadline_exceeded(connect: Callable[..., TaskClient]) -> None:
    client = connect()
    # A deadline a second ago fails whatever the server's speed. Not timeout=0: gRPC keeps deadlines in whole
    # milliseconds, rounded up, which left a fast server time to answer (2 calls in 1,000 succeeded).
    with pytest.raises(DeadlineExceeded) as raised:
        client.list_tasks(timeout=-1)
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_both_channels_accept_the_service_config(todo_server: TodoServer, secret: bytes) -> None:
    # grpcio refuses a service config it cannot use (a bad policy, an unknown balancer): every call then fails.
    target = f"127.0.0.1:{todo_server.port}"
    request = pb.ListTasksRequest(parent="users/me")
    metadata = (("authorization", f"Bearer {mint_token(secret)}"),)
    with open_channel(target) as channel:
        assert pb_grpc.TaskServiceStub(channel).ListTasks(request, metadata=metadata, timeout=10) is not None

    async def list_over_aio() -> pb.ListTasksResponse:
        async with open_aio_channel(target) as channel:
            return await pb_grpc.TaskServiceStub(channel).ListTasks(request, metadata=metadata, timeout=10)

    assert asyncio.run(list_over_aio()) is not None


def test_nobody_listening_raises_unavailable_after_bounded_retries(secret: bytes) -> None:
    started = time.monotonic()
    client = TaskClient(f"127.0.0.1:{unused_port()}", token=mint_token(secret), default_timeout=30)
    with client, pytest.raises(Unavailable):
        client.list_tasks()
    assert time.monotonic() - started < 20  # the retry policy gives up long before the 30 s deadline


def test_unknown_from_anything_but_a_lost_commit_is_not_outcome_unknown(secret: bytes) -> None:
    # A server that is not todo-server (a handler that raises: grpcio answers UNKNOWN, no ErrorInfo).
    def broken(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise RuntimeError("not todo-server")

    handler = grpc.method_handlers_generic_handler(
        "todo.v1.TaskService", {"GetTask": grpc.unary_unary_rpc_method_handler(broken)}
    )
    server = grpc.server(ThreadPoolExecutor(2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with (
            TaskClient(f"127.0.0.1:{port}", token=mint_token(secret)) as client,
            pytest.raises(TaskServiceError) as raised,
        ):
            client.get_task("abc")
    finally:
        server.stop(None)
    assert raised.value.code == grpc.StatusCode.UNKNOWN
    assert not isinstance(raised.value, OutcomeUnknown)  # a GetTask saved nothing, whatever broke


def test_a_call_made_while_the_server_restarts_succeeds(settings: Settings, secret: bytes) -> None:
    port = unused_port()
    on_port = Settings(**{**_fields(settings), "listen": f"127.0.0.1:{port}"})
    first = build_server(on_port)
    first.start()
    with TaskClient(f"127.0.0.1:{port}", token=mint_token(secret, "restarter")) as client:
        task = client.create_task("survives a restart")
        first.stop(grace=None)
        # Between the two servers the port drops the first connection made to it: so the call's first attempt
        # surely fails, and the server comes back right after it. (Not after a fixed sleep: gRPC's retries are
        # jittered, so the later it comes back, the likelier that all five attempts are already spent.)
        gone = socket.create_server(("127.0.0.1", port))
        gone.settimeout(30)
        second: list[TodoServer] = []

        def come_back() -> None:
            with gone:
                attempt, _ = gone.accept()
                attempt.close()
            second.append(build_server(on_port))
            second[0].start()

        returning = threading.Thread(target=come_back)
        returning.start()
        try:
            assert client.get_task(task.name) == task  # its first attempt is dropped; a retry finds the server
        finally:
            returning.join()
            for server in second:
                server.stop(grace=None)
    assert second, "the call never reached the port while the server was gone"


def _fields(settings: Settings) -> dict[str, object]:
    return {name: getattr(settings, name) for name in Settings.__slots__}


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(settings: Settings, tls_files: TlsFiles) -> Iterator[TodoServer]:
    tls = Settings(
        **{
            **_fields(settings),
            "tls_certificate_chain": tls_files.server_cert.read_bytes(),
            "tls_private_key": Secret(tls_files.server_key.read_bytes()),
        }
    )
    with run_server(tls) as server:
        yield server


def test_tls_with_the_servers_ca_works(tls_server: TodoServer, tls_files: TlsFiles, secret: bytes) -> None:
    with TaskClient(f"localhost:{tls_server.port}", token=mint_token(secret), tls=tls_files.ca_cert) as client:
        assert client.create_task("over TLS").title == "over TLS"


@pytest.mark.parametrize("tls", ["plaintext", "another CA"])
def test_tls_server_refuses_plaintext_and_unknown_cas(
    tls_server: TodoServer, tmp_path: Path, secret: bytes, tls: str
) -> None:
    option = False if tls == "plaintext" else make_tls_files(tmp_path, ca_name="someone else").ca_cert
    client = TaskClient(f"127.0.0.1:{tls_server.port}", token=mint_token(secret), tls=option)
    # Refused at the handshake: the call never reaches the service, whichever way the transport reports it.
    with client, pytest.raises((Unavailable, DeadlineExceeded)):
        client.list_tasks(timeout=1)


# Run in a child: gRPC reads GRPC_DEFAULT_SSL_ROOTS_FILE_PATH once, when it first loads its default roots.
_SYSTEM_ROOTS_CLIENT = """
import sys
from client import DeadlineExceeded, TaskClient, Unavailable
with TaskClient(sys.argv[1], token=sys.argv[2], tls=True, default_timeout=5) as client:
    try:
        print(client.create_task("checked against the default roots").title)
    except (Unavailable, DeadlineExceeded):  # refused at the handshake, however the transport reports it
        print("refused")
"""


@pytest.mark.parametrize("roots", ["our CA as the system roots", "gRPC's own roots"])
def test_tls_true_checks_the_server_against_the_default_roots(
    tls_server: TodoServer, tls_files: TlsFiles, secret: bytes, roots: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"}
    if roots == "our CA as the system roots":
        env["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = str(tls_files.ca_cert)  # stands in for the OS trust store
    child = subprocess.run(
        [sys.executable, "-c", _SYSTEM_ROOTS_CLIENT, f"localhost:{tls_server.port}", mint_token(secret)],
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    # Trusted only when the default roots hold the CA that signed the server: tls=True really verifies.
    expected = "checked against the default roots" if roots == "our CA as the system roots" else "refused"
    assert child.stdout.strip() == expected


def test_the_package_exports_every_name_in_all_and_imports_grpc_only_when_used() -> None:
    """client/__init__ imports its names on first use, so the `todo` CLI can quiet gRPC before grpc loads."""
    script = (
        "import sys, client\n"
        "assert 'grpc' not in sys.modules\n"
        "assert all(isinstance(getattr(client, name), type) for name in client.__all__)\n"
        "assert 'grpc' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
