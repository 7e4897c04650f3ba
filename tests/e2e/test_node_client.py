"""client/node/tasks.mjs, the Node.js BFF's client, against a real todo-server: one channel, each user's
token per call, and the server's errors (code, ErrorInfo reason, BadRequest violations) readable in JS."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ServerProcess
from tests.faults.lost_call_reply import LostCallReply
from tests.support import mint_token

pytestmark = pytest.mark.e2e

CLIENT_DIR = Path(__file__).parents[2] / "client" / "node"
STORY = Path(__file__).parent / "node_story.mjs"


@pytest.fixture(scope="module")
def node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("the Node.js client test needs Node.js and npm on PATH")
    if not (CLIENT_DIR / "node_modules" / ".bin" / "tsc").exists():
        installed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=CLIENT_DIR, capture_output=True, timeout=300
        )
        if installed.returncode != 0:
            pytest.fail(f"npm ci in {CLIENT_DIR} failed: {installed.stderr.decode()[-2000:]}")
    return node


def test_the_node_client_acts_for_each_user_and_reads_the_servers_errors(node: str, server: ServerProcess) -> None:
    secret = server.secret.encode()
    tokens = [mint_token(secret, "alice"), mint_token(secret, "bob"), "not-a-jwt"]
    story = subprocess.run(
        [node, str(STORY), server.address, *tokens], capture_output=True, text=True, timeout=60, check=False
    )
    assert story.returncode == 0, story.stderr
    seen = json.loads(story.stdout)
    assert seen["created"]["name"].startswith("users/alice/tasks/")
    assert seen["created"]["priority"] == "PRIORITY_HIGH"
    assert (seen["aliceTitles"], seen["bobTitles"]) == (["alice's"], [])
    assert seen["bobGetsAlices"]["code"] == "PERMISSION_DENIED"
    assert seen["badToken"] == {"code": "UNAUTHENTICATED", "reason": "TOKEN_MALFORMED", "violations": {}}
    assert (seen["emptyTitle"]["code"], seen["emptyTitle"]["reason"]) == ("INVALID_ARGUMENT", "INVALID_ARGUMENT")
    assert "task.title" in seen["emptyTitle"]["violations"]
    assert seen["renamed"] == "renamed"
    assert (seen["afterDelete"]["code"], seen["afterDelete"]["reason"]) == ("NOT_FOUND", "TASK_NOT_FOUND")


def test_a_typescript_bff_gets_the_clients_types_checked(node: str) -> None:
    tsc = CLIENT_DIR / "node_modules" / ".bin" / "tsc"
    usage = Path(__file__).parent / "node_types_check.mts"
    strict = (
        "--noEmit",
        "--strict",
        "--module",
        "nodenext",
        "--moduleResolution",
        "nodenext",
        "--target",
        "es2022",
    )
    checked = subprocess.run(
        [str(tsc), *strict, str(usage)], capture_output=True, text=True, timeout=120, check=False
    )
    # Right uses compile, and each misuse marked @ts-expect-error must be an error, or the build fails.
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_status_details_that_do_not_decode_reject_the_call_instead_of_crashing_the_bff(node: str) -> None:
    script = Path(__file__).parent / "node_bad_details.mjs"
    run = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr  # an exception thrown in grpc-js's callback ends the process
    rejected = json.loads(run.stdout)
    assert (rejected["code"], rejected["message"], rejected["reason"]) == ("INTERNAL", "garbled details", "")
    # An empty request_id is no request_id: the client still fills one, and says which, for a retry.
    assert len(rejected["requestId"]) == 36


@pytest.mark.parametrize("signed_in", [True, False], ids=["valid token", "token signed elsewhere"])
def test_the_readme_example_succeeds_only_when_every_step_does(
    node: str, server: ServerProcess, signed_in: bool
) -> None:
    secret = server.secret.encode() if signed_in else b"x" * 48
    env = {"PATH": "/usr/bin:/bin", "TODO_TARGET": server.address, "TODO_TOKEN": mint_token(secret, "example")}
    example = subprocess.run(
        [node, str(CLIENT_DIR / "example.mjs")], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    if signed_in:
        assert example.returncode == 0, example.stderr
        assert example.stdout.strip().endswith("gone: NOT_FOUND TASK_NOT_FOUND")
    else:  # it used to print "gone: UNAUTHENTICATED" and exit 0
        assert example.returncode != 0
        assert "UNAUTHENTICATED" in example.stderr or "TOKEN_INVALID" in example.stderr


class NodeCalls:
    """tests/e2e/node_calls.mjs: a Node BFF's calls, one at a time, so that the test can act between them."""

    def __init__(self, node: str, target: str, token: str) -> None:
        script = Path(__file__).parent / "node_calls.mjs"
        self._process = subprocess.Popen(
            [node, str(script), target, token], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def __call__(self, method: str, **request: object) -> dict[str, Any]:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(json.dumps({"method": method, "request": request}) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        assert line, f"node_calls.mjs ended (exit {self._process.wait()})"
        return dict(json.loads(line))

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        assert self._process.wait(timeout=30) == 0


@pytest.fixture
def lost_reply(server: ServerProcess) -> Iterator[LostCallReply]:
    proxy = LostCallReply(server.port)
    yield proxy
    proxy.close()


@pytest.fixture
def node_calls(node: str, server: ServerProcess, lost_reply: LostCallReply) -> Iterator[NodeCalls]:
    calls = NodeCalls(node, f"127.0.0.1:{lost_reply.port}", mint_token(server.secret.encode(), "nodelost"))
    yield calls
    calls.close()


def access_log_codes(server: ServerProcess, method: str) -> list[str]:
    """The status of each attempt at `method` the server answered, from its access log."""
    time.sleep(0.2)  # the log writer writes within ~20 ms of a call
    marker = f"method=/todo.v1.TaskService/{method} code="
    return [line.split(marker)[1].split()[0] for line in server.log().splitlines() if marker in line]


def test_a_node_update_or_delete_whose_reply_is_lost_is_not_sent_again(
    server: ServerProcess, lost_reply: LostCallReply, node_calls: NodeCalls
) -> None:
    task = node_calls("createTask", task={"title": "draft"})["ok"]["task"]
    lost_reply.arm()
    updated = node_calls("updateTask", task={"name": task["name"], "title": "final", "etag": task["etag"]})
    # Not the server's word (no reason): sent again, the update would be ABORTED by its own change.
    assert updated == {"error": {"code": "UNAVAILABLE", "reason": ""}}
    assert lost_reply.reply_lost.is_set()
    assert access_log_codes(server, "UpdateTask") == ["OK"]
    assert node_calls("getTask", name=task["name"])["ok"]["task"]["title"] == "final"

    lost_reply.arm()
    deleted = node_calls("deleteTask", name=task["name"])
    assert deleted == {"error": {"code": "UNAVAILABLE", "reason": ""}}  # again, it would be NOT_FOUND
    assert access_log_codes(server, "DeleteTask") == ["OK"]
    assert node_calls("listTasks")["ok"]["tasks"] == []


def test_a_node_create_whose_reply_is_lost_is_sent_again_and_stored_once(
    server: ServerProcess, lost_reply: LostCallReply, node_calls: NodeCalls
) -> None:
    node_calls("listTasks")  # connected before the proxy is armed
    lost_reply.arm()
    created = node_calls("createTask", task={"title": "pay rent"})["ok"]["task"]
    assert lost_reply.reply_lost.is_set()
    assert access_log_codes(server, "CreateTask") == ["OK", "OK"]
    assert [task["name"] for task in node_calls("listTasks")["ok"]["tasks"]] == [created["name"]]
