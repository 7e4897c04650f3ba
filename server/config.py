"""Settings: read once at start-up from flags and environment variables into one frozen object."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MIN_SECRET_BYTES = 32
DEFAULT_LISTEN = "[::]:50051"
DEFAULT_DATABASE_URL = "sqlite:///todo.db"


class ConfigError(ValueError):
    """The configuration cannot work; the message says what to change."""


class Secret:
    """A secret value that never shows in a repr, a log line or --check-config output."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Settings:
    listen: str = DEFAULT_LISTEN
    database_url: str = DEFAULT_DATABASE_URL
    better_auth_secret: Secret | None = None
    jwt_leeway_seconds: float = 30.0
    max_workers: int = 16
    max_concurrent_rpcs: int = 1000
    grace_seconds: float = 10.0
    log_level: str = "INFO"
    # Run the migrations at start-up. Off in production (run `todo-server migrate` once per release);
    # `make run` turns it on so the SQLite quick start needs no set-up.
    migrate: bool = False

    def page_token_key(self) -> bytes:
        """The key that signs page tokens: derived from the secret, so every replica shares it."""
        if self.better_auth_secret is None:
            raise ConfigError("no secret to derive the page token key from")
        return hmac.new(self.better_auth_secret.reveal(), b"todo.v1 page tokens", hashlib.sha256).digest()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="todo-server",
        description="Serve todo.v1.TaskService over gRPC. Every flag falls back to the variable named in "
        "its help, then to its default.",
    )
    parser.add_argument("--listen", help=f"address to listen on (TODO_LISTEN; default {DEFAULT_LISTEN})")
    parser.add_argument("--database-url", help=f"SQLAlchemy URL (DATABASE_URL; default {DEFAULT_DATABASE_URL})")
    parser.add_argument("--max-workers", type=int, help="RPC worker threads (TODO_MAX_WORKERS; default 16)")
    parser.add_argument(
        "--grace-seconds",
        type=float,
        help="how long in-flight calls may finish after SIGTERM (TODO_GRACE_SECONDS; default 10)",
    )
    parser.add_argument(
        "--migrate",
        action="store_true",
        default=None,
        help="bring the database schema up to date before serving (TODO_MIGRATE=1; default off)",
    )
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (TODO_LOG_LEVEL; default INFO)")
    return parser


def _positive(name: str, value: float) -> float:
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    return value


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from `argv` flags, then `environ` variables, then defaults. Raises ConfigError."""
    env = os.environ if environ is None else environ
    args = _parser().parse_args(argv)
    secret = env.get("BETTER_AUTH_SECRET", "")
    if not secret:
        raise ConfigError(
            "BETTER_AUTH_SECRET is not set: set it to the secret that signs your HS256 tokens "
            "(`make run` writes a random one to .env)"
        )
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"BETTER_AUTH_SECRET is {len(secret.encode())} bytes; use at least {MIN_SECRET_BYTES} "
            "(for example: openssl rand -base64 48)"
        )
    try:
        max_workers = args.max_workers or int(env.get("TODO_MAX_WORKERS", "16"))
        grace = (
            args.grace_seconds if args.grace_seconds is not None else float(env.get("TODO_GRACE_SECONDS", "10"))
        )
    except ValueError as error:
        raise ConfigError(f"a number setting is not a number: {error}") from None
    log_level = (args.log_level or env.get("TODO_LOG_LEVEL", "INFO")).upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"log level {log_level!r} is not one of DEBUG, INFO, WARNING, ERROR")
    return Settings(
        listen=args.listen or env.get("TODO_LISTEN", DEFAULT_LISTEN),
        database_url=args.database_url or env.get("DATABASE_URL", DEFAULT_DATABASE_URL),
        better_auth_secret=Secret(secret.encode()),
        max_workers=int(_positive("--max-workers", max_workers)),
        grace_seconds=_positive("--grace-seconds", grace),
        log_level=log_level,
        migrate=args.migrate or _flag(env.get("TODO_MIGRATE", "")),
    )


def _flag(value: str) -> bool:
    if value.strip().lower() in ("", "0", "false", "no", "off"):
        return False
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"TODO_MIGRATE must be 1 or 0, got {value!r}")


def load_migrate_database_url(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> str:
    """The database `todo-server migrate` works on: --database-url, then DATABASE_URL, then the default."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="todo-server migrate", description="Bring the database schema up to this release's head, then exit."
    )
    parser.add_argument("--database-url", help=f"SQLAlchemy URL (DATABASE_URL; default {DEFAULT_DATABASE_URL})")
    args = parser.parse_args(argv)
    return str(args.database_url or env.get("DATABASE_URL", DEFAULT_DATABASE_URL))
