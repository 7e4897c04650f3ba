"""The `todo` CLI through its entry point, against a real server: output, id prefixes, exit codes."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.cli import build_parser, main
from client.cli_errors import EXIT_AUTH, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE
from server.app import TodoServer, run_server
from server.auth.tokens import user_id_is_safe
from server.config import Secret, Settings
from tests.faults.lost_call_reply import LostCallReply
from tests.support import mint_token, unused_port
from tests.tls import make_tls_files

TODO = Path(sys.executable).parent / "todo"


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The CLI does not care which database the server uses: SQLite keeps this module quick."""
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'todo.db'}"


@pytest.fixture
def signed_in(monkeypatch: pytest.MonkeyPatch, todo_server: TodoServer, secret: bytes) -> str:
    """A fresh user whose token and the server's address are in TODO_TOKEN and TODO_TARGET."""
    user = f"cli{secrets.token_hex(6)}"
    monkeypatch.setenv("TODO_TOKEN", mint_token(secret, user))
    monkeypatch.setenv("TODO_TARGET", f"127.0.0.1:{todo_server.port}")
    return user


def todo(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def todo_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    status, out, err = todo(capsys, *argv, "--json")
    assert status == 0, err
    return json.loads(out)


@pytest.mark.usefixtures("signed_in")
def test_an_empty_list_says_how_to_add_a_task_and_a_filter_that_matches_nothing_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = todo(capsys, "ls")
    assert (status, out) == (0, 'no tasks yet: add one with `todo add "Buy milk"`\n')
    todo(capsys, "add", "Buy milk")
    status, out, _ = todo(capsys, "ls", "--query", "oat")
    assert (status, out) == (0, "no tasks match\n")
    assert todo_json(capsys, "ls", "--done") == []  # scripts still get JSON


@pytest.mark.usefixtures("signed_in")
def test_add_list_done_undo_edit_remove(capsys: pytest.CaptureFixture[str]) -> None:
    milk = todo_json(capsys, "add", "Buy milk", "--priority", "high", "--due", "2030-01-02T09:30+00:00")
    assert isinstance(milk, dict)
    assert (milk["title"], milk["priority"], milk["due_time"]) == (
        "Buy milk",
        "PRIORITY_HIGH",
        "2030-01-02T09:30:00Z",
    )
    milk_id = milk["name"].rsplit("/", 1)[1]
    status, out, _ = todo(capsys, "add", "Call mum")
    assert status == 0
    assert out.startswith("added ")
    assert out.strip().endswith("Call mum")

    status, table, _ = todo(capsys, "ls")
    assert status == 0
    header, *rows = table.splitlines()
    assert header.split() == ["ID", "DONE", "PRIORITY", "DUE", "TITLE"]
    assert len(rows) == 2
    assert any(row.startswith(milk_id[:8]) and "high" in row and row.endswith("Buy milk") for row in rows)
    assert todo(capsys, "list")[:2] == (0, table)  # what a newcomer types first

    done = todo_json(capsys, "done", milk_id[:6])
    assert isinstance(done, dict)
    assert done["completed"] is True
    assert [t["title"] for t in todo_json(capsys, "ls", "--done")] == ["Buy milk"]  # type: ignore[index, union-attr]
    assert [t["title"] for t in todo_json(capsys, "ls", "--open")] == ["Call mum"]  # type: ignore[index, union-attr]
    assert [t["title"] for t in todo_json(capsys, "ls", "--query", "MILK")] == ["Buy milk"]  # type: ignore[index, union-attr]
    assert "completed" not in todo_json(capsys, "undo", milk_id)  # type: ignore[operator]

    status, shown, _ = todo(capsys, "edit", milk_id[:6], "--title", "Buy oat milk")
    assert status == 0
    assert "title:       Buy oat milk" in shown
    assert todo_json(capsys, "show", milk_id)["title"] == "Buy oat milk"  # type: ignore[index]

    assert todo_json(capsys, "rm", milk_id[:6]) == {"deleted": milk["name"]}
    status, _, err = todo(capsys, "show", milk_id)
    assert (status, err.strip()) == (EXIT_REFUSED, f"todo: no such task: {milk_id}")


@pytest.mark.usefixtures("signed_in")
def test_edit_clears_a_due_date_and_a_priority(capsys: pytest.CaptureFixture[str]) -> None:
    task = todo_json(capsys, "add", "Dentist", "--priority", "high", "--due", "2030-01-02T09:30+00:00")
    task_id = task["name"].rsplit("/", 1)[1]  # type: ignore[index]
    cleared = todo_json(capsys, "edit", task_id, "--clear", "due", "--clear", "priority")
    assert isinstance(cleared, dict)
    assert "due_time" not in cleared
    assert cleared.get("priority", "PRIORITY_UNSPECIFIED") == "PRIORITY_UNSPECIFIED"
    status, _, err = todo(capsys, "edit", task_id, "--due", "2030-01-03", "--clear", "due")
    assert (status, err.strip()) == (EXIT_USAGE, "todo: --due and --clear due: pick one")


@pytest.mark.usefixtures("signed_in")
def test_an_ambiguous_or_unknown_prefix_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    ids = [todo_json(capsys, "add", f"t{n}")["name"].rsplit("/", 1)[1] for n in range(17)]  # type: ignore[index]
    # 17 ids over 16 hex digits: two share a first digit.
    first_digits = [task_id[0] for task_id in ids]
    shared = next(digit for digit in first_digits if first_digits.count(digit) > 1)
    status, _, err = todo(capsys, "done", shared)
    assert status == EXIT_REFUSED
    assert "type more of the id" in err
    status, _, err = todo(capsys, "done", "f" * 31)  # longer than any shared prefix, surely nobody's
    assert (status, err.strip()) == (EXIT_REFUSED, f"todo: no task id starts with '{'f' * 31}'")
    status, _, err = todo(capsys, "show", "not-hex")
    assert status == EXIT_USAGE


def test_an_expired_token_says_so_in_one_line(
    capsys: pytest.CaptureFixture[str], todo_server: TodoServer, secret: bytes
) -> None:
    expired = mint_token(secret, "alice", ttl=-600)
    status, out, err = todo(capsys, "ls", "--target", f"127.0.0.1:{todo_server.port}", "--token", expired)
    assert (status, out) == (EXIT_AUTH, "")
    assert err.strip() == "todo: your token has expired: mint a new one (`todo token --sub ...`)"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("not-a-jwt", "TOKEN_MALFORMED"),
        (mint_token(b"another server's secret, 32 bytes+", "alice"), "TOKEN_INVALID"),
    ],
    ids=["malformed", "other-secret"],
)
def test_a_refused_token_says_why_and_how_to_get_one(
    capsys: pytest.CaptureFixture[str], todo_server: TodoServer, token: str, reason: str
) -> None:
    status, out, err = todo(capsys, "ls", "--target", f"127.0.0.1:{todo_server.port}", "--token", token)
    assert (status, out) == (EXIT_AUTH, "")
    (line,) = err.strip().splitlines()
    assert line.startswith(f"todo: the server refused the token ({reason}): ")
    assert line.endswith(
        "mint one it accepts: `todo token --sub alice`, run where the server's .env is (or with its "
        "BETTER_AUTH_SECRET)"
    )


def test_no_token_is_a_one_line_hint(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TODO_TOKEN", raising=False)
    status, _, err = todo(capsys, "ls")
    assert status == EXIT_AUTH
    assert err.startswith("todo: no token: pass --token or set TODO_TOKEN")


def test_server_down_is_one_line_at_once_and_no_traceback(secret: bytes) -> None:
    port = unused_port()
    started = time.monotonic()
    result = subprocess.run(
        [str(TODO), "ls", "--target", f"127.0.0.1:{port}"],  # the default --timeout, 10 s
        capture_output=True,
        text=True,
        timeout=60,
        env={"TODO_TOKEN": mint_token(secret), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    # Not after the channel's retries (5 attempts, about 8 s), nor the 3 s a silent host gets: a newcomer's
    # first mistake is a wrong port, or no server yet. (This includes the interpreter's start-up.)
    assert time.monotonic() - started < 2
    assert result.returncode == EXIT_UNREACHABLE
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line == (
        f"todo: nothing is listening at 127.0.0.1:{port} (connection refused): start the server "
        "(`make run`), or point --target / TODO_TARGET at where it listens"
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["ls"], ["add", "Buy milk"], ["rm", "3f2a"]], ids=["ls", "add", "rm"])
def test_a_refused_connection_is_reported_well_under_a_second(
    capsys: pytest.CaptureFixture[str], secret: bytes, command: list[str]
) -> None:
    target = f"127.0.0.1:{unused_port()}"
    started = time.monotonic()
    status, out, err = todo(capsys, *command, "--target", target, "--token", mint_token(secret))
    assert time.monotonic() - started < 0.75
    assert (status, out) == (EXIT_UNREACHABLE, "")
    (line,) = err.strip().splitlines()
    assert line.startswith(f"todo: nothing is listening at {target} (connection refused)")
    assert "may have been made" not in line  # nothing was sent


def test_a_target_without_a_port_says_grpc_used_443(capsys: pytest.CaptureFixture[str], secret: bytes) -> None:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 443)) == 0:
            pytest.skip("something listens on 127.0.0.1:443 here")
    status, _, err = todo(capsys, "ls", "--target", "127.0.0.1", "--token", mint_token(secret))
    assert status == EXIT_UNREACHABLE
    assert "(connection refused; no port given: gRPC uses 443)" in err


class SlowToAnswer:
    """A todo-server that is there but slow to answer: 127.0.0.1:`port` takes each connection at once and
    relays it to the server only after `delay` seconds (until then the client hears nothing)."""

    def __init__(self, server_port: int, delay: float) -> None:
        self._server_port = server_port
        self._delay = delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # closed
            while True:
                client, _ = self._listener.accept()
                threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        time.sleep(self._delay)
        server = socket.create_connection(("127.0.0.1", self._server_port))
        for source, sink in ((client, server), (server, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@pytest.mark.usefixtures("signed_in")
def test_a_server_slow_to_answer_is_waited_for_not_called_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = SlowToAnswer(int(os.environ["TODO_TARGET"].rsplit(":", 1)[1]), delay=1.5)
    monkeypatch.setenv("TODO_TARGET", f"127.0.0.1:{slow.port}")
    try:
        assert todo_json(capsys, "ls") == []
    finally:
        slow.close()


def test_a_port_that_never_answers_gets_the_connect_wait_then_one_line(
    capsys: pytest.CaptureFixture[str], secret: bytes
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, never accepts: the kernel completes TCP
        target = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        status, out, err = todo(capsys, "ls", "--target", target, "--token", mint_token(secret), "--timeout", "1")
    assert time.monotonic() - started >= 1
    assert (status, out) == (EXIT_UNREACHABLE, "")
    (line,) = err.strip().splitlines()
    assert line.startswith(f"todo: cannot reach the server at {target} within 1s")
    assert "--target" in line


@pytest.mark.parametrize(
    ("target", "hint"),
    [
        ("50051", "localhost:50051"),
        ("http://localhost:50051", "drop the scheme"),
        ("https://todo.example.com:443", "drop the scheme"),
    ],
)
def test_a_target_that_is_not_host_and_port_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], secret: bytes, target: str, hint: str
) -> None:
    status, out, err = todo(capsys, "ls", "--target", target, "--token", mint_token(secret))
    assert (status, out) == (EXIT_USAGE, "")
    assert hint in err


@pytest.fixture(scope="module")
def tls_target(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The address of a todo-server serving TLS, and the CA file that signed its certificate."""
    files = make_tls_files(tmp_path_factory.mktemp("tls"))
    fields = {name: getattr(settings, name) for name in Settings.__slots__}
    fields["tls_certificate_chain"] = files.server_cert.read_bytes()
    fields["tls_private_key"] = Secret(files.server_key.read_bytes())
    with run_server(Settings(**fields)) as server:
        yield f"localhost:{server.port}", files.ca_cert


def test_ca_turns_tls_on_from_the_flag_or_todo_ca(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tls_target: tuple[str, Path],
    secret: bytes,
) -> None:
    target, ca = tls_target
    monkeypatch.setenv("TODO_TOKEN", mint_token(secret, f"tls{secrets.token_hex(6)}"))
    added = todo_json(capsys, "add", "over TLS", "--target", target, "--ca", str(ca))
    monkeypatch.setenv("TODO_CA", str(ca))
    assert todo_json(capsys, "ls", "--target", target) == [added]


def test_a_ca_that_did_not_sign_the_server_is_one_line_and_exit_4(
    capsys: pytest.CaptureFixture[str], tls_target: tuple[str, Path], secret: bytes, tmp_path: Path
) -> None:
    target, _ = tls_target
    stranger = make_tls_files(tmp_path, ca_name="someone else").ca_cert
    argv = ("ls", "--target", target, "--ca", str(stranger), "--token", mint_token(secret), "--timeout", "2")
    status, out, err = todo(capsys, *argv)
    assert (status, out) == (EXIT_UNREACHABLE, "")
    (line,) = err.strip().splitlines()
    assert line == (
        f"todo: {target} took the connection but the TLS handshake failed: check that it serves TLS, that --ca "
        "(TODO_CA) signed its certificate, and --cert/--key if it asks for a client certificate"
    )


def test_a_failed_tls_handshake_leaves_one_line_on_stderr_not_grpc_logs(
    tls_target: tuple[str, Path], secret: bytes, tmp_path: Path
) -> None:
    """gRPC core logs each failed handshake to stderr (`I1203 ... Handshake failed ...`) unless told not to,
    which buried the CLI's one line under a screenful: the CLI's own process, so only a real `todo` shows it."""
    target, _ = tls_target
    stranger = make_tls_files(tmp_path, ca_name="someone else").ca_cert
    result = subprocess.run(
        [str(TODO), "ls", "--target", target, "--ca", str(stranger)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"TODO_TOKEN": mint_token(secret), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == EXIT_UNREACHABLE
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"todo: {target} took the connection but the TLS handshake failed")


def test_plaintext_to_a_tls_server_is_one_line_that_names_ca(
    capsys: pytest.CaptureFixture[str], tls_target: tuple[str, Path], secret: bytes
) -> None:
    target, _ = tls_target
    status, out, err = todo(capsys, "ls", "--target", target, "--token", mint_token(secret))
    assert (status, out) == (EXIT_UNREACHABLE, "")
    (line,) = err.strip().splitlines()
    assert line.startswith(f"todo: {target} took the connection but did not answer gRPC over plaintext")
    assert "pass --ca (TODO_CA)" in line


def test_cert_and_key_reach_a_server_that_asks_for_a_client_certificate(
    capsys: pytest.CaptureFixture[str], settings: Settings, tmp_path: Path, secret: bytes
) -> None:
    files = make_tls_files(tmp_path)
    fields = {name: getattr(settings, name) for name in Settings.__slots__}
    fields["tls_certificate_chain"] = files.server_cert.read_bytes()
    fields["tls_private_key"] = Secret(files.server_key.read_bytes())
    fields["tls_client_ca"] = files.ca_cert.read_bytes()
    with run_server(Settings(**fields)) as server:
        tls = ("--target", f"localhost:{server.port}", "--ca", str(files.ca_cert), "--token", mint_token(secret))
        certificate = ("--cert", str(files.client_cert), "--key", str(files.client_key))
        assert todo_json(capsys, "ls", *tls, *certificate) == []
        status, _, err = todo(capsys, "ls", *tls, "--timeout", "2")
        assert status == EXIT_UNREACHABLE, err  # no certificate: no connection
        status, _, err = todo(capsys, "ls", *tls, "--cert", str(files.client_cert))
        assert (status, err.strip()) == (
            EXIT_USAGE,
            "todo: a client certificate needs both --cert and --key (TODO_CERT, TODO_KEY)",
        )


@pytest.mark.usefixtures("signed_in")
def test_a_refusal_names_each_bad_field_once(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = todo(capsys, "ls", "--order-by", "colour")
    assert status == EXIT_REFUSED
    (line,) = err.strip().splitlines()
    assert line.count("'colour' is not supported") == 1, line


@pytest.mark.parametrize("seconds", ["0", "-1", "soon", "nan"])
def test_a_timeout_that_is_not_a_positive_number_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], seconds: str
) -> None:
    with pytest.raises(SystemExit) as usage:
        main(["ls", "--timeout", seconds])
    assert usage.value.code == EXIT_USAGE
    assert "--timeout" in capsys.readouterr().err


@pytest.mark.parametrize("sub", ["", "a/b", "has space", "tab\there", "x" * 129, "alice\u202e", "a\x9bb"])
def test_token_refuses_a_subject_the_server_would_refuse(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, sub: str
) -> None:
    monkeypatch.setenv("BETTER_AUTH_SECRET", secrets.token_urlsafe(48))
    assert not user_id_is_safe(sub)  # the server's own rule
    status, out, err = todo(capsys, "token", "--sub", sub)
    assert (status, out) == (EXIT_USAGE, "")
    assert err.startswith("todo: --sub ")


def test_token_refuses_a_secret_the_server_would_refuse(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BETTER_AUTH_SECRET", "short")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PyJWT's InsecureKeyLengthWarning would be a second, raw message
        status, out, err = todo(capsys, "token", "--sub", "alice")
    assert (status, out) == (EXIT_USAGE, "")
    assert err.strip() == "todo: BETTER_AUTH_SECRET is 5 bytes; todo-server needs at least 32: use the server's"


@pytest.mark.parametrize("command", [["done"], ["edit", "--title", "renamed"], ["rm"]], ids=["done", "edit", "rm"])
def test_a_change_whose_reply_is_lost_says_it_may_have_been_made(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, signed_in: str, command: list[str]
) -> None:
    """The connection breaks after the server did the change: the CLI must not say the server is not there,
    or the user types the command again (and meets NOT_FOUND), or thinks the change was not made."""
    task = todo_json(capsys, "add", "paid the rent?")
    assert isinstance(task, dict)
    task_id = task["name"].rsplit("/", 1)[1]
    proxy = LostCallReply(int(os.environ["TODO_TARGET"].rsplit(":", 1)[1]))
    monkeypatch.setenv("TODO_TARGET", f"127.0.0.1:{proxy.port}")
    try:
        proxy.arm()
        status, out, err = todo(capsys, command[0], task_id, *command[1:])
    finally:
        proxy.close()
    assert proxy.reply_lost.is_set()
    assert (status, out) == (EXIT_UNREACHABLE, "")
    assert "may have been made" in err
    assert "todo ls" in err
    assert "is todo-server running" not in err  # it is: it did the change


@pytest.mark.parametrize("typed", ["ls", "list"])
def test_help_and_usage_errors_name_the_command_as_typed(capsys: pytest.CaptureFixture[str], typed: str) -> None:
    with pytest.raises(SystemExit) as shown:
        main([typed, "--help"])
    assert shown.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: todo {typed} [-h]")
    with pytest.raises(SystemExit) as refused:
        main([typed, "--done", "--open"])
    assert refused.value.code == EXIT_USAGE
    assert f"todo {typed}: error: argument --open: not allowed with argument --done" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["token", "jwks", "add", "ls", "list", "show", "done", "undo", "rm", "edit"])
def test_each_commands_help_says_what_it_does(capsys: pytest.CaptureFixture[str], command: str) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    _usage, _, rest = capsys.readouterr().out.partition("\n\n")
    summary = rest.splitlines()[0]
    assert not summary.endswith(":"), f"`todo {command} --help` starts with {summary!r}, not what it does"


def test_todo_help_says_how_to_start_and_what_exit_statuses_mean(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "make run" in text
    assert "todo token --sub alice" in text
    assert "TODO_TARGET" in text
    assert all(f"{status} " in text for status in (EXIT_REFUSED, EXIT_USAGE, EXIT_AUTH, EXIT_UNREACHABLE))


def test_every_argument_has_help_and_each_commands_own_come_first(capsys: pytest.CaptureFixture[str]) -> None:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in commands.choices.items():
        unexplained = [action.dest for action in parser._actions if not action.help]
        assert unexplained == [], f"todo {name}: no help for {unexplained}"
    with pytest.raises(SystemExit):
        main(["add", "--help"])
    listing = capsys.readouterr().out.split("\noptions:\n", 1)[1]  # after the usage line
    assert listing.index("--priority") < listing.index("--target") < listing.index("--json")
