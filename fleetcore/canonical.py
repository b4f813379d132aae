"""Canonical JSON: the exact bytes that signatures cover.

Theory of operation: a signer serializes the ``signed`` part of an envelope
with :func:`encode`; a verifier parses the received document with
:func:`decode` and serializes its ``signed`` part again with :func:`encode`.
Signatures are therefore over a deterministic byte string, not over whatever
whitespace or key order arrived on the wire.

Canonical form: UTF-8, object keys sorted by code point, no insignificant
whitespace, no NaN or infinities. Floats use Python's shortest round-trip
representation, which is stable across platforms; integers are unbounded.

:func:`decode` is the one parser for untrusted metadata. It refuses input that
could be read two ways (duplicate keys), non-finite numbers, non-UTF-8 bytes,
excessive nesting and oversize documents, raising :class:`MetadataError`.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fleetcore.errors import MetadataError

#: Default cap for one metadata document; manifests carry smoke vectors.
MAX_METADATA_BYTES = 4 * 1024 * 1024
#: Deepest nesting accepted; our documents need fewer than 10 levels.
MAX_DEPTH = 32


def encode(value: Any) -> bytes:
    """Serialize ``value`` to canonical JSON bytes.

    Raises:
        MetadataError: ``value`` holds something JSON cannot carry exactly
            (NaN, infinity, non-string keys, arbitrary objects).
    """
    _walk(value, MAX_DEPTH * 2, keys_must_be_strings=True)
    try:
        text = json.dumps(
            value,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
    except (TypeError, ValueError) as exc:
        raise MetadataError(f"cannot encode as canonical JSON: {exc}") from exc
    return text.encode("utf-8")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise MetadataError(f"duplicate key {key!r} in JSON object")
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise MetadataError(f"non-finite number {name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise MetadataError(f"number {text[:32]} is out of range")
    return value


def _walk(value: Any, limit: int, *, keys_must_be_strings: bool = False) -> None:
    # Iterative so hostile nesting cannot exhaust the interpreter stack here.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise MetadataError(f"JSON nesting deeper than {limit} levels")
        if isinstance(item, dict):
            # json.dumps would turn 1 into "1": two objects, one encoding.
            if keys_must_be_strings and not all(isinstance(k, str) for k in item):
                raise MetadataError("canonical JSON object keys must be strings")
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((child, depth + 1) for child in item)


def decode(data: bytes, *, max_bytes: int = MAX_METADATA_BYTES) -> Any:
    """Parse untrusted JSON bytes strictly.

    Raises:
        MetadataError: the input is too large, not UTF-8, not JSON, has
            duplicate keys or non-finite numbers, or nests too deeply.
    """
    if len(data) > max_bytes:
        raise MetadataError(f"document is {len(data)} bytes, more than the {max_bytes} allowed")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MetadataError(f"document is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
        )
    except MetadataError:
        raise
    except json.JSONDecodeError as exc:
        raise MetadataError(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except (RecursionError, ValueError) as exc:
        # RecursionError: hostile nesting; ValueError: e.g. integers over the
        # interpreter's digit limit.
        raise MetadataError(f"JSON cannot be parsed safely: {type(exc).__name__}") from exc
    _walk(value, MAX_DEPTH)
    return value


__all__ = ["MAX_DEPTH", "MAX_METADATA_BYTES", "decode", "encode"]
