"""Operator routes for staged rollouts: plan, create, apply, list, show, command."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, status

from control_plane.api.deps import FleetDep, Operator, Viewer
from control_plane.api.errors import ERROR_RESPONSES
from control_plane.api.rollout_schemas import (
    AppliedPublic,
    PlanPublic,
    ReasonIn,
    RolloutCreated,
    RolloutDocument,
    RolloutPublic,
    TargetPublic,
)
from control_plane.store.rollout_records import TargetStatus
from fleetcore.metadata._fields import NAME

router = APIRouter(prefix="/v1/rollouts", tags=["rollouts"], responses=ERROR_RESPONSES)
Ref = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="id or name")]
Command = Literal["pause", "resume", "promote", "abort", "rollback"]


@router.post("/plan", summary="Plan a rollout without creating it: waves, exclusions, conflicts")
def plan(body: RolloutDocument, fleet: FleetDep, _: Viewer) -> PlanPublic:
    return PlanPublic.from_planned(fleet.rollouts.plan(body.document()))


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a rollout")
def create(body: RolloutDocument, fleet: FleetDep, actor: Operator) -> RolloutCreated:
    view, found = fleet.rollouts.create(body.document(), actor.name)
    record = view.record
    return RolloutCreated(
        rollout=RolloutPublic.from_view(view),
        plan=PlanPublic.build(record.id, record.model, record.release, found),
    )


@router.put(
    "/{name}", summary="Apply a rollout document: create it, or change nothing, idempotently"
)
def apply(name: Ref, body: RolloutDocument, fleet: FleetDep, actor: Operator) -> AppliedPublic:
    document = body.named(name)
    applied, found = fleet.rollouts.apply(document, actor.name)
    record = applied.view.record
    return AppliedPublic(
        result=applied.result,
        rollout=RolloutPublic.from_view(applied.view),
        plan=None
        if found is None
        else PlanPublic.build(record.id, record.model, record.release, found),
    )


@router.get("", summary="List rollouts, newest first")
def list_rollouts(
    fleet: FleetDep,
    _: Viewer,
    active: bool = False,
    model: Annotated[str | None, Query(pattern=f"^{NAME.pattern}$")] = None,
) -> list[RolloutPublic]:
    return [
        RolloutPublic.from_view(v) for v in fleet.rollouts.list_rollouts(active=active, model=model)
    ]


@router.get("/{ref}", summary="A rollout with its per-wave counts and last gate results")
def show(ref: Ref, fleet: FleetDep, _: Viewer) -> RolloutPublic:
    return RolloutPublic.from_view(fleet.rollouts.view(ref))


@router.get("/{ref}/devices", summary="The rollout's devices, by wave and rollout order")
def devices(
    ref: Ref,
    fleet: FleetDep,
    _: Viewer,
    status: TargetStatus | None = None,
    wave: Annotated[int | None, Query(ge=0, le=100)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[TargetPublic]:
    found = fleet.rollouts.targets(ref, status=status, wave=wave, limit=limit)
    return [TargetPublic.of(t) for t in found]


@router.post("/{ref}/{command}", summary="pause, resume, promote, abort or roll back a rollout")
def run_command(
    ref: Ref, command: Command, fleet: FleetDep, actor: Operator, body: ReasonIn | None = None
) -> RolloutPublic:
    reason = None if body is None else body.reason
    return RolloutPublic.from_view(fleet.rollouts.command(ref, command, actor.name, reason))
