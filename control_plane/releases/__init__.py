"""Releases: signing validated versions and revoking bad ones."""
