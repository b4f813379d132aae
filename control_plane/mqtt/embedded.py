"""The zero-setup MQTT broker: amqtt, inside the control-plane process.

Theory of operation: with no ``mqtt.url`` and ``mqtt.embedded`` on (the
default), :func:`prepare_embedded` turns the settings into those of a normal
MQTT deployment whose broker happens to live in this process:

* the bridge connects to ``mqtt://<loopback or bind address>:<port>`` as
  ``mqtt.username`` with a random secret generated for this process (never
  written anywhere), speaking MQTT 3.1.1 with plain subscriptions, which is
  all amqtt offers;
* devices are told ``mqtt.device_url`` or, by default,
  ``mqtt://<bind address or host name>:<port>`` at enrollment;
* no Mosquitto password file is kept: the broker checks device passwords
  against the database directly (:mod:`._embedded_policy`).

:class:`EmbeddedBroker` runs amqtt on an event loop of its own in a daemon
thread, so neither the web server's loop nor a slow client can stall the
other. The app's lifespan starts it before the bridge and stops it after.
:mod:`._amqtt_broker` corrects two amqtt habits that would bypass the ACL.

One process only: a second process serving the same data directory would
find the port taken, or worse (port 0) run a second, disjoint broker. So the
broker holds an exclusive ``flock`` on ``<data_dir>/mqtt/embedded-broker.lock``
while it runs and refuses to start without it; ``fleetctl serve`` runs one
worker when the embedded broker is on.

What lives only in memory: amqtt keeps retained messages, persistent
sessions and the messages queued for offline sessions in the process. A
restart of the control plane therefore loses them, which the protocol
tolerates: the bridge republishes every assignment the broker has not
acknowledged, each agent fetches its desired state over HTTP after every
(re)connect, and agents keep reports in their durable outbox until the
broker acknowledges them, sending again what was lost in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from control_plane.config import Settings
from control_plane.devices.credentials import is_device_username
from control_plane.errors import ControlPlaneError
from control_plane.mqtt._embedded_policy import BrokerPolicy, Credentials
from control_plane.store import Store

log = logging.getLogger("edgefleet.mqtt")
_PLUGINS = "control_plane.mqtt._amqtt_plugins"
_WILDCARD_BINDS = ("0.0.0.0", "::", "")  # noqa: S104 - names, not a bind
_DISCONNECT_TRIES = 40
_DISCONNECT_RETRY_S = 0.05


class EmbeddedBrokerError(ControlPlaneError):
    """The embedded broker could not start (port taken, another process runs it)."""

    code = "embedded_broker"


def _url(host: str, port: int) -> str:
    return f"mqtt://[{host}]:{port}" if ":" in host else f"mqtt://{host}:{port}"


@dataclass(frozen=True)
class EmbeddedPlan:
    """Where the embedded broker listens and who its control-plane user is."""

    bind_host: str
    port: int
    device_url: str
    bridge_username: str
    bridge_password: SecretStr
    state_dir: Path

    @property
    def bridge_url(self) -> str:
        wildcard = self.bind_host in _WILDCARD_BINDS
        host = ("::1" if self.bind_host == "::" else "127.0.0.1") if wildcard else self.bind_host
        return _url(host, self.port)

    @property
    def bind(self) -> str:
        host = self.bind_host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def prepare_embedded(settings: Settings) -> tuple[Settings, EmbeddedBroker | None]:
    """The settings to run with, and the broker to start (``None``: not embedded).

    Raises:
        EmbeddedBrokerError: the configured control-plane username is a device's.
    """
    mqtt = settings.mqtt
    if not mqtt.runs_embedded:
        return settings, None
    if is_device_username(mqtt.username):
        raise EmbeddedBrokerError(f"mqtt.username {mqtt.username!r} is reserved for devices")
    host = mqtt.embedded_bind
    port = mqtt.embedded_port or _free_port(host)
    advertised = socket.gethostname() if host in _WILDCARD_BINDS else host
    plan = EmbeddedPlan(
        bind_host=host,
        port=port,
        device_url=mqtt.device_url or _url(advertised, port),
        bridge_username=mqtt.username,
        bridge_password=SecretStr(secrets.token_urlsafe(32)),
        state_dir=settings.data_dir / "mqtt",
    )
    effective = mqtt.model_copy(
        update={
            "url": plan.bridge_url,
            "device_url": plan.device_url,
            "password": plan.bridge_password,
            "password_file": None,
            "broker_pid_file": None,
            "protocol": "3.1.1",
            "shared_group": "",
        }
    )
    return settings.model_copy(update={"mqtt": effective}), EmbeddedBroker(plan)


def device_hash_lookup(store: Store) -> Callable[[str], str | None]:
    """``device_id -> stored $7$ hash`` for active devices, ``None`` otherwise."""

    def lookup(device_id: str) -> str | None:
        record = store.get_device(device_id)
        if record is None or record.decommissioned_at is not None:
            return None
        return record.mqtt_password_hash

    return lookup


class EmbeddedBroker:
    def __init__(self, plan: EmbeddedPlan) -> None:
        self.plan = plan
        self._lock_fd = -1
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None  # a GuardedBroker; amqtt is imported only when it runs
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    def start(self, store: Store, timeout_s: float = 30.0) -> None:
        """Listen; return once clients can connect.

        Raises:
            EmbeddedBrokerError: another process runs it, or the address is taken.
        """
        self._claim()
        credentials = Credentials(
            self.plan.bridge_username, self.plan.bridge_password, device_hash_lookup(store)
        )
        self._thread = threading.Thread(
            target=self._run, args=(credentials,), name="mqtt-embedded-broker", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout_s):
            self._failure = TimeoutError(f"not listening after {timeout_s:g} s")
        if self._failure is not None:
            self.stop()
            raise EmbeddedBrokerError(
                f"the embedded MQTT broker cannot listen on {self.plan.bind}: {self._failure}; "
                "set mqtt.embedded_port, or mqtt.url for an external broker"
            )
        log.info(
            "embedded MQTT broker (amqtt) listening on %s; devices are told %s",
            self.plan.bind,
            self.plan.device_url,
        )

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close every connection and the listener; idempotent."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = -1

    def disconnect(self, device_id: str) -> None:
        """Drop a decommissioned device's connection now (its password no longer works)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(self._disconnect(device_id), loop)

    # -- the broker's thread ---------------------------------------------------------------

    def _claim(self) -> None:
        self.plan.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.plan.state_dir / "embedded-broker.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EmbeddedBrokerError(
                "another process serving this data directory runs the embedded MQTT broker; "
                "run one worker (fleetctl serve --workers 1), or set mqtt.url for an "
                "external broker to run several"
            ) from None
        self._lock_fd = fd

    def _config(self, credentials: Credentials) -> Any:
        from amqtt.contexts import (  # type: ignore[import-untyped]  # noqa: PLC0415
            BrokerConfig,
            ListenerConfig,
            ListenerType,
        )

        policy = BrokerPolicy(self.plan.bridge_username)
        listener = ListenerConfig(type=ListenerType.TCP, bind=self.plan.bind)
        return BrokerConfig(
            listeners={"default": listener},
            plugins={
                f"{_PLUGINS}.DeviceAuthPlugin": {"credentials": credentials, "policy": policy},
                f"{_PLUGINS}.TopicAclPlugin": {"policy": policy},
            },
        )

    def _run(self, credentials: Credentials) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(credentials))
        except BaseException as exc:  # reported by start(), or logged below once running
            if not self._ready.is_set():
                self._failure = exc
                self._ready.set()
            else:
                log.exception("the embedded MQTT broker stopped")
        finally:
            loop.run_until_complete(_cancel_the_rest())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self, credentials: Credentials) -> None:
        from control_plane.mqtt._amqtt_broker import GuardedBroker  # noqa: PLC0415

        self._stop = asyncio.Event()
        broker = GuardedBroker(self._config(credentials), loop=asyncio.get_running_loop())
        try:
            await broker.start()
        except Exception as exc:
            self._failure = exc.__cause__ or exc
            self._ready.set()
            return
        self._broker = broker
        self._ready.set()
        await self._stop.wait()
        await broker.shutdown()
        log.info("embedded MQTT broker stopped")

    async def _disconnect(self, device_id: str) -> None:
        broker = self._broker
        for attempt in range(_DISCONNECT_TRIES):
            entry = None if broker is None else broker.sessions.get(device_id)
            if entry is None:
                return
            session, handler = entry
            if session.username != device_id or not session.transitions.is_connected():
                return
            if attempt == 0:
                log.info("embedded broker disconnects decommissioned device %s", device_id)
            # As for a dropped connection: the broker publishes the device's will
            # (offline). A connection still being set up misses this, so look again.
            await handler.handle_connection_closed()
            await asyncio.sleep(_DISCONNECT_RETRY_S)
        log.warning("embedded broker could not disconnect device %s", device_id)


async def _cancel_the_rest() -> None:
    """End the connection handlers amqtt leaves waiting after shutdown, as ``asyncio.run`` does."""
    current = asyncio.current_task()
    rest = [task for task in asyncio.all_tasks() if task is not current]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


__all__ = [
    "EmbeddedBroker",
    "EmbeddedBrokerError",
    "EmbeddedPlan",
    "device_hash_lookup",
    "prepare_embedded",
]
