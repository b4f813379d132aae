"""The embedded broker's decisions: credentials, client ids, last wills and the ACL.

The ACL must say exactly what the Mosquitto ``pattern`` rules say
(:func:`control_plane.mqtt.acl.device_may`); the tables below name each case.
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from control_plane.mqtt._embedded_policy import BrokerPolicy, Credentials
from control_plane.mqtt.passwords import hash_password
from fleetcore.protocol import DEVICE_PUBLISHES, Channel, topic

A = "dev-" + "a" * 20
B = "dev-" + "b" * 20
GONE = "dev-" + "g" * 20
BRIDGE = "control-plane"
POLICY = BrokerPolicy(BRIDGE)


def make_credentials(calls: list[str] | None = None) -> Credentials:
    hashes = {A: hash_password("pw-a"), B: hash_password("pw-b")}

    def lookup(device_id: str) -> str | None:
        if calls is not None:
            calls.append(device_id)
        return hashes.get(device_id)  # GONE: decommissioned, so no hash

    return Credentials(BRIDGE, SecretStr("bridge-secret"), lookup)


@pytest.mark.parametrize(
    ("username", "password", "ok"),
    [
        (A, "pw-a", True),
        (B, "pw-b", True),
        (BRIDGE, "bridge-secret", True),
        (A, "pw-b", False),  # another device's password
        (A, "", False),
        (A, None, False),
        (None, "pw-a", False),  # anonymous
        ("", "pw-a", False),
        (GONE, "pw-a", False),  # decommissioned or unknown
        (BRIDGE, "bridge-secreT", False),
        (BRIDGE, "pw-a", False),
        ("admin", "admin", False),  # no default accounts
        ("monitoring", "bridge-secret", False),
    ],
)
def test_credentials(username: str | None, password: str | None, ok: bool) -> None:
    assert make_credentials().check(username, password) is ok


def test_only_device_usernames_reach_the_database() -> None:
    calls: list[str] = []
    credentials = make_credentials(calls)
    credentials.check("admin", "x")
    credentials.check(BRIDGE, "bridge-secret")
    credentials.check(A, "pw-a")
    assert calls == [A]
    assert "bridge-secret" not in repr(credentials)


@pytest.mark.parametrize(
    ("username", "client_id", "will", "refused"),
    [
        (A, A, topic(A, Channel.PRESENCE), False),
        (A, A, None, False),
        (BRIDGE, "edgefleet-cp-host-0", None, False),
        (None, A, None, True),  # anonymous
        ("", A, None, True),
        (A, B, None, True),  # another device's session
        (A, "edgefleet-cp-host-0", None, True),  # the bridge's session
        (A, "", None, True),
        (A, A, topic(B, Channel.PRESENCE), True),  # a will in another device's name
        (A, A, topic(A, Channel.DESIRED), True),  # a will on its own desired state
        (A, A, "edgefleet/v1/devices/+/presence", True),
    ],
)
def test_connect_refusals(
    username: str | None, client_id: str, will: str | None, refused: bool
) -> None:
    assert (POLICY.connect_refusal(username, client_id, will) is not None) is refused


def test_devices_publish_only_their_own_reports() -> None:
    for channel in DEVICE_PUBLISHES:
        assert POLICY.may(A, topic(A, channel), "publish")
        assert not POLICY.may(A, topic(B, channel), "publish")
    assert not POLICY.may(A, topic(A, Channel.DESIRED), "publish")
    assert not POLICY.may(A, topic(B, Channel.DESIRED), "publish")
    assert not POLICY.may(A, "edgefleet/v1/devices/dev-aaaaaaaaaaaaaaaaaaaa/extra", "publish")
    assert not POLICY.may(A, "elsewhere", "publish")


@pytest.mark.parametrize("action", ["subscribe", "receive"])
def test_devices_read_only_their_own_desired_state(action: str) -> None:
    assert POLICY.may(A, topic(A, Channel.DESIRED), action)  # type: ignore[arg-type]
    refused = [
        topic(B, Channel.DESIRED),
        topic(A, Channel.STATUS),
        topic(B, Channel.STATUS),
        "edgefleet/v1/devices/+/desired",
        "edgefleet/v1/devices/+/status",
        "edgefleet/v1/#",
        "#",
        "$SYS/#",
        f"edgefleet/v1/devices/{A}/#",
    ]
    for name in refused:
        assert not POLICY.may(A, name, action), name  # type: ignore[arg-type]


def test_the_bridge_may_do_anything_under_the_protocol_root_only() -> None:
    for action in ("publish", "subscribe", "receive"):
        assert POLICY.may(BRIDGE, topic(A, Channel.DESIRED), action)  # type: ignore[arg-type]
        assert POLICY.may(BRIDGE, "edgefleet/v1/devices/+/status", action)  # type: ignore[arg-type]
        assert not POLICY.may(BRIDGE, "#", action)  # type: ignore[arg-type]
        assert not POLICY.may(BRIDGE, "$SYS/broker/uptime", action)  # type: ignore[arg-type]
        assert not POLICY.may(BRIDGE, "edgefleet/v2/x", action)  # type: ignore[arg-type]


def test_unknown_and_anonymous_users_may_do_nothing() -> None:
    for user in (None, "", "admin", "monitoring"):
        for action in ("publish", "subscribe", "receive"):
            assert not POLICY.may(user, topic(A, Channel.STATUS), action)  # type: ignore[arg-type]
