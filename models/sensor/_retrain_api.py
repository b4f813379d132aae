"""The retraining job's view of the control plane: its HTTP API over ``urllib``.

Theory of operation: the job talks to the control plane only through the
public HTTP API, as any operator tool would (``models`` may not import the
control plane). It uses the standard library's ``urllib`` so the ``models``
extra needs no HTTP client of its own. Where it connects and with which token
is resolved the way ``fleetctl`` resolves it, so a job started next to a
logged-in ``fleetctl`` (or by the control plane's command action, with the
same environment) needs no flags:

1. ``--server`` and the variable named by ``--token-env``;
2. ``EDGEFLEET_SERVER`` / ``EDGEFLEET_TOKEN``;
3. the ``fleetctl login`` file (``EDGEFLEET_CLI_CONFIG``, else
   ``$XDG_CONFIG_HOME/edgefleet/fleetctl.json``).

Errors of the job (its exception tree; ``exit_code`` is the process status)::

    RetrainError (1)            base: the control plane refused or is unreachable
    ├── NoDataError (2)         nothing (or too little) to retrain on; bad input
    └── RejectedError (3)       the new model does not beat the current one

The token is sent only in the ``Authorization`` header and never printed; API
errors are reported as ``[code] message`` from the server's error body.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Largest artifact the job downloads (captures and models are far smaller).
MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024
_CHUNK = 1 << 20


class RetrainError(Exception):
    """The job cannot go on; ``exit_code`` is the process exit status."""

    exit_code = 1


class NoDataError(RetrainError):
    """No captured data (or too little labelled data) to retrain and validate on."""

    exit_code = 2


class RejectedError(RetrainError):
    """The retrained model failed the comparison with the current one."""

    exit_code = 3


@dataclass(frozen=True)
class Login:
    server: str
    token: str

    def __repr__(self) -> str:  # never show the token in tracebacks or logs
        return f"Login(server={self.server!r}, token=<hidden>)"


def cli_config_path() -> Path:
    """Where ``fleetctl login`` saves the server and token."""
    override = os.environ.get("EDGEFLEET_CLI_CONFIG")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edgefleet" / "fleetctl.json"


def resolve_login(server: str | None = None, token_env: str | None = None) -> Login:
    """Server URL and token, by the precedence in the module docstring."""
    token = os.environ.get(token_env) if token_env else None
    if token_env and not token:
        raise RetrainError(f"--token-env {token_env}: that environment variable is empty")
    server = server or os.environ.get("EDGEFLEET_SERVER")
    token = token or os.environ.get("EDGEFLEET_TOKEN")
    if not (server and token):
        path = cli_config_path()
        try:
            saved = json.loads(path.read_text())
        except FileNotFoundError:
            saved = {}
        except (OSError, ValueError) as exc:
            raise RetrainError(f"cannot read the fleetctl login {path}: {exc}") from exc
        server = server or saved.get("server")
        token = token or saved.get("token")
    if not server or not token:
        raise RetrainError(
            "no control plane: pass --server and --token-env, set EDGEFLEET_SERVER and "
            "EDGEFLEET_TOKEN, or run 'fleetctl login'"
        )
    return Login(str(server).rstrip("/"), str(token))


class ControlPlane:
    """A few JSON and artifact calls on the control plane's API."""

    def __init__(self, login: Login, *, timeout_s: float = 120.0) -> None:
        self.login = login
        self.timeout_s = timeout_s

    def _open(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        url = self.login.server + path + ("?" + urllib.parse.urlencode(query) if query else "")
        request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 - http(s) URL
        request.add_header("Authorization", f"Bearer {self.login.token}")
        if body is not None:
            request.add_header("Content-Type", content_type)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout_s)  # noqa: S310
        except urllib.error.HTTPError as exc:
            raise _api_error(exc, method, path) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RetrainError(f"cannot reach {self.login.server}: {reason}") from exc

    def get(self, path: str, **params: Any) -> Any:
        with self._open("GET", path, params=params) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict[str, Any]) -> Any:
        data = json.dumps(body).encode()
        with self._open("POST", path, body=data) as response:
            return json.loads(response.read())

    def upload(self, data: bytes, kind: str) -> str:
        """``POST /v1/artifacts``; returns the sha256 the server computed (checked here too)."""
        params = {"kind": kind}
        binary = "application/octet-stream"
        with self._open(
            "POST", "/v1/artifacts", params=params, body=data, content_type=binary
        ) as response:
            answer = json.loads(response.read())
        sha256 = str(answer["sha256"])
        if sha256 != hashlib.sha256(data).hexdigest():
            raise RetrainError(f"the control plane stored the {kind} upload under another digest")
        return sha256

    def download(self, sha256: str, max_bytes: int = MAX_DOWNLOAD_BYTES) -> bytes:
        """An artifact's bytes, refused unless they hash to ``sha256``."""
        digest = hashlib.sha256()
        parts: list[bytes] = []
        size = 0
        with self._open("GET", f"/v1/artifacts/{sha256}") as response:
            while chunk := response.read(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise RetrainError(f"artifact {sha256[:16]}… is over {max_bytes} bytes")
                digest.update(chunk)
                parts.append(chunk)
        if digest.hexdigest() != sha256:
            raise RetrainError(
                f"artifact {sha256[:16]}… downloaded with sha256 {digest.hexdigest()[:16]}…; "
                "refusing it"
            )
        return b"".join(parts)

    def raw(self, path: str) -> bytes:
        with self._open("GET", path) as response:
            data: bytes = response.read()
            return data


def _api_error(exc: urllib.error.HTTPError, method: str, path: str) -> RetrainError:
    try:
        text = exc.read().decode("utf-8", "replace")
    except OSError:
        text = ""
    try:
        error = json.loads(text)["error"]
        message = f"[{error['code']}] {' '.join(str(error['message']).split())}"
    except (ValueError, KeyError, TypeError):
        first = text.strip().splitlines()[0][:200] if text.strip() else exc.reason
        message = f"[http {exc.code}] {first}"
    return RetrainError(f"{method} {path}: {message}")


__all__ = [
    "ControlPlane",
    "Login",
    "NoDataError",
    "RejectedError",
    "RetrainError",
    "cli_config_path",
    "resolve_login",
]
