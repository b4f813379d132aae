"""Mosquitto ``$7$`` hashes, the password file writer, the ACL and the worker slots.

The hashes are checked three ways: against Mosquitto's own ``mosquitto_passwd``
(same salt and iterations give the same hash), by a real broker accepting a
client whose password was hashed here, and by round trips.
"""

from __future__ import annotations

import base64
import stat
import subprocess
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from control_plane.config import MqttSettings
from control_plane.devices.broker import BrokerAccounts
from control_plane.devices.credentials import DEVICE_ID, issue, new_device_id
from control_plane.mqtt._slots import claim_slot
from control_plane.mqtt.acl import device_may, device_rules, render_acl
from control_plane.mqtt.passwd_file import BrokerSyncError, signal_reload, write_password_file
from control_plane.mqtt.passwords import Account, hash_password, parse_lines, verify_password
from fleetcore.protocol import DEVICE_ID as PROTOCOL_DEVICE_ID
from fleetcore.protocol import DEVICE_PUBLISHES, Channel, topic
from tests.support.mosquitto import ACL, running_broker

MOSQUITTO_PASSWD = Path("/usr/bin/mosquitto_passwd")
A = "dev-" + "a" * 20
B = "dev-" + "b" * 20


# -- hashes ---------------------------------------------------------------------------------


def test_hashes_have_mosquittos_shape_and_verify() -> None:
    encoded = hash_password("s3cret-password")

    prefix, iterations, salt, digest = encoded.split("$")[1:]
    assert (prefix, iterations) == ("7", "101")
    assert len(base64.b64decode(salt)) == 12 and len(base64.b64decode(digest)) == 64
    assert verify_password("s3cret-password", encoded)
    assert not verify_password("s3cret-passworD", encoded)
    assert not verify_password("s3cret-password", "$6$x$y")
    assert not verify_password("s3cret-password", "$7$101$!!!$!!!")
    assert hash_password("x") != hash_password("x")  # a fresh salt each time


def test_the_same_salt_gives_mosquitto_passwds_hash(tmp_path: Path) -> None:
    if not MOSQUITTO_PASSWD.is_file():
        pytest.fail(f"{MOSQUITTO_PASSWD} is missing: install the Debian package 'mosquitto'")
    passwd = tmp_path / "passwd"
    passwd.touch(mode=0o600)
    subprocess.run(
        [str(MOSQUITTO_PASSWD), "-b", str(passwd), "alice", "pa55:word"], check=True, timeout=10
    )
    (theirs,) = parse_lines(passwd.read_text())
    salt = base64.b64decode(theirs.password_hash.split("$")[3])

    assert theirs.username == "alice"
    assert hash_password("pa55:word", salt=salt) == theirs.password_hash
    assert verify_password("pa55:word", theirs.password_hash)


def test_a_real_broker_accepts_hashes_made_here(tmp_path: Path) -> None:
    with running_broker(tmp_path, {A: "device-password"}) as broker:
        good = broker.probe(A, "device-password")
        bad = broker.probe(A, "another-password")
        try:
            assert good.connect() == "Success"
            assert bad.connect() != "Success"
        finally:
            good.close()
            bad.close()


def test_account_lines_refuse_what_mosquitto_would_misread() -> None:
    assert Account(A, hash_password("x")).line().startswith(f"{A}:$7$101$")
    with pytest.raises(ValueError, match="username"):
        Account("a:b", hash_password("x")).line()
    with pytest.raises(ValueError, match=r"\$7\$"):
        Account(A, "plain").line()
    assert parse_lines("# comment\n\nalice:$7$1$a$b\nbroken line\n") == [
        Account("alice", "$7$1$a$b")
    ]


def test_issued_credentials_are_fresh_and_fit_the_protocol() -> None:
    first, second = issue(), issue()

    assert DEVICE_ID.fullmatch(first.device_id) and PROTOCOL_DEVICE_ID.fullmatch(first.device_id)
    assert first.device_id != second.device_id and first.token != second.token
    assert first.token.startswith("efd_") and len(first.token) == 47
    assert verify_password(first.mqtt_password, first.mqtt_password_hash)
    assert first.mqtt_password not in repr(first) and first.token not in repr(first)
    assert len({new_device_id() for _ in range(1000)}) == 1000


# -- the password file --------------------------------------------------------------------------


def test_the_writer_keeps_foreign_users_and_replaces_managed_ones(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text(f"monitor:{hash_password('m')}\n{B}:{hash_password('old')}\n")
    path.chmod(0o640)
    wanted = [Account("control-plane", hash_password("cp")), Account(A, hash_password("a"))]

    changed = write_password_file(path, lambda _: wanted, manages=lambda u: u.startswith("dev-"))
    again = write_password_file(path, lambda _: wanted, manages=lambda u: u.startswith("dev-"))

    names = [a.username for a in parse_lines(path.read_text())]
    assert changed and not again
    assert names == ["control-plane", A, "monitor"]  # B is managed and no longer wanted
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == [".passwd.lock", "passwd"]


def test_a_new_file_is_created_group_readable(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    assert write_password_file(path, lambda _: [Account(A, hash_password("a"))], manages=bool)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_write_failures_become_broker_sync_errors(tmp_path: Path) -> None:
    with pytest.raises(BrokerSyncError, match="password file"):
        write_password_file(tmp_path / "missing" / "passwd", lambda _: [], manages=bool)


def test_signal_reload_makes_a_real_broker_reload(tmp_path: Path) -> None:
    with running_broker(tmp_path / "broker") as broker:
        assert "Reloading config" not in broker.log()
        assert signal_reload(broker.pid_file) == broker.process.pid  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while "Reloading config" not in broker.log():
            assert time.monotonic() < deadline, "the broker did not reload"
            time.sleep(0.05)
    (tmp_path / "pid").write_text("not a pid\n")
    with pytest.raises(BrokerSyncError, match="no process id"):
        signal_reload(tmp_path / "pid")
    with pytest.raises(BrokerSyncError, match="pid file"):
        signal_reload(tmp_path / "absent.pid")


def test_broker_accounts_keep_a_matching_control_plane_hash(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    devices = [(A, hash_password("a"))]
    settings = MqttSettings(password=SecretStr("cp-password-1"), password_file=path)
    accounts = BrokerAccounts(settings, lambda: devices)

    assert accounts.sync()
    first = path.read_text()
    assert not accounts.sync() and path.read_text() == first  # no new salt, no rewrite
    devices.append((B, hash_password("b")))
    assert accounts.sync() and B in path.read_text()

    rotated = BrokerAccounts(
        MqttSettings(password=SecretStr("cp-password-2"), password_file=path), lambda: devices
    )
    assert rotated.sync()
    (own, *_) = parse_lines(path.read_text())
    assert own.username == "control-plane" and verify_password("cp-password-2", own.password_hash)
    assert not BrokerAccounts(MqttSettings(), lambda: devices).sync()  # no file configured


# -- the ACL ------------------------------------------------------------------------------------


def test_the_shipped_acl_is_the_one_rendered_from_the_protocol() -> None:
    assert ACL.read_text() == render_acl("control-plane")


def test_a_device_may_read_its_desired_state_and_write_its_reports_only() -> None:
    assert device_may(A, topic(A, Channel.DESIRED), "read")
    assert not device_may(A, topic(A, Channel.DESIRED), "write")
    for channel in DEVICE_PUBLISHES:
        assert device_may(A, topic(A, channel), "write")
        assert not device_may(A, topic(A, channel), "read")
        assert not device_may(A, topic(B, channel), "write")
    assert not device_may(A, topic(B, Channel.DESIRED), "read")
    for foreign in ("edgefleet/v1/devices/+/desired", "edgefleet/v1/#", f"x/{A}/status", ""):
        assert not device_may(A, foreign, "read") and not device_may(A, foreign, "write")
    assert {c for _, c in device_rules()} == {Channel.DESIRED, *DEVICE_PUBLISHES}


# -- worker slots -------------------------------------------------------------------------------


def test_each_worker_takes_the_lowest_free_slot(tmp_path: Path) -> None:
    first, second = claim_slot(tmp_path), claim_slot(tmp_path)
    assert (first.index, second.index) == (0, 1)
    first.release()
    third = claim_slot(tmp_path)
    assert third.index == 0
    with pytest.raises(OSError, match="taken"):
        claim_slot(tmp_path, limit=2)
    second.release()
    third.release()


def test_the_test_broker_uses_the_shipped_policy(tmp_path: Path) -> None:
    with running_broker(tmp_path) as broker:
        config = broker.config_file.read_text()
        assert "allow_anonymous false" in config and "listener 1883" not in config
        anonymous = broker.probe("", "")
        try:
            assert anonymous.connect() != "Success"
        finally:
            anonymous.close()


def test_a_change_is_signalled_again_after_the_last_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGHUP that lands during a reload is lost in Mosquitto: every change is sent twice."""
    from control_plane.devices import broker as broker_module

    monkeypatch.setattr(broker_module, "RESIGNAL_S", 0.05)
    signalled: list[Path] = []
    monkeypatch.setattr(broker_module, "signal_reload", lambda pid: signalled.append(pid) or 1)
    devices = [(A, hash_password("a"))]
    settings = MqttSettings(
        password=SecretStr("cp-password-1"),
        password_file=tmp_path / "passwd",
        broker_pid_file=tmp_path / "broker.pid",
    )
    accounts = BrokerAccounts(settings, lambda: devices)
    assert accounts.sync()
    assert len(signalled) == 1
    deadline = time.monotonic() + 5
    while len(signalled) < 2:
        assert time.monotonic() < deadline, "the change was not signalled again"
        time.sleep(0.01)
    time.sleep(0.2)
    assert signalled == [tmp_path / "broker.pid"] * 2  # once more, not forever
    assert not accounts.sync()  # nothing changed: no signal at all
    time.sleep(0.2)
    assert len(signalled) == 2
