"""Operator routes for retraining triggers: drift policies, evidence, triggers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from control_plane.api.deps import Operator, ServicesDep, Viewer
from control_plane.api.errors import ERROR_RESPONSES
from control_plane.api.retraining_schemas import (
    AppliedPolicyPublic,
    EvidenceIn,
    PolicyDocument,
    PolicyOutcomePublic,
    PolicyPublic,
    TriggerOutcomePublic,
    TriggerPublic,
)
from control_plane.errors import ConfigurationError
from control_plane.retraining import RetrainingService
from control_plane.store import Role
from control_plane.store.retraining_records import TriggerStatus
from fleetcore.metadata._fields import NAME

router = APIRouter(prefix="/v1/retraining", tags=["retraining"], responses=ERROR_RESPONSES)
Name = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="policy name")]
#: Filters are checked like the names they match: no control characters reach the database.
ModelFilter = Annotated[str | None, Query(pattern=f"^{NAME.pattern}$", description="a model")]
PolicyFilter = Annotated[
    str | None, Query(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="a policy name")
]


async def get_retraining(svc: ServicesDep) -> RetrainingService:
    if svc.retraining is None:
        raise ConfigurationError("this server was built without retraining triggers")
    return svc.retraining


Retraining = Annotated[RetrainingService, Depends(get_retraining)]


@router.get("/policies", summary="List drift policies by name")
def list_policies(
    retraining: Retraining, _: Viewer, model: ModelFilter = None
) -> list[PolicyPublic]:
    return [PolicyPublic.from_record(p) for p in retraining.list_policies(model)]


@router.get("/policies/{name}", summary="A drift policy, normalised")
def show_policy(name: Name, retraining: Retraining, _: Viewer) -> PolicyPublic:
    return PolicyPublic.from_record(retraining.get_policy(name))


@router.put(
    "/policies/{name}", summary="Apply a drift policy document: create, leave, or update it"
)
def apply_policy(
    name: Name, body: PolicyDocument, retraining: Retraining, actor: Operator
) -> AppliedPolicyPublic:
    document = body.named(name)
    applied = retraining.apply_policy(document, actor.name, admin=actor.role.allows(Role.ADMIN))
    return AppliedPolicyPublic(
        result=applied.result, policy=PolicyPublic.from_record(applied.policy)
    )


@router.delete("/policies/{name}", summary="Delete a drift policy (its triggers stay)")
def delete_policy(name: Name, retraining: Retraining, actor: Operator) -> dict[str, str]:
    retraining.delete_policy(name, actor.name)
    return {"deleted": name}


@router.post(
    "/policies/{name}/fire",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Fire a policy's actions now with the given evidence (tests a wiring)",
)
def fire(
    name: Name, body: EvidenceIn, retraining: Retraining, actor: Operator
) -> PolicyOutcomePublic:
    evidence = body.drift_evidence()
    outcome = retraining.fire(name, evidence, actor.name, key=body.idempotency_key)
    return PolicyOutcomePublic.of(outcome)


@router.post(
    "/evidence",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Hand drift evidence to the policies: they fire or say why not",
)
def consider(
    body: EvidenceIn, retraining: Retraining, svc: ServicesDep, _: Operator
) -> TriggerOutcomePublic:
    return TriggerOutcomePublic.of(retraining.consider(body.drift_evidence(), svc.clock()))


@router.get("/triggers", summary="List triggers, newest first")
def list_triggers(
    retraining: Retraining,
    _: Viewer,
    policy: PolicyFilter = None,
    model: ModelFilter = None,
    status: TriggerStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
) -> list[TriggerPublic]:
    found = retraining.list_triggers(policy=policy, model=model, status=status, limit=limit)
    return [TriggerPublic.of(t) for t in found]


@router.get("/triggers/{trigger_id}", summary="One trigger with its actions' progress")
def show_trigger(
    trigger_id: Annotated[int, Path(ge=1, le=2**31 - 1, description="a trigger id")],
    retraining: Retraining,
    _: Viewer,
) -> TriggerPublic:
    return TriggerPublic.of(retraining.get_trigger(trigger_id))
