"""Typed readers for untrusted metadata fields.

:class:`Fields` takes a JSON object, hands out typed values field by field and
raises :class:`MetadataError` naming the object and field on any mismatch.
Whatever was not read is returned by :meth:`Fields.rest`, so metadata classes
keep unknown fields and write them back (forward compatibility, as in TUF).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from fleetcore.artifact import safe_name
from fleetcore.errors import MetadataError, UnsupportedAlgorithmError

SPEC_VERSION = "1.0"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
#: Exactly the shape :func:`format_time` writes (ASCII digits, fixed widths).
_CANONICAL_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
#: Names that are safe as MQTT topic levels, file names and URL segments.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
#: Hash algorithms edgefleet computes; anything else is refused, never ignored.
HASH_ALGORITHMS = ("sha256",)


def format_time(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return value.astimezone(timezone.utc).strftime(_TIME_FORMAT)


def parse_time(text: str, what: str) -> datetime:
    # Fast path for the shape format_time writes: on it strptime and fromisoformat
    # accept the same dates and refuse the same (month 13, 24:00, Feb 30, ...);
    # anything else, refusals included, takes strptime's path unchanged.
    if isinstance(text, str) and _CANONICAL_TIME.fullmatch(text):
        try:
            return datetime.fromisoformat(text[:19]).replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    try:
        return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError as exc:
        raise MetadataError(f"{what} must be a UTC time like 2030-01-31T00:00:00Z") from exc


class Fields:
    """Reads typed fields out of one JSON object; remembers what was not read."""

    def __init__(self, obj: Any, what: str) -> None:
        if not isinstance(obj, dict):
            raise MetadataError(f"{what} must be a JSON object")
        self._obj: dict[str, Any] = dict(obj)
        self.what = what

    def _take(self, name: str, optional: bool) -> Any:
        if name not in self._obj:
            if optional:
                return None
            raise MetadataError(f"{self.what} is missing field {name!r}")
        return self._obj.pop(name)

    def _fail(self, name: str, wanted: str) -> MetadataError:
        return MetadataError(f"{self.what} field {name!r} must be {wanted}")

    def string(self, name: str, *, pattern: re.Pattern[str] | None = None) -> str:
        value = self._take(name, optional=False)
        if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
            wanted = "a string" if pattern is None else f"a string matching {pattern.pattern}"
            raise self._fail(name, wanted)
        return value

    def optional_string(self, name: str) -> str | None:
        value = self._take(name, optional=True)
        if value is not None and not isinstance(value, str):
            raise self._fail(name, "a string or null")
        return value

    def integer(self, name: str, *, minimum: int = 0, maximum: int = 2**63 - 1) -> int:
        value = self._take(name, optional=False)
        if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
            raise self._fail(name, f"an integer from {minimum} to {maximum}")
        return value

    def optional_integer(
        self, name: str, *, minimum: int = 0, maximum: int = 2**63 - 1
    ) -> int | None:
        if self._obj.get(name) is None:
            self._obj.pop(name, None)
            return None
        return self.integer(name, minimum=minimum, maximum=maximum)

    def number(self, name: str, *, minimum: float = 0.0) -> float:
        value = self._take(name, optional=False)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < minimum:
            raise self._fail(name, f"a number of at least {minimum}")
        return float(value)

    def time(self, name: str) -> datetime:
        return parse_time(self.string(name), f"{self.what} field {name!r}")

    def object(self, name: str, *, optional: bool = False) -> dict[str, Any] | None:
        value = self._take(name, optional=optional)
        if value is None and optional:
            return None
        if not isinstance(value, dict):
            raise self._fail(name, "a JSON object")
        return value

    def required_object(self, name: str) -> dict[str, Any]:
        value = self.object(name)
        assert value is not None
        return value

    def array(self, name: str, *, optional: bool = False, max_items: int = 4096) -> list[Any]:
        value = self._take(name, optional=optional)
        if value is None and optional:
            return []
        if not isinstance(value, list):
            raise self._fail(name, "a list")
        if len(value) > max_items:
            raise self._fail(name, f"a list of at most {max_items} items")
        return value

    def string_list(
        self, name: str, *, pattern: re.Pattern[str], optional: bool = False
    ) -> tuple[str, ...]:
        items = self.array(name, optional=optional)
        if not all(isinstance(item, str) and pattern.fullmatch(item) for item in items):
            raise self._fail(name, f"a list of strings matching {pattern.pattern}")
        return tuple(items)

    def expect(self, name: str, value: str) -> None:
        found = self._take(name, optional=False)
        if found != value:
            raise MetadataError(f"{self.what} field {name!r} is {found!r}, expected {value!r}")

    def spec_version(self) -> None:
        found = self.string("spec_version")
        if found.split(".", 1)[0] != SPEC_VERSION.split(".", 1)[0]:
            raise MetadataError(f"{self.what} spec_version {found!r} is not supported")

    def rest(self) -> dict[str, Any]:
        return self._obj


@dataclass(frozen=True)
class ArtifactInfo:
    """What a signature says about artifact bytes: their length and digest."""

    length: int
    sha256: str
    name: str | None = None
    unrecognized: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, obj: Any, what: str = "artifact") -> ArtifactInfo:
        f = Fields(obj, what)
        name = f.optional_string("name")
        if name is not None:
            safe_name(name)
        length = f.integer("length")
        hashes = f.required_object("hashes")
        unknown = sorted(set(hashes) - set(HASH_ALGORITHMS))
        if unknown:
            raise UnsupportedAlgorithmError(
                f"{what} hash algorithm {unknown[0]!r} is not supported"
            )
        digest = hashes.get("sha256")
        if not isinstance(digest, str) or not SHA256_HEX.fullmatch(digest):
            raise MetadataError(f"{what} needs hashes.sha256 as 64 lowercase hex digits")
        return cls(length=length, sha256=digest, name=name, unrecognized=f.rest())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.unrecognized,
            "length": self.length,
            "hashes": {"sha256": self.sha256},
        }
        if self.name is not None:
            out["name"] = self.name
        return out

    def same_bytes(self, other: ArtifactInfo) -> bool:
        return self.length == other.length and self.sha256 == other.sha256


__all__ = [
    "HASH_ALGORITHMS",
    "NAME",
    "SHA256_HEX",
    "SPEC_VERSION",
    "ArtifactInfo",
    "Fields",
    "format_time",
    "parse_time",
]
