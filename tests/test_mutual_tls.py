"""--tls-client-ca: only callers holding a certificate the CA signed get a connection, and they still need
a token for every call."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from client import DeadlineExceeded, TaskClient, Unavailable
from server.app import TodoServer, run_server
from server.config import Secret, Settings
from tests.support import failure_of, mint_token
from tests.tls import TlsFiles, make_tls_files

LIST_ME = pb.ListTasksRequest(parent="users/me")


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'todo.db'}"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def mtls_server(settings: Settings, tls_files: TlsFiles) -> Iterator[TodoServer]:
    mutual = dataclasses.replace(
        settings,
        tls_certificate_chain=tls_files.server_cert.read_bytes(),
        tls_private_key=Secret(tls_files.server_key.read_bytes()),
        tls_client_ca=tls_files.ca_cert.read_bytes(),
    )
    with run_server(mutual) as server:
        yield server


def _channel(server: TodoServer, trusted_ca: Path, client: TlsFiles | None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=trusted_ca.read_bytes(),
        private_key=client.client_key.read_bytes() if client else None,
        certificate_chain=client.client_cert.read_bytes() if client else None,
    )
    return grpc.secure_channel(f"localhost:{server.port}", credentials)


def test_a_caller_with_a_certificate_the_ca_signed_is_served(
    mtls_server: TodoServer, tls_files: TlsFiles, secret: bytes
) -> None:
    with _channel(mtls_server, tls_files.ca_cert, tls_files) as channel:
        metadata = (("authorization", f"Bearer {mint_token(secret)}"),)
        assert pb_grpc.TaskServiceStub(channel).ListTasks(LIST_ME, metadata=metadata, timeout=5).total_size == 0


def test_a_certificate_still_needs_a_token(mtls_server: TodoServer, tls_files: TlsFiles) -> None:
    with _channel(mtls_server, tls_files.ca_cert, tls_files) as channel:
        failure = failure_of(lambda: pb_grpc.TaskServiceStub(channel).ListTasks(LIST_ME, timeout=5))
    assert failure.code == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("certificate", ["none", "another CA's"])
def test_a_caller_without_a_certificate_the_ca_signed_gets_no_connection(
    mtls_server: TodoServer, tls_files: TlsFiles, tmp_path: Path, secret: bytes, certificate: str
) -> None:
    client = None if certificate == "none" else make_tls_files(tmp_path, ca_name="someone else")
    with _channel(mtls_server, tls_files.ca_cert, client) as channel:
        metadata = (("authorization", f"Bearer {mint_token(secret)}"),)
        failure = failure_of(
            lambda: pb_grpc.TaskServiceStub(channel).ListTasks(LIST_ME, metadata=metadata, timeout=2)
        )
    # Refused at the handshake, before any call: whichever way the transport reports it.
    assert failure.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    with _channel(mtls_server, tls_files.ca_cert, tls_files) as channel:  # and the server was there all along
        assert pb_grpc.TaskServiceStub(channel).ListTasks(LIST_ME, metadata=metadata, timeout=5).total_size >= 0


def test_task_client_presents_its_certificate(mtls_server: TodoServer, tls_files: TlsFiles, secret: bytes) -> None:
    certificate = (tls_files.client_cert, tls_files.client_key)
    target = f"localhost:{mtls_server.port}"
    with TaskClient(target, token=mint_token(secret), tls=tls_files.ca_cert, client_cert=certificate) as client:
        assert client.create_task("over mutual TLS").title == "over mutual TLS"
    without = TaskClient(target, token=mint_token(secret), tls=tls_files.ca_cert)
    with without, pytest.raises((Unavailable, DeadlineExceeded)):  # no certificate: no connection
        without.list_tasks(timeout=2)


def test_a_client_certificate_without_tls_is_refused(tls_files: TlsFiles) -> None:
    with pytest.raises(ValueError, match="needs TLS"):
        TaskClient("localhost:1", token="x", client_cert=(tls_files.client_cert, tls_files.client_key))
