"""Page tokens that pass the signature check but carry a payload this service never makes: INVALID_ARGUMENT
with a page_token violation, never INTERNAL (someone who learned the key, or a replica of another version)."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from todo.v1 import task_service_pb2 as pb

from server.config import Settings
from server.services import task_messages
from server.services.page_tokens import _FORMAT, PageTokenCodec
from tests.support import User, failure_of

_TASK_ID = "0123456789abcdef0123456789abcdef"
_WHEN = "2030-01-02T03:04:05.000006+00:00"
_VALID_VALUES = {
    "create_time": _WHEN,
    "update_time": _WHEN,
    "due_time": None,
    "title": "a title",
    "priority": 2,
}
# Cursor values no page of that order can end on; each would reach the SQL as garbage if let through.
_BAD_VALUES: dict[str, list[Any]] = {
    "create_time": [
        None,
        5,
        1.5,
        True,
        [],
        {},
        "",
        "yesterday",
        "2030-13-01T00:00:00+00:00",
        "2030-01-02T03:04:05",
        "\x00",
    ],
    "due_time": [5, "yesterday", "2030-01-02T03:04:05", ["2030-01-02T03:04:05+00:00"]],
    "title": [None, 5, ["a"], {"a": 1}, "\x00", "bad\ud800surrogate", "t" * 201],
    "priority": [None, "2", 2.0, True, -1, 4, 10**30, float("nan")],
}
_BAD_IDS: list[Any] = [None, 5, "", "short", _TASK_ID.upper(), _TASK_ID + "0", "\x00" * 32, ["x"]]


@pytest.fixture(scope="module")
def codec(settings: Settings) -> PageTokenCodec:
    """The codec with the running server's own page-token key: its tokens pass the server's signature check."""
    return PageTokenCodec(settings.page_token_key())


def _signed(codec: PageTokenCodec, user: User, order_by: str, payload: Any) -> str:
    """`payload` sealed as the server seals a token, bound to `user` and this query unless it says otherwise."""
    request = pb.ListTasksRequest(parent="users/me", order_by=order_by)
    violations = task_messages.Violations()
    task_filter = task_messages.task_filter(request, violations)
    violations.raise_if_any()
    if isinstance(payload, dict):
        payload = {"b": codec._binding(user.user_id, task_filter), **payload}
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return codec._seal(body)


def _assert_refused(user: User, order_by: str, token: str) -> None:
    failure = failure_of(lambda: user.list_tasks(order_by=order_by, page_size=1, page_token=token))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure
    # Refused for what it says, not at the signature check: the forgery really was signed.
    assert "service made" not in failure.violations["page_token"]
    assert "different query" not in failure.violations["page_token"]


def _well_formed(order_by: str) -> dict[str, Any]:
    return {"f": _FORMAT, "v": _VALID_VALUES[order_by], "i": _TASK_ID}


@pytest.mark.parametrize("order_by", sorted(_VALID_VALUES))
def test_a_well_formed_signed_token_is_accepted(alice: User, codec: PageTokenCodec, order_by: str) -> None:
    alice.create_task("one")
    token = _signed(codec, alice, order_by, _well_formed(order_by))
    alice.list_tasks(order_by=order_by, page_size=1, page_token=token)  # the control: no error


@pytest.mark.parametrize(
    ("order_by", "value"), [(order, value) for order, values in _BAD_VALUES.items() for value in values]
)
def test_a_signed_token_with_a_bad_sort_value_is_invalid(
    alice: User, codec: PageTokenCodec, order_by: str, value: Any
) -> None:
    _assert_refused(alice, order_by, _signed(codec, alice, order_by, {**_well_formed(order_by), "v": value}))


@pytest.mark.parametrize("task_id", _BAD_IDS)
@pytest.mark.parametrize("order_by", ["create_time", "due_time", "title"])
def test_a_signed_token_with_a_bad_task_id_is_invalid(
    alice: User, codec: PageTokenCodec, order_by: str, task_id: Any
) -> None:
    _assert_refused(alice, order_by, _signed(codec, alice, order_by, {**_well_formed(order_by), "i": task_id}))


@pytest.mark.parametrize(
    "payload",
    [
        {"v": _WHEN, "i": _TASK_ID},  # no format version: made before versions, or by something else
        {"f": _FORMAT + 1, "v": _WHEN, "i": _TASK_ID},  # a newer server's
        {"f": _FORMAT - 1, "v": _WHEN, "i": _TASK_ID},  # an older server's
        {"f": str(_FORMAT), "v": _WHEN, "i": _TASK_ID},
        {"f": _FORMAT, "i": _TASK_ID},
        {"f": _FORMAT, "v": _WHEN},
        {"f": _FORMAT},
        [1, _WHEN, _TASK_ID],
        "a string",
        None,
        7,
        b"not json at all",
        b"\xff\xfe not utf-8",
        b"",
    ],
    ids=repr,
)
def test_a_signed_token_with_a_malformed_payload_is_invalid(
    alice: User, codec: PageTokenCodec, payload: Any
) -> None:
    _assert_refused(alice, "create_time", _signed(codec, alice, "create_time", payload))


def test_a_signed_token_with_a_binding_of_the_wrong_type_is_invalid(alice: User, codec: PageTokenCodec) -> None:
    for binding in (None, 5, ["x"]):
        token = codec._seal(json.dumps({**_well_formed("create_time"), "b": binding}).encode())
        failure = failure_of(lambda token=token: alice.list_tasks(page_size=1, page_token=token))
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in failure.violations
