"""The JWKS lifecycle against a real HTTP endpoint: start-up, rotation, floods, slow and failing issuers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from client import TaskClient
from client.errors import from_rpc_error
from server.app import TodoServer, run_server
from server.auth.jwks import JwksCache, SigningKeysLoading
from server.config import Secret, Settings
from tests.jwks_support import JwksServer, SigningKey, assert_keys_loaded, claims_for, new_key
from tests.support import failure_of, mint_token, wait_until

LIST_ME = pb.ListTasksRequest(parent="users/me")


@pytest.fixture
def base_settings(tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(
        listen="127.0.0.1:0",
        database_url=f"sqlite:///{tmp_path / 'todo.db'}",
        page_token_secret=Secret(b"p" * 32),
        jwks_min_refetch_seconds=0.5,
        max_workers=4,
        migrate=True,
    )


@contextmanager
def serving(settings: Settings) -> Iterator[tuple[TodoServer, pb_grpc.TaskServiceStub, grpc.Channel]]:
    with run_server(settings) as server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield server, pb_grpc.TaskServiceStub(channel), channel


def token_for(key: SigningKey, jwks: JwksServer, sub: str = "alice", **extra) -> str:  # type: ignore[no-untyped-def]
    return key.sign(claims_for(sub, issuer=jwks.base_url, audience=jwks.base_url, **extra))


def call(stub: pb_grpc.TaskServiceStub, token: str) -> pb.ListTasksResponse:
    return stub.ListTasks(LIST_ME, metadata=[("authorization", f"Bearer {token}")], timeout=10)


def health_of(channel: grpc.Channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


def test_better_auth_url_alone_verifies_better_auth_shaped_tokens(base_settings: Settings) -> None:
    key = new_key()
    with JwksServer([key]).running() as jwks:
        settings = replace(base_settings, better_auth_url=jwks.base_url)
        with serving(settings) as (server, stub, _):
            assert_keys_loaded(server)
            assert server.jwks.url == jwks.url
            assert call(stub, token_for(key, jwks)).total_size == 0
            # HS256 is not on: no secret was configured, so an HS token is refused outright.
            failure = failure_of(lambda: call(stub, mint_token(b"s" * 48, "alice")))
            assert failure.reason == "TOKEN_INVALID"


def test_starts_while_jwks_is_down_and_serves_once_keys_load(base_settings: Settings) -> None:
    key = new_key()
    with JwksServer([key]).running() as jwks:
        jwks.status = 503
        with serving(replace(base_settings, better_auth_url=jwks.base_url)) as (server, stub, channel):
            assert health_of(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert failure_of(lambda: call(stub, token_for(key, jwks))).reason == "TOKEN_INVALID"
            jwks.status = 200  # the issuer comes back; the backoff retry (1 s, 2 s, ...) picks it up
            assert wait_until(lambda: health_of(channel) == health_pb2.HealthCheckResponse.SERVING)
            assert call(stub, token_for(key, jwks)).total_size == 0
            refreshes = server.metrics.registry.get_sample_value
            assert refreshes("todo_jwks_refreshes_total", {"result": "error"}) >= 1
            assert refreshes("todo_jwks_refreshes_total", {"result": "ok"}) >= 1


def test_new_key_published_after_start_is_accepted_without_restart(base_settings: Settings) -> None:
    old, new = new_key(), new_key()
    with (
        JwksServer([old]).running() as jwks,
        serving(replace(base_settings, better_auth_url=jwks.base_url)) as (server, stub, _),
    ):
        assert_keys_loaded(server)
        jwks.keys = [new, old]  # rotation: the new key is published, the old one still listed
        assert call(stub, token_for(new, jwks)).total_size == 0
        assert call(stub, token_for(old, jwks)).total_size == 0


def outcome(stub: pb_grpc.TaskServiceStub, token: str) -> str:
    """'OK', or the failed call's status code and ErrorInfo reason, for a call made without retries."""
    try:
        call(stub, token)
    except grpc.RpcError as error:
        failure = from_rpc_error(error)
        return f"{failure.code.name} {failure.reason}"
    return "OK"


def test_calls_racing_a_rotation_refetch_are_told_to_retry_never_that_their_token_is_invalid(
    base_settings: Settings,
) -> None:
    old, new = new_key(), new_key()
    with (
        JwksServer([old]).running() as jwks,
        serving(replace(base_settings, better_auth_url=jwks.base_url)) as (server, stub, _),
    ):
        assert_keys_loaded(server)
        jwks.keys, jwks.delay = [new, old], 0.3  # the rotation's refetch stays in flight while all 8 arrive
        tokens = [token_for(new, jwks, sub=f"user{i}") for i in range(8)]
        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(lambda token: outcome(stub, token), tokens))
        # A BFF signs its user out on UNAUTHENTICATED; UNAVAILABLE is what clients retry.
        assert set(outcomes) <= {"OK", "UNAVAILABLE SIGNING_KEYS_LOADING"}, outcomes
        assert "OK" in outcomes, "no call waited for the refetch"
        assert all(call(stub, token).total_size == 0 for token in tokens)


def test_only_a_few_callers_wait_for_a_refetch_the_others_hear_the_keys_are_loading() -> None:
    old, new = new_key(), new_key()
    with JwksServer([old]).running() as jwks:
        cache = JwksCache(jwks.url, min_refetch_seconds=60, max_unknown_kid_waiters=2)
        cache.start()
        try:
            assert cache.wait_loaded(5)
            jwks.keys, jwks.delay = [new, old], 0.5

            def look_up_new_kid() -> tuple[str, float]:
                started = time.monotonic()
                try:
                    found = cache.key(new.kid)
                except SigningKeysLoading:
                    return "loading", time.monotonic() - started
                return ("found" if found is not None else "unknown"), time.monotonic() - started

            with ThreadPoolExecutor(6) as pool:
                outcomes = list(pool.map(lambda _: look_up_new_kid(), range(6)))
        finally:
            cache.stop()
    assert sorted(outcome for outcome, _ in outcomes) == ["found"] * 2 + ["loading"] * 4, outcomes
    assert all(seconds < 0.2 for outcome, seconds in outcomes if outcome == "loading"), outcomes


def test_a_retrying_client_gets_every_call_racing_a_rotation_refetch_through(base_settings: Settings) -> None:
    old, new = new_key(), new_key()
    with (
        JwksServer([old]).running() as jwks,
        serving(replace(base_settings, better_auth_url=jwks.base_url)) as (server, _, _),
    ):
        assert_keys_loaded(server)
        jwks.keys, jwks.delay = [new, old], 0.3

        def list_tasks_as(user: str) -> int:
            # A client each: one channel's retry throttle would be shared by all eight.
            with TaskClient(f"127.0.0.1:{server.port}", token=token_for(new, jwks, sub=user)) as client:
                return client.list_tasks().total_size

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(list_tasks_as, [f"user{i}" for i in range(8)])) == [0] * 8


def test_an_unknown_kid_is_invalid_at_once_with_no_refetch_in_flight_or_allowed(base_settings: Settings) -> None:
    key = new_key()
    with JwksServer([key]).running() as jwks:
        settings = replace(base_settings, better_auth_url=jwks.base_url, jwks_min_refetch_seconds=60)
        with serving(settings) as (server, stub, _):
            assert_keys_loaded(server)
            jwks.delay = 0.5
            first, second = (SigningKey(key.alg, key.private, kid=f"never-published-{i}") for i in range(2))
            assert failure_of(lambda: call(stub, token_for(first, jwks))).reason == "TOKEN_INVALID"
            fetches, started = jwks.fetches, time.monotonic()
            assert failure_of(lambda: call(stub, token_for(second, jwks))).reason == "TOKEN_INVALID"
            assert time.monotonic() - started < 0.3, "waited for a refetch the rate limit forbids"
            assert jwks.fetches == fetches


def test_key_removed_from_jwks_stops_verifying_even_a_cached_token(base_settings: Settings) -> None:
    old, new = new_key(), new_key()
    with (
        JwksServer([old]).running() as jwks,
        serving(replace(base_settings, better_auth_url=jwks.base_url)) as (server, stub, _),
    ):
        assert_keys_loaded(server)
        token = token_for(old, jwks)
        assert call(stub, token).total_size == 0  # now in the verified-token cache
        jwks.keys = [new]
        assert call(stub, token_for(new, jwks)).total_size == 0  # unknown kid: refetch drops `old`
        assert failure_of(lambda: call(stub, token)).reason == "TOKEN_INVALID"


def test_a_key_replaced_under_the_same_kid_stops_verifying_a_cached_token(base_settings: Settings) -> None:
    # An issuer that replaces a (leaked) key keeps its kid, as some do ("kid": "1"): tokens the old key signed
    # must stop working then, the ones already in the verified-token cache too, not at their `exp`.
    old = new_key()
    replacement = SigningKey(old.alg, new_key(old.alg).private, kid=old.kid)
    with (
        JwksServer([old]).running() as jwks,
        serving(replace(base_settings, better_auth_url=jwks.base_url, jwks_refresh_seconds=0.2)) as served,
    ):
        server, stub, _ = served
        assert_keys_loaded(server)
        cached, fresh = token_for(old, jwks), token_for(old, jwks, sub="bob")
        assert call(stub, cached).total_size == 0  # now in the verified-token cache
        jwks.keys = [replacement]
        assert wait_until(lambda: outcome(stub, token_for(replacement, jwks)) == "OK")  # refetched
        assert outcome(stub, fresh) == "UNAUTHENTICATED TOKEN_INVALID"
        assert failure_of(lambda: call(stub, cached)).reason == "TOKEN_INVALID"


def test_a_refetch_of_unchanged_keys_keeps_them_published_for_the_verified_token_cache() -> None:
    # The cache keeps a token only while the very key that verified it is published: a refetch every 5
    # minutes that made new key objects would send every cached token back to its signature check.
    key = new_key()
    published = {"keys": [key.jwk()]}
    cache = JwksCache(
        "http://127.0.0.1:1/jwks", refresh_seconds=0.05, fetcher=lambda *_: json.dumps(published).encode()
    )
    cache.start()
    try:
        assert cache.wait_loaded(5)
        first = cache.key(key.kid)
        assert first is not None
        fetched = cache._fetches_done
        assert wait_until(lambda: cache._fetches_done >= fetched + 2)
        assert cache.publishes(first)
        published = {"keys": [SigningKey(key.alg, new_key(key.alg).private, kid=key.kid).jwk()]}
        assert wait_until(lambda: not cache.publishes(first))
        assert cache.key(key.kid) is not None
    finally:
        cache.stop()


def test_failed_refresh_keeps_the_last_good_keys(base_settings: Settings) -> None:
    key = new_key()
    with JwksServer([key]).running() as jwks:
        settings = replace(base_settings, better_auth_url=jwks.base_url, jwks_refresh_seconds=0.2)
        with serving(settings) as (server, stub, _):
            assert_keys_loaded(server)
            jwks.status = 500
            fetches = jwks.fetches
            assert wait_until(lambda: jwks.fetches >= fetches + 2)  # refreshes that failed
            assert call(stub, token_for(key, jwks, sub="fresh")).total_size == 0


@pytest.mark.parametrize("unusable", [False, True], ids=["no-keys", "only-unusable-keys"])
def test_an_issuer_publishing_an_empty_key_set_revokes_every_key(base_settings: Settings, unusable: bool) -> None:
    key = new_key()
    with JwksServer([key]).running() as jwks:
        settings = replace(base_settings, better_auth_url=jwks.base_url, jwks_refresh_seconds=0.2)
        with serving(settings) as (server, stub, _):
            assert_keys_loaded(server)
            token = token_for(key, jwks)
            assert call(stub, token).total_size == 0  # now in the verified-token cache
            jwks.keys = []
            jwks.entries = [{**key.jwk(), "use": "enc"}] if unusable else []
            assert wait_until(lambda: not server.jwks.has_key(key.kid))
            assert failure_of(lambda: call(stub, token)).reason == "TOKEN_INVALID"
            jwks.keys = [key]  # a key set with keys replaces it in turn
            assert wait_until(lambda: server.jwks.has_key(key.kid))
            assert call(stub, token).total_size == 0


def test_an_empty_key_set_at_start_up_is_not_ready_until_keys_are_published(base_settings: Settings) -> None:
    key = new_key()
    with (
        JwksServer([]).running() as jwks,
        serving(replace(base_settings, better_auth_url=jwks.base_url)) as (server, stub, channel),
    ):
        assert wait_until(lambda: jwks.fetches >= 1)
        assert health_of(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert not server.jwks.loaded
        jwks.keys = [key]  # retried with backoff (1 s, 2 s, ...), like a failed fetch
        assert wait_until(lambda: health_of(channel) == health_pb2.HealthCheckResponse.SERVING)
        assert call(stub, token_for(key, jwks)).total_size == 0


def test_entries_with_fields_of_the_wrong_type_are_skipped_not_the_whole_set(base_settings: Settings) -> None:
    key, other = new_key(), new_key()
    with JwksServer([key]).running() as jwks:
        # Valid JSON, odd types: each entry alone must be skipped, never sink the good key beside it.
        jwks.entries = [
            {**other.jwk(), "kty": ["OKP"]},
            {**other.jwk(), "kty": {}},
            {**other.jwk(), "use": ["sig"]},
            {**other.jwk(), "kid": ["a-list"]},
            {**other.jwk(), "alg": ["EdDSA"]},
            {**other.jwk(), "alg": 7},
        ]
        with serving(replace(base_settings, better_auth_url=jwks.base_url)) as (server, stub, _):
            assert_keys_loaded(server)
            assert call(stub, token_for(key, jwks)).total_size == 0
            assert failure_of(lambda: call(stub, token_for(other, jwks))).reason == "TOKEN_INVALID"


def test_a_flood_of_unknown_kids_causes_a_handful_of_fetches(base_settings: Settings) -> None:
    key = new_key()
    with (
        JwksServer([key]).running() as jwks,
        serving(replace(base_settings, better_auth_url=jwks.base_url)) as (server, stub, _),
    ):
        assert_keys_loaded(server)
        before = jwks.fetches
        started = time.monotonic()
        for i in range(1000):
            forged = new_key().__class__(key.alg, key.private, kid=f"made-up-{i}")
            failure = failure_of(lambda t=forged: call(stub, token_for(t, jwks)))
            assert failure.reason == "TOKEN_INVALID"
        elapsed = time.monotonic() - started
        # At most one refetch per jwks_min_refetch_seconds (0.5 s here), plus the one in flight.
        assert jwks.fetches - before <= elapsed / 0.5 + 2, (jwks.fetches - before, elapsed)


def test_a_jwks_endpoint_answering_after_5s_does_not_stall_other_calls(base_settings: Settings) -> None:
    key = new_key()
    secret = b"h" * 48
    with JwksServer([key]).running() as jwks:
        settings = replace(base_settings, better_auth_url=jwks.base_url, better_auth_secret=Secret(secret))
        with serving(settings) as (server, stub, channel):
            assert_keys_loaded(server)
            jwks.delay = 5.0
            unknown = SigningKey(key.alg, key.private, kid="rotated-in-later")
            with ThreadPoolExecutor(4) as pool:
                slow = [pool.submit(failure_of, lambda: call(stub, token_for(unknown, jwks))) for _ in range(3)]
                time.sleep(0.2)  # the refetch is now hanging on the slow endpoint
                started = time.monotonic()
                assert call(stub, token_for(key, jwks, sub="known")).total_size == 0
                assert (
                    call(stub, mint_token(secret, "hsuser", iss=jwks.base_url, aud=jwks.base_url)).total_size == 0
                )
                assert health_of(channel) == health_pb2.HealthCheckResponse.SERVING
                other_calls = time.monotonic() - started
                # Their key may yet come: told to retry (one waited 1 s first), not that the token is invalid.
                assert all(f.result(timeout=10).reason == "SIGNING_KEYS_LOADING" for f in slow)
            assert other_calls < 1.0, f"other calls took {other_calls:.2f}s while the JWKS hung"


def test_a_flood_of_unknown_kids_does_not_hold_the_run_slots_valid_calls_need(base_settings: Settings) -> None:
    key = new_key()
    with JwksServer([key]).running() as jwks:
        settings = replace(base_settings, better_auth_url=jwks.base_url, max_workers=4)
        with serving(settings) as (server, stub, _):
            assert_keys_loaded(server)
            jwks.delay = 3.0  # a slow issuer: every refetch the flood asks for stays in flight
            flooding = threading.Event()
            flooding.set()

            def flood(thread: int) -> None:
                # A made-up kid needs no valid signature to reach the key lookup.
                for i in range(100_000):
                    if not flooding.is_set():
                        return
                    forged = SigningKey(key.alg, key.private, kid=f"made-up-{thread}-{i}")
                    failure = failure_of(lambda f=forged: call(stub, token_for(f, jwks)))
                    assert failure.reason in {"TOKEN_INVALID", "SIGNING_KEYS_LOADING"}

            with ThreadPoolExecutor(8) as pool:
                flooders = [pool.submit(flood, thread) for thread in range(8)]  # twice --max-workers
                time.sleep(0.5)
                slowest = 0.0
                for i in range(10):
                    started = time.monotonic()
                    assert call(stub, token_for(key, jwks, sub=f"valid{i}")).total_size == 0
                    slowest = max(slowest, time.monotonic() - started)
                flooding.clear()
                for flooder in flooders:
                    flooder.result(timeout=30)
            assert slowest < 0.5, f"a valid call waited {slowest:.2f}s for a run slot"


def test_token_with_aud_is_refused_when_no_audience_is_configured(base_settings: Settings) -> None:
    secret = b"h" * 48
    with serving(replace(base_settings, better_auth_secret=Secret(secret))) as (_, stub, _channel):
        assert call(stub, mint_token(secret, "noaud")).total_size == 0
        failure = failure_of(lambda: call(stub, mint_token(secret, "withaud", aud="https://app.example")))
        assert failure.reason == "TOKEN_INVALID"
        assert "JWT_AUDIENCE" in failure.message


def test_token_with_aud_is_accepted_when_its_audience_is_configured(base_settings: Settings) -> None:
    secret = b"h" * 48
    settings = replace(base_settings, better_auth_secret=Secret(secret), jwt_audience=("https://app.example",))
    with serving(settings) as (_, stub, _channel):
        assert call(stub, mint_token(secret, "withaud", aud="https://app.example")).total_size == 0
        assert failure_of(lambda: call(stub, mint_token(secret, "noaud"))).reason == "TOKEN_INVALID"


def test_algorithm_allow_list_refuses_other_algorithms(base_settings: Settings) -> None:
    ed, es = new_key("EdDSA"), new_key("ES256")
    with JwksServer([ed, es]).running() as jwks:
        settings = replace(base_settings, better_auth_url=jwks.base_url, jwt_algorithms=("EdDSA",))
        with serving(settings) as (server, stub, _):
            assert_keys_loaded(server)
            assert call(stub, token_for(ed, jwks)).total_size == 0
            assert failure_of(lambda: call(stub, token_for(es, jwks))).reason == "TOKEN_INVALID"


CALLS_PER_USER = 96  # x 32 users = 3,072 calls


def test_identity_stays_with_its_call_across_32_concurrent_users(base_settings: Settings) -> None:
    key = new_key()
    with JwksServer([key]).running() as jwks:
        settings = replace(base_settings, better_auth_url=jwks.base_url, max_workers=8)
        with serving(settings) as (server, stub, _):
            assert_keys_loaded(server)
            users = [f"user{i:02d}" for i in range(32)]
            errors: list[str] = []

            def session(user: str) -> None:
                metadata = [("authorization", f"Bearer {token_for(key, jwks, sub=user)}")]
                for i in range(CALLS_PER_USER):
                    if i % 3 == 0:
                        task = stub.CreateTask(
                            pb.CreateTaskRequest(parent="users/me", task=pb.Task(title=f"{user}:{i}")),
                            metadata=metadata,
                            timeout=20,
                        ).task
                        if not task.name.startswith(f"users/{user}/"):
                            errors.append(f"{user} wrote {task.name}")
                    else:
                        listed = stub.ListTasks(LIST_ME, metadata=metadata, timeout=20)
                        strangers = [t.title for t in listed.tasks if not t.title.startswith(f"{user}:")]
                        if strangers:
                            errors.append(f"{user} saw {strangers[:3]}")

            threads = [threading.Thread(target=session, args=(user,)) for user in users]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
            assert not errors, errors[:5]
            assert not any(thread.is_alive() for thread in threads)


def test_a_cached_token_stops_working_at_its_exp(base_settings: Settings) -> None:
    key = new_key()
    with JwksServer([key]).running() as jwks:
        settings = replace(base_settings, better_auth_url=jwks.base_url, jwt_leeway_seconds=0)
        with serving(settings) as (server, stub, _):
            assert_keys_loaded(server)
            exp = int(time.time()) + 2
            token = key.sign(
                {**claims_for("shortlived", issuer=jwks.base_url, audience=jwks.base_url), "exp": exp}
            )
            assert call(stub, token).total_size == 0
            assert call(stub, token).total_size == 0  # served from the verified-token cache
            time.sleep(max(0.0, exp - time.time()) + 0.1)
            assert failure_of(lambda: call(stub, token)).reason == "TOKEN_EXPIRED"
