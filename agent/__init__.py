"""The edgefleet device agent, ``fleet-agent``."""
