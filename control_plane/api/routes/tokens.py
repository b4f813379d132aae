"""Operator API tokens (admin) and device enrollment tokens (operator)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, status

from control_plane.api.deps import Admin, Operator, ServicesDep
from control_plane.api.errors import ERROR_RESPONSES
from control_plane.api.schemas import (
    NAME,
    EnrollTokenCreate,
    EnrollTokenCreated,
    EnrollTokenPublic,
    TokenCreate,
    TokenCreated,
    TokenPublic,
)

router = APIRouter(prefix="/v1", tags=["tokens"], responses=ERROR_RESPONSES)


@router.post("/tokens", status_code=status.HTTP_201_CREATED, summary="Create an operator token")
def create_token(body: TokenCreate, svc: ServicesDep, actor: Admin) -> TokenCreated:
    days = None if body.expires_in_days is None else timedelta(days=body.expires_in_days)
    record, secret = svc.auth.create_api_token(body.name, body.role, days, actor.name)
    return TokenCreated(**TokenPublic.from_record(record).model_dump(), token=secret)


@router.get("/tokens", summary="List operator tokens (never their secrets)")
def list_tokens(svc: ServicesDep, _: Admin) -> list[TokenPublic]:
    return [TokenPublic.from_record(t) for t in svc.store.list_api_tokens()]


@router.delete("/tokens/{name}", summary="Revoke an operator token")
def revoke_token(
    name: Annotated[str, Path(pattern=NAME)], svc: ServicesDep, actor: Admin
) -> TokenPublic:
    return TokenPublic.from_record(svc.auth.revoke_api_token(name, actor.name))


@router.post(
    "/enroll-tokens",
    status_code=status.HTTP_201_CREATED,
    summary="Create a device enrollment token",
)
def create_enroll_token(
    body: EnrollTokenCreate, svc: ServicesDep, actor: Operator
) -> EnrollTokenCreated:
    record, secret = svc.auth.create_enroll_token(
        body.labels, body.max_uses, timedelta(hours=body.expires_in_hours), actor.name
    )
    return EnrollTokenCreated(**EnrollTokenPublic.from_record(record).model_dump(), token=secret)


@router.get("/enroll-tokens", summary="List enrollment tokens")
def list_enroll_tokens(svc: ServicesDep, _: Operator) -> list[EnrollTokenPublic]:
    return [EnrollTokenPublic.from_record(t) for t in svc.store.list_enroll_tokens()]
