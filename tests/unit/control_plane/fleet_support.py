"""A control plane's services on a real SQLite file, with real keys and a real release.

Built the way ``fleetctl`` would build them (``keys init``, migrations,
:func:`control_plane.main.build_services`), with a clock the test moves. The
release is the tiny ONNX model (opset 17), registered and signed for real.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from control_plane.cli import app as fleetctl
from control_plane.config import Settings
from control_plane.db.migrate import upgrade
from control_plane.devices.enroll import signing_input
from control_plane.main import build_services
from control_plane.registry.service import VersionRequest
from control_plane.services import DeviceServices, Services
from control_plane.store import ArtifactRecord, DeviceRecord
from fleetcore import canonical
from fleetcore.keys import PrivateKey

CAPABILITIES: dict[str, Any] = {
    "runtimes": {"onnxruntime": "1.20.1"},
    "formats": ["onnx"],
    "onnx_opsets": [7, 21],
    "arch": "aarch64",
    "ram_bytes": 1 << 30,
    "disk_free_bytes": 1 << 30,
}


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Fleet:
    services: Services
    clock: Clock
    root: bytes

    @property
    def devices(self) -> DeviceServices:
        assert self.services.fleet is not None
        return self.services.fleet

    def release(self, version: str, seed: int = 0) -> int:
        """Register and release the tiny model as ``tiny@version``; return its counter."""
        from models.tiny import tiny_onnx_bytes

        svc = self.services
        source = svc.settings.data_dir / f"tiny-{seed}.onnx"
        source.write_bytes(tiny_onnx_bytes(seed))
        blob = svc.artifacts.put_file(source, max_bytes=1 << 20)
        svc.store.add_artifact(ArtifactRecord(blob.sha256, blob.length, "onnx", self.clock()))
        svc.registry.create_version(VersionRequest("tiny", version, blob.sha256), "alice")
        return svc.releases.create("tiny", version, "alice").counter

    def enroll(self, capabilities: dict[str, Any] | None = None, **labels: str) -> DeviceRecord:
        _, secret = self.services.auth.create_enroll_token({}, 1, timedelta(hours=1), "alice")
        key = PrivateKey.generate()
        enrolled = self.devices.enrollment.enroll(
            secret, enrollment(key, capabilities=capabilities, labels=labels)
        )
        return enrolled.device


def enrollment(
    key: PrivateKey,
    *,
    capabilities: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    signer: PrivateKey | None = None,
    **changes: Any,
) -> bytes:
    signed: dict[str, Any] = {
        "_type": "enrollment",
        "public_key": key.public_key.to_dict(),
        "capabilities": CAPABILITIES if capabilities is None else capabilities,
        "labels": labels or {},
        "hostname": "pi-17",
        "time": "2026-11-22T10:00:00Z",
        **changes,
    }
    sig = (signer or key).sign(signing_input(signed)).hex()
    return canonical.encode({"signed": signed, "signatures": [{"keyid": key.keyid, "sig": sig}]})


def make_fleet(tmp_path: Path, **settings: Any) -> Fleet:
    trust = tmp_path / "trust"
    done = CliRunner().invoke(fleetctl, ["keys", "init", str(trust)])
    assert done.exit_code == 0, done.output
    config = Settings(data_dir=tmp_path, **settings)
    upgrade(config.db_url)
    clock = Clock()
    services = build_services(config, clock=clock)
    return Fleet(services, clock, services.releases.keys.root_bytes())
