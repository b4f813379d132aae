"""HTTP routes, one module per capability; each exposes ``router``."""
