"""Artifact storage: immutable bytes addressed by their SHA-256.

:class:`ArtifactStore` is the port; :class:`FilesystemArtifactStore` the
embedded adapter (``data_dir/artifacts``).
"""

from control_plane.artifacts.filesystem import FilesystemArtifactStore
from control_plane.artifacts.port import ArtifactStore, StoredBlob

__all__ = ["ArtifactStore", "FilesystemArtifactStore", "StoredBlob"]
