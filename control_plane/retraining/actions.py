"""What a drift policy does when it fires: the action specs and their parsing.

Five kinds, one frozen dataclass each, all sharing :class:`Delivery` (timeout
and retry budget):

* ``webhook``: a generic JSON POST of the trigger document to ``url``;
* ``kestra``: POST to a Kestra flow's webhook trigger,
  ``{base_url}/api/v1/{tenant}/executions/webhook/{namespace}/{flow_id}/{key}``;
* ``kubeflow``: create a Kubeflow Pipelines run, ``POST {base_url}/apis/v2beta1/runs``;
* ``airflow``: create an Airflow DAG run, ``POST {base_url}/api/v1/dags/{dag_id}/dagRuns``;
* ``command``: run an argv list locally, without a shell.

Secrets never live in a policy: a header value or a Kestra webhook key can be
named by the environment variable holding it (``headers_from_env``,
``key_from_env``), read only when the action runs and never logged, stored or
echoed. :meth:`label` names an action without anything secret (no URL path).

Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from control_plane.errors import InvalidInputError
from control_plane.rollouts._reader import Reader

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
HEADER = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}")
SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
ACTION_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
KINDS = ("webhook", "kestra", "kubeflow", "airflow", "command")
MAX_TIMEOUT_S = 6 * 3600.0


@dataclass(frozen=True)
class EnvHeader:
    """A header whose value is read from an environment variable when the action runs."""

    env: str
    prefix: str = ""


@dataclass(frozen=True)
class Delivery:
    """How hard to try: per-attempt timeout, attempts, exponential backoff with jitter."""

    timeout_s: float = 10.0
    attempts: int = 5
    backoff_s: float = 2.0
    max_backoff_s: float = 300.0


@dataclass(frozen=True)
class HttpAction:
    name: str
    type: str  # webhook | kestra | kubeflow | airflow
    url: str  # webhook: the URL; the others: the service's base URL
    delivery: Delivery = field(default_factory=Delivery)
    headers: tuple[tuple[str, str], ...] = ()
    headers_from_env: tuple[tuple[str, EnvHeader], ...] = ()
    # kestra
    tenant: str = "main"
    namespace: str | None = None
    flow_id: str | None = None
    key: str | None = None
    key_from_env: str | None = None
    # kubeflow
    pipeline_id: str | None = None
    pipeline_version_id: str | None = None
    experiment_id: str | None = None
    # airflow
    dag_id: str | None = None

    def label(self) -> str:
        """Names the action without its path or anything secret (for logs and the audit)."""
        host = urlsplit(self.url).netloc
        target = {
            "webhook": host,
            "kestra": f"{host} {self.namespace}/{self.flow_id}",
            "kubeflow": f"{host} pipeline {self.pipeline_id}",
            "airflow": f"{host} dag {self.dag_id}",
        }[self.type]
        return f"{self.name} ({self.type} {target})"


@dataclass(frozen=True)
class CommandAction:
    name: str
    argv: tuple[str, ...]
    delivery: Delivery = field(default_factory=lambda: Delivery(timeout_s=3600.0, attempts=1))
    #: Environment variables passed through from the control plane (nothing else is).
    env_from: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    type: str = "command"

    def label(self) -> str:
        return f"{self.name} (command {self.argv[0]})"


Action = HttpAction | CommandAction


def _url(o: Reader, key: str) -> str:
    value = o.string(key)
    if value is None:
        raise InvalidInputError(f"{o.where}.{key} is required")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(f"{o.where}.{key}: {value!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise InvalidInputError(
            f"{o.where}.{key}: credentials do not belong in a URL; use headers_from_env"
        )
    return value.rstrip("/")


def _required(o: Reader, key: str, pattern: re.Pattern[str] = SEGMENT) -> str:
    value = o.string(key, pattern)
    if value is None:
        raise InvalidInputError(f"{o.where}.{key} is required")
    return value


def _pairs(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{where} must be a mapping")
    for name in raw:
        if not isinstance(name, str) or not HEADER.fullmatch(name):
            raise InvalidInputError(f"{where}: {name!r} is not a header name")
    return raw


def _env_header(value: Any, where: str) -> EnvHeader:
    if isinstance(value, str):
        value = {"env": value}
    o = Reader(value, where)
    o.allow("env", "prefix")
    header = EnvHeader(env=_required(o, "env", ENV_NAME), prefix=o.string("prefix") or "")
    o.done()
    return header


def _delivery(o: Reader, base: Delivery) -> Delivery:
    delivery = Delivery(
        timeout_s=o.duration("timeout", base.timeout_s),
        attempts=o.integer("attempts", base.attempts, 1, 100) or 1,
        backoff_s=o.duration("backoff", base.backoff_s),
        max_backoff_s=o.duration("max_backoff", base.max_backoff_s),
    )
    if not 0.1 <= delivery.timeout_s <= MAX_TIMEOUT_S:
        raise InvalidInputError(f"{o.where}.timeout must be between 100ms and 6h")
    if delivery.max_backoff_s < delivery.backoff_s:
        raise InvalidInputError(f"{o.where}.max_backoff must not be below backoff")
    return delivery


_COMMON = ("type", "name", "timeout", "attempts", "backoff", "max_backoff")
_HTTP_COMMON = (*_COMMON, "headers", "headers_from_env")
_FIELDS = {
    "webhook": (*_HTTP_COMMON, "url"),
    "kestra": (*_HTTP_COMMON, "base_url", "tenant", "namespace", "flow_id", "key", "key_from_env"),
    "kubeflow": (*_HTTP_COMMON, "base_url", "pipeline_id", "pipeline_version_id", "experiment_id"),
    "airflow": (*_HTTP_COMMON, "base_url", "dag_id"),
    "command": (*_COMMON, "argv", "env_from", "env", "cwd"),
}


def parse_action(raw: Any, where: str, index: int) -> Action:
    o = Reader(raw, where)
    kind = o.get("type")
    if kind not in KINDS:
        raise InvalidInputError(f"{where}.type: {kind!r} is not {' | '.join(KINDS)}")
    o.allow(*_FIELDS[kind])
    name = o.string("name", ACTION_NAME) or f"{kind}-{index + 1}"
    if kind == "command":
        action: Action = _command(o, name)
    else:
        action = _http(o, name, kind)
    o.done()
    return action


def _http(o: Reader, name: str, kind: str) -> HttpAction:
    headers = _pairs(o.get("headers"), f"{o.where}.headers")
    for header, value in headers.items():
        if not isinstance(value, str):
            raise InvalidInputError(f"{o.where}.headers.{header}: {value!r} is not a string")
    from_env = _pairs(o.get("headers_from_env"), f"{o.where}.headers_from_env")
    action = HttpAction(
        name=name,
        type=kind,
        url=_url(o, "url" if kind == "webhook" else "base_url"),
        delivery=_delivery(o, Delivery()),
        headers=tuple(sorted(headers.items())),
        headers_from_env=tuple(
            sorted(
                (h, _env_header(v, f"{o.where}.headers_from_env.{h}")) for h, v in from_env.items()
            )
        ),
    )
    if kind == "kestra":
        key, key_env = o.string("key", SEGMENT), o.string("key_from_env", ENV_NAME)
        if (key is None) == (key_env is None):
            raise InvalidInputError(f"{o.where}: give key or key_from_env (not both)")
        return replace(
            action,
            tenant=o.string("tenant", SEGMENT) or "main",
            namespace=_required(o, "namespace"),
            flow_id=_required(o, "flow_id"),
            key=key,
            key_from_env=key_env,
        )
    if kind == "kubeflow":
        return replace(
            action,
            pipeline_id=_required(o, "pipeline_id"),
            pipeline_version_id=o.string("pipeline_version_id", SEGMENT),
            experiment_id=o.string("experiment_id", SEGMENT),
        )
    if kind == "airflow":
        return replace(action, dag_id=_required(o, "dag_id"))
    return action


def _command(o: Reader, name: str) -> CommandAction:
    argv = o.get("argv")
    if not (
        isinstance(argv, list)
        and 1 <= len(argv) <= 256
        and all(isinstance(a, str) and a and "\0" not in a for a in argv)
    ):
        raise InvalidInputError(f"{o.where}.argv must be a list of 1 to 256 non-empty strings")
    env_from = o.get("env_from") or []
    if not isinstance(env_from, list) or not all(
        isinstance(e, str) and ENV_NAME.fullmatch(e) for e in env_from
    ):
        raise InvalidInputError(f"{o.where}.env_from must be a list of environment variable names")
    env = o.get("env") or {}
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and ENV_NAME.fullmatch(k) and isinstance(v, str) for k, v in env.items()
    ):
        raise InvalidInputError(f"{o.where}.env must map variable names to strings")
    return CommandAction(
        name=name,
        argv=tuple(argv),
        delivery=_delivery(o, CommandAction(name, ("x",)).delivery),
        env_from=tuple(env_from),
        env=tuple(sorted(env.items())),
        cwd=o.string("cwd"),
    )


def seconds_text(value: float) -> str:
    """``900.0`` -> ``"900s"``: exact, no exponent, so it parses back equal."""
    return f"{Decimal(repr(value)).normalize():f}s"


def action_to_dict(action: Action) -> dict[str, Any]:
    """The normalised document of an action (defaults filled in)."""
    d = action.delivery
    out: dict[str, Any] = {
        "type": action.type,
        "name": action.name,
        "timeout": seconds_text(d.timeout_s),
        "attempts": d.attempts,
        "backoff": seconds_text(d.backoff_s),
        "max_backoff": seconds_text(d.max_backoff_s),
    }
    if isinstance(action, CommandAction):
        out.update(argv=list(action.argv), env_from=list(action.env_from), env=dict(action.env))
        if action.cwd is not None:
            out["cwd"] = action.cwd
        return out
    out["url" if action.type == "webhook" else "base_url"] = action.url
    out["headers"] = dict(action.headers)
    out["headers_from_env"] = {
        h: {"env": e.env, "prefix": e.prefix} for h, e in action.headers_from_env
    }
    extra = {
        "kestra": ("tenant", "namespace", "flow_id", "key", "key_from_env"),
        "kubeflow": ("pipeline_id", "pipeline_version_id", "experiment_id"),
        "airflow": ("dag_id",),
        "webhook": (),
    }[action.type]
    out.update({k: getattr(action, k) for k in extra if getattr(action, k) is not None})
    return out


__all__ = [
    "KINDS",
    "Action",
    "CommandAction",
    "Delivery",
    "EnvHeader",
    "HttpAction",
    "action_to_dict",
    "parse_action",
    "seconds_text",
]
