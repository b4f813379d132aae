"""The control plane and its MQTT broker.

* :mod:`.passwords` - Mosquitto ``$7$`` password hashes (pure);
* :mod:`.passwd_file` - writing the password file atomically, signalling the broker;
* :mod:`.acl` - the broker ACL derived from the protocol's topics;
* :mod:`.bridge` - the connection that publishes desired states and consumes reports.

Nothing is imported here: the bridge depends on the device services, which
depend on the password helpers.
"""

__all__: list[str] = []
