"""The broker ACL, derived from the protocol's topics.

Theory of operation: Mosquitto's ACL file is static and keyed on the username
(``%u``), which for a device is its id. :func:`render_acl` produces the file
shipped as ``packaging/mosquitto/acl`` from :mod:`fleetcore.protocol` (a test
keeps the two identical), and :func:`device_may` answers what that file
allows a device, for tests and for operators' tools.

Invariants: a device reads only ``…/<its id>/desired`` and writes only its own
channels listed in :data:`fleetcore.protocol.DEVICE_PUBLISHES`; nothing is
keyed on the client id, which a client chooses freely.
"""

from __future__ import annotations

from typing import Literal

from fleetcore.errors import ProtocolError
from fleetcore.protocol import DEVICE_PUBLISHES, TOPIC_ROOT, Channel, parse_topic

Access = Literal["read", "write"]

HEADER = """\
# edgefleet broker ACL: static, keyed on the username (%u), never the client id.
#
# A device's username is its device id, so a device can read only its own
# desired state and write only its own reports. Device ids never contain
# '+', '#' or '/', so %u cannot widen a pattern (fleetcore.protocol.DEVICE_ID).
# Generated from the protocol's topics: control_plane/mqtt/acl.py renders this
# file and a unit test keeps the two identical.
"""


def device_rules() -> list[tuple[Access, Channel]]:
    """What every device may do on its own subtree."""
    return [("read", Channel.DESIRED), *(("write", channel) for channel in DEVICE_PUBLISHES)]


def render_acl(control_plane_user: str = "control-plane") -> str:
    patterns = "".join(
        f"pattern {access} {TOPIC_ROOT}/%u/{channel.value}\n" for access, channel in device_rules()
    )
    root = TOPIC_ROOT.split("/", 2)
    return (
        f"{HEADER}\n{patterns}\n"
        "# The control plane publishes desired states and consumes every report.\n"
        f"user {control_plane_user}\n"
        f"topic readwrite {root[0]}/{root[1]}/#\n"
    )


def device_may(device_id: str, topic: str, access: Access) -> bool:
    """Whether the ACL lets the device ``device_id`` ``access`` the (non-wildcard) ``topic``."""
    try:
        owner, channel = parse_topic(topic)
    except ProtocolError:
        return False
    return owner == device_id and (access, channel) in device_rules()


__all__ = ["Access", "device_may", "device_rules", "render_acl"]
