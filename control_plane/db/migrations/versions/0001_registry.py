"""Registry: artifacts, model versions, releases and revocations.

Revision ID: 0001_registry
Revises:
Create Date: 2025-01-01 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_registry"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _when(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "artifact",
        sa.Column("sha256", sa.String(), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        _when("created_at"),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_artifact")),
    )
    op.create_table(
        "model_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("version", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("artifact_sha256", sa.String(), nullable=False),
        sa.Column("format", sa.String(), nullable=False),
        _when("created_at"),
        _when("updated_at"),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("quantization", sa.JSON(), nullable=False),
        sa.Column("io_schema", sa.JSON(), nullable=False),
        sa.Column("validation", sa.JSON(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("drift_reference_sha256", sa.String(), nullable=True),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_version")),
        sa.UniqueConstraint("model", "version", name=op.f("uq_model_version_model_version")),
        sa.ForeignKeyConstraint(
            ["artifact_sha256"],
            ["artifact.sha256"],
            name=op.f("fk_model_version_artifact_sha256_artifact"),
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["model_version.id"],
            name=op.f("fk_model_version_parent_id_model_version"),
        ),
        sa.ForeignKeyConstraint(
            ["drift_reference_sha256"],
            ["artifact.sha256"],
            name=op.f("fk_model_version_drift_reference_sha256_artifact"),
        ),
    )
    op.create_index(op.f("ix_model_version_artifact_sha256"), "model_version", ["artifact_sha256"])
    op.create_table(
        "release",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("counter", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("manifest", sa.LargeBinary(), nullable=False),
        sa.Column("manifest_sha256", sa.String(), nullable=False),
        _when("created_at"),
        sa.Column("created_by", sa.String(), nullable=False),
        _when("revoked_at", nullable=True),
        sa.Column("revoke_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_release")),
        sa.UniqueConstraint("model", "counter", name=op.f("uq_release_model_counter")),
        sa.UniqueConstraint("version_id", name=op.f("uq_release_version_id")),
        sa.ForeignKeyConstraint(
            ["version_id"], ["model_version.id"], name=op.f("fk_release_version_id_model_version")
        ),
    )
    op.create_table(
        "revocation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        _when("created_at"),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_revocation")),
        sa.UniqueConstraint("model", "sha256", name=op.f("uq_revocation_model_sha256")),
    )
    op.create_index(op.f("ix_revocation_sha256"), "revocation", ["sha256"])


def downgrade() -> None:
    op.drop_index(op.f("ix_revocation_sha256"), table_name="revocation")
    op.drop_table("revocation")
    op.drop_table("release")
    op.drop_index(op.f("ix_model_version_artifact_sha256"), table_name="model_version")
    op.drop_table("model_version")
    op.drop_table("artifact")
