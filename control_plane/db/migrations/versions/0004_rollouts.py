"""Staged rollouts and the devices each one targets.

Revision ID: 0004_rollouts
Revises: 0003_devices
Create Date: 2025-01-01 00:00:03+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_rollouts"
down_revision: str | None = "0003_devices"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _when(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "rollout",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("release", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("spec_digest", sa.String(), nullable=False),
        sa.Column("phase", sa.String(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        _when("created_at"),
        sa.Column("created_by", sa.String(), nullable=False),
        _when("updated_at"),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(), nullable=True),
        _when("lease_until", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout")),
        sa.UniqueConstraint("name", name=op.f("uq_rollout_name")),
    )
    op.create_index(op.f("ix_rollout_phase"), "rollout", ["phase"])
    op.create_table(
        "rollout_device",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rollout_id", sa.String(), nullable=False),
        sa.Column("device_id", sa.String(), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("order_key", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("stratum", sa.String(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=True),
        _when("assigned_at", nullable=True),
        _when("finished_at", nullable=True),
        sa.Column("previous_release", sa.Integer(), nullable=True),
        sa.Column("revert_sequence", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout_device")),
        sa.UniqueConstraint(
            "rollout_id", "device_id", name=op.f("uq_rollout_device_rollout_id_device_id")
        ),
        sa.ForeignKeyConstraint(
            ["rollout_id"], ["rollout.id"], name=op.f("fk_rollout_device_rollout_id_rollout")
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.id"], name=op.f("fk_rollout_device_device_id_device")
        ),
    )
    op.create_index(
        op.f("ix_rollout_device_rollout_id_status_wave"),
        "rollout_device",
        ["rollout_id", "status", "wave"],
    )
    op.create_index(op.f("ix_rollout_device_device_id"), "rollout_device", ["device_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_rollout_device_device_id"), table_name="rollout_device")
    op.drop_index(op.f("ix_rollout_device_rollout_id_status_wave"), table_name="rollout_device")
    op.drop_table("rollout_device")
    op.drop_index(op.f("ix_rollout_phase"), table_name="rollout")
    op.drop_table("rollout")
