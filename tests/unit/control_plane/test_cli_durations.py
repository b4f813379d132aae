"""Durations the CLI sends to the API are exact or refused, never rounded.

The API counts token and release lifetimes in days and enrollment-token
lifetimes in hours. A duration that is not a whole number of that unit is a
usage error (exit 2) raised before any request; a whole one is sent as is.
Requests are caught by a fake client, so no server runs.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from control_plane.cli import app
from control_plane.cli._client import ApiClient
from control_plane.db.engine import make_engine
from control_plane.store.sql import SqlStore


class FakeClient:
    """Records what would be posted; answers with enough fields for the output."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, dict[str, Any]]] = []

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        self.posted.append((path, dict(body or {})))
        return {
            "token": "secret", "id": 1, "labels": {}, "max_uses": 1, "expires_at": None,
            "model": "m", "version": "1", "counter": 1, "state": "signed",
            "sha256": "0" * 64, "length": 1, "signatures": 1, "expires": None,
        }  # fmt: skip


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeClient:
    for key in ("EDGEFLEET_SERVER", "EDGEFLEET_TOKEN", "EDGEFLEET_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("EDGEFLEET_CLI_CONFIG", str(tmp_path / "no-login.json"))
    monkeypatch.setenv("COLUMNS", "200")
    fake = FakeClient()
    monkeypatch.setattr(ApiClient, "from_config", classmethod(lambda cls: fake))
    return fake


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, " ".join(result.output.split())


REFUSED = [
    (["token", "create", "ci", "--expires-in", "36h"], "for tokens must be whole days, like 90d"),
    (["token", "create", "ci", "--expires-in", "90m"], "for tokens must be whole days"),
    (["release", "create", "m@1", "--expires-in", "12h"], "for releases must be whole days"),
    (
        ["enroll-token", "create", "--expires-in", "90m"],
        "for enrollment tokens must be whole hours",
    ),
    (
        ["enroll-token", "create", "--expires-in", "30m"],
        "for enrollment tokens must be whole hours",
    ),
]


@pytest.mark.parametrize(("args", "message"), REFUSED)
def test_fractional_durations_are_refused_before_any_request(
    client: FakeClient, args: list[str], message: str
) -> None:
    code, output = run(*args)
    assert code == 2, output
    assert f"--expires-in {message}" in output
    assert client.posted == []


TOKENS, RELEASES, ENROLL = "/v1/tokens", "/v1/releases", "/v1/enroll-tokens"
SENT = [
    (["token", "create", "ci", "--expires-in", "90d"], TOKENS, "expires_in_days", 90),
    (["token", "create", "ci", "--expires-in", "48h"], TOKENS, "expires_in_days", 2),
    (["token", "create", "ci", "--expires-in", "1440m"], TOKENS, "expires_in_days", 1),
    (["release", "create", "m@1", "--expires-in", "400d"], RELEASES, "expires_in_days", 400),
    (["release", "create", "m@1", "--expires-in", "72h"], RELEASES, "expires_in_days", 3),
    (["enroll-token", "create", "--expires-in", "36h"], ENROLL, "expires_in_hours", 36),
    (["enroll-token", "create", "--expires-in", "7d"], ENROLL, "expires_in_hours", 168),
    (["enroll-token", "create", "--expires-in", "120m"], ENROLL, "expires_in_hours", 2),
    (["enroll-token", "create"], ENROLL, "expires_in_hours", 24),
]  # fmt: skip


@pytest.mark.parametrize(("args", "path", "field", "value"), SENT)
def test_whole_durations_are_sent_exactly(
    client: FakeClient, args: list[str], path: str, field: str, value: int
) -> None:
    code, output = run(*args)
    assert code == 0, output
    assert [(p, body[field]) for p, body in client.posted] == [(path, value)]


def test_token_without_expiry_sends_none(client: FakeClient) -> None:
    code, output = run("token", "create", "ci")
    assert code == 0, output
    assert client.posted == [("/v1/tokens", {"name": "ci", "role": "operator"})]


def test_local_token_keeps_the_exact_lifetime(
    client: FakeClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEFLEET_DATA_DIR", str(tmp_path / "data"))
    code, output = run("token", "create", "ops", "--expires-in", "36h", "--local")
    assert code == 0, output
    assert client.posted == []
    store = SqlStore(make_engine(f"sqlite:///{tmp_path / 'data' / 'edgefleet.db'}"))
    (token,) = store.list_api_tokens()
    assert token.expires_at is not None
    assert token.expires_at - token.created_at == timedelta(hours=36)
