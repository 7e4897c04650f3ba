"""`todo`: the command line for people trying the service."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from client.cli_errors import CliError
from client.dev_tokens import jwks_document, load_or_create_ed25519_key, mint_eddsa_token, mint_hs256_token

_DURATION = re.compile(r"(\d+)([smhd]?)")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DEV_KEY_FILE = ".todo-dev-ed25519.pem"
# What todo-server takes, so a token it would refuse is never minted (tests/test_cli.py checks the two agree):
# a `sub` that can stand in a resource name, and an HS256 secret of at least 32 bytes.
_MAX_SUBJECT_LENGTH = 128
_MIN_SECRET_BYTES = 32


def _usable_subject(sub: str) -> bool:
    return 0 < len(sub) <= _MAX_SUBJECT_LENGTH and sub.isprintable() and " " not in sub and "/" not in sub


def parse_duration(text: str) -> int:
    """`90`, `90s`, `15m`, `1h`, `7d` → seconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise CliError(f"--ttl {text!r} is not a duration like 15m, 1h or 7d")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def _dotenv_value(name: str, path: Path = Path(".env")) -> str | None:
    """`name` from a KEY=VALUE .env file in the working directory (what `make run` writes), if any."""
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == name:
            return value.strip().strip("'\"")
    return None


def _secret() -> bytes:
    secret = os.environ.get("BETTER_AUTH_SECRET") or _dotenv_value("BETTER_AUTH_SECRET")
    if not secret:
        raise CliError("BETTER_AUTH_SECRET is not set (and no .env here has it): export the server's secret")
    if len(secret.encode()) < _MIN_SECRET_BYTES:
        raise CliError(
            f"BETTER_AUTH_SECRET is {len(secret.encode())} bytes; todo-server needs at least {_MIN_SECRET_BYTES}: "
            "use the server's"
        )
    return secret.encode()


def _cmd_token(args: argparse.Namespace) -> int:
    if not _usable_subject(args.sub):
        raise CliError(
            f"--sub {args.sub[:40]!r} cannot be a user id: 1 to 128 printable characters, no '/' or spaces"
        )
    ttl = parse_duration(args.ttl)
    if args.alg == "EdDSA":
        key = load_or_create_ed25519_key(Path(args.key_file))
        token = mint_eddsa_token(key=key, subject=args.sub, ttl_seconds=ttl, issuer=args.issuer, email=args.email)
    else:
        token = mint_hs256_token(secret=_secret(), subject=args.sub, ttl_seconds=ttl, email=args.email)
    print(token)
    return 0


def _cmd_jwks(args: argparse.Namespace) -> int:
    document = json.dumps(jwks_document(load_or_create_ed25519_key(Path(args.key_file))))
    if args.serve is None:
        print(document)
        return 0
    body = document.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", args.serve), Handler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"serving the JWKS at {url}/api/auth/jwks; run the server with BETTER_AUTH_URL={url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


def _quiet_grpc_core() -> None:
    """gRPC core logs each failed TLS handshake to stderr (`I1203 ... Handshake failed`) unless GRPC_VERBOSITY
    says otherwise, burying the CLI's one line. It reads the variable once, when grpc is first imported."""
    if "grpc" not in sys.modules:
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def build_parser() -> argparse.ArgumentParser:
    _quiet_grpc_core()
    from client.task_commands import add_task_commands  # imports grpc: only once it is quiet

    parser = argparse.ArgumentParser(
        prog="todo",
        description="Talk to a todo-tasks server.",
        epilog=(
            "Start here: `make run` serves on localhost:50051 (TODO_TARGET or --target for another); "
            '`export TODO_TOKEN=$(todo token --sub alice)`, then `todo add "Buy milk"` and `todo ls`. '
            "`todo COMMAND --help` gives each command's options. Exit status: 1 the server said no, 2 usage, "
            "3 no or refused token, 4 no server or no answer."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser(
        "token",
        help="mint a development token (HS256, signed with BETTER_AUTH_SECRET)",
        description="Mint a development token: HS256, signed with BETTER_AUTH_SECRET (or .env's), or EdDSA.",
    )
    token.add_argument("--sub", required=True, help="the user id the token names")
    token.add_argument("--ttl", default="1h", help="how long it stays valid: 90s, 15m, 1h, 7d (default 1h)")
    token.add_argument("--email", help="an email claim to include")
    token.add_argument(
        "--alg",
        choices=("HS256", "EdDSA"),
        default="HS256",
        help="HS256 (BETTER_AUTH_SECRET) or EdDSA (--key-file)",
    )
    token.add_argument(
        "--key-file", default=_DEV_KEY_FILE, help=f"EdDSA private key, made if absent ({_DEV_KEY_FILE})"
    )
    token.add_argument("--issuer", help="EdDSA: iss and aud, as Better Auth sets them (its base URL)")
    token.set_defaults(run=_cmd_token)
    jwks = commands.add_parser(
        "jwks",
        help="print (or --serve) the JWKS of the local EdDSA key",
        description="Print (or --serve) the JWKS of the local EdDSA key.",
    )
    jwks.add_argument(
        "--key-file", default=_DEV_KEY_FILE, help=f"EdDSA private key, made if absent ({_DEV_KEY_FILE})"
    )
    jwks.add_argument("--serve", type=int, metavar="PORT", help="serve it at http://127.0.0.1:PORT/api/auth/jwks")
    jwks.set_defaults(run=_cmd_jwks)
    add_task_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except CliError as error:
        print(f"todo: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
