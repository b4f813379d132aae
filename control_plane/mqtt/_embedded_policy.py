"""Who may connect to the embedded broker, and what each client may touch.

Theory of operation: the embedded broker (:mod:`.embedded`) enforces the same
rules as the Mosquitto deployment, decided here without any broker code so
they can be tested alone:

* :class:`Credentials` checks a username and password. A device's password is
  checked against the ``$7$`` hash stored at enrollment (the very hash the
  Mosquitto password file holds) and only while the device is active; the
  control plane's own user against the secret the process generated for its
  bridge. There is no anonymous access and no default password.
* :class:`BrokerPolicy` is the ACL of :mod:`.acl` (``pattern`` rules on the
  username): a device publishes only on its own report channels, subscribes
  to and receives only its own ``desired`` topic; the control plane's user
  may do anything under ``edgefleet/v1/``. It also refuses a connection whose
  last will names a topic the user may not publish on (the broker publishes
  a will without asking the ACL), and a device whose client id is not its
  username (a persistent session is found by client id, so another id could
  take over someone else's session and its queued messages).

Invariants: every question without a clear yes is a no (unknown user, empty
username or password, a lookup that failed); secrets are compared in
constant time and never logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr

from control_plane.devices.credentials import is_device_username
from control_plane.mqtt.acl import device_may
from control_plane.mqtt.passwords import verify_password
from fleetcore.protocol import TOPIC_ROOT

Action = Literal["publish", "subscribe", "receive"]
#: Everything the control plane's user may touch lies under this prefix.
BRIDGE_PREFIX = "/".join(TOPIC_ROOT.split("/")[:2]) + "/"


@dataclass(frozen=True)
class BrokerPolicy:
    """The ACL: ``bridge_username`` is the control plane's own broker user."""

    bridge_username: str

    def may(self, username: str | None, topic: str, action: Action) -> bool:
        """Whether ``username`` may ``action`` ``topic`` (a topic filter for subscribe)."""
        if not username:
            return False
        if username == self.bridge_username:
            return topic.startswith(BRIDGE_PREFIX)
        if not is_device_username(username):
            return False
        return device_may(username, topic, "write" if action == "publish" else "read")

    def connect_refusal(
        self, username: str | None, client_id: str | None, will_topic: str | None
    ) -> str | None:
        """Why a CONNECT is refused before its password is checked; ``None`` if it may go on."""
        if not username:
            return "anonymous clients are not allowed"
        if username not in (self.bridge_username, client_id):
            return "a device's client id must be its device id"
        if will_topic is not None and not self.may(username, will_topic, "publish"):
            return "the last will names a topic this client may not publish on"
        return None


class Credentials:
    """Checks passwords: the bridge's secret, or a device's stored hash.

    ``device_hash(device_id)`` returns the stored ``$7$`` hash of an active
    device and ``None`` for an unknown or decommissioned one; it may block
    (a database read), so the broker calls :meth:`check` off its event loop.
    """

    def __init__(
        self,
        bridge_username: str,
        bridge_password: SecretStr,
        device_hash: Callable[[str], str | None],
    ) -> None:
        self.bridge_username = bridge_username
        self._bridge_password = bridge_password
        self._device_hash = device_hash

    def __repr__(self) -> str:  # never show the secret
        return f"Credentials(bridge_username={self.bridge_username!r})"

    def check(self, username: str | None, password: str | None) -> bool:
        if not username or not password:
            return False
        if username == self.bridge_username:
            expected = self._bridge_password.get_secret_value().encode("utf-8")
            return hmac.compare_digest(password.encode("utf-8"), expected)
        if not is_device_username(username):
            return False
        stored = self._device_hash(username)
        return stored is not None and verify_password(password, stored)


__all__ = ["BRIDGE_PREFIX", "Action", "BrokerPolicy", "Credentials"]
