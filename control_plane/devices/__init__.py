"""Enrolled devices: identity, credentials, assignments, desired state and reports.

One room per capability:

* :mod:`.credentials` - device ids, device tokens and MQTT passwords;
* :mod:`.enroll` - the signed enrollment request and :class:`EnrollmentService`;
* :mod:`.auth` - ``Bearer efd_…`` authentication;
* :mod:`.broker` - keeping the broker's password file in sync;
* :mod:`.matching` - can a device run a release (pure);
* :mod:`.director` - signing assignments, renewing them, the desired state;
* :mod:`.desired` - the HTTP long-poll;
* :mod:`.ingest` - status reports and presence, from HTTP and MQTT;
* :mod:`.service` - listing, labels, decommissioning.
"""

from control_plane.devices.auth import DeviceAuth, DeviceCaller
from control_plane.devices.broker import BrokerAccounts
from control_plane.devices.desired import DesiredService, DesiredWatch
from control_plane.devices.director import Director
from control_plane.devices.enroll import EnrollmentService
from control_plane.devices.ingest import ReportIngest
from control_plane.devices.service import DeviceService

__all__ = [
    "BrokerAccounts",
    "DesiredService",
    "DesiredWatch",
    "DeviceAuth",
    "DeviceCaller",
    "DeviceService",
    "Director",
    "EnrollmentService",
    "ReportIngest",
]
