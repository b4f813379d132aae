"""Report ingestion (HTTP and MQTT share it), the long-poll watch, and device operations.

Runs on a real SQLite store; the MQTT side is fed raw messages as the bridge
hands them over, so every parsing and counting rule is checked without a
broker (the end-to-end tests repeat the important ones with Mosquitto).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Collection
from pathlib import Path

import pytest

from control_plane.devices.desired import DesiredWatch
from control_plane.devices.ingest import MAX_HTTP_REPORTS, RawMessage
from control_plane.errors import InvalidInputError, NotFoundError, StateError
from control_plane.store import DeviceRecord
from fleetcore import canonical
from fleetcore.protocol import Channel, Presence, StatusReport, UpdateState, topic
from tests.unit.control_plane.fleet_support import Fleet, make_fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return make_fleet(tmp_path)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def report(device: str, seq: int, state: UpdateState = UpdateState.IDLE) -> StatusReport:
    from datetime import datetime, timezone

    return StatusReport(device, seq, datetime(2030, 1, 1, tzinfo=timezone.utc), state)


def reports_body(*items: StatusReport) -> bytes:
    return canonical.encode({"reports": [r.to_dict() for r in items]})


def stored(fleet: Fleet, device: DeviceRecord) -> DeviceRecord:
    found = fleet.services.store.get_device(device.id)
    assert found is not None
    return found


# -- HTTP -------------------------------------------------------------------------------------


def test_http_batches_are_stored_once(fleet: Fleet) -> None:
    device = fleet.enroll()
    ingest = fleet.devices.ingest
    body = reports_body(report(device.id, 1), report(device.id, 2, UpdateState.NOTIFIED))

    first = ingest.http(device.id, body)
    again = ingest.http(device.id, body)

    assert (first.accepted, first.duplicates, first.last_seq) == (2, 0, 2)
    assert (again.accepted, again.duplicates, again.last_seq) == (0, 2, 2)
    assert stored(fleet, device).state is UpdateState.NOTIFIED
    assert [r.transport for r in fleet.services.store.list_reports(device.id)] == ["http"] * 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "canonical JSON"),
        (b'{"reports": [], "reports": []}', "canonical JSON"),
        (b'{"reports": []}', "1 to 500"),
        (b'{"other": 1}', "1 to 500"),
        (canonical.encode({"reports": [{"_type": "status"}]}), "report 0"),
    ],
)
def test_malformed_http_batches_are_refused_whole(fleet: Fleet, body: bytes, message: str) -> None:
    device = fleet.enroll()
    with pytest.raises(InvalidInputError, match=message):
        fleet.devices.ingest.http(device.id, body)
    assert fleet.services.store.list_reports(device.id) == []


def test_http_batches_are_capped_and_name_their_own_device(fleet: Fleet) -> None:
    device, other = fleet.enroll(), fleet.enroll()
    too_many = reports_body(*(report(device.id, n) for n in range(1, MAX_HTTP_REPORTS + 2)))
    with pytest.raises(InvalidInputError, match="1 to 500"):
        fleet.devices.ingest.http(device.id, too_many)
    with pytest.raises(InvalidInputError, match=f"from {other.id}"):
        fleet.devices.ingest.http(device.id, reports_body(report(other.id, 1)))
    fleet.devices.devices.decommission(other.id, "alice")
    with pytest.raises(StateError):
        fleet.devices.ingest.http(other.id, reports_body(report(other.id, 1)))


# -- MQTT ---------------------------------------------------------------------------------------


def status_message(device: str, payload: bytes) -> RawMessage:
    return RawMessage(topic(device, Channel.STATUS), payload)


def test_mqtt_batches_count_and_drop_malformed_messages(fleet: Fleet) -> None:
    device, other = fleet.enroll(), fleet.enroll()
    ingest = fleet.devices.ingest
    batch = [
        status_message(device.id, b"garbage"),
        status_message(device.id, report(other.id, 1).encode()),  # names another device
        RawMessage(topic(device.id, Channel.PRESENCE), Presence(other.id, True).encode()),
        RawMessage("edgefleet/v1/devices/+/status", b"{}"),  # no device to charge
        RawMessage(topic(device.id, Channel.TELEMETRY), b"{}"),  # handed to telemetry ingest
        RawMessage(topic(device.id, Channel.PRESENCE), b""),  # a cleared retained message
        status_message(device.id, report(device.id, 1, UpdateState.STAGED).encode()),
        RawMessage(topic(device.id, Channel.PRESENCE), Presence(device.id, True).encode()),
        status_message(device.id, report(device.id, 1, UpdateState.FAILED).encode()),
    ]

    ingest.mqtt(batch)

    found = stored(fleet, device)
    assert (found.malformed_reports, found.last_seq, found.state) == (3, 1, UpdateState.STAGED)
    assert found.online and found.last_seen == fleet.clock()
    assert stored(fleet, other).malformed_reports == 0
    stats = ingest.stats.snapshot()
    assert stats["received"] == 9 and stats["malformed"] == 4 and stats["ignored"] == 1
    assert stats["accepted"] == 1 and stats["duplicates"] == 1 and stats["presence"] == 1


def test_a_retained_presence_sets_online_but_not_last_seen(fleet: Fleet) -> None:
    device = fleet.enroll()
    presence = topic(device.id, Channel.PRESENCE)

    fleet.devices.ingest.mqtt([RawMessage(presence, Presence(device.id, True).encode(), True)])
    assert (stored(fleet, device).online, stored(fleet, device).last_seen) == (True, None)
    fleet.devices.ingest.mqtt([RawMessage(presence, Presence(device.id, False).encode())])
    assert (stored(fleet, device).online, stored(fleet, device).last_seen) == (False, fleet.clock())


def test_mqtt_messages_of_unknown_or_gone_devices_are_dropped(fleet: Fleet) -> None:
    gone = fleet.enroll()
    fleet.devices.devices.decommission(gone.id, "alice")
    ghost = "dev-" + "g" * 20

    fleet.devices.ingest.mqtt(
        [
            status_message(ghost, report(ghost, 1).encode()),
            status_message(gone.id, report(gone.id, 1).encode()),
            RawMessage(topic(gone.id, Channel.PRESENCE), Presence(gone.id, True).encode()),
            status_message(ghost, b"garbage"),
        ]
    )

    assert fleet.devices.ingest.stats.snapshot()["unknown_device"] == 4
    assert fleet.services.store.list_reports(gone.id) == []


def test_a_database_failure_reaches_the_caller_so_the_batch_is_retried(fleet: Fleet) -> None:
    device = fleet.enroll()
    store = fleet.services.store

    def broken() -> None:
        raise RuntimeError("database unavailable")

    original = store.transaction
    store.transaction = broken  # type: ignore[assignment, method-assign]
    try:
        with pytest.raises(RuntimeError):
            fleet.devices.ingest.mqtt([status_message(device.id, report(device.id, 1).encode())])
    finally:
        store.transaction = original  # type: ignore[method-assign]
    fleet.devices.ingest.mqtt([status_message(device.id, report(device.id, 1).encode())])
    assert stored(fleet, device).last_seq == 1


# -- device operations ---------------------------------------------------------------------------


def test_labels_are_set_and_removed_and_checked(fleet: Fleet) -> None:
    device = fleet.enroll(site="a", hw="rpi4")
    service = fleet.devices.devices

    updated = service.relabel(device.id, {"ring": "canary"}, ["hw"], "alice")

    assert updated.labels == {"ring": "canary", "site": "a"}
    for bad_set, bad_remove in (({"Bad": "x"}, []), ({"a": "b"}, ["a"])):
        with pytest.raises(InvalidInputError):
            service.relabel(device.id, bad_set, bad_remove, "alice")
    with pytest.raises(NotFoundError):
        service.relabel("dev-" + "q" * 20, {}, [], "alice")
    actions = [e.action for e in fleet.services.store.list_audit(object_id=device.id)]
    assert actions == ["device.label", "device.enroll"]


def test_decommissioning_tells_listeners_and_happens_once(fleet: Fleet) -> None:
    device = fleet.enroll()
    told: list[str] = []
    fleet.devices.devices.on_decommission.append(told.append)

    gone = fleet.devices.devices.decommission(device.id, "alice")

    assert gone.decommissioned_at == fleet.clock() and told == [device.id]
    with pytest.raises(StateError):
        fleet.devices.devices.decommission(device.id, "alice")
    assert fleet.devices.devices.list_devices() == []
    assert [d.id for d in fleet.devices.devices.list_devices(include_decommissioned=True)] == [
        device.id
    ]


# -- the long-poll watch ---------------------------------------------------------------------------


class Sequences:
    """What other workers' assignments look like: only the database knows them."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.calls = 0

    def __call__(self, devices: Collection[str]) -> dict[str, int]:
        self.calls += 1
        return {d: self.values[d] for d in devices if d in self.values}


@pytest.mark.anyio
async def test_a_waiter_wakes_when_another_thread_notifies() -> None:
    watch = DesiredWatch(Sequences(), check_s=30)
    started = time.monotonic()
    waiting = asyncio.create_task(watch.wait("dev-a", 0, 10))
    await asyncio.sleep(0.05)
    assert watch.waiting == 1
    threading.Thread(target=watch.notify, args=("dev-a",)).start()
    await waiting
    assert time.monotonic() - started < 5 and watch.waiting == 0


@pytest.mark.anyio
async def test_a_waiter_finds_other_workers_assignments_by_polling() -> None:
    sequences = Sequences()
    sequences.values["dev-a"] = 3
    watch = DesiredWatch(sequences, check_s=0.05)
    waiting = asyncio.create_task(watch.wait("dev-a", 3, 10))
    other = asyncio.create_task(watch.wait("dev-b", 0, 0.3))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    sequences.values["dev-a"] = 4
    await asyncio.wait_for(waiting, 5)
    await other  # timed out, nothing changed for it
    assert watch.waiting == 0 and sequences.calls >= 2
    calls = sequences.calls
    await asyncio.sleep(0.2)
    assert sequences.calls == calls  # nobody waits: no more queries


@pytest.mark.anyio
async def test_long_poll_answers_204_200_and_304(fleet: Fleet) -> None:
    counter = fleet.release("1")
    device = fleet.enroll()
    desired = fleet.devices.desired

    assert (await desired.poll(device.id, None, 0)).status == 204
    started = time.monotonic()
    assert (await desired.poll(device.id, None, 0.3)).status == 204
    assert time.monotonic() - started >= 0.25
    fleet.devices.director.assign(device.id, "tiny", "alice", release=counter)
    answer = await desired.poll(device.id, None, 0)
    assert (answer.status, answer.etag) == (200, '"1"') and answer.body
    unchanged = await desired.poll(device.id, '"1"', 0.2)
    assert (unchanged.status, unchanged.etag, unchanged.body) == (304, '"1"', b"")
    assert (await desired.poll(device.id, 'W/"0", "1"', 0)).status == 304
    assert (await desired.poll(device.id, '"0"', 0)).status == 200

    async def assign_soon() -> None:
        await asyncio.sleep(0.2)
        await asyncio.to_thread(
            fleet.devices.director.assign, device.id, "tiny", "alice", release=counter
        )

    started = time.monotonic()
    changed, _ = await asyncio.gather(desired.poll(device.id, '"1"', 20), assign_soon())
    assert (changed.status, changed.etag) == (200, '"2"')
    assert time.monotonic() - started < 5  # woken by the assignment, not the timeout
