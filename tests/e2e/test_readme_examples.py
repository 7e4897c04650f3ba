"""The README's copy-paste sections, run as written against a running todo-server."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
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


def run_walkthrough(
    shell: str, script: str, *, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """`script` run by `shell` with -e, -u and pipefail, in a process group of its own: should a step fail,
    the shell exits before the walkthrough's own `kill %1`, and its background servers are ended here.
    Output goes to files, which a background server holding them open cannot keep from being read."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        shell_process = subprocess.Popen(
            [shell, "-euo", "pipefail", "-c", f"cd {cwd}\n{script}"],
            env=env,
            stdout=out,
            stderr=err,
            text=True,
            start_new_session=True,
        )
        try:
            shell_process.wait(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(shell_process.pid, signal.SIGTERM)
            shell_process.wait()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(shell_process.args, shell_process.returncode, out.read(), err.read())


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


@pytest.mark.parametrize("shell", ["bash", "zsh"])  # zsh: macOS's login shell, which does not split "$G"
def test_the_grpcurl_walkthrough_runs(server: ServerProcess, shell: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    script = readme_block("## Try it with grpcurl", "sh").replace("localhost:50051", server.address)
    result = run(shell, "-euo", "pipefail", "-c", f"cd {REPO}\n{script}", env=server.env)
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


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_the_tls_walkthrough_runs(tmp_path: Path, shell: str) -> None:
    if shutil.which("openssl") is None or shutil.which(shell) is None:
        pytest.skip(f"the TLS walkthrough needs openssl and {shell} on PATH")
    script = readme_block("**TLS and mutual TLS, to try them**", "sh")
    # Its files in a scratch directory, a free port, and the secret from the environment (no .env here).
    script = script.replace("dev-tls", str(tmp_path / "dev-tls")).replace("tls-try.db", str(tmp_path / "t.db"))
    script = script.replace("50053", str(unused_port())).replace("set -a && . ./.env && set +a", "")
    env = {**os.environ, "BETTER_AUTH_SECRET": secrets.token_urlsafe(48)}
    result = run_walkthrough(shell, script, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr
    assert "Over mutual TLS" in result.stdout
    assert "todo.v1.TaskService" in result.stdout  # grpcurl's list, over mutual TLS


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_the_jwks_walkthrough_runs(tmp_path: Path, shell: str) -> None:
    if shutil.which("openssl") is None or shutil.which(shell) is None:
        pytest.skip(f"the JWKS walkthrough needs openssl and {shell} on PATH")
    script = readme_block("**Trying the JWKS path by hand**", "sh")
    # Free ports, and its files (the dev key, the database) in a scratch directory.
    script = script.replace("8787", str(unused_port())).replace("50052", str(unused_port()))
    script = script.replace(".venv/bin/", f"{BIN}/")
    # A newcomer's shell: no BETTER_AUTH_SECRET (the JWKS alone verifies), and the quick start's
    # TODO_TARGET and TODO_TOKEN still set, which the walkthrough's own flags must override.
    env = {k: v for k, v in os.environ.items() if k != "BETTER_AUTH_SECRET"}
    env |= {"TODO_TARGET": "localhost:50051", "TODO_TOKEN": "not-this-one"}
    result = run_walkthrough(shell, script, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "Signed with EdDSA" in result.stdout.splitlines()[-1]  # `todo ls`, on the JWKS-backed server
    assert (tmp_path / ".todo-dev-ed25519.pem").exists()


def test_the_python_section_names_every_error_the_client_raises() -> None:
    section = readme_section("## From Python", "## From Node.js")
    listed = set(re.findall(r"`(\w+)`", section[section.index("Failures raise") :]))
    exported = {name: getattr(client, name) for name in client.__all__}
    raised = {
        name
        for name, value in exported.items()
        if isinstance(value, type)
        and issubclass(value, client.TaskServiceError)
        and value is not client.TaskServiceError
    }
    assert raised - listed == set(), "README's Python section does not name these errors the client raises"
