"""Rollouts on a real control plane (see :mod:`fleet_support`), with simulated devices.

No agent runs: a device "acts" by posting the status reports an agent would
(:meth:`Sim.report`) about its newest assignment. Rollouts are written as
the documents ``fleetctl apply`` sends (:func:`doc`) and driven by calling
:meth:`RolloutDriver.tick` while the test moves the clock.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from control_plane.store import DeviceRecord, Store
from control_plane.store.rollout_records import RolloutDeviceRecord, RolloutRecord, TargetStatus
from fleetcore import canonical
from fleetcore.protocol import Installed, StatusReport, UpdateState
from tests.unit.control_plane.fleet_support import CAPABILITIES, Fleet

#: A device that runs TFLite models only: it cannot run the tiny ONNX model.
TFLITE_ONLY = {**CAPABILITIES, "formats": ["tflite"], "runtimes": {"ai-edge-litert": "1"}}


def doc(name: str, release: int, **spec: Any) -> dict[str, Any]:
    """A rollout document of ``tiny`` release ``release``."""
    return {"metadata": {"name": name}, "spec": {"model": "tiny", "release": release, **spec}}


class Sim:
    """The fleet, two releases of ``tiny`` (1 and 2), and devices that report."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.r1 = fleet.release("1", seed=1)
        self.r2 = fleet.release("2", seed=2)
        self._seq: Counter[str] = Counter()

    @property
    def store(self) -> Store:
        return self.fleet.services.store

    def installed(self, release: int) -> Installed:
        record = self.store.get_release("tiny", release)
        assert record is not None
        version = self.store.get_version_by_id(record.version_id)
        assert version is not None
        return Installed("tiny", release, version.artifact_sha256)

    def enroll(
        self,
        count: int = 1,
        *,
        runs: int | None = None,
        capabilities: dict[str, Any] | None = None,
        **labels: str,
    ) -> list[str]:
        """Enroll ``count`` devices; with ``runs``, each reports that release as active."""
        ids = [self.fleet.enroll(capabilities, **labels).id for _ in range(count)]
        if runs is not None:
            for device in ids:
                self.runs(device, runs)
        return ids

    def runs(self, device: str, release: int) -> None:
        """The device reports that it runs ``release`` (installed before this test)."""
        self.report(device, UpdateState.IDLE, active=self.installed(release))

    def report(self, device: str, state: UpdateState, **fields: Any) -> None:
        self._seq[device] += 1
        status = StatusReport(device, self._seq[device], self.fleet.clock(), state, **fields)
        self.fleet.devices.ingest.http(device, canonical.encode({"reports": [status.to_dict()]}))

    def device(self, device: str) -> DeviceRecord:
        found = self.store.get_device(device)
        assert found is not None
        return found

    def desired_release(self, device: str) -> tuple[int, int] | None:
        """(sequence, release) of the device's newest assignment."""
        latest = self.store.latest_assignment(device)
        return None if latest is None else (latest.sequence, latest.release)

    def commit(self, device: str) -> None:
        """The device installs its newest assignment and commits it."""
        latest = self.store.latest_assignment(device)
        assert latest is not None
        before = self.device(device).installed("current")
        self.report(
            device,
            UpdateState.COMMITTED,
            target=self.installed(latest.release),
            active=self.installed(latest.release),
            previous=before if before and before.release != latest.release else None,
            assignment_sequence=latest.sequence,
        )

    def fail(self, device: str, reason: str = "smoke_test") -> None:
        """The device's smoke test of its newest assignment fails; it keeps what it ran."""
        latest = self.store.latest_assignment(device)
        assert latest is not None
        self.report(
            device,
            UpdateState.FAILED,
            target=self.installed(latest.release),
            active=self.device(device).installed("current"),
            assignment_sequence=latest.sequence,
            reason=reason,
            message="outputs differ from the reference",
        )

    # -- rollouts ------------------------------------------------------------------------

    def create(self, name: str, **spec: Any) -> RolloutRecord:
        view, _ = self.fleet.devices.rollouts.create(doc(name, self.r2, **spec), "alice")
        return view.record

    def rollout(self, rollout_id: str) -> RolloutRecord:
        found = self.store.get_rollout(rollout_id)
        assert found is not None
        return found

    def phase(self, rollout_id: str) -> str:
        return self.rollout(rollout_id).phase

    def targets(self, rollout_id: str) -> dict[str, RolloutDeviceRecord]:
        return {t.device_id: t for t in self.store.list_targets(rollout_id)}

    def with_status(self, rollout_id: str, *statuses: TargetStatus) -> list[str]:
        found = self.store.list_targets(rollout_id, statuses=statuses)
        return sorted(t.device_id for t in found)

    def statuses(self, rollout_id: str) -> Counter[str]:
        return Counter(t.status.value for t in self.store.list_targets(rollout_id))

    def commit_installing(self, rollout_id: str) -> list[str]:
        """Every installing device of the rollout commits; return them."""
        done = self.with_status(rollout_id, TargetStatus.INSTALLING)
        for device in done:
            self.commit(device)
        return done

    def tick(self, seconds: float = 0) -> None:
        self.fleet.clock.advance(seconds=seconds)
        self.fleet.devices.driver.tick()

    def decisions(self, rollout_id: str) -> list[tuple[str, dict[str, Any]]]:
        """The rollout's audit entries, oldest first."""
        entries = self.store.list_audit(object_type="rollout", object_id=rollout_id, limit=1000)
        return [(e.action, e.change) for e in reversed(entries)]

    def actions(self, rollout_id: str) -> list[str]:
        return [action for action, _ in self.decisions(rollout_id)]


def assert_install_evidence(change: dict[str, Any]) -> None:
    """A gate decision names the wave and carries the install gate's counts and thresholds."""
    assert isinstance(change["wave"], int)
    install = next(g for g in change["gates"] if g["gate"] == "install")
    values = install["values"]
    for key in ("total", "committed", "failed", "min_success_ratio", "max_failure_ratio"):
        assert key in values, (key, install)
    assert install["outcome"] in ("pass", "fail", "inconclusive") and install["detail"]


__all__ = ["TFLITE_ONLY", "Sim", "assert_install_evidence", "doc"]
