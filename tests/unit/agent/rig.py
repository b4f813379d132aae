"""A test rig for the updater: real signed metadata, a real HTTP server, a fake host.

:class:`Rig` owns a data directory with a pinned root (from
:class:`tests.support.repo.RepoSim`), a :class:`~tests.unit.agent.fakecp.FakeControlPlane`
serving artifacts and roots, and builds :class:`agent.updater.Updater`
instances on that directory. :meth:`Rig.restart` drops the current updater
without any cleanup (as ``kill -9`` would) and builds a new one on the same
files, so crash-resume tests exercise the real journal, outbox and store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from agent.config import UpdateConfig
from agent.download import DownloadConfig, Downloader
from agent.host import Health
from agent.identity import save_root
from agent.outbox import Outbox
from agent.slots import Slot, read_active
from agent.statedb import StateDB
from agent.trustgate import TrustGate
from agent.updater import Updater
from fleetcore.errors import RuntimeLoadError
from fleetcore.metadata import ReleaseManifest, SmokeTests, SmokeVector
from fleetcore.protocol import DesiredState, StatusReport, UpdateState
from tests.support.repo import DEVICE, RepoSim
from tests.unit.agent.fakecp import FakeControlPlane

FAST = UpdateConfig(
    probation_s=0.3,
    probation_check_s=0.05,
    probation_min_inferences=5,
    download_attempts=3,
    download_backoff_initial_s=0.01,
    download_backoff_max_s=0.05,
    crash_loop_boots=2,
)


class Crash(BaseException):
    """Raised by the pause hook: the process 'dies' right after persisting a state."""


@dataclass
class FakeHost:
    activations: list[str] = field(default_factory=list)
    fail_on: set[str] = field(default_factory=set)
    health_value: Health = field(default_factory=Health)
    active: Slot | None = None

    def activate(self, slot: Slot) -> None:
        if slot.sha256 in self.fail_on:
            raise RuntimeLoadError(f"cannot load {slot.sha256[:8]}")
        assert slot.path.exists(), "the host was asked to load a blob that is not stored"
        self.activations.append(slot.sha256)
        self.active = slot

    def deactivate(self) -> None:
        self.active = None

    def health(self) -> Health:
        return self.health_value


@contextlib.contextmanager
def tiny_filesystem(mnt: Path, size_kib: int) -> Iterator[Path]:
    """A tmpfs of ``size_kib`` mounted at ``mnt`` (needs root); skips when unavailable."""
    mnt.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mnt)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"cannot mount a tmpfs (CI=true: the disk-full tests must run): {exc}")
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def tiny_model(seed: int = 0) -> bytes:
    from models.tiny import tiny_onnx_bytes

    return tiny_onnx_bytes(seed)


@dataclass
class Rig:
    data_dir: Path
    cp: FakeControlPlane
    repo: RepoSim = field(default_factory=RepoSim.create)
    config: UpdateConfig = FAST
    host: FakeHost = field(default_factory=FakeHost)
    crash_at: UpdateState | None = None
    updater: Updater | None = None
    db: StateDB | None = None

    def __post_init__(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        save_root(self.data_dir, self.repo.root_bytes())
        self.cp.state.roots[1] = self.repo.root_bytes()

    # -- metadata ------------------------------------------------------------------
    def release(self, release: int = 1, data: bytes | None = None, **kw: Any) -> ReleaseManifest:
        data = tiny_model(release) if data is None else data
        self.cp.add_artifact(data)
        return self.repo.manifest(release=release, data=data, **kw)

    def desired(
        self, manifest: ReleaseManifest, *, sequence: int | None = None, **kw: Any
    ) -> bytes:
        assignment = self.repo.assignment(manifest, sequence=sequence, **kw)
        return DesiredState(
            self.repo.assignment_bytes(assignment), self.repo.release_bytes(manifest)
        ).encode()

    @staticmethod
    def failing_smoke(manifest: ReleaseManifest) -> ReleaseManifest:
        x = np.zeros((1, 4), dtype=np.float32)
        wrong = SmokeVector({"features": x}, {"probabilities": np.ones((1, 3), np.float32)})
        return dataclasses.replace(manifest, smoke_tests=SmokeTests((wrong,), 1e-3, 0.0))

    # -- agent ---------------------------------------------------------------------
    def _on_enter(self, state: UpdateState) -> None:
        if state == self.crash_at:
            self.crash_at = None
            raise Crash(state.value)

    def start(self, *, on_enter: Callable[[UpdateState], None] | None = None) -> Updater:
        self.db = StateDB.open(self.data_dir)
        client = httpx.Client(
            base_url=self.cp.url, headers={"Authorization": f"Bearer {self.cp.state.device_token}"}
        )
        downloads = DownloadConfig(
            attempts=self.config.download_attempts,
            backoff_initial_s=self.config.download_backoff_initial_s,
            backoff_max_s=self.config.download_backoff_max_s,
        )
        gate = TrustGate(self.data_dir, DEVICE, self._fetch_root)
        self.updater = Updater(
            data_dir=self.data_dir,
            device_id=DEVICE,
            config=self.config,
            db=self.db,
            outbox=Outbox(self.db, max_reports=1000),
            gate=gate,
            host=self.host,
            downloader=Downloader(client, downloads),
            formats={"onnx"},
            on_enter=on_enter or self._on_enter,
        )
        return self.updater

    def _fetch_root(self, version: int) -> bytes | None:
        return self.cp.state.roots.get(version)

    def restart(self) -> Updater:
        """Forget the running updater as kill -9 would, and start a new one."""
        self.host = FakeHost(fail_on=self.host.fail_on, health_value=self.host.health_value)
        if self.db is not None:
            self.db.close()
        updater = self.start()
        updater.resume()
        return updater

    def handle(self, document: bytes) -> None:
        assert self.updater is not None
        self.updater.consider(document)
        self.updater.drive()

    # -- observations --------------------------------------------------------------
    @property
    def state(self) -> UpdateState:
        assert self.updater is not None
        return self.updater.journal.state

    def reports(self) -> list[StatusReport]:
        assert self.db is not None
        with self.db.reading() as c:
            rows = c.execute("SELECT body FROM outbox ORDER BY seq").fetchall()
        return [StatusReport.decode(bytes(r[0])) for r in rows]

    def states(self) -> list[str]:
        return [r.state.value for r in self.reports()]

    def active_sha(self) -> str | None:
        slot = read_active(self.data_dir)
        return None if slot is None else slot.sha256

    def stored(self) -> set[str]:
        return {p.name for p in (self.data_dir / "store").rglob("*") if p.is_file()}

    def dump(self) -> str:
        return json.dumps([r.to_dict() for r in self.reports()], indent=1, default=str)
