"""A small time-bounded cache of verified bearer tokens, keyed by the token's hash.

Operator and device tokens are both verified once against the database and
then trusted for a short while (``token_cache_s``), so the hot request path
does not make a database round trip per request. Entries expire at their own
deadline; when the cache is full it is emptied rather than scanned, which
costs one database lookup per live token and keeps every operation O(1).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Generic, TypeVar

from control_plane.auth.tokens import hash_token

T = TypeVar("T")


class TokenCache(Generic[T]):
    def __init__(self, clock: Callable[[], datetime], max_entries: int) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self._entries: dict[str, tuple[T, datetime]] = {}

    def get(self, token: str | None) -> T | None:
        """What ``token`` verified as, if it did so recently."""
        if not token:
            return None
        entry = self._entries.get(hash_token(token))
        if entry is None or entry[1] <= self.clock():
            return None
        return entry[0]

    def put(self, token_hash: str, value: T, until: datetime) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[token_hash] = (value, until)

    def drop(self, token_hash: str) -> None:
        self._entries.pop(token_hash, None)

    def drop_where(self, matches: Callable[[T], bool]) -> None:
        for key, (value, _) in list(self._entries.items()):
            if matches(value):
                self._entries.pop(key, None)


__all__ = ["TokenCache"]
