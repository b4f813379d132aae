"""Device authentication: ``Authorization: Bearer efd_…`` on device-facing routes.

A device token names exactly one device; it is void once the device is
decommissioned. Like operator tokens, a verified token is reused for
``token_cache_s`` without asking the database again; the worker that
decommissions a device forgets it at once, the others within that time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from control_plane.auth.cache import TokenCache
from control_plane.auth.tokens import DEVICE_PREFIX, hash_token, well_formed
from control_plane.errors import AuthenticationError, PermissionDeniedError
from control_plane.store import Store

_CACHE_ENTRIES = 16_384


@dataclass(frozen=True)
class DeviceCaller:
    """An authenticated device."""

    device_id: str

    def require(self, device_id: str) -> None:
        """A device may only act on its own id."""
        if device_id != self.device_id:
            raise PermissionDeniedError(f"device {self.device_id} may not act for {device_id}")


def is_device_token(token: str | None) -> bool:
    return bool(token) and str(token).startswith(DEVICE_PREFIX)


class DeviceAuth:
    def __init__(self, store: Store, clock: Callable[[], datetime], cache_ttl: timedelta) -> None:
        self.store = store
        self.clock = clock
        self.cache_ttl = cache_ttl
        self._cache: TokenCache[DeviceCaller] = TokenCache(clock, _CACHE_ENTRIES)

    def cached(self, token: str | None) -> DeviceCaller | None:
        return self._cache.get(token)

    def authenticate(self, token: str | None) -> DeviceCaller:
        if not token:
            raise AuthenticationError("missing bearer token: send 'Authorization: Bearer efd_…'")
        if not well_formed(token, DEVICE_PREFIX):
            raise AuthenticationError("invalid device token")
        cached = self.cached(token)
        if cached is not None:
            return cached
        token_hash = hash_token(token)
        record = self.store.find_device_by_token(token_hash)
        if record is None:
            raise AuthenticationError("invalid device token")
        if not record.active:
            raise AuthenticationError(f"device {record.id} was decommissioned")
        caller = DeviceCaller(record.id)
        self._cache.put(token_hash, caller, self.clock() + self.cache_ttl)
        return caller

    def forget(self, device_id: str) -> None:
        self._cache.drop_where(lambda caller: caller.device_id == device_id)


__all__ = ["DeviceAuth", "DeviceCaller", "is_device_token"]
