"""The README's configuration table and operations section say what the server really does."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from tests.e2e.conftest import BIN, run, start_server, stop_server
from tests.support import failure_of, mint_token

pytestmark = pytest.mark.e2e

README = (Path(__file__).parents[2] / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def test_every_flag_and_variable_of_todo_server_is_in_the_configuration_table() -> None:
    help_text = run(str(BIN / "todo-server"), "--help").stdout
    table = _section("Configuration")
    flags = set(re.findall(r"(--[a-z][a-z-]+)", help_text)) - {"--help"}
    variables = set(re.findall(r"\b((?:TODO|JWT|BETTER_AUTH|DATABASE)_?[A-Z_]*)\b", help_text))
    assert flags, help_text
    assert {flag for flag in flags if f"`{flag}`" not in table} == set()
    assert {name for name in variables if f"`{name}`" not in table} == set()


def test_the_readme_names_every_metric_and_only_those(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--metrics-listen", "127.0.0.1:0")
    try:
        port = int(re.search(r"serving Prometheus metrics on \S+ \(port (\d+)\)", server.log()).group(1))
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.TaskServiceStub(channel)
            token = mint_token(server.secret.encode(), "alice")
            stub.ListTasks(pb.ListTasksRequest(parent="users/me"), metadata=[("authorization", f"Bearer {token}")])
            failure_of(lambda: stub.ListTasks(pb.ListTasksRequest(parent="users/me")))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            families = list(text_string_to_metric_families(response.read().decode()))
    finally:
        stop_server(server)
    # prometheus_client adds a `<name>_created` gauge (start timestamp) beside each counter and histogram.
    exposed = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in families
        if not family.name.endswith("_created")
    }
    operations = _section("Operations")
    documented = set(re.findall(r"^\| `([a-z_]+)` \| (?:counter|gauge|histogram) \|", operations, re.MULTILINE))
    # todo_jwks_refreshes_total appears once a JWKS is configured; this server verifies HS256 only.
    assert exposed | {"todo_jwks_refreshes_total"} == documented


def test_the_readme_sample_log_lines_have_the_real_fields(tmp_path: Path) -> None:
    operations = _section("Operations")
    text_sample = re.search(r"^\S+ \S+ INFO todo\.access rpc .*$", operations, re.MULTILINE).group(0)
    json_sample = json.loads(re.search(r'^\{"time".*\}$', operations, re.MULTILINE).group(0))

    def keys_of(line: str) -> list[str]:
        return re.findall(r" ([a-z_]+)=", line)

    for log_format in ("text", "json"):
        server = start_server(tmp_path, "--log-format", log_format)
        try:
            with grpc.insecure_channel(server.address) as channel:
                token = mint_token(server.secret.encode(), "alice")
                pb_grpc.TaskServiceStub(channel).ListTasks(
                    pb.ListTasksRequest(parent="users/me"), metadata=[("authorization", f"Bearer {token}")]
                )
        finally:
            stop_server(server)
        access = [line for line in server.log().splitlines() if "todo.access" in line]
        assert len(access) == 1, server.log()
        if log_format == "text":
            assert keys_of(access[0]) == keys_of(text_sample)
            assert access[0].split(" rpc ")[0].split()[2:] == ["INFO", "todo.access"]
        else:
            assert set(json.loads(access[0])) == set(json_sample)
