"""Drift policies and the retraining triggers they fire.

Revision ID: 0006_retraining
Revises: 0005_telemetry
Create Date: 2025-01-01 00:00:05+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_retraining"
down_revision: str | None = "0005_telemetry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _when(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "drift_policy",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("cohort", sa.String(), nullable=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("spec_digest", sa.String(), nullable=False),
        _when("created_at"),
        sa.Column("created_by", sa.String(), nullable=False),
        _when("updated_at"),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("trigger_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_drift_policy")),
    )
    op.create_index(op.f("ix_drift_policy_model"), "drift_policy", ["model"])
    op.create_table(
        "retraining_trigger",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("policy", sa.String(), nullable=False),
        sa.Column("idempotency_key", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("release", sa.Integer(), nullable=False),
        sa.Column("cohort", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("manual", sa.Boolean(), nullable=False),
        _when("created_at"),
        _when("updated_at"),
        _when("next_attempt_at"),
        sa.Column("lease_s", sa.Integer(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("actions", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        _when("finished_at", nullable=True),
        sa.Column("lease_owner", sa.String(), nullable=True),
        _when("lease_until", nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retraining_trigger")),
        sa.UniqueConstraint(
            "policy",
            "idempotency_key",
            name=op.f("uq_retraining_trigger_policy_idempotency_key"),
        ),
    )
    op.create_index(
        op.f("ix_retraining_trigger_policy_created_at"),
        "retraining_trigger",
        ["policy", "created_at"],
    )
    op.create_index(
        op.f("ix_retraining_trigger_status_next_attempt_at"),
        "retraining_trigger",
        ["status", "next_attempt_at"],
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_retraining_trigger_status_next_attempt_at"), table_name="retraining_trigger"
    )
    op.drop_index(op.f("ix_retraining_trigger_policy_created_at"), table_name="retraining_trigger")
    op.drop_table("retraining_trigger")
    op.drop_index(op.f("ix_drift_policy_model"), table_name="drift_policy")
    op.drop_table("drift_policy")
