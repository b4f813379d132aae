"""Request and response bodies of the retraining routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from control_plane.api.schemas import KindDocument, RecordModel, RequestModel
from control_plane.retraining import DriftEvidence, PolicyOutcome, TriggerOutcome
from control_plane.store.retraining_records import TriggerRecord, TriggerStatus


class PolicyDocument(KindDocument):
    """A drift policy document, as in ``policy.yaml`` (see docs/retraining.md)."""


class EvidenceIn(RequestModel):
    """Drift evidence (the JSON of ``DriftEvidence.to_dict``), checked strictly by the service."""

    evidence: dict[str, Any]
    idempotency_key: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$", description="manual fire only"
    )

    def drift_evidence(self) -> DriftEvidence:
        """The evidence, parsed strictly: a malformed one is an ``InvalidInputError``."""
        return DriftEvidence.from_dict(self.evidence)


class PolicyPublic(RecordModel):
    name: str
    model: str
    cohort: str | None
    spec: dict[str, Any]
    spec_digest: str
    revision: int
    created_at: datetime
    created_by: str
    updated_at: datetime


class AppliedPolicyPublic(BaseModel):
    result: str
    policy: PolicyPublic


class ActionStatePublic(BaseModel):
    name: str
    type: str
    status: str
    attempts: int
    last_error: str | None = None


class TriggerPublic(BaseModel):
    id: int
    policy: str
    idempotency_key: str
    model: str
    release: int
    cohort: str | None
    status: TriggerStatus
    manual: bool
    attempts: int
    last_error: str | None
    actions: list[ActionStatePublic]
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime
    finished_at: datetime | None
    payload: dict[str, Any]

    @classmethod
    def of(cls, record: TriggerRecord) -> TriggerPublic:
        values = {k: getattr(record, k) for k in cls.model_fields if k != "actions"}
        actions = [ActionStatePublic.model_validate(a) for a in record.actions]
        return cls(**values, actions=actions)


class PolicyOutcomePublic(BaseModel):
    policy: str
    fired: bool
    reason: str
    detail: str
    idempotency_key: str | None
    trigger_id: int | None
    cooldown_until: datetime | None

    @classmethod
    def of(cls, outcome: PolicyOutcome) -> PolicyOutcomePublic:
        return cls.model_validate(outcome.to_dict())


class TriggerOutcomePublic(BaseModel):
    model: str
    cohort: str | None
    fired: bool
    reason: str
    outcomes: list[PolicyOutcomePublic]

    @classmethod
    def of(cls, outcome: TriggerOutcome) -> TriggerOutcomePublic:
        return cls.model_validate(outcome.to_dict())
