"""The edgefleet control plane and the operator CLI ``fleetctl``."""
