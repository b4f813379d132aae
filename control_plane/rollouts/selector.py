"""Label selectors, Kubernetes style: ``site in (a,b), hw=rpi4, !legacy``.

Theory of operation: :func:`parse_selector` turns the text into a tuple of
:class:`Requirement`; a device matches when it meets every requirement (a
comma is AND). The grammar, one requirement per comma-separated term::

    key=value   key==value   key!=value
    key in (v1,v2)           key notin (v1,v2)
    key                      (the label exists)
    !key                     (the label is absent)

An empty selector matches every device. ``key!=value`` and ``notin`` also
match devices without the label, as in Kubernetes. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from control_plane.errors import InvalidInputError
from fleetcore.protocol import LABEL_KEY, LABEL_VALUE

MAX_SELECTOR_CHARS = 4000
_SET = re.compile(r"^\s*(\S+?)\s+(in|notin)\s*\(([^()]*)\)\s*$")
_EQ = re.compile(r"^\s*([^=!\s]+)\s*(==|=|!=)\s*(\S+)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([^=!\s()]+)\s*$")


class Op(str, Enum):
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    ABSENT = "!"


@dataclass(frozen=True)
class Requirement:
    key: str
    op: Op
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op is Op.IN:
            return value in self.values
        if self.op is Op.NOT_IN:
            return value not in self.values
        if self.op is Op.EXISTS:
            return value is not None
        return value is None

    def __str__(self) -> str:
        if self.op is Op.EXISTS:
            return self.key
        if self.op is Op.ABSENT:
            return f"!{self.key}"
        values = sorted(self.values)
        if len(values) == 1:
            return f"{self.key}{'=' if self.op is Op.IN else '!='}{values[0]}"
        return f"{self.key} {self.op.value} ({','.join(values)})"


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ", ".join(str(r) for r in self.requirements)


def _split_terms(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    terms, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise InvalidInputError(f"selector {text!r}: unbalanced ')'")
        elif char == "," and depth == 0:
            terms.append(text[start:index])
            start = index + 1
    if depth:
        raise InvalidInputError(f"selector {text!r}: unbalanced '('")
    terms.append(text[start:])
    return terms


def _key(key: str, term: str) -> str:
    if not LABEL_KEY.fullmatch(key):
        raise InvalidInputError(f"selector term {term.strip()!r}: {key!r} is not a label key")
    return key


def _value(value: str, term: str) -> str:
    if not LABEL_VALUE.fullmatch(value):
        raise InvalidInputError(f"selector term {term.strip()!r}: {value!r} is not a label value")
    return value


def _requirement(term: str) -> Requirement:
    match = _SET.match(term)
    if match:
        key, op, body = match.groups()
        values = [v.strip() for v in body.split(",")]
        if not values or any(not v for v in values):
            raise InvalidInputError(f"selector term {term.strip()!r}: empty value in the set")
        return Requirement(
            _key(key, term),
            Op.IN if op == "in" else Op.NOT_IN,
            frozenset(_value(v, term) for v in values),
        )
    match = _EQ.match(term)
    if match:
        key, op, value = match.groups()
        single = frozenset({_value(value, term)})
        return Requirement(_key(key, term), Op.NOT_IN if op == "!=" else Op.IN, single)
    match = _EXISTS.match(term)
    if match:
        bang, key = match.groups()
        return Requirement(_key(key, term), Op.ABSENT if bang else Op.EXISTS)
    raise InvalidInputError(
        f"selector term {term.strip()!r} is not key=value, key!=value, key in (a,b), "
        "key notin (a,b), key or !key"
    )


def parse_selector(text: str | None) -> Selector:
    """Parse a selector; InvalidInputError names the term that is wrong."""
    if text is None or not text.strip():
        return Selector()
    if len(text) > MAX_SELECTOR_CHARS:
        raise InvalidInputError(f"the selector is longer than {MAX_SELECTOR_CHARS} characters")
    return Selector(tuple(_requirement(term) for term in _split_terms(text)))


__all__ = ["Op", "Requirement", "Selector", "parse_selector"]
