"""Schema migrations on SQLite and PostgreSQL, and the ``fleetctl db`` commands."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect
from typer.testing import CliRunner

from control_plane.cli import db as db_cli
from control_plane.db import migrate
from control_plane.db.engine import make_engine
from control_plane.db.tables import metadata
from control_plane.errors import InvalidInputError
from control_plane.store import (
    ApiTokenRecord,
    ArtifactRecord,
    DeviceRecord,
    ModelVersionRecord,
    ReleaseRecord,
    ReleaseState,
    RevocationRecord,
    Role,
    VersionState,
)
from control_plane.store.sql import SqlStore

T0 = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
REGISTRY_TABLES = {"artifact", "model_version", "release", "revocation"}
AUTH_AUDIT_TABLES = {"api_token", "enroll_token", "audit_entry"}
DEVICE_TABLES = {"device", "device_assignment", "device_report"}
ROLLOUT_TABLES = {"rollout", "rollout_device"}
TELEMETRY_TABLES = {
    "telemetry_window",
    "drift_window",
    "telemetry_rollup",
    "drift_rollup",
    "capture",
}
RETRAINING_TABLES = {"drift_policy", "retraining_trigger"}
ALL_TABLES = (
    REGISTRY_TABLES
    | AUTH_AUDIT_TABLES
    | DEVICE_TABLES
    | ROLLOUT_TABLES
    | TELEMETRY_TABLES
    | RETRAINING_TABLES
)
HEAD = "0006_retraining"


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def schema_diffs(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def fill_registry(store: SqlStore) -> tuple[ModelVersionRecord, ReleaseRecord]:
    """Rows in every table of ``0001_registry``, written through the store."""
    store.add_artifact(ArtifactRecord(sha256="a" * 64, length=123, kind="onnx", created_at=T0))
    version = store.create_version(
        ModelVersionRecord(
            model="sensor",
            version="1.0.0",
            state=VersionState.RELEASED,
            artifact_sha256="a" * 64,
            format="onnx",
            created_at=T0,
            updated_at=T0,
            created_by="alice",
            quantization={"mode": "int8"},
        )
    )
    release = store.create_release(
        ReleaseRecord(
            model="sensor",
            counter=1,
            version_id=version.id,
            state=ReleaseState.RELEASED,
            manifest=b"{}",
            manifest_sha256="b" * 64,
            created_at=T0,
            created_by="alice",
        )
    )
    store.add_revocation(
        RevocationRecord(
            sha256="c" * 64, model="sensor", reason="bad", created_at=T0, created_by="alice"
        )
    )
    return version, release


def add_device(store: SqlStore) -> DeviceRecord:
    return store.add_device(
        DeviceRecord(
            id="dev-" + "a" * 20,
            hostname="pi-1",
            public_key="e" * 64,
            keyid="f" * 64,
            labels={"site": "a"},
            capabilities={"arch": "aarch64"},
            token_hash="1" * 64,
            mqtt_password_hash="$7$101$salt$hash",
            created_at=T0,
        )
    )


def test_head_and_history_are_the_revisions_in_order() -> None:
    assert migrate.head() == HEAD
    assert [(r.id, r.down_revision) for r in migrate.history()] == [
        ("0001_registry", None),
        ("0002_auth_audit", "0001_registry"),
        ("0003_devices", "0002_auth_audit"),
        ("0004_rollouts", "0003_devices"),
        ("0005_telemetry", "0004_rollouts"),
        ("0006_retraining", "0005_telemetry"),
    ]


def test_upgrade_from_empty_to_head_creates_the_declared_schema(
    database_url: str, engine: Engine
) -> None:
    assert migrate.current(database_url) is None

    migrate.upgrade(database_url)

    assert migrate.current(database_url) == migrate.head()
    assert tables(engine) == set(metadata.tables) == ALL_TABLES
    assert schema_diffs(engine) == []


def test_schema_comparison_sees_a_missing_revision(database_url: str, engine: Engine) -> None:
    migrate.upgrade(database_url, "0001_registry")

    diffs = schema_diffs(engine)

    added_tables = {diff[1].name for diff in diffs if diff[0] == "add_table"}
    indexed_tables = {diff[1].table.name for diff in diffs if diff[0] == "add_index"}
    assert {diff[0] for diff in diffs} == {"add_table", "add_index"}
    assert added_tables == ALL_TABLES - REGISTRY_TABLES
    assert indexed_tables == {
        "audit_entry", "device", "device_assignment", "rollout", "rollout_device",
        "capture", "drift_rollup", "drift_window", "telemetry_rollup", "telemetry_window",
        "drift_policy", "retraining_trigger",
    }  # fmt: skip


def test_upgrade_from_the_previous_revision_keeps_the_rows(
    database_url: str, engine: Engine
) -> None:
    migrate.upgrade(database_url, "0001_registry")
    assert tables(engine) == REGISTRY_TABLES
    version, release = fill_registry(SqlStore(engine))

    migrate.upgrade(database_url)

    store = SqlStore(engine)
    assert migrate.current(database_url) == HEAD
    assert store.get_version("sensor", "1.0.0") == version
    assert store.get_release("sensor", 1) == release
    assert [r.sha256 for r in store.list_revocations()] == ["c" * 64]
    assert (
        store.add_api_token(
            ApiTokenRecord(name="ci", role=Role.ADMIN, token_hash="d" * 64, created_at=T0)
        ).id
        > 0
    )
    assert add_device(store).desired_sequence == 0


def test_downgrade_to_the_previous_revision_and_back(database_url: str, engine: Engine) -> None:
    migrate.upgrade(database_url)
    version, _ = fill_registry(SqlStore(engine))
    SqlStore(engine).add_api_token(
        ApiTokenRecord(name="ci", role=Role.ADMIN, token_hash="d" * 64, created_at=T0)
    )

    migrate.downgrade(database_url, "0001_registry")
    assert migrate.current(database_url) == "0001_registry"
    assert tables(engine) == REGISTRY_TABLES
    assert SqlStore(engine).get_version_by_id(version.id) == version

    migrate.upgrade(database_url)
    store = SqlStore(engine)
    assert migrate.current(database_url) == HEAD
    assert store.count_api_tokens() == 0  # the table came back empty
    assert store.get_version_by_id(version.id) == version
    assert schema_diffs(engine) == []


def test_downgrade_from_devices_keeps_the_auth_rows_and_drops_only_devices(
    database_url: str, engine: Engine
) -> None:
    migrate.upgrade(database_url)
    token = SqlStore(engine).add_api_token(
        ApiTokenRecord(name="ci", role=Role.ADMIN, token_hash="d" * 64, created_at=T0)
    )
    device = add_device(SqlStore(engine))

    migrate.downgrade(database_url, "0003_devices")
    assert tables(engine) == REGISTRY_TABLES | AUTH_AUDIT_TABLES | DEVICE_TABLES
    assert SqlStore(engine).get_device(device.id) == device

    migrate.downgrade(database_url, "0002_auth_audit")
    assert tables(engine) == REGISTRY_TABLES | AUTH_AUDIT_TABLES
    assert SqlStore(engine).find_api_token("d" * 64) == token

    migrate.upgrade(database_url)
    store = SqlStore(engine)
    assert store.get_device(device.id) is None
    assert add_device(store) == device
    assert schema_diffs(engine) == []


def test_downgrade_to_base_drops_every_table(database_url: str, engine: Engine) -> None:
    migrate.upgrade(database_url)

    migrate.downgrade(database_url, "base")

    assert migrate.current(database_url) is None
    assert tables(engine) == set()


def test_unknown_revisions_are_invalid_input(database_url: str) -> None:
    with pytest.raises(InvalidInputError, match="nonexistent"):
        migrate.upgrade(database_url, "nonexistent")
    migrate.upgrade(database_url)
    with pytest.raises(InvalidInputError):
        migrate.downgrade(database_url, "nonexistent")
    assert migrate.current(database_url) == HEAD


def test_current_of_a_missing_sqlite_file_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "edgefleet.db"

    assert migrate.current(f"sqlite:///{path}") is None
    assert not path.parent.exists()


def test_the_engine_creates_the_sqlite_directory_and_sets_its_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "edgefleet.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            pragmas = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout")
            }
    finally:
        engine.dispose()
    assert path.exists()
    assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 30_000}


# -- fleetctl db ------------------------------------------------------------------------------


def run_db(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(db_cli.app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def cli_database(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A settings file naming the test database (the environment does not)."""
    config = tmp_path / "edgefleet.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\ndatabase_url = "{database_url}"\n')
    monkeypatch.delenv("EDGEFLEET_DATABASE_URL", raising=False)
    monkeypatch.setenv("EDGEFLEET_CONFIG", str(config))  # restored after the test
    return config


def test_db_commands_upgrade_and_report_the_revision(cli_database: Path) -> None:
    config = str(cli_database)

    code, out, _ = run_db("current", "--config", config)
    assert code == 0
    assert "revision: empty" in out.splitlines()
    assert f"head: {HEAD}" in out.splitlines()

    code, out, _ = run_db("upgrade", "--revision", "0001_registry", "--config", config)
    assert code == 0 and "upgraded: empty -> 0001_registry" in out.splitlines()

    code, out, _ = run_db("history", "--config", config)
    assert code == 0
    assert out.splitlines() == [
        "0001_registry: Registry: artifacts, model versions, releases and revocations."
        " (applied, current)",
        "0002_auth_audit: Operator API tokens, device enrollment tokens and the audit log."
        " (pending)",
        "0003_devices: Enrolled devices, their signed assignments and their status reports."
        " (pending)",
        "0004_rollouts: Staged rollouts and the devices each one targets. (pending)",
        "0005_telemetry: Device telemetry, drift summaries (raw windows and rollups) and data"
        " captures. (pending)",
        "0006_retraining: Drift policies and the retraining triggers they fire. (pending, head)",
    ]

    code, out, _ = run_db("upgrade", "--config", config)
    assert code == 0 and f"upgraded: 0001_registry -> {HEAD}" in out.splitlines()
    code, out, _ = run_db("upgrade", "--config", config)
    assert code == 0 and f"up to date: {HEAD}" in out.splitlines()
    code, out, _ = run_db("current", "--config", config)
    assert "status: up to date" in out.splitlines()


def test_db_commands_report_errors_in_one_line(
    cli_database: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run_db("upgrade", "--revision", "nonexistent", "--config", str(cli_database))
    assert code == 1 and out == ""
    assert err.strip() == "error: [invalid_input] Can't locate revision identified by 'nonexistent'"

    bad = tmp_path / "bad.toml"
    bad.write_text('database_url = "postgresql://edgefleet:s3cret@127.0.0.1:1/none"\n')
    monkeypatch.setenv("EDGEFLEET_CONFIG", str(bad))
    code, out, err = run_db("current", "--config", str(bad))
    assert code == 1 and out == ""
    assert err.startswith("error: [database] ") and len(err.strip().splitlines()) == 1
    assert "s3cret" not in err

    placeholder = tmp_path / "placeholder.toml"
    placeholder.write_text('database_url = "postgresql://edgefleet:changethis@127.0.0.1/x"\n')
    monkeypatch.setenv("EDGEFLEET_CONFIG", str(placeholder))
    code, _, err = run_db("current", "--config", str(placeholder))
    assert code == 1
    assert err.startswith("error: [configuration] ") and len(err.strip().splitlines()) == 1
