"""Drift policy documents: strict parsing, errors naming the field, normal form, decisions."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from control_plane.errors import InvalidInputError
from control_plane.retraining import DriftEvidence, parse_policy
from control_plane.retraining.decision import Reason, decide
from control_plane.retraining.policy import DEFAULT_KEY
from tests.unit.control_plane.retraining.support import START, evidence, policy_doc


def _refused(document: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_policy(document)
    assert message in caught.value.message, caught.value.message


def test_every_action_kind_parses_and_round_trips() -> None:
    doc = policy_doc(
        cohort="site=berlin",
        idempotency_key="{policy}-{cohort}-{window_end:%Y%m%d}",
        canary_approval=False,
        actions=[
            {"type": "webhook", "url": "https://hooks.example.com/retrain",
             "headers": {"X-Source": "edgefleet"},
             "headers_from_env": {"Authorization": {"env": "HOOK_TOKEN", "prefix": "Bearer "}},
             "timeout": "5s", "attempts": 3, "backoff": "1s", "max_backoff": "1m"},
            {"type": "kestra", "base_url": "http://kestra:8080", "namespace": "ml",
             "flow_id": "retrain", "key_from_env": "KESTRA_KEY"},
            {"type": "kubeflow", "base_url": "http://kfp", "pipeline_id": "p1",
             "pipeline_version_id": "v1", "experiment_id": "e1"},
            {"type": "airflow", "base_url": "http://airflow:8080", "dag_id": "retrain_sensor",
             "headers_from_env": {"Authorization": "AIRFLOW_AUTH"}},
            {"type": "command", "name": "local", "argv": ["python", "-m", "x"],
             "env_from": ["HOME"], "timeout": "2h"},
        ],
    )  # fmt: skip
    policy = parse_policy(doc)
    assert [a.type for a in policy.actions] == [
        "webhook", "kestra", "kubeflow", "airflow", "command"
    ]  # fmt: skip
    assert policy.cohort == "site=berlin" and not policy.canary_approval
    assert policy.actions[0].delivery.timeout_s == 5.0
    assert policy.lease_s == 2 * 3600 + 60
    again = parse_policy(policy.to_dict())
    assert again == policy and again.digest() == policy.digest()


def test_defaults() -> None:
    policy = parse_policy(policy_doc(breadth=None, persistence=None, min_accuracy_drop=None))
    assert policy.idempotency_key == DEFAULT_KEY
    assert (policy.persistence_windows, policy.persistence_of) == (1, 1)
    assert policy.cooldown_s == 6 * 3600 and policy.canary_approval


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"spec": {"model": "sensor", "actions": [], "colldown": "1h"}},
         "spec: unknown field(s) colldown"),
        ({"extra": 1}, "policy: unknown field(s) extra"),
        ({"kind": "Rollout"}, "kind 'Rollout' is not DriftPolicy"),
        ({"metadata": {}}, "metadata.name is required"),
    ],
)  # fmt: skip
def test_document_errors_name_the_field(change: dict[str, Any], message: str) -> None:
    _refused({**policy_doc(), **change}, message)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"breadth": {"min_share_trafic": 0.3}}, "spec.breadth: unknown field(s) min_share_trafic"),
        ({"persistence": {"windows": 5, "of": 3}}, "windows (5) is more than of (3)"),
        ({"cooldown": "soon"}, "spec.cooldown"),
        ({"idempotency_key": "{policy}-{window}"}, "spec.idempotency_key: unknown field(s) window"),
        ({"idempotency_key": "{policy}"}, "include {window_end} or {release}"),
        ({"actions": [{"type": "smtp"}]}, "spec.actions[0].type: 'smtp' is not"),
        ({"actions": [{"type": "webhook", "url": "http://x", "method": "PUT"}]},
         "spec.actions[0]: unknown field(s) method"),
        ({"actions": [{"type": "webhook", "url": "ftp://x"}]}, "is not an http(s) URL"),
        ({"actions": [{"type": "webhook", "url": "https://u:p@x"}]}, "credentials do not belong"),
        ({"actions": [{"type": "kestra", "base_url": "http://k", "namespace": "n",
                       "flow_id": "f"}]}, "give key or key_from_env"),
        ({"actions": [{"type": "airflow", "base_url": "http://a"}]},
         "spec.actions[0].dag_id is required"),
        ({"actions": [{"type": "webhook", "url": "http://x",
                       "headers_from_env": {"Authorization": {"env": "1BAD"}}}]},
         "headers_from_env.Authorization.env"),
        ({"actions": [{"type": "command", "argv": "rm -rf /"}]}, "argv must be a list"),
        ({"actions": [{"type": "webhook", "name": "a", "url": "http://x"}] * 2},
         "names must be unique"),
    ],
)  # fmt: skip
def test_spec_errors_name_the_field(spec: dict[str, Any], message: str) -> None:
    _refused(policy_doc(**spec), message)


def test_idempotency_key_is_rendered_and_made_safe() -> None:
    policy = parse_policy(policy_doc(idempotency_key="{policy}/{cohort}@{window_end:%Y%m%dT%H}"))
    key = policy.key_for("sensor", 3, "site=a b", START, START)
    assert key == "sensor-drift-site-a-b-20250301T10"
    default = parse_policy(policy_doc())
    assert default.key_for("sensor", 3, None, START, START) == "sensor-drift-sensor-3-20250301T10"


# -- decisions --------------------------------------------------------------------------------


def _decide(ev: DriftEvidence, last: Any = None) -> tuple[Reason, str]:
    decision = decide(parse_policy(policy_doc()), ev, last, START)
    return decision.reason, decision.detail


def test_fires_on_broad_persistent_costly_drift() -> None:
    assert _decide(evidence())[0] is Reason.FIRED


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"share_traffic": 0.1}, Reason.NOT_BROAD),
        ({"share_devices": 0.1}, Reason.NOT_BROAD),
        ({"windows_drifted": 2, "windows_considered": 4}, Reason.NOT_PERSISTENT),
        # 3 drifted of 10: they may all be older than the last 4 windows.
        ({"windows_drifted": 3, "windows_considered": 10}, Reason.NOT_PERSISTENT),
        ({"estimated_accuracy": 0.89}, Reason.SMALL_DROP),
        ({"estimated_accuracy": None}, Reason.SMALL_DROP),
    ],
)
def test_skips_say_why(changes: dict[str, Any], reason: Reason) -> None:
    assert _decide(evidence(**changes))[0] is reason


def test_persistence_counts_a_lower_bound_in_the_last_windows() -> None:
    # 9 of 10 drifted: at least 3 of the last 4 did.
    assert _decide(evidence(windows_drifted=9, windows_considered=10))[0] is Reason.FIRED


def test_cooldown_runs_from_the_last_trigger() -> None:
    reason, detail = _decide(evidence(), START - timedelta(hours=5))
    assert reason is Reason.COOLDOWN and "until 2025-03-01T11:00:00+00:00" in detail
    assert _decide(evidence(), START - timedelta(hours=6))[0] is Reason.FIRED


def test_evidence_round_trips_and_is_strict() -> None:
    ev = evidence(cohort="site=a", details={"devices": 12})
    assert DriftEvidence.from_dict(ev.to_dict()) == ev
    with pytest.raises(InvalidInputError, match="evidence: unknown field"):
        DriftEvidence.from_dict({**ev.to_dict(), "shares": 1})
    with pytest.raises(InvalidInputError, match=r"evidence\.share_traffic"):
        DriftEvidence.from_dict({**ev.to_dict(), "share_traffic": 1.5})
    with pytest.raises(InvalidInputError, match="windows_drifted"):
        evidence(windows_drifted=5, windows_considered=4)
    with pytest.raises(InvalidInputError, match=r"drifted_features\[0\]: unknown field"):
        evidence(drifted_features=[{"name": "a", "test": "ks", "pvalue": 0.1}])
