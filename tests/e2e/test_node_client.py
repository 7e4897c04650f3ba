"""client/node/tasks.mjs, the Node.js BFF's client, against a real todo-server: one channel, each user's
token per call, and the server's errors (code, ErrorInfo reason, BadRequest violations) readable in JS."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import ServerProcess
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
