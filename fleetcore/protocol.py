"""The wire contract between agents and the control plane: topics and messages.

Theory of operation. MQTT is a doorbell, not an authority: the only thing the
control plane sends a device is its *desired state*, which carries the signed
assignment and the signed release manifest it names; the device verifies both
with its :class:`~fleetcore.trust.TrustedSet` before acting, and fetches the
artifact by SHA-256 over HTTP. The same desired-state document is served over
HTTP (long-poll with ETag) for devices without a broker.

Devices send *status reports* (update state transitions), *presence* (retained,
with the last will saying offline) and, later, telemetry and drift summaries.
Every report carries a per-device sequence number that only increases, so the
control plane ingests each one once, whatever the transport delivered twice or
out of order.

Topics (``{d}`` is the device id, which is also the device's MQTT username, so
the broker ACL can key on ``%u``)::

    edgefleet/v1/devices/{d}/desired    control plane -> device, retained
    edgefleet/v1/devices/{d}/status     device -> control plane, QoS 1
    edgefleet/v1/devices/{d}/telemetry  device -> control plane
    edgefleet/v1/devices/{d}/drift      device -> control plane
    edgefleet/v1/devices/{d}/presence   device -> control plane, retained; will = offline

Every message is canonical JSON (:mod:`fleetcore.canonical`), parsed strictly:
duplicate keys, NaN, deep nesting and oversize payloads are refused with a
:class:`~fleetcore.errors.ProtocolError` naming what was wrong. Unknown fields
are kept, so older peers accept newer messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from fleetcore import canonical
from fleetcore._capabilities import Capabilities
from fleetcore.envelope import Envelope
from fleetcore.errors import EdgefleetError, ProtocolError
from fleetcore.metadata._fields import NAME, SHA256_HEX, Fields, format_time, parse_time

TOPIC_ROOT = "edgefleet/v1/devices"
#: Device ids: lower-case, no MQTT wildcards or separators, usable as a file name.
DEVICE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{2,63}")
#: Label keys and values (``site=a``, ``hw=rpi4``).
LABEL_KEY = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
LABEL_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}")
MAX_LABELS = 64
#: Status and presence messages are small; a cap keeps a hostile client from
#: making the consumer parse megabytes. Desired state carries a manifest.
MAX_REPORT_BYTES = 64 * 1024
MAX_DESIRED_BYTES = canonical.MAX_METADATA_BYTES
MAX_REASON_CHARS = 2000
#: Counters on the wire (report seq, release counter, assignment sequence) stay
#: within a signed 32-bit integer, what every database column of the control
#: plane holds; a larger one is a malformed message, refused at parse time.
MAX_COUNTER = 2**31 - 1


class Channel(str, Enum):
    DESIRED = "desired"
    STATUS = "status"
    TELEMETRY = "telemetry"
    DRIFT = "drift"
    PRESENCE = "presence"


#: Channels a device publishes on; it only ever subscribes to ``desired``.
DEVICE_PUBLISHES = (Channel.STATUS, Channel.TELEMETRY, Channel.DRIFT, Channel.PRESENCE)


def check_device_id(device: str) -> str:
    if not isinstance(device, str) or not DEVICE_ID.fullmatch(device):
        raise ProtocolError(
            f"invalid device id {device!r}: 3-64 characters of a-z, 0-9, '_' and '-'"
        )
    return device


def topic(device: str, channel: Channel) -> str:
    return f"{TOPIC_ROOT}/{check_device_id(device)}/{channel.value}"


def subscription(channel: Channel, *, shared_group: str | None = None) -> str:
    """The control plane's subscription for a channel of every device.

    With ``shared_group`` (MQTT 5 brokers) replicas split the messages.
    """
    plain = f"{TOPIC_ROOT}/+/{channel.value}"
    return plain if shared_group is None else f"$share/{shared_group}/{plain}"


def parse_topic(name: str) -> tuple[str, Channel]:
    """``edgefleet/v1/devices/{d}/{channel}`` -> (device, channel), or ProtocolError."""
    prefix = TOPIC_ROOT + "/"
    if not name.startswith(prefix):
        raise ProtocolError(f"topic {name[:200]!r} is not under {TOPIC_ROOT}/")
    parts = name[len(prefix) :].split("/")
    if len(parts) != 2:
        raise ProtocolError(f"topic {name[:200]!r} is not {TOPIC_ROOT}/<device>/<channel>")
    try:
        channel = Channel(parts[1])
    except ValueError:
        raise ProtocolError(f"unknown channel {parts[1][:64]!r}") from None
    return check_device_id(parts[0]), channel


def check_labels(labels: Any) -> dict[str, str]:
    if not isinstance(labels, dict) or len(labels) > MAX_LABELS:
        raise ProtocolError(f"labels must be an object of at most {MAX_LABELS} entries")
    for key, value in labels.items():
        if not isinstance(key, str) or not LABEL_KEY.fullmatch(key):
            raise ProtocolError(f"invalid label key {key!r}")
        if not isinstance(value, str) or not LABEL_VALUE.fullmatch(value):
            raise ProtocolError(f"invalid value {value!r} for label {key!r}")
    return dict(sorted(labels.items()))


def _decode(data: bytes, what: str, max_bytes: int) -> dict[str, Any]:
    try:
        obj = canonical.decode(data, max_bytes=max_bytes)
    except EdgefleetError as exc:
        raise ProtocolError(f"{what}: {exc}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    return obj


def _fields(obj: Any, what: str) -> Fields:
    return Fields(obj, what)


def _wrap(what: str, exc: EdgefleetError) -> ProtocolError:
    return ProtocolError(f"malformed {what}: {exc}")


# -- desired state ---------------------------------------------------------------


@dataclass(frozen=True)
class DesiredState:
    """The signed assignment and the release manifest it names, as one message.

    Both are kept as envelope bytes: the device verifies them, never this
    wrapper, which carries no authority of its own.
    """

    assignment: bytes
    manifest: bytes

    type = "desired"

    def encode(self) -> bytes:
        return canonical.encode(
            {
                "_type": self.type,
                "assignment": Envelope.from_bytes(self.assignment).to_dict(),
                "manifest": Envelope.from_bytes(self.manifest).to_dict(),
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> DesiredState:
        obj = _decode(data, "desired state", MAX_DESIRED_BYTES)
        try:
            f = _fields(obj, "desired state")
            f.expect("_type", cls.type)
            assignment = Envelope.from_dict(f.required_object("assignment")).to_bytes()
            manifest = Envelope.from_dict(f.required_object("manifest")).to_bytes()
        except EdgefleetError as exc:
            raise _wrap("desired state", exc) from exc
        return cls(assignment, manifest)


# -- update states -----------------------------------------------------------------


class UpdateState(str, Enum):
    """The agent update workflow (DESIGN.md), as reported in status messages."""

    IDLE = "idle"
    NOTIFIED = "notified"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    STAGED = "staged"
    SMOKE_TEST = "smoke_test"
    ACTIVATING = "activating"
    PROBATION = "probation"
    COMMITTED = "committed"
    REVERTED = "reverted"
    FAILED = "failed"
    #: A message was refused before any update started (forged, expired, stale).
    REJECTED = "rejected"

    @property
    def terminal(self) -> bool:
        return self in (UpdateState.COMMITTED, UpdateState.REVERTED, UpdateState.FAILED)


@dataclass(frozen=True)
class Installed:
    """A model release on a device: what is active, or was before."""

    model: str
    release: int
    sha256: str

    @classmethod
    def from_dict(cls, obj: Any, what: str = "installed release") -> Installed:
        f = _fields(obj, what)
        return cls(
            model=f.string("model", pattern=NAME),
            release=f.integer("release", minimum=1, maximum=MAX_COUNTER),
            sha256=f.string("sha256", pattern=SHA256_HEX),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "release": self.release, "sha256": self.sha256}


def _optional_installed(f: Fields, name: str) -> Installed | None:
    obj = f.object(name, optional=True)
    return None if obj is None else Installed.from_dict(obj, name)


# -- status reports ------------------------------------------------------------------


@dataclass(frozen=True)
class StatusReport:
    """One update-state transition of one device.

    ``seq`` increases by one per report of a device and never repeats, across
    restarts; the control plane ignores a (device, seq) it has already seen.
    ``target`` is the release being installed (``None`` when idle);
    ``assignment_sequence`` the director sequence the transition belongs to.
    ``reason`` is the failed check's name and ``message`` a one-line
    explanation for ``reverted``, ``failed`` and ``rejected``.
    """

    device: str
    seq: int
    time: datetime
    state: UpdateState
    target: Installed | None = None
    assignment_sequence: int | None = None
    active: Installed | None = None
    previous: Installed | None = None
    reason: str | None = None
    message: str | None = None
    agent_version: str | None = None
    unrecognized: dict[str, Any] = field(default_factory=dict, compare=False)

    type = "status"

    @classmethod
    def from_dict(cls, obj: Any) -> StatusReport:
        try:
            f = _fields(obj, "status report")
            f.expect("_type", cls.type)
            state_name = f.string("state")
            try:
                state = UpdateState(state_name)
            except ValueError:
                raise ProtocolError(f"unknown update state {state_name[:64]!r}") from None
            reason = f.optional_string("reason")
            message = f.optional_string("message")
            report = cls(
                device=check_device_id(f.string("device")),
                seq=f.integer("seq", minimum=1, maximum=MAX_COUNTER),
                time=f.time("time"),
                state=state,
                target=_optional_installed(f, "target"),
                assignment_sequence=f.optional_integer(
                    "assignment_sequence", minimum=1, maximum=MAX_COUNTER
                ),
                active=_optional_installed(f, "active"),
                previous=_optional_installed(f, "previous"),
                reason=None if reason is None else reason[:64],
                message=None if message is None else message[:MAX_REASON_CHARS],
                agent_version=f.optional_string("agent_version"),
                unrecognized=f.rest(),
            )
        except ProtocolError:
            raise
        except EdgefleetError as exc:
            raise _wrap("status report", exc) from exc
        return report

    def to_dict(self) -> dict[str, Any]:
        def opt(value: Installed | None) -> dict[str, Any] | None:
            return None if value is None else value.to_dict()

        return {
            **self.unrecognized,
            "_type": self.type,
            "device": self.device,
            "seq": self.seq,
            "time": format_time(self.time),
            "state": self.state.value,
            "target": opt(self.target),
            "assignment_sequence": self.assignment_sequence,
            "active": opt(self.active),
            "previous": opt(self.previous),
            "reason": self.reason,
            "message": self.message,
            "agent_version": self.agent_version,
        }

    def encode(self) -> bytes:
        return canonical.encode(self.to_dict())

    @classmethod
    def decode(cls, data: bytes) -> StatusReport:
        return cls.from_dict(_decode(data, "status report", MAX_REPORT_BYTES))


# -- presence ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Presence:
    """Retained on the presence topic; the broker publishes the offline last will."""

    device: str
    online: bool
    time: datetime | None = None
    agent_version: str | None = None

    type = "presence"

    def to_dict(self) -> dict[str, Any]:
        return {
            "_type": self.type,
            "device": self.device,
            "online": self.online,
            "time": None if self.time is None else format_time(self.time),
            "agent_version": self.agent_version,
        }

    def encode(self) -> bytes:
        return canonical.encode(self.to_dict())

    @classmethod
    def decode(cls, data: bytes) -> Presence:
        obj = _decode(data, "presence", MAX_REPORT_BYTES)
        try:
            f = _fields(obj, "presence")
            f.expect("_type", cls.type)
            online = obj.get("online")
            if not isinstance(online, bool):
                raise ProtocolError("presence 'online' must be true or false")
            when = f.optional_string("time")
            return cls(
                device=check_device_id(f.string("device")),
                online=online,
                time=None if when is None else parse_time(when, "presence field 'time'"),
                agent_version=f.optional_string("agent_version"),
            )
        except ProtocolError:
            raise
        except EdgefleetError as exc:
            raise _wrap("presence", exc) from exc


__all__ = [
    "DEVICE_ID",
    "DEVICE_PUBLISHES",
    "MAX_COUNTER",
    "MAX_DESIRED_BYTES",
    "MAX_REPORT_BYTES",
    "TOPIC_ROOT",
    "Capabilities",
    "Channel",
    "DesiredState",
    "Installed",
    "Presence",
    "StatusReport",
    "UpdateState",
    "check_device_id",
    "check_labels",
    "parse_topic",
    "subscription",
    "topic",
]
