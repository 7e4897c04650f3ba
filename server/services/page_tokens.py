"""Opaque, tamper-evident page tokens bound to the caller and to the query they were made for."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from datetime import datetime

from server.errors import InvalidArgument
from server.tasks import Cursor, SortField, TaskFilter

MAX_PAGE_TOKEN_LENGTH = 1024
_MAC_BYTES = 16
_DATETIME_FIELDS = frozenset({SortField.CREATE_TIME, SortField.UPDATE_TIME, SortField.DUE_TIME})


def _invalid(description: str) -> InvalidArgument:
    return InvalidArgument.field("page_token", description)


class PageTokenCodec:
    """Encodes a Cursor into a token only this service (holding `key`) can make or read back."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the page token key must be at least 32 bytes")
        self._key = key

    def _binding(self, user_id: str, task_filter: TaskFilter) -> str:
        material = f"{user_id}\x00{task_filter.fingerprint()}".encode()
        return hashlib.sha256(material).hexdigest()[:24]

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, b"todo.v1 page token\x00" + body, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, cursor: Cursor, *, user_id: str, task_filter: TaskFilter) -> str:
        value = cursor.sort_value
        if isinstance(value, datetime):
            value = value.isoformat()
        body = json.dumps(
            {"b": self._binding(user_id, task_filter), "v": value, "i": cursor.task_id},
            separators=(",", ":"),
        ).encode()
        return base64.urlsafe_b64encode(self._mac(body) + body).decode().rstrip("=")

    def decode(self, token: str, *, user_id: str, task_filter: TaskFilter) -> Cursor:
        """The cursor in `token`; INVALID_ARGUMENT if it was edited or made for another user or query."""
        if len(token) > MAX_PAGE_TOKEN_LENGTH:
            raise _invalid("is longer than any token this service makes")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise _invalid("is not a token this service made") from None
        mac, body = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(body)):
            raise _invalid("is not a token this service made (was it edited?)")
        payload = json.loads(body)
        if payload["b"] != self._binding(user_id, task_filter):
            raise _invalid(
                "was made for a different query: keep parent, completed, query and order_by unchanged "
                "between pages, or start again without a page_token"
            )
        value = payload["v"]
        if value is not None and task_filter.sort in _DATETIME_FIELDS:
            value = datetime.fromisoformat(value)
        return Cursor(sort_value=value, task_id=payload["i"])
