"""The drift policy: what an operator writes in ``policy.yaml``, parsed and checked.

Theory of operation: :func:`parse_policy` takes the decoded YAML (or the JSON
of ``PUT /v1/retraining/policies/{name}``) and returns a frozen
:class:`DriftPolicy`, or raises :class:`~control_plane.errors.InvalidInputError`
naming the field that is wrong; unknown fields are refused. :meth:`to_dict`
gives the normalised form (defaults filled in) and :meth:`digest` its hash,
which ``fleetctl apply`` compares to report created / unchanged / updated.

A document looks like this (``apiVersion`` and ``kind`` are optional)::

    apiVersion: edgefleet/v1
    kind: DriftPolicy
    metadata: {name: sensor-drift}
    spec:
      model: sensor
      cohort: site=berlin            # optional; "site" = each site; "*" = any; absent = fleet
      breadth: {min_share_traffic: 0.3, min_share_devices: 0.2}
      persistence: {windows: 3, of: 4}
      min_accuracy_drop: 2.0         # percentage points below the reference accuracy
      cooldown: 6h
      idempotency_key: "{policy}-{model}-{release}-{window_end:%Y%m%dT%H}"
      canary_approval: true
      actions:
        - {type: webhook, url: "https://ci.example.com/hooks/retrain"}

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from control_plane.errors import InvalidInputError
from control_plane.retraining.actions import Action, action_to_dict, parse_action, seconds_text
from control_plane.rollouts._reader import Reader
from control_plane.rollouts.spec import MODEL, NAME

DEFAULT_KEY = "{policy}-{model}-{release}-{window_end:%Y%m%dT%H}"
KEY_FIELDS = ("policy", "model", "release", "cohort", "window_start", "window_end")
MAX_KEY = 200
MAX_ACTIONS = 10
COHORT = re.compile(r"\*|[A-Za-z0-9][A-Za-z0-9._/=:,-]{0,127}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class DriftPolicy:
    name: str
    model: str
    actions: tuple[Action, ...]
    #: None: whole-fleet evidence only; "*": any cohort; "site": every cohort of that
    #: label (site=north, site=south, ...); "site=north": that one cohort.
    cohort: str | None = None
    min_share_traffic: float | None = None
    min_share_devices: float | None = None
    persistence_windows: int = 1
    persistence_of: int = 1
    min_accuracy_drop: float | None = None  # percentage points
    cooldown_s: float = 6 * 3600.0
    idempotency_key: str = DEFAULT_KEY
    canary_approval: bool = True

    def matches(self, model: str, cohort: str | None) -> bool:
        if model != self.model:
            return False
        if self.cohort in ("*", cohort):
            return True
        # A bare label matches each of its cohorts: "site" matches "site=north".
        return (
            cohort is not None
            and self.cohort is not None
            and "=" not in self.cohort
            and cohort.partition("=")[0] == self.cohort
        )

    def key_for(
        self, model: str, release: int, cohort: str | None, start: datetime, end: datetime
    ) -> str:
        """The idempotency key: the template filled in, unsafe characters replaced by ``-``."""
        return render_key(self.idempotency_key, self.name, model, release, cohort, start, end)

    @property
    def lease_s(self) -> int:
        """How long a worker may hold a trigger of this policy: its longest action and then some."""
        return int(max(a.delivery.timeout_s for a in self.actions)) + 60

    def to_dict(self) -> dict[str, Any]:
        breadth = {}
        if self.min_share_traffic is not None:
            breadth["min_share_traffic"] = self.min_share_traffic
        if self.min_share_devices is not None:
            breadth["min_share_devices"] = self.min_share_devices
        spec: dict[str, Any] = {
            "model": self.model,
            "breadth": breadth,
            "persistence": {"windows": self.persistence_windows, "of": self.persistence_of},
            "min_accuracy_drop": self.min_accuracy_drop,
            "cooldown": seconds_text(self.cooldown_s),
            "idempotency_key": self.idempotency_key,
            "canary_approval": self.canary_approval,
            "actions": [action_to_dict(a) for a in self.actions],
        }
        if self.cohort is not None:
            spec["cohort"] = self.cohort
        return {
            "apiVersion": "edgefleet/v1",
            "kind": "DriftPolicy",
            "metadata": {"name": self.name},
            "spec": spec,
        }

    def digest(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def render_key(
    template: str,
    policy: str,
    model: str,
    release: int,
    cohort: str | None,
    start: datetime,
    end: datetime,
) -> str:
    values = {
        "policy": policy,
        "model": model,
        "release": release,
        "cohort": cohort or "fleet",
        "window_start": start.astimezone(timezone.utc),
        "window_end": end.astimezone(timezone.utc),
    }
    text = _UNSAFE.sub("-", template.format_map(values)).strip("-")
    return text[:MAX_KEY] or "trigger"


def _check_template(template: str) -> None:
    where = "spec.idempotency_key"
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise InvalidInputError(f"{where}: {exc}") from None
    unknown = sorted({f for f in fields if f not in KEY_FIELDS})
    if unknown:
        raise InvalidInputError(
            f"{where}: unknown field(s) {', '.join(unknown)}; use {', '.join(KEY_FIELDS)}"
        )
    sample = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    try:
        render_key(template, "p", "m", 1, None, sample, sample)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise InvalidInputError(f"{where}: {exc}") from None
    if "window" not in template and "release" not in template:
        # A constant key fires once, ever: almost certainly a mistake.
        raise InvalidInputError(f"{where}: include {{window_end}} or {{release}} (or both)")


def _breadth(raw: Any) -> tuple[float | None, float | None]:
    if raw is None:
        return None, None
    b = Reader(raw, "spec.breadth")
    b.allow("min_share_traffic", "min_share_devices")
    found = (
        b.number("min_share_traffic", None, 0.0, 1.0),
        b.number("min_share_devices", None, 0.0, 1.0),
    )
    b.done()
    return found


def parse_policy(document: Any) -> DriftPolicy:
    """A policy document (YAML or JSON, decoded) -> :class:`DriftPolicy`."""
    top = Reader(document, "policy")
    top.allow("apiVersion", "kind", "metadata", "spec")
    api_version, kind = top.get("apiVersion"), top.get("kind")
    if api_version is not None and api_version != "edgefleet/v1":
        raise InvalidInputError(f"apiVersion {api_version!r} is not edgefleet/v1")
    if kind is not None and kind != "DriftPolicy":
        raise InvalidInputError(f"kind {kind!r} is not DriftPolicy")
    meta = Reader(top.get("metadata") or {}, "metadata")
    meta.allow("name", "labels")
    name = meta.string("name", NAME)
    meta.get("labels")  # allowed, informational
    meta.done()
    if name is None:
        raise InvalidInputError("metadata.name is required (a-z, 0-9, '.', '_', '-')")
    s = Reader(top.get("spec"), "spec")
    top.done()
    s.allow("model", "cohort", "breadth", "persistence", "min_accuracy_drop", "cooldown",
            "idempotency_key", "canary_approval", "actions")  # fmt: skip
    model = s.string("model", MODEL)
    if model is None:
        raise InvalidInputError("spec.model is required")
    traffic, devices = _breadth(s.get("breadth"))
    p = Reader(s.get("persistence") or {}, "spec.persistence")
    p.allow("windows", "of")
    windows = p.integer("windows", 1, 1, 1000) or 1
    of = p.integer("of", windows, 1, 1000) or 1
    p.done()
    if windows > of:
        raise InvalidInputError(f"spec.persistence: windows ({windows}) is more than of ({of})")
    template = s.string("idempotency_key") or DEFAULT_KEY
    _check_template(template)
    raw_actions = s.get("actions")
    if not isinstance(raw_actions, list) or not 1 <= len(raw_actions) <= MAX_ACTIONS:
        raise InvalidInputError(f"spec.actions must be a list of 1 to {MAX_ACTIONS} actions")
    actions = tuple(parse_action(raw, f"spec.actions[{i}]", i) for i, raw in enumerate(raw_actions))
    names = [a.name for a in actions]
    if len(set(names)) != len(names):
        raise InvalidInputError("spec.actions: action names must be unique")
    policy = DriftPolicy(
        name=name,
        model=model,
        actions=actions,
        cohort=s.string("cohort", COHORT),
        min_share_traffic=traffic,
        min_share_devices=devices,
        persistence_windows=windows,
        persistence_of=of,
        min_accuracy_drop=s.number("min_accuracy_drop", None, -100.0, 100.0),
        cooldown_s=s.duration("cooldown", 6 * 3600.0),
        idempotency_key=template,
        canary_approval=s.boolean("canary_approval", True),
    )
    s.done()
    return policy


__all__ = ["DEFAULT_KEY", "KEY_FIELDS", "DriftPolicy", "parse_policy", "render_key"]
