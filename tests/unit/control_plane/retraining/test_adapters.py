"""Each action against a real local HTTP server (or a real subprocess): request shapes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_plane.retraining import parse_policy
from control_plane.retraining.actions import Action
from control_plane.retraining.adapters import Attempt, attempt
from control_plane.retraining.service import payload_of
from tests.unit.control_plane.retraining.support import START, evidence, policy_doc, receiver

KEY = "sensor-drift-sensor-3-20250301T10"


def _run(action_doc: dict[str, Any], environ: dict[str, str] | None = None) -> tuple[Attempt, Any]:
    policy = parse_policy(policy_doc(actions=[action_doc], canary_approval=False))
    action: Action = policy.actions[0]
    payload = payload_of(policy, evidence(), KEY, START, manual=False)
    with httpx.Client() as client:
        return attempt(action, payload, client, environ or {}), payload


def test_webhook_posts_the_trigger_document_with_env_headers() -> None:
    with receiver() as server:
        result, payload = _run(
            {"type": "webhook", "url": f"{server.url}/hooks/retrain",
             "headers": {"X-Source": "edgefleet"},
             "headers_from_env": {"Authorization": {"env": "HOOK_TOKEN", "prefix": "Bearer "}}},
            {"HOOK_TOKEN": "s3cret"},
        )  # fmt: skip
    assert result.ok and result.detail == "HTTP 200"
    (seen,) = server.requests
    assert (seen.method, seen.path) == ("POST", "/hooks/retrain")
    assert seen.headers["authorization"] == "Bearer s3cret"
    assert seen.headers["x-source"] == "edgefleet"
    assert seen.headers["idempotency-key"] == KEY
    assert seen.headers["content-type"] == "application/json"
    assert seen.body == json.loads(json.dumps(payload))
    assert seen.body["kind"] == "DriftTrigger" and seen.body["canary_approval"] is False
    assert seen.body["evidence"]["drifted_features"][0]["name"] == "f3"
    assert seen.body["evidence"]["window_end"] == "2025-03-01T10:00:00Z"


def test_a_missing_secret_is_refused_without_sending() -> None:
    with receiver() as server:
        result, _ = _run(
            {"type": "webhook", "url": server.url, "headers_from_env": {"Authorization": "NOPE"}}
        )
    assert not result.ok and not result.retryable and "NOPE" in result.detail
    assert server.requests == []


def test_kestra_posts_to_the_flow_webhook() -> None:
    with receiver() as server:
        result, _ = _run(
            {"type": "kestra", "base_url": server.url, "namespace": "ml.sensor",
             "flow_id": "retrain", "key_from_env": "KESTRA_KEY"},
            {"KESTRA_KEY": "k3y"},
        )  # fmt: skip
    assert result.ok
    (seen,) = server.requests
    assert seen.path == "/api/v1/main/executions/webhook/ml.sensor/retrain/k3y"
    assert seen.body["idempotency_key"] == KEY
    assert seen.body["evidence"]["model"] == "sensor"


def test_kubeflow_creates_a_run_named_by_the_key() -> None:
    with receiver() as server:
        result, _ = _run(
            {"type": "kubeflow", "base_url": server.url, "pipeline_id": "pipe-1",
             "pipeline_version_id": "ver-2", "experiment_id": "exp-3"}
        )  # fmt: skip
    assert result.ok
    (seen,) = server.requests
    assert seen.path == "/apis/v2beta1/runs"
    body = seen.body
    assert body["display_name"] == KEY and body["experiment_id"] == "exp-3"
    assert body["pipeline_version_reference"] == {
        "pipeline_id": "pipe-1", "pipeline_version_id": "ver-2"
    }  # fmt: skip
    params = body["runtime_config"]["parameters"]
    assert params["idempotency_key"] == KEY and params["model"] == "sensor"
    assert params["since"] == "2025-03-01T06:00:00Z" and params["approval"] is False
    assert json.loads(params["evidence"])["evidence"]["release"] == 3


def test_airflow_creates_a_dag_run_and_a_repeat_counts_as_done() -> None:
    with receiver([409]) as server:
        result, payload = _run(
            {"type": "airflow", "base_url": server.url, "dag_id": "retrain_sensor"}
        )
    assert result.ok and "already exists" in result.detail
    (seen,) = server.requests
    assert seen.path == "/api/v1/dags/retrain_sensor/dagRuns"
    assert seen.body["dag_run_id"] == KEY
    assert seen.body["conf"] == json.loads(json.dumps(payload))


@pytest.mark.parametrize(
    ("status", "retryable"), [(400, False), (401, False), (404, False), (408, True),
                              (409, True), (429, True), (500, True), (503, True)],
)  # fmt: skip
def test_statuses_are_classified(status: int, retryable: bool) -> None:
    with receiver([status]) as server:
        result, _ = _run({"type": "webhook", "url": server.url})
    assert not result.ok and result.retryable is retryable
    assert result.detail.startswith(f"HTTP {status}")


def test_a_dead_endpoint_is_retryable_and_the_detail_has_no_url_secret() -> None:
    result, _ = _run(
        {"type": "kestra", "base_url": "http://127.0.0.1:9", "namespace": "n", "flow_id": "f",
         "key": "topsecretkey"}
    )  # fmt: skip
    assert not result.ok and result.retryable
    assert "topsecretkey" not in result.detail


def test_command_gets_the_document_on_stdin_and_in_a_file(tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    script = (
        "import json, os, sys\n"
        "stdin = json.load(sys.stdin)\n"
        "path = os.environ['EDGEFLEET_DRIFT_EVIDENCE']\n"
        "from_file = json.load(open(path))\n"
        "json.dump({'stdin': stdin, 'file': from_file, 'path': path,"
        " 'env': dict(os.environ)}, open(" + repr(str(out)) + ", 'w'))\n"
    )
    result, payload = _run(
        {"type": "command", "argv": [sys.executable, "-c", script], "env": {"STAGE": "ci"}},
        {"PATH": "/usr/bin:/bin", "EDGEFLEET_KEY_PASSPHRASE": "do-not-leak"},
    )
    assert result.ok, result.detail
    seen = json.loads(out.read_text())
    assert seen["stdin"] == seen["file"] == json.loads(json.dumps(payload))
    assert not Path(seen["path"]).exists()  # removed afterwards
    env = seen["env"]
    assert env["EDGEFLEET_IDEMPOTENCY_KEY"] == KEY and env["EDGEFLEET_CANARY_APPROVAL"] == "false"
    assert env["STAGE"] == "ci" and "EDGEFLEET_KEY_PASSPHRASE" not in env


def test_command_failures(tmp_path: Path) -> None:
    failed, _ = _run({"type": "command", "argv": [sys.executable, "-c",
                      "import sys; sys.stderr.write('boom'); sys.exit(3)"]})  # fmt: skip
    assert not failed.ok and failed.retryable and failed.detail == "exit status 3: boom"
    slow, _ = _run({"type": "command", "argv": [sys.executable, "-c", "import time; "
                    "time.sleep(30)"], "timeout": "500ms"})  # fmt: skip
    assert not slow.ok and slow.retryable and "timed out" in slow.detail
    missing, _ = _run({"type": "command", "argv": [str(tmp_path / "nope")]})
    assert not missing.ok and not missing.retryable and "cannot start" in missing.detail
