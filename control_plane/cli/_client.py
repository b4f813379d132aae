"""The operator CLI's connection to a control plane: where, with which token.

``fleetctl login`` checks a server URL and token and saves them in
``$XDG_CONFIG_HOME/edgefleet/fleetctl.json`` (mode 0600).
``EDGEFLEET_SERVER`` and ``EDGEFLEET_TOKEN`` override the file, for CI jobs.
API errors arrive as ``{"error": {"code", "message"}}`` and become
:class:`ApiError`, which the CLI prints as one line: ``error: [code] message``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from control_plane.cli._common import err_console
from control_plane.errors import ControlPlaneError

CHUNK = 1 << 20


class ApiError(ControlPlaneError):
    """An error answer from the control plane, or no answer at all."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def config_path() -> Path:
    override = os.environ.get("EDGEFLEET_CLI_CONFIG")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edgefleet" / "fleetctl.json"


@dataclass(frozen=True)
class Login:
    server: str
    token: str


def save_login(login: Login) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    # A stale temp file (an interrupted save) may have wider permissions, which
    # O_TRUNC would keep: remove it and create a fresh one, refusing to follow
    # anything (a symlink, say) that appears in between.
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)  # exactly 0600, whatever the umask
    with os.fdopen(fd, "w") as handle:
        json.dump({"server": login.server, "token": login.token}, handle)
    tmp.replace(path)
    return path


def load_login() -> Login:
    server, token = os.environ.get("EDGEFLEET_SERVER"), os.environ.get("EDGEFLEET_TOKEN")
    if not (server and token):
        path = config_path()
        try:
            saved = json.loads(path.read_text())
        except FileNotFoundError:
            saved = {}
        except (OSError, ValueError) as exc:
            raise ApiError("login", f"cannot read {path}: {exc}") from exc
        server = server or saved.get("server")
        token = token or saved.get("token")
    if not server or not token:
        raise ApiError("login", "not logged in: run 'fleetctl login --server URL --token TOKEN'")
    return Login(str(server).rstrip("/"), str(token))


class ApiClient:
    def __init__(self, login: Login, *, timeout_s: float = 300.0) -> None:
        self.login = login
        self._http = httpx.Client(
            base_url=login.server,
            headers={"Authorization": f"Bearer {login.token}"},
            timeout=timeout_s,
        )

    @classmethod
    def from_config(cls) -> ApiClient:
        return cls(load_login())

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError("connection", f"cannot reach {self.login.server}: {exc}") from exc
        if response.status_code >= 400:
            raise _api_error(response)
        return response

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=clean).json()

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, json=body or {}).json()

    def put(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PUT", path, json=body).json()

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PATCH", path, json=body).json()

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path).json()

    def upload(self, path: Path, kind: str, *, show_progress: bool = True) -> dict[str, Any]:
        """Stream a file to ``POST /v1/artifacts`` with a progress bar."""
        size = path.stat().st_size
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=err_console,
            disable=not (show_progress and err_console.is_terminal),
            transient=True,
        ) as progress:
            task = progress.add_task(f"upload {path.name}", total=size)

            def chunks() -> Iterator[bytes]:
                with path.open("rb") as handle:
                    while chunk := handle.read(CHUNK):
                        progress.update(task, advance=len(chunk))
                        yield chunk

            response = self.request(
                "POST",
                "/v1/artifacts",
                params={"kind": kind},
                content=chunks(),
                headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
            )
        result: dict[str, Any] = response.json()
        return result


def _api_error(response: httpx.Response) -> ApiError:
    try:
        error = response.json()["error"]
        return ApiError(str(error["code"]), str(error["message"]), response.status_code)
    except (ValueError, KeyError, TypeError):
        text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
        return ApiError(f"http {response.status_code}", text or response.reason_phrase)


__all__ = ["ApiClient", "ApiError", "Login", "config_path", "load_login", "save_login"]
