"""A real Mosquitto broker for tests, with edgefleet's broker policy, on a free port.

Theory of operation: :func:`running_broker` assembles a configuration from
``packaging/mosquitto/edgefleet.conf`` (the policy shipped to operators) plus
what a deployment adds: a listener on ``127.0.0.1:<free port>`` and the
password file, ACL file (``packaging/mosquitto/acl``), pid file, persistence
directory and log file, all in the test's directory. It starts
``/usr/sbin/mosquitto`` (the Debian package; ``./dev check`` installs it) and
waits until the broker accepts connections and has written its pid file.

:class:`Broker` can be restarted (same port, same persistence, so retained
messages and persistent sessions survive), reloaded (SIGHUP, waiting for the
broker to log it), and given extra users; a control plane that keeps the same
password file in sync leaves such users' lines alone.

:class:`Probe` is a paho client that records what happens to it (CONNACK,
SUBACK and PUBACK reason codes, messages, disconnects) for assertions.

The system's own broker on port 1883 is never used.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from control_plane.mqtt.passwd_file import write_password_file
from control_plane.mqtt.passwords import Account, hash_password
from tests.support.net import free_port

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "packaging" / "mosquitto" / "edgefleet.conf"
ACL = REPO / "packaging" / "mosquitto" / "acl"
BINARY_ENV = "EDGEFLEET_TEST_MOSQUITTO"
DEFAULT_BINARY = Path("/usr/sbin/mosquitto")
START_TIMEOUT_S = 15.0


def find_mosquitto() -> Path:
    """The broker binary; fails the test with how to install it when there is none."""
    override = os.environ.get(BINARY_ENV)
    candidates = [Path(override)] if override else [DEFAULT_BINARY]
    found = shutil.which("mosquitto")
    if found and not override:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        f"no Mosquitto broker at {', '.join(map(str, candidates))}: install the Debian "
        f"package 'mosquitto' (./dev check does) or set {BINARY_ENV}"
    )


@dataclass
class Broker:
    directory: Path
    port: int
    binary: Path
    process: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def password_file(self) -> Path:
        return self.directory / "passwd"

    @property
    def acl_file(self) -> Path:
        return self.directory / "acl"

    @property
    def pid_file(self) -> Path:
        return self.directory / "mosquitto.pid"

    @property
    def log_file(self) -> Path:
        return self.directory / "mosquitto.log"

    @property
    def config_file(self) -> Path:
        return self.directory / "mosquitto.conf"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def extra_lines(self) -> list[str]:
        """What this deployment logs and limits, after the policy and its own paths."""
        return ["log_type all", "connection_messages true"]

    def write_config(self) -> None:
        persistence = self.directory / "data"
        persistence.mkdir(exist_ok=True)
        lines = [
            POLICY.read_text(),
            "",
            "# -- deployment --",
            # As root, Mosquitto would switch to the 'mosquitto' user and lose
            # access to the test's directory.
            *(["user root"] if os.geteuid() == 0 else []),
            f"listener {self.port} {self.host}",
            f"password_file {self.password_file}",
            f"acl_file {self.acl_file}",
            f"pid_file {self.pid_file}",
            f"persistence_location {persistence}/",
            f"log_dest file {self.log_file}",
            *self.extra_lines(),
            "",
        ]
        self.config_file.write_text("\n".join(lines))

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            raise AssertionError("the broker is already running")
        self.pid_file.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [str(self.binary), "-c", str(self.config_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                raise AssertionError(f"mosquitto exited at start:\n{stderr}\n{self.log()}")
            if self.pid_file.exists() and self._accepts():
                return
            time.sleep(0.05)
        raise AssertionError(f"mosquitto did not start on port {self.port}:\n{self.log()}")

    def _accepts(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 0.5):
            return True
        return False

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()  # Mosquitto saves its persistence file on SIGTERM
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port; persistence keeps retained messages."""
        self.stop()
        self.start()

    def reload(self, timeout_s: float = 10.0) -> None:
        """SIGHUP, then wait until the broker logged that it reloaded."""
        assert self.process is not None and self.process.poll() is None
        before = self.log().count("Reloading config")
        os.kill(self.process.pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout_s
        while self.log().count("Reloading config") <= before:
            if time.monotonic() > deadline:
                raise AssertionError(f"mosquitto did not reload:\n{self.log()[-2000:]}")
            time.sleep(0.05)

    def add_user(self, username: str, password: str) -> None:
        """Add (or replace) a user in the password file and reload the broker."""
        write_password_file(
            self.password_file,
            lambda _current: [Account(username, hash_password(password))],
            manages=lambda name: name == username,
        )
        if self.process is not None:
            self.reload()

    def probe(self, username: str, password: str, **options: object) -> Probe:
        return Probe(self, username, password, **options)  # type: ignore[arg-type]


def start_broker(directory: Path, users: Mapping[str, str] | None = None) -> Broker:
    """Write the configuration, password and ACL files under ``directory`` and start."""
    directory.mkdir(parents=True, exist_ok=True)
    broker = Broker(directory, free_port(), find_mosquitto())
    broker.password_file.write_text(
        "".join(Account(u, hash_password(p)).line() for u, p in (users or {}).items())
    )
    broker.password_file.chmod(0o640)
    shutil.copyfile(ACL, broker.acl_file)
    broker.write_config()
    broker.start()
    return broker


@contextlib.contextmanager
def running_broker(directory: Path, users: Mapping[str, str] | None = None) -> Iterator[Broker]:
    broker = start_broker(directory, users)
    try:
        yield broker
    finally:
        broker.stop()


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool


@dataclass
class Probe:
    """A paho client that records its CONNACK, SUBACKs, PUBACKs and messages."""

    broker: Broker
    username: str
    password: str
    client_id: str = ""
    protocol: int = 5
    clean: bool = True
    will: tuple[str, bytes] | None = None
    timeout_s: float = 10.0
    messages: queue.Queue[Message] = field(default_factory=queue.Queue)
    connected: threading.Event = field(default_factory=threading.Event)
    disconnected: threading.Event = field(default_factory=threading.Event)
    connack: str | None = None
    _acks: dict[int, list[str]] = field(default_factory=dict)
    _acked: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        version = MQTTProtocolVersion.MQTTv5 if self.protocol == 5 else MQTTProtocolVersion.MQTTv311
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id or f"probe-{self.username}-{os.urandom(4).hex()}",
            protocol=version,
            reconnect_on_failure=False,
            clean_session=None if self.protocol == 5 else self.clean,
        )
        self.client.username_pw_set(self.username, self.password)
        if self.will is not None:
            self.client.will_set(self.will[0], self.will[1], qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish

    # callbacks (paho's network thread)
    def _on_connect(self, _c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        self.connack = str(rc)
        if not rc.is_failure:
            self.connected.set()
        else:
            self.disconnected.set()

    def _on_disconnect(self, *_args: object) -> None:
        self.connected.clear()
        self.disconnected.set()

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        self.messages.put(Message(message.topic, bytes(message.payload), bool(message.retain)))

    def _record(self, mid: int, codes: list[str]) -> None:
        with self._acked:
            self._acks[mid] = codes
            self._acked.notify_all()

    def _on_subscribe(
        self, _c: object, _u: object, mid: int, codes: list[ReasonCode], _p: object
    ) -> None:
        self._record(mid, [str(c) for c in codes])

    def _on_publish(
        self, _c: object, _u: object, mid: int, code: ReasonCode, _p: Properties | None
    ) -> None:
        self._record(mid, [str(code)])

    def _wait_ack(self, mid: int) -> list[str]:
        with self._acked:
            if not self._acked.wait_for(lambda: mid in self._acks, self.timeout_s):
                raise AssertionError(f"{self.username}: no acknowledgement for message {mid}")
            return self._acks.pop(mid)

    # actions
    def connect(self) -> str:
        """Connect and wait for the CONNACK; returns its reason (e.g. 'Success').

        With ``clean=False`` the session persists (MQTT 5: for an hour), so a
        reconnect with the same client id finds its subscriptions and queue.
        """
        self.disconnected.clear()
        options: dict[str, Any] = {}
        if self.protocol == 5:
            options["clean_start"] = self.clean
            if not self.clean:  # MQTT 5 ends a session at disconnect unless told otherwise
                properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                properties.SessionExpiryInterval = 3600
                options["properties"] = properties
        self.client.connect(self.broker.host, self.broker.port, keepalive=30, **options)
        self.client.loop_start()
        deadline = time.monotonic() + self.timeout_s
        while self.connack is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.connack is None:
            raise AssertionError(f"{self.username}: no CONNACK within {self.timeout_s} s")
        return self.connack

    def subscribe(self, topic: str, qos: int = 1) -> list[str]:
        _, mid = self.client.subscribe(topic, qos)
        assert mid is not None
        return self._wait_ack(mid)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> str:
        """Publish and wait for the PUBACK; returns its reason (MQTT 5 says 'Not authorized')."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        return self._wait_ack(info.mid)[0]

    def next_message(self, timeout_s: float | None = None) -> Message | None:
        try:
            return self.messages.get(timeout=self.timeout_s if timeout_s is None else timeout_s)
        except queue.Empty:
            return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()


__all__ = [
    "Broker",
    "Message",
    "Probe",
    "find_mosquitto",
    "free_port",
    "running_broker",
    "start_broker",
]
