"""The audit log: who changed what, when, and how.

Every state-changing service call writes one entry *in the same transaction*
as the change itself, so the log never claims a change that did not happen
and no change goes unlogged. Entries carry no secrets: token values are never
passed here, only names and ids.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from control_plane.store import AuditRecord, Store


def audit(
    tx: Store,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    change: dict[str, Any],
    now: datetime,
) -> AuditRecord:
    return tx.add_audit(
        AuditRecord(
            at=now,
            actor=actor,
            action=action,
            object_type=object_type,
            object_id=object_id,
            change=change,
        )
    )


__all__ = ["audit"]
