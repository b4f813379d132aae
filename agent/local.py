"""Local inference for applications on the device: in-process, or over the local API.

Theory of operation. :class:`LocalModel` serves, inside the application's own
process, whatever model the agent has made active: it reads the active-slot
pointer (:func:`agent.slots.read_active`) and loads that blob into a
:class:`~agent.serving.ModelHost`. Before every call it ``stat``\\ s the pointer
file; the agent switches models with ``os.replace``, which gives the pointer a
new inode, so ``(inode, mtime_ns, size)`` changing is a cheap sign of a switch;
the pointer is also re-read every ``recheck_s`` seconds, which catches the one
case a stat can miss (two switches within one timestamp tick, between two
calls, that happen to reuse an inode and keep the size). The thread that
notices a switch loads the new model while other threads keep running the old
one, and the host's atomic swap means no call fails because of the switch. A
pointer that cannot be read or a model that cannot be loaded after start-up is
logged and the old model keeps serving; a model that failed is not tried again
until the pointer names another. A pointer set to no model stops serving.

:class:`Client` is the small HTTP client for :mod:`agent.localapi`, over TCP
(``http://127.0.0.1:8470``) or a Unix socket (``unix:/run/edgefleet/agent.sock``),
built on httpx. Error answers become the same exceptions the in-process API
raises (:class:`InputError`, :class:`NoModelError`), others :class:`ApiError`.

Invariants: the blobs are trusted as the agent's verified store (the agent
checked their hashes before pointing at them); ``LocalModel.infer`` runs each
call on exactly one model; the pointer is only ever read, never written.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from agent._localwire import NPY, npy_array, npy_bytes, outputs_from_json
from agent.errors import StateError
from agent.serving import ModelHost, ModelInfo, ServingStats
from agent.serving_errors import ApiError, InputError, NoModelError
from agent.slots import ACTIVE_POINTER, read_active
from fleetcore.errors import RuntimeLoadError
from fleetcore.tensors import TensorSpec

log = logging.getLogger(__name__)
Array = npt.NDArray[Any]

DEFAULT_DATA_DIR = Path("/var/lib/edgefleet")
_UNREAD = (-1, -1, -1)  # a pointer key no stat can produce


class LocalModel:
    """The agent's active model, loaded in this process and followed across switches.

    Raises RuntimeLoadError from the constructor if the active model cannot be
    loaded; with no active model yet, :meth:`infer` raises NoModelError until
    the agent activates one.
    """

    def __init__(
        self, data_dir: Path | str = DEFAULT_DATA_DIR, *, threads: int = 1, recheck_s: float = 1.0
    ) -> None:
        self._data_dir = Path(data_dir)
        self._pointer = str(self._data_dir / ACTIVE_POINTER)
        self._host = ModelHost(threads)
        self._seen = _UNREAD
        self._failed: tuple[str, int] | None = None
        self._recheck_s = recheck_s
        self._read_at = time.monotonic()
        self._reloading = threading.Lock()
        self._check(strict=True)

    def _key(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self._pointer)  # noqa: PTH116  (every call: skip Path's overhead)
        except FileNotFoundError:
            return (0, 0, 0)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _check(self, *, strict: bool = False) -> None:
        if self._key() == self._seen and time.monotonic() - self._read_at < self._recheck_s:
            return
        # Without a model, wait for whoever is loading one; with one, keep serving it.
        if not self._reloading.acquire(blocking=self._host.info is None):
            return
        try:
            self._reload(self._key(), strict=strict)
        finally:
            self._reloading.release()

    def _reload(self, key: tuple[int, int, int], *, strict: bool) -> None:
        self._read_at = time.monotonic()
        try:
            slot = read_active(self._data_dir)
        except (OSError, StateError) as exc:
            if strict:
                raise RuntimeLoadError(f"cannot read the active-model pointer: {exc}") from exc
            log.warning("cannot read the active-model pointer (still serving): %s", exc)
            self._seen = key
            return
        current = self._host.info
        if slot is None:
            self._host.deactivate()
        elif (slot.sha256, slot.release) not in (self._failed, _serving(current)):
            info = ModelInfo(slot.model, slot.release, slot.sha256, slot.format)
            try:
                self._host.activate(slot.path, slot.format, info)
            except RuntimeLoadError as exc:
                if strict:
                    raise
                self._failed = (slot.sha256, slot.release)
                log.warning("cannot load %s@%d (still serving): %s", slot.model, slot.release, exc)
            else:
                log.info("serving %s@%d (%s)", slot.model, slot.release, slot.sha256[:12])
        self._seen = key

    def infer(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        """Run one batch on the active model (see :meth:`ModelHost.infer`)."""
        self._check()
        return self._host.infer(feeds)

    @property
    def info(self) -> ModelInfo | None:
        """The model now being served, after following any switch."""
        self._check()
        return self._host.info

    @property
    def stats(self) -> ServingStats:
        return self._host.stats


def _serving(info: ModelInfo | None) -> tuple[str, int] | None:
    return None if info is None else (info.sha256, info.release)


@dataclass(frozen=True)
class Prediction:
    outputs: dict[str, Array]
    request_id: str | None  # None when the agent runs without feedback ([drift] off)
    model: dict[str, Any]


class Client:
    """Client of the local inference API at ``http://HOST:PORT`` or ``unix:/path``."""

    def __init__(self, url_or_socket: str, *, timeout_s: float = 10.0) -> None:
        target = url_or_socket
        if target.startswith("unix:") or target.startswith("/"):
            path = target.removeprefix("unix:")
            transport = httpx.HTTPTransport(uds=path)
            self._http = httpx.Client(
                base_url="http://localhost", transport=transport, timeout=timeout_s
            )
        else:
            self._http = httpx.Client(base_url=target, timeout=timeout_s)
        self._outputs: dict[str, tuple[TensorSpec, ...]] = {}  # sha256 -> output specs

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(
                f"local API unreachable: {exc}", code="unavailable", http_status=0
            ) from exc
        if response.status_code < 400:
            return response
        try:
            error = response.json()["error"]
            code, message = str(error["code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            code, message = "http_error", response.text[:200]
        if response.status_code == InputError.http_status:
            raise InputError(message)
        if response.status_code == NoModelError.http_status:
            raise NoModelError(message)
        raise ApiError(message, code=code, http_status=response.status_code)

    def infer(self, inputs: Mapping[str, npt.ArrayLike] | npt.ArrayLike) -> dict[str, Array]:
        """Run a batch: ``{name: array}``, or one array for a single-input model."""
        return self.predict(inputs).outputs

    def predict(self, inputs: Mapping[str, npt.ArrayLike] | npt.ArrayLike) -> Prediction:
        """Like :meth:`infer`, with the answer's request id (for :meth:`feedback`) and model."""
        if isinstance(inputs, Mapping):
            body: Any = {name: np.asarray(value).tolist() for name, value in inputs.items()}
        else:
            body = np.asarray(inputs).tolist()
        doc = self._request("POST", "/v1/infer", json={"inputs": body}).json()
        outputs = outputs_from_json(doc["outputs"], self._output_specs(str(doc["model"]["sha256"])))
        request_id = doc.get("request_id")
        return Prediction(
            outputs, None if request_id is None else str(request_id), dict(doc["model"])
        )

    def feedback(self, request_id: str, label: int | str | list[int | str]) -> dict[str, Any]:
        """Tell the agent the true class of a prediction (one label per row of a batch).

        Raises ApiError: 404 unknown or expired id, 409 already given, 422 bad label.
        """
        body = {"request_id": request_id, "label": label}
        answer: dict[str, Any] = self._request("POST", "/v1/feedback", json=body).json()
        return answer

    def infer_npy(self, array: npt.ArrayLike) -> Array:
        """Run one array through a single-input model as ``.npy``; returns the first output."""
        headers = {"Content-Type": NPY, "Accept": NPY}
        response = self._request("POST", "/v1/infer", content=npy_bytes(array), headers=headers)
        try:
            return npy_array(response.content)
        except InputError as exc:
            raise ApiError(str(exc), code="bad_answer", http_status=response.status_code) from exc

    def model(self) -> ModelInfo:
        doc = self._request("GET", "/v1/model").json()
        try:
            return ModelInfo.from_dict(doc)
        except Exception as exc:
            raise ApiError(
                f"malformed model info: {exc}", code="bad_answer", http_status=200
            ) from exc

    def health(self) -> dict[str, Any]:
        """The health document; 503 (no model) is an answer here, not an error."""
        try:
            response = self._http.get("/v1/health")
        except httpx.HTTPError as exc:
            raise ApiError(
                f"local API unreachable: {exc}", code="unavailable", http_status=0
            ) from exc
        try:
            doc: dict[str, Any] = response.json()
        except ValueError as exc:
            status = response.status_code
            raise ApiError(
                "health answer is not JSON", code="bad_answer", http_status=status
            ) from exc
        return doc

    def _output_specs(self, sha256: str) -> tuple[TensorSpec, ...]:
        if sha256 not in self._outputs:
            info = self.model()
            if info.sha256 != sha256:  # switched meanwhile: fall back to float64
                return ()
            self._outputs[sha256] = info.outputs
        return self._outputs[sha256]

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["DEFAULT_DATA_DIR", "Client", "LocalModel", "Prediction"]
