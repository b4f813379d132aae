"""Shape checks for parsing untrusted JSON into typed objects.

Each helper either returns the value in the expected Python type or raises
:class:`~fleetcore.errors.MetadataError` naming what was wrong (``what``), so
``from_dict`` methods read as a list of expectations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fleetcore.errors import MetadataError


def obj_of(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MetadataError(f"{what} must be a JSON object")
    return value


def field_of(obj: dict[str, Any], key: str, what: str) -> Any:
    if key not in obj:
        raise MetadataError(f"{what} lacks {key!r}")
    return obj[key]


def unknown_fields(obj: dict[str, Any], known: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in known}


def counts_of(value: Any, length: int, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) != length:
        raise MetadataError(f"{what} must be a list of {length} counts")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise MetadataError(f"{what} must hold non-negative integers")
    return tuple(value)


def finite_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MetadataError(f"{what} must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise MetadataError(f"{what} must be finite")
    return number


def names_of(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise MetadataError(f"{what} must be a non-empty list of names")
    if not all(isinstance(v, str) and v for v in value) or len(set(value)) != len(value):
        raise MetadataError(f"{what} must be distinct non-empty strings")
    return tuple(value)


def check_sum(counts: Sequence[int], n: int, what: str) -> None:
    if sum(counts) != n:
        raise MetadataError(f"{what} sum to {sum(counts)}, expected n = {n}")
