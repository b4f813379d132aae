"""Device telemetry, drift summaries (raw windows and rollups) and data captures.

Revision ID: 0005_telemetry
Revises: 0004_rollouts
Create Date: 2025-01-01 00:00:04+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_telemetry"
down_revision: str | None = "0004_rollouts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _when(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _id() -> sa.Column[object]:
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False)


def _text(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.String(), nullable=nullable)


def _big(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.BigInteger(), nullable=nullable)


def _int(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.Integer(), nullable=nullable)


def _indexes(table: str, *columns: tuple[str, ...]) -> None:
    for names in columns:
        op.create_index(op.f(f"ix_{table}_{'_'.join(names)}"), table, list(names))


def upgrade() -> None:
    op.create_table(
        "telemetry_window",
        _id(),
        _text("device_id"),
        _big("seq"),
        _when("time"),
        _when("window_start"),
        _int("window_s"),
        _text("model", nullable=True),
        _int("release", nullable=True),
        _big("inferences"),
        _big("errors"),
        _big("input_errors"),
        sa.Column("latency", sa.Text(), nullable=False),
        sa.Column("cpu_percent", sa.Float(), nullable=True),
        _big("rss_bytes", nullable=True),
        _big("disk_free_bytes", nullable=True),
        _when("received_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telemetry_window")),
        sa.UniqueConstraint("device_id", "seq", name=op.f("uq_telemetry_window_device_id_seq")),
    )
    _indexes("telemetry_window", ("model", "release", "window_start"), ("window_start",))
    op.create_table(
        "drift_window",
        _id(),
        _text("device_id"),
        _big("seq"),
        _text("model"),
        _int("release"),
        _text("reference"),
        _when("window_start"),
        _int("window_s"),
        _big("samples"),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        _when("received_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drift_window")),
        sa.UniqueConstraint("device_id", "seq", name=op.f("uq_drift_window_device_id_seq")),
    )
    _indexes("drift_window", ("model", "window_start"), ("window_start",))
    op.create_table(
        "telemetry_rollup",
        _id(),
        _int("window_s"),
        _when("window_start"),
        _text("device_id"),
        _text("model"),
        _int("release"),
        _int("windows"),
        _big("inferences"),
        _big("errors"),
        _big("input_errors"),
        sa.Column("latency", sa.Text(), nullable=False),
        sa.Column("cpu_percent_max", sa.Float(), nullable=True),
        _big("rss_bytes_max", nullable=True),
        _big("disk_free_bytes_min", nullable=True),
        _when("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telemetry_rollup")),
        sa.UniqueConstraint(
            "window_s",
            "window_start",
            "device_id",
            "model",
            "release",
            name="uq_telemetry_rollup_key",
        ),
    )
    _indexes("telemetry_rollup", ("model", "release", "window_start"))
    op.create_table(
        "drift_rollup",
        _id(),
        _int("window_s"),
        _when("window_start"),
        _text("device_id"),
        _text("model"),
        _int("release"),
        _text("reference"),
        _int("windows"),
        _big("samples"),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        _when("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drift_rollup")),
        sa.UniqueConstraint(
            "window_s",
            "window_start",
            "device_id",
            "model",
            "release",
            "reference",
            name="uq_drift_rollup_key",
        ),
    )
    _indexes("drift_rollup", ("model", "window_start"))
    op.create_table(
        "capture",
        sa.Column("id", sa.Integer(), nullable=False),
        _text("device_id"),
        _text("model"),
        _int("release"),
        _when("window_start"),
        _int("rows"),
        _int("labelled"),
        _text("artifact_sha256"),
        _when("received_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_capture")),
        sa.UniqueConstraint(
            "device_id",
            "model",
            "window_start",
            name=op.f("uq_capture_device_id_model_window_start"),
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.id"], name=op.f("fk_capture_device_id_device")
        ),
        sa.ForeignKeyConstraint(
            ["artifact_sha256"],
            ["artifact.sha256"],
            name=op.f("fk_capture_artifact_sha256_artifact"),
        ),
    )
    _indexes("capture", ("model", "received_at"))


def downgrade() -> None:
    for table in (
        "capture",
        "drift_rollup",
        "telemetry_rollup",
        "drift_window",
        "telemetry_window",
    ):
        op.drop_table(table)
