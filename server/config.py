"""Settings: read once at start-up from flags and environment variables into one frozen object."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import ipaddress
import math
import os
import re
import socket
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from server.limits import UNREAD_ANSWER_BYTES, UNREAD_ANSWER_BYTES_PER_USER

MIN_SECRET_BYTES = 32
DEFAULT_LISTEN = "[::]:50051"
DEFAULT_DATABASE_URL = "sqlite:///todo.db"
LOG_FORMATS = ("text", "json")
# Any of these turns tracing on; the OpenTelemetry SDK reads them (and the other OTEL_* variables) itself.
_OTEL_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# Mirrors server.auth.tokens.SUPPORTED_ALGORITHMS (config imports nothing from the layers it configures).
_SUPPORTED_ALGORITHMS = frozenset(
    {"HS256", "EdDSA", "ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
)


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
    # Better Auth's base URL: alone it means JWKS at <url>/api/auth/jwks and iss = aud = <url>.
    better_auth_url: str | None = None
    jwt_jwks_url: str | None = None
    # Keys over plain http from another machine: refused unless the operator vouches for the network.
    jwks_allow_http: bool = False
    jwt_issuer: str | None = None
    jwt_audience: tuple[str, ...] = ()
    jwt_algorithms: tuple[str, ...] | None = None  # None: every algorithm the configured keys can verify
    jwt_leeway_seconds: float = 30.0
    jwks_refresh_seconds: float = 300.0
    jwks_min_refetch_seconds: float = 10.0
    verified_token_cache_size: int = 10_000
    page_token_secret: Secret | None = None
    max_workers: int = 16
    # Tasks one user may keep (0: no bound): one user, or a BFF bug looping CreateTask, must not fill the disk.
    max_tasks_per_user: int = 10_000
    workers: int = 1  # server processes sharing the port (SO_REUSEPORT): one Python process uses one core
    # Calls in flight, each on a thread of its own (server/rpc_threads.py); past it RESOURCE_EXHAUSTED at once.
    max_concurrent_rpcs: int = 1000
    # Bytes of answers their clients have not read yet (server/answer_buffer.py, limits.py says why).
    max_unread_answer_bytes: int = UNREAD_ANSWER_BYTES
    max_unread_answer_bytes_per_user: int = UNREAD_ANSWER_BYTES_PER_USER
    grace_seconds: float = 10.0
    # After SIGTERM, health says NOT_SERVING but calls are still taken this long, while load balancers
    # (a Kubernetes Service's endpoints, a proxy's health checks) stop sending here; then the drain begins.
    drain_delay_seconds: float = 0.0
    log_level: str = "INFO"
    # Run the migrations at start-up. Off in production (run `todo-server migrate` once per release);
    # `make run` turns it on so the SQLite quick start needs no set-up.
    migrate: bool = False
    log_format: str = "text"
    metrics_listen: str | None = None
    health_check_seconds: float = 5.0
    tracing: bool = False
    service_name: str = "todo-tasks"
    # Server reflection (what `grpcurl list` and `describe` read): on, so a developer can poke the server.
    reflection: bool = True
    # Both set: serve TLS with this PEM chain and key; both None: plaintext.
    tls_certificate_chain: bytes | None = None
    tls_private_key: Secret | None = None
    # Mutual TLS: only callers with a certificate these CAs signed get a connection (the BFF, say).
    tls_client_ca: bytes | None = None

    def page_token_key(self) -> bytes:
        """The key that signs page tokens, the same on every replica: derived from TODO_PAGE_TOKEN_SECRET,
        else from BETTER_AUTH_SECRET."""
        secret = self.page_token_secret or self.better_auth_secret
        if secret is None:
            raise ConfigError("no secret to derive the page token key from: set TODO_PAGE_TOKEN_SECRET")
        return hmac.new(secret.reveal(), b"todo.v1 page tokens", hashlib.sha256).digest()

    def jwks_url(self) -> str | None:
        """Where the token signing keys are published, if tokens are verified with a JWKS."""
        if self.jwt_jwks_url:
            return self.jwt_jwks_url
        return f"{self.better_auth_url}/api/auth/jwks" if self.better_auth_url else None

    def expected_issuer(self) -> str | None:
        return self.jwt_issuer or self.better_auth_url

    def expected_audience(self) -> tuple[str, ...]:
        if self.jwt_audience:
            return self.jwt_audience
        return (self.better_auth_url,) if self.better_auth_url else ()

    def describe(self) -> dict[str, str]:
        """Every setting as text for `--check-config`: secrets and the database password masked."""
        described = {field.name: _described(getattr(self, field.name)) for field in fields(self)}
        described["database_url"] = masked_database_url(self.database_url)
        return described


def _described(value: object) -> str:
    # Bytes are file contents (PEM): their size says they were read, their text adds nothing.
    return f"<{len(value)} bytes>" if isinstance(value, bytes) else str(value)


def masked_database_url(url: str) -> str:
    """`url` with its password replaced by stars, fit for a log line or an error message."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<not a database URL>"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="todo-server",
        description="Serve todo.v1.TaskService over gRPC. Every flag falls back to the variable named in "
        "its help, then to its default.",
        epilog="Secrets are read only from the environment, never from flags (which `ps` shows): "
        "BETTER_AUTH_SECRET (HS256 tokens, >= 32 bytes) and TODO_PAGE_TOKEN_SECRET (page tokens; defaults to "
        "one derived from BETTER_AUTH_SECRET). `todo-server migrate [--database-url URL]` brings the schema "
        "up to this release and exits.",
    )
    parser.add_argument("--listen", help=f"address to listen on (TODO_LISTEN; default {DEFAULT_LISTEN})")
    parser.add_argument("--database-url", help=f"SQLAlchemy URL (DATABASE_URL; default {DEFAULT_DATABASE_URL})")
    parser.add_argument(
        "--max-workers",
        type=int,
        help="calls running at once = database connections (TODO_MAX_WORKERS; default 16)",
    )
    parser.add_argument(
        "--max-tasks-per-user",
        help="tasks one user may keep; CreateTask past it is RESOURCE_EXHAUSTED; 0 means no bound "
        "(TODO_MAX_TASKS_PER_USER; default 10000)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="server processes sharing the port, one per core you give it (TODO_WORKERS; default 1)",
    )
    parser.add_argument(
        "--grace-seconds",
        type=float,
        help="how long in-flight calls may finish after SIGTERM (TODO_GRACE_SECONDS; default 10)",
    )
    parser.add_argument(
        "--drain-delay-seconds",
        help="after SIGTERM, keep taking calls this long with health NOT_SERVING, so load balancers move "
        "away first; then drain (TODO_DRAIN_DELAY_SECONDS; default 0; behind Kubernetes, say 5)",
    )
    parser.add_argument(
        "--migrate",
        action="store_true",
        default=None,
        help="bring the database schema up to date before serving (TODO_MIGRATE=1; default off)",
    )
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (TODO_LOG_LEVEL; default INFO)")
    parser.add_argument("--log-format", help="text or json (TODO_LOG_FORMAT; default text)")
    parser.add_argument(
        "--no-reflection",
        action="store_true",
        help="turn server reflection off, for a deployment that wants its API surface unlisted "
        "(TODO_REFLECTION=0; default on)",
    )
    parser.add_argument(
        "--metrics-listen",
        help="serve Prometheus metrics over HTTP on this host:port, e.g. 0.0.0.0:9464 (TODO_METRICS_LISTEN; "
        "default off)",
    )
    parser.add_argument(
        "--health-check-seconds",
        type=float,
        help="how often the background readiness checks run (TODO_HEALTH_CHECK_SECONDS; default 5)",
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="print the effective configuration (secrets masked) and exit",
    )
    parser.add_argument(
        "--better-auth-url",
        help="Better Auth base URL: JWKS at <url>/api/auth/jwks, iss = aud = <url> (BETTER_AUTH_URL)",
    )
    parser.add_argument("--jwks-url", help="JWKS URL, overrides the one BETTER_AUTH_URL implies (JWT_JWKS_URL)")
    parser.add_argument(
        "--jwks-allow-http",
        action="store_true",
        default=None,
        help="allow a plain http:// JWKS URL on another machine, for a network you trust "
        "(JWT_JWKS_ALLOW_HTTP=1; default: only https://, or http:// to localhost)",
    )
    parser.add_argument("--jwt-issuer", help="required iss claim (JWT_ISSUER; default BETTER_AUTH_URL)")
    parser.add_argument(
        "--jwt-audience", help="accepted aud values, comma-separated (JWT_AUDIENCE; default BETTER_AUTH_URL)"
    )
    parser.add_argument(
        "--jwt-algorithms",
        help="allowed algorithms, comma-separated, e.g. EdDSA,ES256 (JWT_ALGORITHMS; default: all the keys fit)",
    )
    parser.add_argument(
        "--jwt-leeway-seconds",
        type=float,
        help="clock skew allowed on exp/nbf/iat (JWT_LEEWAY_SECONDS; default 30)",
    )
    parser.add_argument(
        "--jwks-refresh-seconds",
        help="how often the JWKS is refetched in the background (JWT_JWKS_REFRESH_SECONDS; default 300)",
    )
    parser.add_argument(
        "--jwks-min-refetch-seconds",
        help="at most one refetch per this many seconds for tokens naming an unknown kid "
        "(JWT_JWKS_MIN_REFETCH_SECONDS; default 10)",
    )
    parser.add_argument(
        "--jwt-verified-cache-size",
        help="verified tokens kept so a reused token skips the signature check; 0 turns it off "
        "(JWT_VERIFIED_CACHE_SIZE; default 10000)",
    )
    parser.add_argument("--tls-cert", help="PEM certificate chain; serve TLS (TODO_TLS_CERT; default plaintext)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert (TODO_TLS_KEY)")
    parser.add_argument(
        "--tls-client-ca",
        help="PEM CA certificates; callers must present a certificate one of them signed: mutual TLS "
        "(TODO_TLS_CLIENT_CA; default: no client certificate asked for)",
    )
    return parser


def _read_pem(flag: str, path: str) -> bytes:
    try:
        content = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{flag} {path!r} cannot be read: {error.strerror}") from None
    if b"-----BEGIN " not in content:
        raise ConfigError(f"{flag} {path!r} is not a PEM file")
    return content


def _tls_files(cert_path: str | None, key_path: str | None) -> tuple[bytes | None, Secret | None]:
    """The certificate chain and key to serve TLS with, or (None, None) for plaintext."""
    if not cert_path and not key_path:
        return None, None
    if not cert_path or not key_path:
        raise ConfigError("TLS needs both --tls-cert and --tls-key (TODO_TLS_CERT, TODO_TLS_KEY)")
    return _read_pem("--tls-cert", cert_path), Secret(_read_pem("--tls-key", key_path))


def _tls_client_ca(path: str | None, *, serving_tls: bool) -> bytes | None:
    if not path:
        return None
    if not serving_tls:
        raise ConfigError("--tls-client-ca (TODO_TLS_CLIENT_CA) needs TLS: set --tls-cert and --tls-key too")
    return _read_pem("--tls-client-ca", path)


def _secret_setting(env: Mapping[str, str], name: str, fix: str) -> Secret | None:
    value = env.get(name, "")
    if not value:
        return None
    if len(value.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{name} is {len(value.encode())} bytes; use at least {MIN_SECRET_BYTES} (for example: {fix})"
        )
    return Secret(value.encode())


def _url_setting(name: str, value: str | None) -> str | None:
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name} {value!r} must be an http:// or https:// URL")
    return value.rstrip("/")


def is_loopback_url(url: str) -> bool:
    """Whether `url` names this machine (localhost, 127.0.0.0/8, ::1): plain http to it crosses no network."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_jwks_transport(name: str, jwks_url: str, *, allow_http: bool) -> None:
    """Refuses keys fetched over plain http from another machine: anyone on the path could swap them."""
    if not jwks_url.startswith("http://") or allow_http or is_loopback_url(jwks_url):
        return
    raise ConfigError(
        f"{name} means fetching the token signing keys from {jwks_url!r} over plain http, where anyone on the "
        "network path can swap them: use https://, or set JWT_JWKS_ALLOW_HTTP=1 (--jwks-allow-http) if you "
        "trust that network"
    )


def _list_setting(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def _positive(name: str, value: float) -> float:
    if not value > 0:  # also refuses NaN
        raise ConfigError(f"{name} must be positive, got {value}")
    return value


def _seconds_setting(name: str, raw: str) -> float:
    """A positive number of seconds; `name` is the flag or variable it came from, for the message."""
    value = _finite(raw)
    if value is None:
        raise ConfigError(f"{name} {raw!r} is not a number of seconds")
    return _positive(name, value)


def _finite(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _drain_delay_setting(flag: str | None, env: Mapping[str, str]) -> float:
    """Seconds, 0 (no delay, the default) or more, from the flag or else TODO_DRAIN_DELAY_SECONDS."""
    if flag is not None:
        name, raw = "--drain-delay-seconds", flag
    else:
        name, raw = "TODO_DRAIN_DELAY_SECONDS", env.get("TODO_DRAIN_DELAY_SECONDS", "0")
    value = _finite(raw)
    if value is None or value < 0:
        raise ConfigError(f"{name} {raw!r} is not a number of seconds, 0 or more")
    return value


def _count_setting(name: str, raw: str) -> int:
    """A whole number, 0 or more; `name` is the flag or variable it came from, for the message."""
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} {raw!r} is not a whole number") from None
    if value < 0:
        raise ConfigError(f"{name} must be 0 or more, got {value}")
    return value


def _flag_or_variable(
    flag_value: str | None, flag: str, env: Mapping[str, str], variable: str, default: str
) -> tuple[str, str]:
    """The raw value and where it came from (the flag, else the variable, else the default)."""
    if flag_value is not None:
        return flag, flag_value
    return variable, env.get(variable, default)


# HOST:PORT, the host a name, an IPv4 address or a bracketed IPv6 one.
_LISTEN_ADDRESS = re.compile(r"(?P<host>\[[^\]]+\]|[^:\[\]]+):(?P<port>[0-9]+)")
_DATABASE_URL_FORMS = "sqlite:///PATH (SQLite) or postgresql+psycopg://USER@HOST/DB (PostgreSQL)"


def _listen_setting(name: str, value: str) -> str:
    """`value` if gRPC can be asked to listen there; gRPC itself takes port 99999 as 34463 without a word."""
    if value.startswith(("unix:", "unix-abstract:")):
        return value
    match = _LISTEN_ADDRESS.fullmatch(value)
    if match is None:
        raise ConfigError(f"{name} {value!r} is not HOST:PORT, such as [::]:50051 or 127.0.0.1:50051")
    host, port = match["host"], int(match["port"])
    if port > 65535:
        raise ConfigError(f"{name} {value!r}: port {port} is not between 0 and 65535")
    try:
        socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError):
        raise ConfigError(f"{name} {value!r}: {host!r} is not a name that resolves, nor an address") from None
    return value


def _database_url_setting(name: str, value: str) -> str:
    """`value` if todo-server can use it; `postgres://` and `postgresql://` (as platforms hand them out) name
    the psycopg driver, which is the one installed."""
    try:
        url = make_url(value)
    except ArgumentError:
        raise ConfigError(f"{name} is not a database URL: use {_DATABASE_URL_FORMS}") from None
    backend, _, driver = url.drivername.partition("+")
    if backend in ("postgres", "postgresql") and not driver:
        return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if (backend, driver) in (("postgresql", "psycopg"), ("sqlite", ""), ("sqlite", "pysqlite")):
        return value
    raise ConfigError(
        f"{name} {masked_database_url(value)!r} names a database or driver todo-server does not use: "
        f"use {_DATABASE_URL_FORMS}"
    )


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from `argv` flags, then `environ` variables, then defaults. Raises ConfigError."""
    env = os.environ if environ is None else environ
    args = _parser().parse_args(argv)
    secret = _secret_setting(env, "BETTER_AUTH_SECRET", "openssl rand -base64 48")
    page_secret = _secret_setting(env, "TODO_PAGE_TOKEN_SECRET", "openssl rand -base64 48")
    better_auth_url = _url_setting("BETTER_AUTH_URL", args.better_auth_url or env.get("BETTER_AUTH_URL"))
    jwks_url = _url_setting("JWT_JWKS_URL", args.jwks_url or env.get("JWT_JWKS_URL"))
    if secret is None and better_auth_url is None and jwks_url is None:
        raise ConfigError(
            "no token verification is configured: set BETTER_AUTH_URL (Better Auth's jwt plugin, JWKS), "
            "or BETTER_AUTH_SECRET (HS256; `make run` writes a random one to .env), or both"
        )
    jwks_allow_http = args.jwks_allow_http or _flag("JWT_JWKS_ALLOW_HTTP", env.get("JWT_JWKS_ALLOW_HTTP", ""))
    if jwks_url is not None:
        _check_jwks_transport("JWT_JWKS_URL", jwks_url, allow_http=jwks_allow_http)
    elif better_auth_url is not None:
        _check_jwks_transport("BETTER_AUTH_URL", f"{better_auth_url}/api/auth/jwks", allow_http=jwks_allow_http)
    if secret is None and page_secret is None:
        raise ConfigError(
            "TODO_PAGE_TOKEN_SECRET is not set: without BETTER_AUTH_SECRET it keys page tokens; set it to "
            "the same random value (>= 32 bytes) on every replica"
        )
    algorithms = _list_setting(args.jwt_algorithms or env.get("JWT_ALGORITHMS"))
    unknown = [alg for alg in algorithms if alg not in _SUPPORTED_ALGORITHMS]
    if unknown:
        raise ConfigError(f"JWT_ALGORITHMS has {unknown}; supported: {', '.join(sorted(_SUPPORTED_ALGORITHMS))}")
    try:
        leeway = (
            args.jwt_leeway_seconds
            if args.jwt_leeway_seconds is not None
            else float(env.get("JWT_LEEWAY_SECONDS", "30"))
        )
        max_workers = args.max_workers or int(env.get("TODO_MAX_WORKERS", "16"))
        workers = args.workers or int(env.get("TODO_WORKERS", "1"))
        grace = (
            args.grace_seconds if args.grace_seconds is not None else float(env.get("TODO_GRACE_SECONDS", "10"))
        )
        health_check_seconds = (
            args.health_check_seconds
            if args.health_check_seconds is not None
            else float(env.get("TODO_HEALTH_CHECK_SECONDS", "5"))
        )
    except ValueError as error:
        raise ConfigError(f"a number setting is not a number: {error}") from None
    jwks_refresh_seconds = _seconds_setting(
        *_flag_or_variable(
            args.jwks_refresh_seconds, "--jwks-refresh-seconds", env, "JWT_JWKS_REFRESH_SECONDS", "300"
        )
    )
    jwks_min_refetch_seconds = _seconds_setting(
        *_flag_or_variable(
            args.jwks_min_refetch_seconds, "--jwks-min-refetch-seconds", env, "JWT_JWKS_MIN_REFETCH_SECONDS", "10"
        )
    )
    verified_token_cache_size = _count_setting(
        *_flag_or_variable(
            args.jwt_verified_cache_size, "--jwt-verified-cache-size", env, "JWT_VERIFIED_CACHE_SIZE", "10000"
        )
    )
    max_tasks_per_user = _count_setting(
        *_flag_or_variable(
            args.max_tasks_per_user, "--max-tasks-per-user", env, "TODO_MAX_TASKS_PER_USER", "10000"
        )
    )
    log_level = (args.log_level or env.get("TODO_LOG_LEVEL", "INFO")).upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"log level {log_level!r} is not one of DEBUG, INFO, WARNING, ERROR")
    log_format = (args.log_format or env.get("TODO_LOG_FORMAT", "text")).lower()
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    tls_chain, tls_key = _tls_files(
        args.tls_cert or env.get("TODO_TLS_CERT"), args.tls_key or env.get("TODO_TLS_KEY")
    )
    return Settings(
        listen=_listen_setting(*_flag_or_variable(args.listen, "--listen", env, "TODO_LISTEN", DEFAULT_LISTEN)),
        database_url=_database_url_setting(
            *_flag_or_variable(args.database_url, "--database-url", env, "DATABASE_URL", DEFAULT_DATABASE_URL)
        ),
        better_auth_secret=secret,
        better_auth_url=better_auth_url,
        jwt_jwks_url=jwks_url,
        jwks_allow_http=jwks_allow_http,
        jwt_issuer=args.jwt_issuer or env.get("JWT_ISSUER") or None,
        jwt_audience=_list_setting(args.jwt_audience or env.get("JWT_AUDIENCE")),
        jwt_algorithms=algorithms or None,
        jwt_leeway_seconds=leeway if leeway >= 0 else _positive("JWT_LEEWAY_SECONDS", leeway),
        jwks_refresh_seconds=jwks_refresh_seconds,
        jwks_min_refetch_seconds=jwks_min_refetch_seconds,
        verified_token_cache_size=verified_token_cache_size,
        page_token_secret=page_secret,
        max_workers=int(_positive("--max-workers", max_workers)),
        max_tasks_per_user=max_tasks_per_user,
        workers=int(_positive("--workers", workers)),
        grace_seconds=_positive("--grace-seconds", grace),
        drain_delay_seconds=_drain_delay_setting(args.drain_delay_seconds, env),
        log_level=log_level,
        migrate=args.migrate or _flag("TODO_MIGRATE", env.get("TODO_MIGRATE", "")),
        log_format=log_format,
        metrics_listen=args.metrics_listen or env.get("TODO_METRICS_LISTEN") or None,
        health_check_seconds=_positive("--health-check-seconds", health_check_seconds),
        tracing=_tracing_requested(env),
        reflection=not args.no_reflection and _flag("TODO_REFLECTION", env.get("TODO_REFLECTION", "1")),
        service_name=env.get("OTEL_SERVICE_NAME") or "todo-tasks",
        tls_certificate_chain=tls_chain,
        tls_private_key=tls_key,
        tls_client_ca=_tls_client_ca(
            args.tls_client_ca or env.get("TODO_TLS_CLIENT_CA"), serving_tls=tls_chain is not None
        ),
    )


def _flag(name: str, value: str) -> bool:
    if value.strip().lower() in ("", "0", "false", "no", "off"):
        return False
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be 1 or 0, got {value!r}")


def load_migrate_database_url(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> str:
    """The database `todo-server migrate` works on: --database-url, then DATABASE_URL, then the default."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="todo-server migrate", description="Bring the database schema up to this release's head, then exit."
    )
    parser.add_argument("--database-url", help=f"SQLAlchemy URL (DATABASE_URL; default {DEFAULT_DATABASE_URL})")
    args = parser.parse_args(argv)
    return _database_url_setting(
        *_flag_or_variable(args.database_url, "--database-url", env, "DATABASE_URL", DEFAULT_DATABASE_URL)
    )


def _tracing_requested(env: Mapping[str, str]) -> bool:
    """Tracing is on when an OTLP endpoint or a traces exporter is configured, unless the SDK is disabled."""
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter not in ("", "otlp", "none"):
        raise ConfigError(f"OTEL_TRACES_EXPORTER={exporter!r} is not supported: use otlp or none")
    if exporter == "none":
        return False
    return exporter == "otlp" or any(env.get(name) for name in _OTEL_ENDPOINT_VARIABLES)
