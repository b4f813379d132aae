"""Operator route for fleet drift: the report ``fleetctl drift report`` prints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from control_plane.api.deps import ServicesDep, Viewer
from control_plane.api.errors import ERROR_RESPONSES
from control_plane.errors import NotFoundError
from fleetcore.metadata._fields import NAME

router = APIRouter(prefix="/v1/models", tags=["drift"], responses=ERROR_RESPONSES)


@router.get(
    "/{model}/drift",
    summary="Fleet drift of a model: per release (and cohort), features, accuracy, windows",
)
def drift_report(
    model: Annotated[str, Path(pattern=f"^{NAME.pattern}$")],
    svc: ServicesDep,
    _: Viewer,
    cohort: Annotated[
        str | None,
        Query(
            max_length=130,
            description="a label to split by (site), or one cohort (site=north)",
        ),
    ] = None,
    since: Annotated[datetime | None, Query(description="only windows after this time")] = None,
    release: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> dict[str, Any]:
    if svc.drift is None:
        raise NotFoundError("this control plane does not analyse drift")
    report: dict[str, Any] = svc.drift.report(model, cohort=cohort, since=since, release=release)
    return report


__all__ = ["router"]
