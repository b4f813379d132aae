"""Model slots: which verified model is active, switched atomically.

Theory of operation. Verified artifacts live in a content-addressed store
under the data directory (``store/sha256/<ab>/<sha256>``, see
:func:`fleetcore.artifact.store_path`); downloads in progress are
``downloads/<sha256>.part`` on the same file system, so installing a verified
download into the store is one ``os.replace``. Which one is served is recorded in one
small pointer file, ``slots/active.json``. Switching models is a pointer
switch: write a temporary file, fsync it, ``os.replace`` it over the pointer,
fsync the directory. A reader therefore sees the old pointer or the new one,
never a torn one, and a power cut leaves one of the two.

Anything that serves the model (the daemon, or an application using the
in-process API) reads the pointer with :func:`read_active`.

Invariants: a blob in the store has been verified against its signed hash
before it was moved there; :func:`collect_garbage` never deletes a blob named
in its ``keep`` set, and the updater always keeps the active, the committed and
the previous committed release.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import StateError
from fleetcore.artifact import check_digest, store_path

ACTIVE_POINTER = Path("slots") / "active.json"
DOWNLOADS_DIR = Path("downloads")


@dataclass(frozen=True)
class Slot:
    """One installed model release and where its verified bytes are."""

    model: str
    release: int
    sha256: str
    format: str
    path: Path  # absolute path of the verified blob in the store

    def to_dict(self, data_dir: Path) -> dict[str, Any]:
        return {
            "model": self.model,
            "release": self.release,
            "sha256": self.sha256,
            "format": self.format,
            "path": str(self.path.relative_to(data_dir)),
        }

    @classmethod
    def from_dict(cls, obj: dict[str, Any], data_dir: Path) -> Slot:
        return cls(
            model=str(obj["model"]),
            release=int(obj["release"]),
            sha256=str(obj["sha256"]),
            format=str(obj["format"]),
            path=data_dir / str(obj["path"]),
        )


def blob_path(data_dir: Path, sha256: str) -> Path:
    """Where the verified bytes of ``sha256`` live in the store."""
    return data_dir / "store" / store_path(sha256)


def part_path(data_dir: Path, sha256: str) -> Path:
    """Where the download of ``sha256`` accumulates until it is verified."""
    return data_dir / DOWNLOADS_DIR / f"{check_digest(sha256)}.part"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install_blob(data_dir: Path, source: Path, sha256: str) -> Path:
    """Move verified bytes at ``source`` into the store, atomically and durably."""
    target = blob_path(data_dir, sha256)
    target.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb+") as handle:
        os.fsync(handle.fileno())
    source.replace(target)
    fsync_dir(target.parent)
    fsync_dir(source.parent)
    return target


def collect_garbage(data_dir: Path, keep: set[str]) -> list[str]:
    """Delete stored blobs and partial downloads whose digest is not in ``keep``."""
    removed: list[str] = []
    store = data_dir / "store" / "sha256"
    candidates = list(store.glob("*/*")) if store.is_dir() else []
    downloads = data_dir / DOWNLOADS_DIR
    if downloads.is_dir():
        candidates += list(downloads.glob("*.part"))
    for path in candidates:
        digest = path.name.removesuffix(".part")
        if digest in keep:
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(digest)
    return removed


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see old or new, never torn."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
    fsync_dir(path.parent)


def read_active(data_dir: Path) -> Slot | None:
    """The active slot, or ``None`` when no model was ever activated."""
    try:
        raw = (data_dir / ACTIVE_POINTER).read_bytes()
    except FileNotFoundError:
        return None
    try:
        obj = json.loads(raw)
        return None if obj is None else Slot.from_dict(obj, data_dir)
    except (ValueError, KeyError, TypeError) as exc:
        raise StateError(f"the active-model pointer {ACTIVE_POINTER} is corrupt: {exc}") from exc


def write_active(data_dir: Path, slot: Slot | None) -> None:
    """Point the active slot at ``slot`` (``None``: no model) atomically."""
    body = None if slot is None else slot.to_dict(data_dir)
    atomic_write(data_dir / ACTIVE_POINTER, json.dumps(body, sort_keys=True).encode())


__all__ = [
    "ACTIVE_POINTER",
    "DOWNLOADS_DIR",
    "Slot",
    "atomic_write",
    "blob_path",
    "collect_garbage",
    "fsync_dir",
    "install_blob",
    "part_path",
    "read_active",
    "write_active",
]
