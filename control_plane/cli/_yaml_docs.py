"""YAML documents of one kind, from a file or a GitOps directory.

Theory of operation: ``fleetctl apply -f PATH`` takes one YAML file or a
directory of ``*.yaml``/``*.yml`` files (read in name order), each holding any
number of documents. A reader picks the documents of its own kind and skips
the rest, because rollouts, drift policies and other kinds share a directory.
Invariant: every document returned is a mapping with a ``metadata.name``;
invalid YAML or a nameless document of the kind is a ``typer.BadParameter``
that names the file (and the document's position in it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml


def _load(path: Path, kind: str, kind_by_default: bool) -> list[dict[str, Any]]:
    try:
        loaded = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except yaml.YAMLError as exc:
        raise typer.BadParameter(f"{path}: not valid YAML ({exc})") from exc
    found = []
    for index, document in enumerate(loaded):
        if not isinstance(document, dict):
            continue
        if document.get("kind", kind if kind_by_default else None) != kind:
            continue  # other kinds may share a GitOps directory
        if not isinstance(document.get("metadata"), dict) or "name" not in document["metadata"]:
            raise typer.BadParameter(f"{path}: document {index + 1} has no metadata.name")
        found.append(document)
    return found


def kind_documents(path: Path, kind: str, *, kind_by_default: bool = False) -> list[dict[str, Any]]:
    """``kind`` documents in a YAML file, or in every ``*.yaml``/``*.yml`` of a directory.

    With ``kind_by_default``, a document without a ``kind`` counts as ``kind``.
    """
    if path.is_dir():
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        return [d for file in files for d in _load(file, kind, kind_by_default)]
    return _load(path, kind, kind_by_default)


__all__ = ["kind_documents"]
