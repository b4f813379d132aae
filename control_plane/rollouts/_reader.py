"""Reading a decoded YAML/JSON document field by field, with errors that name the field.

Every refusal is an :class:`~control_plane.errors.InvalidInputError` whose
message starts with the field's path (``spec.waves[1].soak: ...``), so an
operator sees exactly what to fix. Unknown keys are refused, never ignored.
"""

from __future__ import annotations

import math
import re
from typing import Any

from control_plane.errors import InvalidInputError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, None: 1.0}


def duration_s(value: Any, where: str) -> float:
    """``90``, ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"``, ``"250ms"`` -> seconds."""
    if isinstance(value, bool):
        raise InvalidInputError(f"{where}: {value!r} is not a duration")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    else:
        raise InvalidInputError(f"{where}: {value!r} is not a duration like 90s, 15m or 2h")
    if not math.isfinite(seconds) or seconds < 0 or seconds > 365 * 86_400:
        raise InvalidInputError(f"{where}: {value!r} is out of range (0 to 365d)")
    return seconds


class Reader:
    """Reads a mapping field by field, refusing unknown keys at the end."""

    def __init__(self, obj: Any, where: str) -> None:
        if not isinstance(obj, dict):
            raise InvalidInputError(f"{where} must be a mapping")
        self.obj, self.where, self.seen = obj, where, set[str]()

    def get(self, key: str) -> Any:
        self.seen.add(key)
        return self.obj.get(key)

    def allow(self, *keys: str) -> None:
        """Refuse unknown keys now, before other checks could hide a typo."""
        unknown = sorted(str(k) for k in self.obj if k not in keys)
        if unknown:
            raise InvalidInputError(f"{self.where}: unknown field(s) {', '.join(unknown)}")

    def done(self) -> None:
        unknown = sorted(str(k) for k in self.obj if k not in self.seen)
        if unknown:
            raise InvalidInputError(f"{self.where}: unknown field(s) {', '.join(unknown)}")

    def number(self, key: str, default: float | None, lo: float, hi: float) -> float | None:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInputError(f"{self.where}.{key}: {value!r} is not a number")
        if not lo <= value <= hi:
            raise InvalidInputError(f"{self.where}.{key}: {value} is not between {lo} and {hi}")
        return float(value)

    def integer(self, key: str, default: int | None, lo: int, hi: int) -> int | None:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInputError(f"{self.where}.{key}: {value!r} is not a whole number")
        if not lo <= value <= hi:
            raise InvalidInputError(f"{self.where}.{key}: {value} is not between {lo} and {hi}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise InvalidInputError(f"{self.where}.{key}: {value!r} is not true or false")
        return value

    def string(self, key: str, pattern: re.Pattern[str] | None = None) -> str | None:
        value = self.get(key)
        if value is None:
            return None
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise InvalidInputError(f"{self.where}.{key}: {value!r} is not a string")
        text = str(value)
        if pattern is not None and not pattern.fullmatch(text):
            raise InvalidInputError(f"{self.where}.{key}: {text!r} is not allowed here")
        return text

    def duration(self, key: str, default: float) -> float:
        value = self.get(key)
        return default if value is None else duration_s(value, f"{self.where}.{key}")

    def choice(self, key: str, enum: type[Any], default: Any) -> Any:
        value = self.get(key)
        if value is None:
            return default
        try:
            return enum(value)
        except ValueError:
            allowed = " | ".join(e.value for e in enum)
            raise InvalidInputError(f"{self.where}.{key}: {value!r} is not {allowed}") from None


__all__ = ["Reader", "duration_s"]
