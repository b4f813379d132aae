"""Data captures: reservoir samples of a device's inputs, uploaded as ``.npz`` datasets.

Theory of operation: an agent with capture enabled posts, per window, an
``.npz`` holding ``x`` (float32 ``[n, F]``), ``y`` (int64 ``[n]``, the
ground-truth label index or -1) and ``time`` (int64 ``[n]``, unix seconds).
:meth:`CaptureService.upload` checks the archive with
``numpy.load(allow_pickle=False)`` (no object arrays, so nothing in it can
run code), checks the arrays' types and shapes, stores the bytes as a
content-addressed artifact of kind ``dataset`` and records one capture row
per (device, model, window start): a second upload of the same window
returns the first one, so retries are harmless.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from control_plane.artifacts.port import ArtifactStore
from control_plane.config import TelemetrySettings
from control_plane.errors import InvalidInputError, PayloadTooLargeError
from control_plane.store import ArtifactRecord, CaptureRecord, Store
from fleetcore.telemetry import MAX_WINDOW_START

ARTIFACT_KIND = "dataset"
#: Rows a capture may hold; a reservoir is a sample, not a log.
MAX_ROWS = 1_000_000
#: Decompressed size a capture may claim (zip bombs are refused before reading).
MAX_UNPACKED_BYTES = 256 << 20


def _arrays(body: bytes) -> tuple[int, int]:
    """``(rows, labelled rows)`` of a valid capture; InvalidInputError naming the problem."""
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
        if unpacked > MAX_UNPACKED_BYTES:
            raise InvalidInputError(
                f"the capture unpacks to {unpacked} bytes, over {MAX_UNPACKED_BYTES}"
            )
        with np.load(io.BytesIO(body), allow_pickle=False) as npz:
            missing = {"x", "y", "time"} - set(npz.files)
            if missing:
                raise InvalidInputError(f"the capture lacks array(s) {', '.join(sorted(missing))}")
            x, y, when = npz["x"], npz["y"], npz["time"]
    except InvalidInputError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidInputError(f"the capture is not a readable .npz archive: {exc}") from exc
    if x.dtype != np.float32 or x.ndim != 2:
        raise InvalidInputError(f"x must be float32 [n, features], not {x.dtype} {list(x.shape)}")
    rows = int(x.shape[0])
    for name, array in (("y", y), ("time", when)):
        if array.dtype != np.int64 or array.shape != (rows,):
            raise InvalidInputError(
                f"{name} must be int64 [{rows}], not {array.dtype} {list(array.shape)}"
            )
    if not 1 <= rows <= MAX_ROWS:
        raise InvalidInputError(f"a capture holds 1 to {MAX_ROWS} rows, not {rows}")
    if int(y.min()) < -1:
        raise InvalidInputError("y holds label indexes, or -1 for unknown")
    return rows, int(np.count_nonzero(y >= 0))


class CaptureService:
    def __init__(
        self,
        store: Store,
        artifacts: ArtifactStore,
        settings: TelemetrySettings,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.settings = settings
        self.clock = clock

    def upload(
        self, device_id: str, model: str, release: int, window_start: int, body: bytes
    ) -> tuple[CaptureRecord, bool]:
        """Store one capture of ``device_id``; ``(record, created)``."""
        if len(body) > self.settings.max_capture_bytes:
            raise PayloadTooLargeError(
                f"the capture is {len(body)} bytes, over {self.settings.max_capture_bytes}"
            )
        if not 0 <= window_start <= MAX_WINDOW_START:
            raise InvalidInputError(f"window_start {window_start} is not a unix time")
        rows, labelled = _arrays(body)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "capture.npz"
            path.write_bytes(body)
            blob = self.artifacts.put_file(path, max_bytes=len(body))
        now = self.clock()
        self.store.add_artifact(ArtifactRecord(blob.sha256, blob.length, ARTIFACT_KIND, now))
        return self.store.add_capture(
            CaptureRecord(
                device_id=device_id,
                model=model,
                release=release,
                window_start=datetime.fromtimestamp(window_start, timezone.utc),
                rows=rows,
                labelled=labelled,
                artifact_sha256=blob.sha256,
                received_at=now,
            )
        )

    def list(
        self, model: str, *, since: datetime | None = None, limit: int = 1000
    ) -> list[CaptureRecord]:
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=timezone.utc)  # a time without zone is read as UTC
        return self.store.list_captures(model, since=since, limit=limit)


__all__ = ["ARTIFACT_KIND", "MAX_ROWS", "CaptureService"]
