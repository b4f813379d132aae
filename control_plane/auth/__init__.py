"""Operator tokens, roles and device enrollment tokens."""

from control_plane.auth.service import Actor, AuthService
from control_plane.auth.tokens import hash_token

__all__ = ["Actor", "AuthService", "hash_token"]
