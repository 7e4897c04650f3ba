"""The README's copy-paste sections, run as written against a running todo-server."""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path

import pytest

import client
from tests.e2e.conftest import BIN, ServerProcess, run
from tests.support import mint_token, unused_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def readme_block(heading: str, language: str) -> str:
    """The first ```language block after `heading` in README.md."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index(heading) :]
    match = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert match is not None, f"no {language} block under {heading!r}"
    return match.group(1)


def readme_section(heading: str, next_heading: str) -> str:
    """README.md's text from `heading` up to `next_heading`."""
    readme = (REPO / "README.md").read_text()
    start = readme.index(heading)
    return readme[start : readme.index(next_heading, start)]


def test_the_python_bff_example_runs(server: ServerProcess, tmp_path: Path) -> None:
    script = tmp_path / "bff.py"
    script.write_text(readme_block("## From Python", "python"))
    env = {**server.env, "TODO_TARGET": server.address, "TODO_TOKEN": mint_token(server.secret.encode(), "alice")}
    result = run(str(BIN / "python"), str(script), env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("users/alice/tasks/")
    assert lines[0].endswith("Buy milk done")
    assert lines[-1] == "gone: NOT_FOUND TASK_NOT_FOUND"


def test_the_grpcurl_walkthrough_runs(server: ServerProcess) -> None:
    script = readme_block("## Try it with grpcurl", "sh").replace("localhost:50051", server.address)
    result = run("bash", "-euo", "pipefail", "-c", f"cd {REPO}\n{script}", env=server.env)
    assert result.returncode == 0, result.stderr
    assert '"title": "Buy milk"' in result.stdout
    assert '"completed": true' in result.stdout


def test_the_cli_walkthrough_runs(server: ServerProcess) -> None:
    # The README's id prefix (3f2a) is an example: stand in the first six digits of the task `add` made.
    first_id = (
        ".venv/bin/todo ls --json"
        " | python3 -c 'import json,sys; print(json.load(sys.stdin)[0][\"name\"][-32:][:6])'"
    )
    script = readme_block("## The `todo` CLI", "sh").replace("3f2a", "$(first_id)")
    env = {**server.env, "TODO_TARGET": server.address}
    result = run("bash", "-euo", "pipefail", "-c", f"cd {REPO}\nfirst_id() {{ {first_id}; }}\n{script}", env=env)
    assert result.returncode == 0, result.stderr
    assert "Buy oat milk" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("deleted ")


def test_the_tls_walkthrough_runs(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("the TLS walkthrough needs openssl on PATH")
    script = readme_block("**TLS and mutual TLS, to try them**", "sh")
    # Its files in a scratch directory, a free port, and the secret from the environment (no .env here).
    script = script.replace("dev-tls", str(tmp_path / "dev-tls")).replace("tls-try.db", str(tmp_path / "t.db"))
    script = script.replace("50053", str(unused_port())).replace("set -a && . ./.env && set +a", "")
    env = {**os.environ, "BETTER_AUTH_SECRET": secrets.token_urlsafe(48)}
    result = run("bash", "-euo", "pipefail", "-c", f"cd {REPO}\n{script}", env=env)
    assert result.returncode == 0, result.stderr
    assert "Over mutual TLS" in result.stdout
    assert "todo.v1.TaskService" in result.stdout  # grpcurl's list, over mutual TLS


def test_the_jwks_walkthrough_runs(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("the JWKS walkthrough needs openssl on PATH")
    script = readme_block("**Trying the JWKS path by hand**", "sh")
    # Free ports, and its files (the dev key, the database) in a scratch directory.
    script = script.replace("8787", str(unused_port())).replace("50052", str(unused_port()))
    script = script.replace(".venv/bin/", f"{BIN}/")
    # A newcomer's shell: no BETTER_AUTH_SECRET (the JWKS alone verifies), and the quick start's
    # TODO_TARGET and TODO_TOKEN still set, which the walkthrough's own flags must override.
    env = {k: v for k, v in os.environ.items() if k != "BETTER_AUTH_SECRET"}
    env |= {"TODO_TARGET": "localhost:50051", "TODO_TOKEN": "not-this-one"}
    # Should a step fail, bash -e exits before the walkthrough's own `kill %1 %2`: end its jobs anyway.
    cleanup = "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"
    result = run("bash", "-euo", "pipefail", "-c", f"cd {tmp_path}\n{cleanup}\n{script}", env=env)
    assert result.returncode == 0, result.stderr
    assert "Signed with EdDSA" in result.stdout.splitlines()[-1]  # `todo ls`, on the JWKS-backed server
    assert (tmp_path / ".todo-dev-ed25519.pem").exists()


def test_the_python_section_names_every_error_the_client_raises() -> None:
    section = readme_section("## From Python", "## From Node.js")
    listed = set(re.findall(r"`(\w+)`", section[section.index("Failures raise") :]))
    raised = {
        name
        for name, value in vars(client).items()
        if isinstance(value, type)
        and issubclass(value, client.TaskServiceError)
        and value is not client.TaskServiceError
    }
    assert raised - listed == set(), "README's Python section does not name these errors the client raises"
