"""Request and response bodies of the device routes (``*Create``/``*Patch`` in, ``*Public`` out).

Public models never carry a device's token or MQTT password hash; the
enrollment answer carries the secrets exactly once.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, model_validator

from control_plane.api.schemas import MAX_COUNTER, NAME, RecordModel, RequestModel
from control_plane.devices.enroll import Enrolled
from control_plane.devices.service import DeviceView
from control_plane.store import DeviceRecord, DeviceReportRecord
from fleetcore.protocol import DEVICE_ID, LABEL_KEY, LABEL_VALUE, MAX_LABELS

DEVICE = f"^{DEVICE_ID.pattern}$"


class ReleaseRef(BaseModel):
    model: str
    release: int
    sha256: str


def _release(device: DeviceRecord, which: str) -> ReleaseRef | None:
    installed = device.installed(which)
    return None if installed is None else ReleaseRef(**installed.to_dict())


class DevicePublic(BaseModel):
    id: str
    hostname: str
    keyid: str
    labels: dict[str, str]
    capabilities: dict[str, Any]
    state: str | None
    state_at: datetime | None
    state_sequence: int | None
    target: ReleaseRef | None
    current: ReleaseRef | None
    previous: ReleaseRef | None
    last_reason: str | None
    last_message: str | None
    agent_version: str | None
    desired_sequence: int
    last_seq: int
    last_seen: datetime | None
    online: bool
    malformed_reports: int
    created_at: datetime
    decommissioned_at: datetime | None

    @classmethod
    def from_record(cls, r: DeviceRecord) -> DevicePublic:
        return cls(
            id=r.id,
            hostname=r.hostname,
            keyid=r.keyid,
            labels=r.labels,
            capabilities=r.capabilities,
            state=None if r.state is None else r.state.value,
            state_at=r.state_at,
            state_sequence=r.state_sequence,
            target=_release(r, "target"),
            current=_release(r, "current"),
            previous=_release(r, "previous"),
            last_reason=r.last_reason,
            last_message=r.last_message,
            agent_version=r.agent_version,
            desired_sequence=r.desired_sequence,
            last_seq=r.last_seq,
            last_seen=r.last_seen,
            online=r.online,
            malformed_reports=r.malformed_reports,
            created_at=r.created_at,
            decommissioned_at=r.decommissioned_at,
        )


class ReportPublic(BaseModel):
    seq: int
    state: str
    time: datetime
    received_at: datetime
    transport: str
    report: dict[str, Any]

    @classmethod
    def from_record(cls, r: DeviceReportRecord) -> ReportPublic:
        return cls(
            seq=r.seq,
            state=r.state.value,
            time=r.time,
            received_at=r.received_at,
            transport=r.transport,
            report=r.report,
        )


class AssignmentPublic(RecordModel):
    device_id: str
    sequence: int
    model: str
    release: int
    manifest_sha256: str
    artifact_sha256: str
    issued_at: datetime
    expires_at: datetime
    created_by: str
    published_at: datetime | None


class DeviceDetail(DevicePublic):
    assignment: AssignmentPublic | None
    reports: list[ReportPublic] = Field(description="the newest status reports, newest first")

    @classmethod
    def from_view(cls, view: DeviceView) -> DeviceDetail:
        return cls(
            **DevicePublic.from_record(view.device).model_dump(),
            assignment=None
            if view.assignment is None
            else AssignmentPublic.from_record(view.assignment),
            reports=[ReportPublic.from_record(r) for r in view.reports],
        )


class LabelsPatch(RequestModel):
    set: dict[str, str] = Field(default_factory=dict, max_length=MAX_LABELS)
    remove: list[str] = Field(default_factory=list, max_length=MAX_LABELS)

    @model_validator(mode="after")
    def _shapes(self) -> LabelsPatch:
        for key in [*self.set, *self.remove]:
            if not LABEL_KEY.fullmatch(key):
                raise ValueError(f"invalid label key {key!r}")
        for key, value in self.set.items():
            if not LABEL_VALUE.fullmatch(value):
                raise ValueError(f"invalid value {value!r} for label {key!r}")
        return self


class AssignmentCreate(RequestModel):
    model: str = Field(pattern=NAME)
    version: str | None = Field(None, pattern=NAME, description="the model version released")
    release: int | None = Field(None, ge=1, le=MAX_COUNTER, description="or its release counter")

    @model_validator(mode="after")
    def _one_reference(self) -> AssignmentCreate:
        if (self.version is None) == (self.release is None):
            raise ValueError("give exactly one of version and release")
        return self


class MqttAccess(BaseModel):
    url: str
    username: str
    password: str = Field(description="shown once; the broker keeps only its hash")


class EnrollmentPublic(BaseModel):
    device_id: str
    device_token: str = Field(description="efd_…; shown once, store it now")
    mqtt: MqttAccess | None = Field(description="null when the control plane has no broker")
    root: dict[str, Any] = Field(description="the newest signed root metadata, to pin")
    labels: dict[str, str]

    @classmethod
    def from_enrolled(cls, enrolled: Enrolled) -> EnrollmentPublic:
        device = enrolled.device
        mqtt = None
        if enrolled.mqtt_url is not None:
            mqtt = MqttAccess(
                url=enrolled.mqtt_url, username=device.id, password=enrolled.mqtt_password
            )
        return cls(
            device_id=device.id,
            device_token=enrolled.token,
            mqtt=mqtt,
            root=json.loads(enrolled.root),
            labels=device.labels,
        )


class ReportsAccepted(BaseModel):
    accepted: int = Field(description="reports stored now")
    duplicates: int = Field(description="reports already stored (same device and seq)")
    last_seq: int = Field(description="the highest seq stored for the device")


__all__ = [
    "DEVICE",
    "AssignmentCreate",
    "AssignmentPublic",
    "DeviceDetail",
    "DevicePublic",
    "EnrollmentPublic",
    "LabelsPatch",
    "MqttAccess",
    "ReleaseRef",
    "ReportPublic",
    "ReportsAccepted",
]
