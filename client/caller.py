"""Who a client acts for: a token or a token provider, and metadata for each call. A view of one client for
another user (a BFF's client per request) shares its channel. Shared by TaskClient and AsyncTaskClient."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Generic, Self, TypeVar

TokenProviderT = TypeVar("TokenProviderT")


class ActsForCaller(Generic[TokenProviderT]):
    _token: str | None
    _token_provider: TokenProviderT | None
    _metadata: tuple[tuple[str, str], ...]
    _owns_channel: bool

    def with_token(
        self,
        token: str | None = None,
        *,
        token_provider: TokenProviderT | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> Self:
        """A client for the user `token` names, on this client's channel (one connection for all users).
        Closing it leaves the channel open; closing this client closes it for both."""
        other = copy.copy(self)
        other._set_caller(token, token_provider, metadata, required=True)
        other._owns_channel = False
        return other

    def _set_caller(
        self,
        token: str | None,
        token_provider: TokenProviderT | None,
        metadata: Sequence[tuple[str, str]],
        *,
        required: bool,
    ) -> None:
        if token is not None and token_provider is not None:
            raise ValueError("pass one of token= or token_provider=, not both")
        if required and token is None and token_provider is None:
            raise ValueError("pass token= or token_provider=")
        if any(key.lower() == "authorization" for key, _ in metadata):
            raise ValueError("pass the token as token= or token_provider=, not in metadata")
        self._token = token
        self._token_provider = token_provider
        self._metadata = tuple(metadata)
