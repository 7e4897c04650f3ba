"""Opaque page tokens: encrypted, tamper-evident, and bound to the caller and to the query they were made for.

A token holds the last task of its page, title included when the order is by title, and travels in URLs
(browser history, proxy logs, referrers), so its payload is encrypted, not only signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from server.errors import InvalidArgument
from server.services.resource_names import TASK_ID
from server.tasks import TITLE_MAX_LENGTH, Cursor, Priority, SortField, TaskFilter

# The largest payload: a title of TITLE_MAX_LENGTH 4-byte characters (kept as UTF-8; the few characters JSON
# escapes take 2 bytes, and titles refuse the control characters it would spell out), and the JSON around it.
_MAX_PAYLOAD_BYTES = 4 * TITLE_MAX_LENGTH + 128
_SIV_TAG_BYTES = 16
MAX_PAGE_TOKEN_LENGTH = 4 * math.ceil((_SIV_TAG_BYTES + _MAX_PAYLOAD_BYTES) / 3)
_ASSOCIATED_DATA = [b"todo.v1 page token"]
# The payload's layout; a token of another layout (an older or newer server) is refused, not misread.
_FORMAT = 2
_DATETIME_FIELDS = frozenset({SortField.CREATE_TIME, SortField.UPDATE_TIME, SortField.DUE_TIME})
_NULLABLE_FIELDS = frozenset({SortField.DUE_TIME})
_PRIORITIES = frozenset(int(priority) for priority in Priority)


def _invalid(description: str) -> InvalidArgument:
    return InvalidArgument.field("page_token", description)


def _unknown_position() -> InvalidArgument:
    return _invalid("holds a position this service never makes; start again without a page_token")


def _storable_text(value: object) -> bool:
    """A str the database can compare: valid UTF-8 (no lone surrogates) and no NUL (PostgreSQL refuses it)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def _aware_datetime(value: object) -> datetime | None:
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return when if when is not None and when.tzinfo is not None else None


def _sort_value(value: object, sort: SortField) -> datetime | str | int | None:
    """The cursor's sort value, if a page in this order can end on it; else INVALID_ARGUMENT."""
    if value is None and sort in _NULLABLE_FIELDS:
        return None
    if sort in _DATETIME_FIELDS:
        when = _aware_datetime(value)
        if when is not None:
            return when
    elif sort is SortField.TITLE:
        if _storable_text(value) and len(str(value)) <= TITLE_MAX_LENGTH:
            return str(value)
    elif type(value) is int and value in _PRIORITIES:  # SortField.PRIORITY; type(): JSON true is no 1
        return value
    raise _unknown_position()


def _derived(key: bytes, purpose: str, digest: Any) -> bytes:
    """A key of its own for one `purpose`, so no key serves two."""
    return hmac.new(key, f"todo.v1 page token: {purpose}".encode(), digest).digest()


class PageTokenCodec:
    """Encodes a Cursor into a token only this service (holding `key`) can make or read back."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the page token key must be at least 32 bytes")
        # AES-SIV (RFC 5297) encrypts and authenticates without a nonce, so there is none to repeat by chance;
        # the one cost, equal payloads making equal tokens, reveals nothing a caller does not already know.
        self._cipher = AESSIV(_derived(key, "AES-256-SIV key", hashlib.sha512))
        self._binding_key = _derived(key, "query binding key", hashlib.sha256)

    def _binding(self, user_id: str, task_filter: TaskFilter) -> str:
        material = f"{user_id}\x00{task_filter.fingerprint()}".encode()
        return hmac.new(self._binding_key, material, hashlib.sha256).hexdigest()[:24]

    def _seal(self, body: bytes) -> str:
        sealed = self._cipher.encrypt(body, _ASSOCIATED_DATA)
        return base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def encode(self, cursor: Cursor, *, user_id: str, task_filter: TaskFilter) -> str:
        value = cursor.sort_value
        if isinstance(value, datetime):
            value = value.isoformat()
        payload = {"f": _FORMAT, "b": self._binding(user_id, task_filter), "v": value, "i": cursor.task_id}
        return self._seal(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())

    def decode(self, token: str, *, user_id: str, task_filter: TaskFilter) -> Cursor:
        """The cursor in `token`; INVALID_ARGUMENT if it was edited or made for another user or query."""
        payload = self._payload(token)
        version = payload.get("f")
        if type(version) is not int or version != _FORMAT:
            raise _invalid("was made by another version of this service; start again without a page_token")
        if payload.get("b") != self._binding(user_id, task_filter):
            raise _invalid(
                "was made for a different query: keep parent, completed, query and order_by unchanged "
                "between pages, or start again without a page_token"
            )
        # Signed by us, but still checked: a leaked key or a buggy replica must not reach the SQL with garbage.
        task_id = payload.get("i")
        if not isinstance(task_id, str) or TASK_ID.fullmatch(task_id) is None or "v" not in payload:
            raise _unknown_position()
        return Cursor(sort_value=_sort_value(payload["v"], task_filter.sort), task_id=task_id)

    def _payload(self, token: str) -> dict[str, Any]:
        """The signed JSON object in `token`, or INVALID_ARGUMENT if it is not one this service made."""
        if len(token) > MAX_PAGE_TOKEN_LENGTH:
            raise _invalid("is longer than any token this service makes")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise _invalid("is not a token this service made") from None
        try:
            body = self._cipher.decrypt(raw, _ASSOCIATED_DATA)
        except InvalidTag:  # edited, made with another key, or too short to hold a tag
            raise _invalid("is not a token this service made (was it edited?)") from None
        try:
            payload = json.loads(body)
        except ValueError:  # not JSON, or not UTF-8 (UnicodeDecodeError is a ValueError)
            payload = None
        if not isinstance(payload, dict):
            raise _unknown_position()
        return payload
