"""The `todo` task commands (add, ls, show, done, undo, edit, rm): TaskClient calls for people."""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable
from datetime import datetime

from todo.v1 import task_service_pb2 as pb

from client import output
from client.cli_errors import EXIT_AUTH, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE, CliError
from client.connectivity import Connection, tcp_problem
from client.errors import (
    DeadlineExceeded,
    NotFound,
    OutcomeUnknown,
    TaskServiceError,
    Unauthenticated,
    Unavailable,
)
from client.task_client import TaskClient

DEFAULT_TARGET = "localhost:50051"
# How long the CLI waits for a connection before saying nobody answers there (a local server takes ms); a
# connection refused is said at once.
_CONNECT_SECONDS = 3.0
_FULL_ID = re.compile(r"[0-9a-f]{32}")
_HEX = re.compile(r"[0-9a-f]+")


def _connection_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    # A group of their own: --help lists them after the command's own options, which are what people look for.
    options = parent.add_argument_group("server, token and output")
    options.add_argument("--target", help=f"server address (TODO_TARGET; default {DEFAULT_TARGET})")
    options.add_argument("--token", help="bearer token (TODO_TOKEN; `todo token --sub alice` mints one)")
    options.add_argument("--ca", help="PEM CA file that signed the server's certificate; turns TLS on (TODO_CA)")
    options.add_argument("--cert", help="PEM client certificate, for a server that asks for one (TODO_CERT)")
    options.add_argument("--key", help="PEM private key of --cert (TODO_KEY)")
    options.add_argument("--timeout", type=_seconds, default=10.0, help="seconds per call (default 10)")
    options.add_argument("--json", action="store_true", help="print JSON (proto field names) for scripts")
    return parent


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not seconds > 0:  # nan too
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return seconds


def _due(text: str) -> datetime:
    """`2026-12-01` or `2026-12-01T17:00` (local time unless it names an offset)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-12-01 or 2026-12-01T17:00") from None
    return moment if moment.tzinfo else moment.astimezone()


def _open_client(args: argparse.Namespace) -> TaskClient:
    token = args.token or os.environ.get("TODO_TOKEN")
    if not token:
        raise CliError("no token: pass --token or set TODO_TOKEN (`todo token --sub alice` mints one)", EXIT_AUTH)
    ca = args.ca = args.ca or os.environ.get("TODO_CA")  # kept: a failed connection's hint depends on it
    cert, key = args.cert or os.environ.get("TODO_CERT"), args.key or os.environ.get("TODO_KEY")
    if bool(cert) != bool(key):
        raise CliError("a client certificate needs both --cert and --key (TODO_CERT, TODO_KEY)", EXIT_USAGE)
    if cert and not ca:
        raise CliError("a client certificate needs TLS: pass --ca too (TODO_CA)", EXIT_USAGE)
    client_cert = (cert, key) if cert and key else None
    try:
        return TaskClient(
            args.target, token=token, tls=ca or False, client_cert=client_cert, default_timeout=args.timeout
        )
    except ValueError as error:
        raise CliError(str(error), EXIT_USAGE) from None


def _resolve(client: TaskClient, reference: str) -> str:
    """The task name for a full name, a full id, or an unambiguous prefix of an id."""
    reference = reference.strip().lower()
    if "/" in reference or _FULL_ID.fullmatch(reference):
        return reference
    if not _HEX.fullmatch(reference):
        raise CliError(f"{reference!r} is not a task id (ids are hex, as `todo ls` shows)", EXIT_USAGE)
    matches = [
        task.name for task in client.iter_tasks(page_size=1000) if output.task_id(task).startswith(reference)
    ]
    if not matches:
        raise CliError(f"no task id starts with {reference!r}", EXIT_REFUSED)
    if len(matches) > 1:
        raise CliError(f"{reference!r} matches {len(matches)} tasks: type more of the id", EXIT_REFUSED)
    return matches[0]


def _show_one(args: argparse.Namespace, task: pb.Task) -> None:
    print(output.dumps(output.task_json(task)) if args.json else output.details(task))


def _add(client: TaskClient, args: argparse.Namespace) -> None:
    task = client.create_task(
        args.title, description=args.description or "", priority=args.priority or 0, due_time=args.due
    )
    print(output.dumps(output.task_json(task)) if args.json else f"added {output.task_id(task)}  {task.title}")


def _ls(client: TaskClient, args: argparse.Namespace) -> None:
    completed = True if args.done else False if args.open else None
    tasks = list(client.iter_tasks(completed=completed, query=args.query or "", order_by=args.order_by or ""))
    if args.json:
        print(output.dumps([output.task_json(t) for t in tasks]))
    elif tasks:
        print(output.table(tasks))
    elif completed is None and not args.query:
        print('no tasks yet: add one with `todo add "Buy milk"`')  # a header alone reads like a failure
    else:
        print("no tasks match")


def _show(client: TaskClient, args: argparse.Namespace) -> None:
    _show_one(args, client.get_task(_resolve(client, args.id)))


def _set_completed(completed: bool) -> Callable[[TaskClient, argparse.Namespace], None]:
    def run(client: TaskClient, args: argparse.Namespace) -> None:
        _show_one(args, client.update_task(_resolve(client, args.id), completed=completed))

    return run


# The commands that write: a reply lost on the way back leaves them done or not, for all the CLI knows.
_CHANGING_COMMANDS = frozenset({"add", "done", "undo", "edit", "rm"})
# `todo edit --clear NAME` → the field it resets.
_CLEARABLE = {"due": "due_time", "priority": "priority", "description": "description"}


def _edit(client: TaskClient, args: argparse.Namespace) -> None:
    changes = {
        "title": args.title,
        "description": args.description,
        "priority": args.priority,
        "due_time": args.due,
    }
    changes = {field: value for field, value in changes.items() if value is not None}
    cleared = [_CLEARABLE[name] for name in dict.fromkeys(args.clear or ())]
    for name in args.clear or ():
        if _CLEARABLE[name] in changes:
            raise CliError(f"--{name} and --clear {name}: pick one", EXIT_USAGE)
    if not changes and not cleared:
        raise CliError("nothing to change: pass --title, --description, --priority, --due or --clear", EXIT_USAGE)
    task = client.update_task(_resolve(client, args.id), clear=cleared, **changes)  # type: ignore[arg-type]
    _show_one(args, task)


def _rm(client: TaskClient, args: argparse.Namespace) -> None:
    name = _resolve(client, args.id)
    client.delete_task(name)
    print(output.dumps({"deleted": name}) if args.json else f"deleted {name.rsplit('/', 1)[-1]}")


def _explain(error: TaskServiceError, args: argparse.Namespace) -> CliError:
    """One line that says what went wrong and what to do, and the exit status for it."""
    if isinstance(error, Unauthenticated):
        if error.reason == "TOKEN_EXPIRED":
            return CliError("your token has expired: mint a new one (`todo token --sub ...`)", EXIT_AUTH)
        return CliError(
            f"the server refused the token ({error.reason}): {error.message}; mint one it accepts: "
            "`todo token --sub alice`, run where the server's .env is (or with its BETTER_AUTH_SECRET)",
            EXIT_AUTH,
        )
    if isinstance(error, Unavailable | DeadlineExceeded) and error.reason is None:
        if args.changes:  # it answered the connection check: it may have made the change before this broke
            return CliError(
                f"no answer from {args.target} ({error.message}): the change may have been made "
                "(`todo ls` shows whether it was)",
                EXIT_UNREACHABLE,
            )
        return _unreachable(args, args.timeout)
    if isinstance(error, Unavailable | DeadlineExceeded):
        return CliError(f"the server could not answer: {error}", EXIT_UNREACHABLE)
    if isinstance(error, NotFound):
        return CliError(f"no such task: {getattr(args, 'id', '')}", EXIT_REFUSED)
    if isinstance(error, OutcomeUnknown):  # not a refusal: the change may well be saved
        return CliError(f"{error.message} (`todo ls` shows whether it was)", EXIT_UNREACHABLE)
    return CliError(str(error), EXIT_REFUSED)


def _checked_target(target: str) -> str:
    """`target` if it can be a gRPC target; a usage error for the forms people type by mistake."""
    if target.isdigit():
        raise CliError(f"--target is host:port: did you mean localhost:{target}?", EXIT_USAGE)
    if target.startswith(("http://", "https://")):
        raise CliError(f"--target is host:port: drop the scheme ({target.split('://', 1)[1]})", EXIT_USAGE)
    return target


_NO_PORT = "no port given: gRPC uses 443"


def _unreachable(args: argparse.Namespace, seconds: float) -> CliError:
    no_port = "" if ":" in args.target else f" ({_NO_PORT})"
    return CliError(
        f"cannot reach the server at {args.target} within {seconds:g}s: is todo-server running there? "
        f"Check --target (host:port){no_port}, and for a TLS server --ca, and --cert/--key if it asks for a "
        "client certificate",
        EXIT_UNREACHABLE,
    )


def _connection_failed(args: argparse.Namespace) -> CliError:
    """What to do when the connection failed at once: nothing listening there, or not gRPC as this speaks it."""
    problem = tcp_problem(args.target)
    if problem == "connection refused":
        no_port = "" if ":" in args.target else f"; {_NO_PORT}"
        message = (
            f"nothing is listening at {args.target} (connection refused{no_port}): start the "
            "server (`make run`), or point --target / TODO_TARGET at where it listens"
        )
    elif problem:
        message = f"cannot connect to {args.target} ({problem}): check --target / TODO_TARGET"
    elif args.ca:
        message = (
            f"{args.target} took the connection but the TLS handshake failed: check that it serves TLS, that "
            "--ca (TODO_CA) signed its certificate, and --cert/--key if it asks for a client certificate"
        )
    else:
        message = (
            f"{args.target} took the connection but did not answer gRPC over plaintext: for a TLS server "
            "pass --ca (TODO_CA); else check the port in --target / TODO_TARGET"
        )
    return CliError(message, EXIT_UNREACHABLE)


def _runner(command: Callable[[TaskClient, argparse.Namespace], None]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        args.target = _checked_target(args.target or os.environ.get("TODO_TARGET") or DEFAULT_TARGET)
        with _open_client(args) as client:
            connect_seconds = min(args.timeout, _CONNECT_SECONDS)
            connection = client.first_connection(connect_seconds)
            if connection is Connection.FAILED:
                raise _connection_failed(args)
            if connection is Connection.SILENT:
                raise _unreachable(args, connect_seconds)
            try:
                command(client, args)
            except TaskServiceError as error:
                raise _explain(error, args) from None
        return 0

    return run


def add_task_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Registers add, ls (list), show, done, undo, edit and rm on the `todo` parser's subcommands."""
    connection = _connection_options()

    def command(
        name: str,
        help_text: str,
        run: Callable[[TaskClient, argparse.Namespace], None],
        arguments: Callable[[argparse.ArgumentParser], None],
        *aliases: str,
    ) -> None:
        # A parser per alias, not argparse's aliases: its usage line and errors then name what was typed
        # (`todo list --help` says `usage: todo list`); the command list shows the first name only.
        also = f" (also: todo {', todo '.join(aliases)})" if aliases else ""
        for typed in (name, *aliases):
            listing = {"help": help_text + also} if typed == name else {}
            parser = commands.add_parser(typed, description=_sentence(help_text), parents=[connection], **listing)
            parser.set_defaults(run=_runner(run), changes=name in _CHANGING_COMMANDS)
            arguments(parser)

    def task_fields(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--description", help="longer text")
        parser.add_argument("--priority", choices=["low", "medium", "high"], help="how urgent it is")
        parser.add_argument("--due", type=_due, help="2026-12-01 or 2026-12-01T17:00 (local time)")

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("title", help="what to do: one line, up to 200 characters")
        task_fields(parser)

    def ls_arguments(parser: argparse.ArgumentParser) -> None:
        state = parser.add_mutually_exclusive_group()
        state.add_argument("--done", action="store_true", help="only completed tasks")
        state.add_argument("--open", action="store_true", help="only open tasks")
        parser.add_argument("--query", help="only tasks whose title or description contains this")
        parser.add_argument("--order-by", help="e.g. 'priority desc', 'due_time' (default: newest first)")

    def task_id(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("id", help="task id, or a unique prefix of it")

    def edit_arguments(parser: argparse.ArgumentParser) -> None:
        task_id(parser)
        parser.add_argument("--title", help="a new title")
        task_fields(parser)
        parser.add_argument(
            "--clear",
            action="append",
            choices=list(_CLEARABLE),
            help="remove the due date, priority or description",
        )

    command("add", "create a task", _add, add_arguments)
    command("ls", "list your tasks", _ls, ls_arguments, "list")
    command("show", "show one task", _show, task_id)
    command("done", "mark a task done", _set_completed(True), task_id)
    command("undo", "mark a task not done", _set_completed(False), task_id)
    command("rm", "delete a task", _rm, task_id)
    command("edit", "change a task's fields", _edit, edit_arguments)


def _sentence(text: str) -> str:
    return f"{text[0].upper()}{text[1:]}."
