"""Carrying one action out once: the HTTP integrations and the local command.

Theory of operation: :func:`attempt` sends the trigger document to one
action and classifies the answer as an :class:`Attempt`: done, worth
retrying (timeouts, connection errors, 408, 409, 429, 5xx; a ``Retry-After``
is honoured), or refused for good (any other 4xx, a redirect, a missing
environment variable). Retrying, backoff and persistence are the
dispatcher's (:mod:`control_plane.retraining.dispatch`).

Every HTTP action carries the idempotency key in an ``Idempotency-Key``
header, and where the service has a natural place for it, in the body too:
Kubeflow's run ``display_name`` and Airflow's ``dag_run_id`` (Airflow answers
a repeated ``dag_run_id`` with 409, which counts as done). Header values read
from the environment are redacted from every detail this returns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from control_plane.retraining._command import run_command
from control_plane.retraining.actions import Action, CommandAction, HttpAction

RETRYABLE = frozenset({408, 409, 429})
_BODY_TAIL = 200


@dataclass(frozen=True)
class Attempt:
    ok: bool
    retryable: bool
    detail: str
    retry_after_s: float | None = None


class MissingSecretError(Exception):
    """An environment variable an action reads is not set."""


def _headers(action: HttpAction, key: str, environ: Mapping[str, str]) -> dict[str, str]:
    headers = dict(action.headers)
    for name, source in action.headers_from_env:
        value = environ.get(source.env)
        if not value:
            raise MissingSecretError(
                f"environment variable {source.env} (header {name}) is not set"
            )
        headers[name] = source.prefix + value
    headers["Idempotency-Key"] = key
    return headers


def request_of(
    action: HttpAction, payload: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[str, dict[str, Any]]:
    """The URL and JSON body one action POSTs."""
    key = str(payload["idempotency_key"])
    if action.type == "webhook":
        return action.url, dict(payload)
    if action.type == "kestra":
        secret = action.key
        if action.key_from_env is not None:
            secret = environ.get(action.key_from_env)
            if not secret:
                raise MissingSecretError(f"environment variable {action.key_from_env} is not set")
        path = "/".join(
            quote(str(p), safe="")
            for p in (
                action.tenant,
                "executions",
                "webhook",
                action.namespace,
                action.flow_id,
                secret,
            )
        )
        return f"{action.url}/api/v1/{path}", dict(payload)
    if action.type == "kubeflow":
        evidence = payload["evidence"]
        reference: dict[str, Any] = {"pipeline_id": action.pipeline_id}
        if action.pipeline_version_id is not None:
            reference["pipeline_version_id"] = action.pipeline_version_id
        body: dict[str, Any] = {
            "display_name": key,
            "description": f"edgefleet drift policy {payload['policy']}",
            "pipeline_version_reference": reference,
            "runtime_config": {
                "parameters": {
                    "evidence": json.dumps(payload, sort_keys=True),
                    "idempotency_key": key,
                    "model": str(payload["model"]),
                    "since": str(evidence["window_start"]),
                    "approval": bool(payload["canary_approval"]),
                }
            },
        }
        if action.experiment_id is not None:
            body["experiment_id"] = action.experiment_id
        return f"{action.url}/apis/v2beta1/runs", body
    dag = quote(str(action.dag_id), safe="")
    return f"{action.url}/api/v1/dags/{dag}/dagRuns", {"dag_run_id": key, "conf": dict(payload)}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def classify(action: HttpAction, response: httpx.Response) -> Attempt:
    status = response.status_code
    if 200 <= status < 300:
        return Attempt(True, False, f"HTTP {status}")
    if action.type == "airflow" and status == 409:
        return Attempt(True, False, "HTTP 409: the DAG run already exists")
    tail = " ".join(response.text.split())[:_BODY_TAIL]
    detail = f"HTTP {status}" + (f": {tail}" if tail else "")
    if status in RETRYABLE or status >= 500:
        return Attempt(False, True, detail, _retry_after(response))
    if 300 <= status < 400:
        return Attempt(False, False, f"HTTP {status}: redirects are not followed; fix the URL")
    return Attempt(False, False, detail)


def _redact(text: str, action: HttpAction, environ: Mapping[str, str]) -> str:
    names = [s.env for _, s in action.headers_from_env]
    names += [action.key_from_env] if action.key_from_env else []
    secrets = [environ[n] for n in names if environ.get(n)] + ([action.key] if action.key else [])
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def attempt(
    action: Action, payload: Mapping[str, Any], client: httpx.Client, environ: Mapping[str, str]
) -> Attempt:
    """Carry ``action`` out once with the trigger document ``payload``."""
    if isinstance(action, CommandAction):
        ok, retryable, detail = run_command(action, payload, environ)
        return Attempt(ok, retryable, detail)
    try:
        url, body = request_of(action, payload, environ)
        headers = _headers(action, str(payload["idempotency_key"]), environ)
    except MissingSecretError as exc:
        return Attempt(False, False, str(exc))
    try:
        response = client.post(url, json=body, headers=headers, timeout=action.delivery.timeout_s)
    except httpx.TimeoutException:
        return Attempt(False, True, f"no answer within {action.delivery.timeout_s:g}s")
    except httpx.HTTPError as exc:
        # The message may quote the URL (a Kestra key is in its path): keep the type only.
        return Attempt(False, True, f"cannot reach {action.label()}: {type(exc).__name__}")
    result = classify(action, response)
    return Attempt(
        result.ok, result.retryable, _redact(result.detail, action, environ), result.retry_after_s
    )


__all__ = ["RETRYABLE", "Attempt", "attempt", "classify", "request_of"]
