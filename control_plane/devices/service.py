"""Operating enrolled devices: list, show, relabel, decommission.

Theory of operation: reads go straight to the store; every change runs in
one transaction with its audit entry. Decommissioning voids the device's
credentials at once: its token stops authenticating (this worker forgets its
cached verification; other workers within ``token_cache_s``), its line leaves
the broker's password file and the broker, reloading, disconnects it; the
listeners (the MQTT bridge) then clear its retained desired state and presence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from control_plane.audit import audit
from control_plane.devices.auth import DeviceAuth
from control_plane.devices.broker import BrokerAccounts
from control_plane.errors import InvalidInputError, NotFoundError
from control_plane.store import (
    DeviceAssignmentRecord,
    DeviceRecord,
    DeviceReportRecord,
    Store,
)
from fleetcore.errors import ProtocolError
from fleetcore.protocol import UpdateState, check_labels

log = logging.getLogger("edgefleet.devices")


@dataclass(frozen=True)
class DeviceView:
    """A device with its newest reports and its desired assignment."""

    device: DeviceRecord
    reports: list[DeviceReportRecord]
    assignment: DeviceAssignmentRecord | None


class DeviceService:
    def __init__(
        self,
        store: Store,
        auth: DeviceAuth,
        broker: BrokerAccounts,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.auth = auth
        self.broker = broker
        self.clock = clock
        self.on_decommission: list[Callable[[str], None]] = []

    def list_devices(
        self,
        *,
        labels: dict[str, str] | None = None,
        state: UpdateState | None = None,
        include_decommissioned: bool = False,
        after: str | None = None,
        limit: int = 1000,
    ) -> list[DeviceRecord]:
        return self.store.list_devices(
            labels=labels,
            state=state,
            include_decommissioned=include_decommissioned,
            after=after,
            limit=limit,
        )

    def get(self, device_id: str) -> DeviceRecord:
        device = self.store.get_device(device_id)
        if device is None:
            raise NotFoundError(f"no device {device_id}")
        return device

    def show(self, device_id: str, *, reports: int = 20) -> DeviceView:
        device = self.get(device_id)
        return DeviceView(
            device,
            self.store.list_reports(device_id, limit=reports),
            self.store.latest_assignment(device_id),
        )

    def relabel(
        self, device_id: str, set_labels: dict[str, str], remove: list[str], actor: str
    ) -> DeviceRecord:
        device = self.get(device_id)
        both = set(set_labels) & set(remove)
        if both:
            raise InvalidInputError(f"label(s) {', '.join(sorted(both))} both set and removed")
        merged = {k: v for k, v in device.labels.items() if k not in remove}
        merged.update(set_labels)
        try:
            labels = check_labels(merged)
        except ProtocolError as exc:
            raise InvalidInputError(str(exc)) from exc
        now = self.clock()
        with self.store.transaction() as tx:
            updated = tx.update_device_labels(device_id, labels)
            change = {"set": set_labels, "remove": sorted(remove), "labels": labels}
            audit(tx, actor, "device.label", "device", device_id, change, now)
        return updated

    def decommission(self, device_id: str, actor: str) -> DeviceRecord:
        now = self.clock()
        with self.store.transaction() as tx:
            gone = tx.decommission_device(device_id, now)
            audit(tx, actor, "device.decommission", "device", device_id, {}, now)
        self.auth.forget(device_id)
        self.broker.sync_quietly()
        for listener in self.on_decommission:
            try:
                listener(device_id)
            except Exception:  # the device is gone either way
                log.exception("decommission listener failed for %s", device_id)
        return gone


__all__ = ["DeviceService", "DeviceView"]
