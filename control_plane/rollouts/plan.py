"""Which devices a rollout targets, and in which wave each one goes.

Theory of operation: :func:`plan` takes the fleet (device records), the spec
and the release's manifest and decides, without I/O:

* the *target*: active devices the selector matches;
* the *excluded*: targeted devices whose enrolled capabilities cannot run the
  release, each with its reasons (they are recorded, never assigned);
* the *conflicts*: targeted devices already held by another active rollout of
  the same model (the caller refuses the rollout and names them);
* the *order*: a hash of rollout id and device id, so the same rollout always
  orders its devices the same way (a restarted control plane picks the same
  waves) while different rollouts start on different devices;
* the *waves*: wave ``i`` holds the devices from ``waves[i-1].cumulative`` to
  ``waves[i].cumulative`` of that order. With ``stratify_by`` the order
  interleaves the strata by each device's rank within its stratum, so every
  stratum gets its share of every wave (within one device).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from control_plane.devices.matching import incompatibilities
from control_plane.rollouts.spec import RolloutSpec
from control_plane.store import DeviceRecord
from fleetcore.errors import EdgefleetError
from fleetcore.metadata import ReleaseManifest
from fleetcore.protocol import Capabilities

#: The stratum of devices that lack the ``stratify_by`` label.
UNLABELLED = ""


def order_key(rollout_id: str, device_id: str) -> str:
    return hashlib.sha256(f"{rollout_id}\x00{device_id}".encode()).hexdigest()[:20]


@dataclass(frozen=True)
class PlannedTarget:
    device_id: str
    wave: int
    order_key: str
    stratum: str | None
    previous_release: int | None


@dataclass(frozen=True)
class Excluded:
    device_id: str
    reasons: tuple[str, ...]


@dataclass
class Plan:
    targets: list[PlannedTarget] = field(default_factory=list)
    excluded: list[Excluded] = field(default_factory=list)
    conflicts: dict[str, str] = field(default_factory=dict)  # device -> rollout id
    wave_sizes: list[int] = field(default_factory=list)


def previous_release(device: DeviceRecord, model: str, release: int) -> int | None:
    """The release of ``model`` a rollback would give the device: what it runs now."""
    current = device.installed("current")
    if current is not None and current.model == model and current.release != release:
        return current.release
    earlier = device.installed("previous")
    if earlier is not None and earlier.model == model and earlier.release != release:
        return earlier.release
    return None


def cannot_run(device: DeviceRecord, manifest: ReleaseManifest) -> tuple[str, ...]:
    try:
        capabilities = Capabilities.from_dict(device.capabilities)
    except EdgefleetError as exc:
        return (f"its capabilities are unreadable: {exc.one_line()}",)
    return tuple(incompatibilities(capabilities, manifest))


def _stratum(device: DeviceRecord, label: str | None) -> str | None:
    return None if label is None else device.labels.get(label, UNLABELLED)


def ordered(
    rollout_id: str, devices: Iterable[DeviceRecord], stratify_by: str | None
) -> list[tuple[DeviceRecord, str]]:
    """Devices in rollout order, each with its order key."""
    keyed = [(d, order_key(rollout_id, d.id)) for d in devices]
    if stratify_by is None:
        return sorted(keyed, key=lambda pair: pair[1])
    strata: dict[str, list[tuple[DeviceRecord, str]]] = {}
    for device, key in keyed:
        strata.setdefault(_stratum(device, stratify_by) or UNLABELLED, []).append((device, key))
    ranked = []
    for members in strata.values():
        members.sort(key=lambda pair: pair[1])
        size = len(members)
        # (rank + 0.5) / size spreads each stratum evenly over the whole order.
        ranked += [((rank + 0.5) / size, key, device) for rank, (device, key) in enumerate(members)]
    ranked.sort(key=lambda item: (item[0], item[1]))
    return [(device, key) for _, key, device in ranked]


def plan(
    rollout_id: str,
    spec: RolloutSpec,
    release: int,
    manifest: ReleaseManifest,
    devices: Iterable[DeviceRecord],
    claimed: Mapping[str, str],
) -> Plan:
    result = Plan()
    eligible = []
    for device in devices:
        if not device.active or not spec.selector.matches(device.labels):
            continue
        if device.id in claimed:
            result.conflicts[device.id] = claimed[device.id]
            continue
        reasons = cannot_run(device, manifest)
        if reasons:
            result.excluded.append(Excluded(device.id, reasons))
            continue
        eligible.append(device)
    order = ordered(rollout_id, eligible, spec.stratify_by)
    total = len(order)
    bounds = [wave.cumulative(total) for wave in spec.waves]
    bounds = [max(bounds[: i + 1]) for i in range(len(bounds))]  # never shrink
    start = 0
    for wave, end in enumerate(bounds):
        result.wave_sizes.append(end - start)
        for device, key in order[start:end]:
            result.targets.append(
                PlannedTarget(
                    device.id,
                    wave,
                    key,
                    _stratum(device, spec.stratify_by),
                    previous_release(device, spec.model, release),
                )
            )
        start = end
    return result


__all__ = [
    "UNLABELLED",
    "Excluded",
    "Plan",
    "PlannedTarget",
    "cannot_run",
    "order_key",
    "ordered",
    "plan",
    "previous_release",
]
