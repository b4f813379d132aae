"""Request and response bodies of the rollout routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from control_plane.api.schemas import KindDocument, RecordModel, ReleasePublic, RequestModel
from control_plane.rollouts.plan import Plan
from control_plane.rollouts.revert import RevertSummary
from control_plane.rollouts.service import Planned, RolloutView
from control_plane.store.rollout_records import RolloutDeviceRecord, TargetStatus

#: Excluded devices listed in a plan or a create answer (the rest are counted).
MAX_LISTED = 200


class RolloutDocument(KindDocument):
    """A rollout document, as in ``rollout.yaml`` (see docs/rollouts.md)."""


class ReasonIn(RequestModel):
    reason: str | None = Field(None, min_length=1, max_length=500)


class ExcludedPublic(BaseModel):
    device: str
    reasons: list[str]


class PlanPublic(BaseModel):
    rollout_id: str
    model: str
    release: int
    wave_sizes: list[int]
    targets: int
    excluded: list[ExcludedPublic]
    excluded_count: int
    conflicts: dict[str, str]

    @classmethod
    def build(cls, rollout_id: str, model: str, release: int, plan: Plan) -> PlanPublic:
        return cls(
            rollout_id=rollout_id,
            model=model,
            release=release,
            wave_sizes=plan.wave_sizes,
            targets=len(plan.targets),
            excluded=[
                ExcludedPublic(device=e.device_id, reasons=list(e.reasons))
                for e in plan.excluded[:MAX_LISTED]
            ],
            excluded_count=len(plan.excluded),
            conflicts=dict(sorted(plan.conflicts.items())[:MAX_LISTED]),
        )

    @classmethod
    def from_planned(cls, planned: Planned) -> PlanPublic:
        return cls.build(planned.rollout_id, planned.spec.model, planned.release, planned.plan)


class WavePublic(BaseModel):
    wave: int
    counts: dict[str, int]


class RolloutPublic(BaseModel):
    id: str
    name: str
    model: str
    release: int
    phase: str
    wave: int
    waves: int
    reason: str | None
    dry_run: bool
    gates: list[dict[str, Any]]
    soak_until: str | None
    counts: dict[str, int]
    by_wave: list[WavePublic]
    spec: dict[str, Any]
    created_at: datetime
    created_by: str
    updated_at: datetime
    lease_owner: str | None
    lease_until: datetime | None

    @classmethod
    def from_view(cls, view: RolloutView) -> RolloutPublic:
        r = view.record
        state = r.state
        waves = len(r.spec["spec"]["waves"])
        by_wave = []
        totals: dict[str, int] = {s.value: 0 for s in TargetStatus}
        for wave in range(waves):
            counts = {s.value: n for s, n in sorted(view.tally.of(wave).items())}
            for status, n in counts.items():
                totals[status] += n
            by_wave.append(WavePublic(wave=wave, counts=counts))
        return cls(
            id=r.id,
            name=r.name,
            model=r.model,
            release=r.release,
            phase=r.phase,
            wave=int(state.get("wave", 0)),
            waves=waves,
            reason=state.get("reason"),
            dry_run=bool(r.spec["spec"].get("dry_run")),
            gates=list(state.get("gates") or []),
            soak_until=state.get("soak_until"),
            counts=totals,
            by_wave=by_wave,
            spec=r.spec,
            created_at=r.created_at,
            created_by=r.created_by,
            updated_at=r.updated_at,
            lease_owner=r.lease_owner,
            lease_until=r.lease_until,
        )


class RolloutCreated(BaseModel):
    rollout: RolloutPublic
    plan: PlanPublic


class AppliedPublic(BaseModel):
    result: str
    rollout: RolloutPublic
    plan: PlanPublic | None


class TargetPublic(RecordModel):
    device_id: str
    wave: int
    status: str
    stratum: str | None
    attempts: int
    sequence: int | None
    assigned_at: datetime | None
    finished_at: datetime | None
    previous_release: int | None
    revert_sequence: int | None
    reason: str | None

    @classmethod
    def of(cls, r: RolloutDeviceRecord) -> TargetPublic:
        return cls.model_validate(r)


class RevertPublic(BaseModel):
    reverted: int
    cancelled: int
    not_reverted: list[dict[str, str]]
    not_reverted_count: int

    @classmethod
    def of(cls, summary: RevertSummary) -> RevertPublic:
        return cls(**summary.to_dict())


class RevokedPublic(ReleasePublic):
    """A revoked release and what happened to the devices that were assigned it."""

    devices: RevertPublic | None


__all__ = [
    "AppliedPublic",
    "PlanPublic",
    "ReasonIn",
    "RevertPublic",
    "RevokedPublic",
    "RolloutCreated",
    "RolloutDocument",
    "RolloutPublic",
    "TargetPublic",
]
