"""Operator-side signing: key directories, root rotation, release manifests."""

from control_plane.signing.keyring import KeyDir, KeyringError
from control_plane.signing.manifests import ReleaseRequest, build_manifest, sign_manifest
from control_plane.signing.roots import RoleKeys, build_root, rotate
from control_plane.signing.verify import VerifyReport, verify_release_files

__all__ = [
    "KeyDir",
    "KeyringError",
    "ReleaseRequest",
    "RoleKeys",
    "VerifyReport",
    "build_manifest",
    "build_root",
    "rotate",
    "sign_manifest",
    "verify_release_files",
]
