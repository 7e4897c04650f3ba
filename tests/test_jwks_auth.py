"""Better Auth's asymmetric tokens, verified through a real JWKS endpoint on 127.0.0.1 (issue 6)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from server.app import TodoServer, run_server
from server.config import Secret, Settings
from tests.jwks_support import JwksServer, SigningKey, assert_keys_loaded, claims_for, new_key
from tests.support import failure_of, mint_token

LIST_ME = pb.ListTasksRequest(parent="users/me")


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    return f"{b64(json.dumps(header))}.{b64(json.dumps(claims))}.{signature}"


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Token checks happen before storage: one database (SQLite) is enough here."""
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'todo.db'}"


@pytest.fixture(scope="module")
def signing_keys() -> dict[str, SigningKey]:
    return {alg: new_key(alg) for alg in ("EdDSA", "ES256", "RS256")}


@pytest.fixture(scope="module")
def jwks(signing_keys: dict[str, SigningKey]) -> Iterator[JwksServer]:
    with JwksServer(list(signing_keys.values())).running() as server:
        yield server


@pytest.fixture(scope="module")
def settings(secret: bytes, database_url: str, jwks: JwksServer) -> Settings:
    """BETTER_AUTH_URL (JWKS, iss = aud = URL) beside BETTER_AUTH_SECRET (HS256): both key sources live."""
    return Settings(
        listen="127.0.0.1:0",
        database_url=database_url,
        better_auth_secret=Secret(secret),
        better_auth_url=jwks.base_url,
        jwks_min_refetch_seconds=0.5,
        max_workers=4,
        migrate=True,
    )


@pytest.fixture(scope="module")
def todo_server(settings: Settings) -> Iterator[TodoServer]:
    with run_server(settings) as server:
        assert_keys_loaded(server)
        yield server


@pytest.fixture(scope="module")
def stub(todo_server: TodoServer) -> Iterator[pb_grpc.TaskServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{todo_server.port}") as channel:
        yield pb_grpc.TaskServiceStub(channel)


def list_as(stub: pb_grpc.TaskServiceStub, token: str, scheme: str = "Bearer") -> pb.ListTasksResponse:
    return stub.ListTasks(LIST_ME, metadata=[("authorization", f"{scheme} {token}")], timeout=10)


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256"])
def test_token_signed_by_a_published_key_is_accepted(stub, signing_keys, jwks: JwksServer, alg: str) -> None:  # type: ignore[no-untyped-def]
    token = signing_keys[alg].sign(claims_for(f"user{alg}", issuer=jwks.base_url, audience=jwks.base_url))
    assert list_as(stub, token).total_size == 0


def test_hs256_token_still_works_beside_jwks(stub, secret: bytes, jwks: JwksServer) -> None:  # type: ignore[no-untyped-def]
    token = mint_token(secret, "hsuser", iss=jwks.base_url, aud=jwks.base_url)
    assert list_as(stub, token).total_size == 0


def test_lowercase_scheme_is_accepted(stub, signing_keys, jwks: JwksServer) -> None:  # type: ignore[no-untyped-def]
    token = signing_keys["EdDSA"].sign(claims_for("lower", issuer=jwks.base_url, audience=jwks.base_url))
    assert list_as(stub, token, scheme="bearer").total_size == 0


# Each attack builds its token from (signing keys, the JWKS base URL, the HS256 secret).
Attack = Callable[[dict[str, SigningKey], str, bytes], str]


def _good(url: str, **overrides: Any) -> dict[str, Any]:
    return claims_for("mallory", issuer=url, audience=url, **overrides)


def _public_pem(keys: dict[str, SigningKey]) -> bytes:
    return (
        keys["EdDSA"]
        .private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _hmac_with(key: bytes, header: dict[str, Any], claims: dict[str, Any] | str) -> str:
    """HS256 over exactly these bytes; `claims` as a str is sent as is (not JSON)."""
    payload = claims if isinstance(claims, str) else json.dumps(claims)
    signing_input = f"{b64(json.dumps(header))}.{b64(payload)}"
    return f"{signing_input}.{b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


def _raw_signed(key: SigningKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """Signed by `key` with exactly `header` (PyJWT's encoder would refuse some of these headers)."""
    signing_input = f"{b64(json.dumps(header))}.{b64(json.dumps(claims))}"
    signature = jwt.get_algorithm_by_name(key.alg).sign(signing_input.encode(), key.private)
    return f"{signing_input}.{b64(signature)}"


def _foreign(alg: str, kid: str, claims: dict[str, Any], **headers: Any) -> str:
    attacker = new_key(alg)
    return jwt.encode(claims, attacker.private, algorithm=alg, headers={"kid": kid, **headers})


def _with_header(keys: dict[str, SigningKey], url: str, **headers: Any) -> str:
    """A token signed by a key the attacker holds, pointing us at the attacker's key by header tricks."""
    attacker = new_key("EdDSA")
    return jwt.encode(_good(url), attacker.private, algorithm="EdDSA", headers={"kid": attacker.kid, **headers})


ATTACKS: dict[str, tuple[Attack, str]] = {
    "alg-none": (lambda k, u, s: unsigned({"alg": "none"}, _good(u)), "TOKEN_INVALID"),
    "alg-None": (lambda k, u, s: unsigned({"alg": "None"}, _good(u)), "TOKEN_INVALID"),
    "alg-NONE": (lambda k, u, s: unsigned({"alg": "NONE"}, _good(u)), "TOKEN_INVALID"),
    "alg-nOnE": (lambda k, u, s: unsigned({"alg": "nOnE"}, _good(u)), "TOKEN_INVALID"),
    "alg-none-with-kid-and-signature": (
        lambda k, u, s: unsigned({"alg": "none", "kid": k["EdDSA"].kid}, _good(u), b64(b"sig")),
        "TOKEN_INVALID",
    ),
    "hs256-signed-with-jwks-public-pem": (
        lambda k, u, s: _hmac_with(_public_pem(k), {"alg": "HS256", "kid": k["EdDSA"].kid}, _good(u)),
        "TOKEN_INVALID",
    ),
    "hs256-signed-with-jwks-public-jwk-json": (
        lambda k, u, s: _hmac_with(json.dumps(k["EdDSA"].jwk()).encode(), {"alg": "HS256"}, _good(u)),
        "TOKEN_INVALID",
    ),
    "hs512-signed-with-the-secret": (
        lambda k, u, s: jwt.encode(_good(u), s, algorithm="HS512"),
        "TOKEN_INVALID",
    ),
    "eddsa-foreign-key-reusing-real-kid": (
        lambda k, u, s: _foreign("EdDSA", k["EdDSA"].kid, _good(u)),
        "TOKEN_INVALID",
    ),
    "es256-foreign-key-reusing-real-kid": (
        lambda k, u, s: _foreign("ES256", k["ES256"].kid, _good(u)),
        "TOKEN_INVALID",
    ),
    "rs256-foreign-key-reusing-real-kid": (
        lambda k, u, s: _foreign("RS256", k["RS256"].kid, _good(u)),
        "TOKEN_INVALID",
    ),
    "es256-alg-naming-the-ed25519-kid": (
        lambda k, u, s: _foreign("ES256", k["EdDSA"].kid, _good(u)),
        "TOKEN_INVALID",
    ),
    "unknown-kid": (lambda k, u, s: _foreign("EdDSA", "no-such-kid", _good(u)), "TOKEN_INVALID"),
    "kid-path-traversal": (lambda k, u, s: _foreign("EdDSA", "../../../etc/passwd", _good(u)), "TOKEN_INVALID"),
    "kid-sql-injection": (lambda k, u, s: _foreign("EdDSA", "' OR '1'='1' --", _good(u)), "TOKEN_INVALID"),
    "kid-missing": (
        lambda k, u, s: jwt.encode(_good(u), k["EdDSA"].private, algorithm="EdDSA"),
        "TOKEN_INVALID",
    ),
    "kid-not-a-string": (
        lambda k, u, s: _raw_signed(k["EdDSA"], {"alg": "EdDSA", "kid": 12345}, _good(u)),
        "TOKEN_INVALID",
    ),
    "jku-header-to-attacker-jwks": (
        lambda k, u, s: _with_header(k, u, jku="http://127.0.0.1:9/jwks.json"),
        "TOKEN_INVALID",
    ),
    "x5u-header-to-attacker-cert": (
        lambda k, u, s: _with_header(k, u, x5u="http://127.0.0.1:9/cert.pem"),
        "TOKEN_INVALID",
    ),
    "embedded-jwk-header": (
        lambda k, u, s: (lambda a: a.sign(_good(u), jwk=a.jwk()))(new_key("EdDSA")),
        "TOKEN_INVALID",
    ),
    "crit-header": (lambda k, u, s: k["EdDSA"].sign(_good(u), crit=["exp"]), "TOKEN_INVALID"),
    "expired": (lambda k, u, s: k["EdDSA"].sign(_good(u, ttl=-120)), "TOKEN_EXPIRED"),
    "nbf-in-the-future": (lambda k, u, s: k["EdDSA"].sign(_good(u, nbf=int(time.time()) + 3600)), "TOKEN_INVALID"),
    "iat-in-the-future": (lambda k, u, s: k["EdDSA"].sign(_good(u, iat=int(time.time()) + 3600)), "TOKEN_INVALID"),
    "exp-missing": (
        lambda k, u, s: k["EdDSA"].sign({key: v for key, v in _good(u).items() if key != "exp"}),
        "TOKEN_INVALID",
    ),
    "wrong-iss": (lambda k, u, s: k["EdDSA"].sign(_good(u, iss="https://evil.example")), "TOKEN_INVALID"),
    "iss-missing": (
        lambda k, u, s: k["EdDSA"].sign({key: v for key, v in _good(u).items() if key != "iss"}),
        "TOKEN_INVALID",
    ),
    "wrong-aud": (lambda k, u, s: k["EdDSA"].sign(_good(u, aud="https://other.example")), "TOKEN_INVALID"),
    "aud-missing": (
        lambda k, u, s: k["EdDSA"].sign({key: v for key, v in _good(u).items() if key != "aud"}),
        "TOKEN_INVALID",
    ),
    "sub-missing": (lambda k, u, s: k["EdDSA"].sign(claims_for(None, issuer=u, audience=u)), "TOKEN_INVALID"),
    "sub-empty": (lambda k, u, s: k["EdDSA"].sign(claims_for("", issuer=u, audience=u)), "TOKEN_INVALID"),
    "sub-not-a-string": (lambda k, u, s: k["EdDSA"].sign(claims_for(42, issuer=u, audience=u)), "TOKEN_INVALID"),
    "sub-with-slash": (
        lambda k, u, s: k["EdDSA"].sign(claims_for("alice/tasks/1", issuer=u, audience=u)),
        "TOKEN_INVALID",
    ),
    "sub-with-control-character": (
        lambda k, u, s: k["EdDSA"].sign(claims_for("alice\x00", issuer=u, audience=u)),
        "TOKEN_INVALID",
    ),
    "sub-over-128-characters": (
        lambda k, u, s: k["EdDSA"].sign(claims_for("a" * 129, issuer=u, audience=u)),
        "TOKEN_INVALID",
    ),
    "signature-tampered": (
        lambda k, u, s: (lambda t: t[:-4] + ("AAAA" if not t.endswith("AAAA") else "BBBB"))(
            k["EdDSA"].sign(_good(u))
        ),
        "TOKEN_INVALID",
    ),
    "payload-swapped": (
        lambda k, u, s: (
            lambda t: ".".join([t.split(".")[0], b64(json.dumps({**_good(u), "sub": "root"})), t.split(".")[2]])
        )(k["EdDSA"].sign(_good(u))),
        "TOKEN_INVALID",
    ),
    "truncated-to-two-segments": (
        lambda k, u, s: ".".join(k["EdDSA"].sign(_good(u)).split(".")[:2]),
        "TOKEN_MALFORMED",
    ),
    "extra-segments": (lambda k, u, s: k["EdDSA"].sign(_good(u)) + ".extra.more", "TOKEN_MALFORMED"),
    "bad-base64-header": (
        lambda k, u, s: "!!!." + k["EdDSA"].sign(_good(u)).split(".", 1)[1],
        "TOKEN_MALFORMED",
    ),
    "non-json-header": (lambda k, u, s: f"{b64('not json')}.{b64('{}')}.{b64('sig')}", "TOKEN_MALFORMED"),
    "non-json-payload": (
        lambda k, u, s: _hmac_with(s, {"alg": "HS256"}, "not json"),
        "TOKEN_MALFORMED",
    ),
    "over-8kib": (lambda k, u, s: k["EdDSA"].sign(_good(u, pad="x" * 9000)), "TOKEN_MALFORMED"),
    "not-a-jwt": (lambda k, u, s: "hello", "TOKEN_MALFORMED"),
}


@pytest.mark.parametrize(("attack", "reason"), ATTACKS.values(), ids=ATTACKS.keys())
def test_attack_token_is_refused_and_server_keeps_serving(  # type: ignore[no-untyped-def]
    stub, signing_keys, jwks: JwksServer, secret: bytes, attack: Attack, reason: str
) -> None:
    token = attack(signing_keys, jwks.base_url, secret)
    failure = failure_of(lambda: list_as(stub, token))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, reason), failure.message
    assert token not in failure.message
    good = signing_keys["EdDSA"].sign(claims_for("survivor", issuer=jwks.base_url, audience=jwks.base_url))
    assert list_as(stub, good).total_size == 0


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        pytest.param([("authorization", "Bearer")], "TOKEN_MISSING", id="bearer-without-token"),
        pytest.param([("authorization", "Bearer    ")], "TOKEN_MISSING", id="bearer-and-spaces"),
        pytest.param([("authorization", "Basic YWxpY2U6cHc=")], "TOKEN_MALFORMED", id="basic-scheme"),
        pytest.param([("authorization", "Bearer a"), ("authorization", "Bearer b")], "TOKEN_MALFORMED", id="two"),
    ],
)
def test_bad_authorization_metadata_is_refused(stub, metadata, reason: str) -> None:  # type: ignore[no-untyped-def]
    failure = failure_of(lambda: stub.ListTasks(LIST_ME, metadata=metadata, timeout=10))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, reason)


def test_a_non_ascii_token_never_gets_in(stub, signing_keys, jwks: JwksServer) -> None:  # type: ignore[no-untyped-def]
    # grpcio itself refuses a non-ASCII header value (INTERNAL "Invalid metadata") before any of our code.
    failure = failure_of(lambda: list_as(stub, "t\u00e9st.x.y"))
    assert failure.code != grpc.StatusCode.OK
    good = signing_keys["EdDSA"].sign(claims_for("after-utf8", issuer=jwks.base_url, audience=jwks.base_url))
    assert list_as(stub, good).total_size == 0


def test_a_one_megabyte_token_is_refused_without_harm(stub, signing_keys, jwks: JwksServer) -> None:  # type: ignore[no-untyped-def]
    # Over MAX_METADATA_BYTES: grpcio refuses the header block before our code runs.
    failure = failure_of(lambda: list_as(stub, "a" * 1_000_000))
    assert failure.code in (
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
    )
    good = signing_keys["EdDSA"].sign(claims_for("after-huge", issuer=jwks.base_url, audience=jwks.base_url))
    assert list_as(stub, good).total_size == 0


def test_enough_named_attacks() -> None:
    assert len(ATTACKS) >= 30
