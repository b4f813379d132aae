"""sd_notify and the watchdog variables, against real AF_UNIX datagram sockets."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import _systemd


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket on the filesystem and its NOTIFY_SOCKET value."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        yield sock, str(path)


@pytest.fixture
def abstract_receiver() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket in the abstract namespace and its '@name' NOTIFY_SOCKET value."""
    name = f"edgefleet-test-{secrets.token_hex(8)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        yield sock, "@" + name


def test_notify_sends_one_datagram_to_a_path_socket(
    receiver: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, address = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert _systemd.notify(_systemd.READY)
    assert _systemd.notify("STATUS=serving sensor@3\nWATCHDOG=1")
    assert sock.recv(4096) == b"READY=1"
    assert sock.recv(4096) == b"STATUS=serving sensor@3\nWATCHDOG=1"


def test_notify_reaches_the_abstract_namespace(
    abstract_receiver: tuple[socket.socket, str],
) -> None:
    sock, address = abstract_receiver
    assert _systemd.notify(_systemd.STOPPING, environ={"NOTIFY_SOCKET": address})
    assert sock.recv(4096) == b"STOPPING=1"


@pytest.mark.parametrize("value", [None, "", "vsock:2:1234", "relative/path"])
def test_notify_is_false_outside_systemd(
    value: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    else:
        monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert _systemd.notify(_systemd.READY) is False


def test_notify_is_false_when_nobody_listens(tmp_path: Path) -> None:
    # The socket file exists but its receiver is gone: connect is refused.
    path = tmp_path / "gone.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
    assert _systemd.notify(_systemd.READY, environ={"NOTIFY_SOCKET": str(path)}) is False
    missing = tmp_path / "missing.sock"
    assert _systemd.notify(_systemd.READY, environ={"NOTIFY_SOCKET": str(missing)}) is False


def test_watchdog_interval_for_this_process() -> None:
    env = {"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}
    assert _systemd.watchdog_interval_s(environ=env) == 60.0
    # WATCHDOG_PID is optional: without it the interval applies to us.
    assert _systemd.watchdog_interval_s(environ={"WATCHDOG_USEC": "1500000"}) == 1.5


def test_watchdog_interval_from_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert _systemd.watchdog_interval_s() == 30.0


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "-5"},
        {"WATCHDOG_USEC": "soon"},
        {"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"},  # meant for another process
        {"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "x"},
    ],
)
def test_no_watchdog(env: dict[str, str]) -> None:
    if env.get("WATCHDOG_PID") == "1" and os.getpid() == 1:
        pytest.skip("this test process is PID 1")
    assert _systemd.watchdog_interval_s(environ=env) is None
