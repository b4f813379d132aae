"""Enrolled devices, their signed assignments and their status reports.

Revision ID: 0003_devices
Revises: 0002_auth_audit
Create Date: 2025-01-01 00:00:02+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_devices"
down_revision: str | None = "0002_auth_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _when(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _release(prefix: str) -> list[sa.Column[object]]:
    return [
        sa.Column(f"{prefix}_model", sa.String(), nullable=True),
        sa.Column(f"{prefix}_release", sa.Integer(), nullable=True),
        sa.Column(f"{prefix}_sha256", sa.String(), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "device",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("hostname", sa.String(), nullable=False),
        sa.Column("public_key", sa.String(), nullable=False),
        sa.Column("keyid", sa.String(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("capabilities", sa.JSON(), nullable=False),
        sa.Column("token_hash", sa.String(), nullable=False),
        sa.Column("mqtt_password_hash", sa.String(), nullable=False),
        _when("created_at"),
        sa.Column("state", sa.String(), nullable=True),
        _when("state_at", nullable=True),
        sa.Column("state_sequence", sa.Integer(), nullable=True),
        *_release("target"),
        *_release("current"),
        *_release("previous"),
        sa.Column("last_reason", sa.String(), nullable=True),
        sa.Column("last_message", sa.Text(), nullable=True),
        sa.Column("agent_version", sa.String(), nullable=True),
        sa.Column("desired_sequence", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        _when("last_seen", nullable=True),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("malformed_reports", sa.Integer(), nullable=False),
        _when("decommissioned_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device")),
        sa.UniqueConstraint("keyid", name=op.f("uq_device_keyid")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_device_token_hash")),
    )
    op.create_index(op.f("ix_device_state"), "device", ["state"])
    op.create_table(
        "device_assignment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("release", sa.Integer(), nullable=False),
        sa.Column("manifest_sha256", sa.String(), nullable=False),
        sa.Column("artifact_sha256", sa.String(), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        _when("issued_at"),
        _when("expires_at"),
        sa.Column("created_by", sa.String(), nullable=False),
        _when("published_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_assignment")),
        sa.UniqueConstraint(
            "device_id", "sequence", name=op.f("uq_device_assignment_device_id_sequence")
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.id"], name=op.f("fk_device_assignment_device_id_device")
        ),
    )
    op.create_index(op.f("ix_device_assignment_expires_at"), "device_assignment", ["expires_at"])
    op.create_table(
        "device_report",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        _when("time"),
        _when("received_at"),
        sa.Column("transport", sa.String(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_report")),
        sa.UniqueConstraint("device_id", "seq", name=op.f("uq_device_report_device_id_seq")),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.id"], name=op.f("fk_device_report_device_id_device")
        ),
    )


def downgrade() -> None:
    op.drop_table("device_report")
    op.drop_index(op.f("ix_device_assignment_expires_at"), table_name="device_assignment")
    op.drop_table("device_assignment")
    op.drop_index(op.f("ix_device_state"), table_name="device")
    op.drop_table("device")
