"""Rollout documents for the CLI: read YAML files (or a directory), or build one from flags."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from control_plane.cli._common import split_release
from control_plane.cli._yaml_docs import kind_documents

_COUNT = re.compile(r"(\d+)n")


def documents(path: Path) -> list[dict[str, Any]]:
    """Rollout documents in a YAML file, or in every ``*.yaml``/``*.yml`` of a directory."""
    return kind_documents(path, "Rollout", kind_by_default=True)


def _waves(text: str, soak: str, approval: list[int]) -> list[dict[str, Any]]:
    waves: list[dict[str, Any]] = []
    parts = [p.strip() for p in text.split(",") if p.strip()]
    for index, part in enumerate(parts):
        match = _COUNT.fullmatch(part)
        try:
            wave: dict[str, Any] = (
                {"count": int(match.group(1))} if match else {"percent": float(part.rstrip("%"))}
            )
        except ValueError:
            raise typer.BadParameter(
                f"--waves {text!r}: each wave is a percentage (25) or a count (10n)"
            ) from None
        wave["soak"] = soak
        if index + 1 in approval:  # waves count from 1 on the command line
            wave["approval"] = True
        waves.append(wave)
    return waves


def flags_document(
    *,
    name: str | None,
    release: str | None,
    selector: str | None,
    waves: str,
    stratify_by: str | None,
    rate: float | None,
    timeout: str,
    retries: int,
    max_unavailable: str | None,
    on_failure: str,
    soak: str,
    approval: list[int] | None,
    min_success: float,
    dry_run: bool,
) -> dict[str, Any]:
    """The rollout document that the flag form of ``create``/``plan`` describes."""
    if name is None or release is None:
        raise typer.BadParameter("give -f FILE, or at least --name and --release MODEL@VERSION")
    ref = split_release(release)
    spec: dict[str, Any] = {
        **ref,
        "waves": _waves(waves, soak, approval or []),
        "device_timeout": timeout,
        "retries": retries,
        "on_failure": on_failure,
        "dry_run": dry_run,
        "gates": {
            "install": {"min_success_ratio": min_success, "max_failure_ratio": 1 - min_success}
        },
    }
    if selector:
        spec["selector"] = selector
    if stratify_by:
        spec["stratify_by"] = stratify_by
    if rate is not None:
        spec["rate_per_minute"] = rate
    if max_unavailable is not None:
        spec["max_unavailable"] = (
            max_unavailable if max_unavailable.endswith("%") else int(max_unavailable)
        )
    return {"apiVersion": "edgefleet/v1", "kind": "Rollout", "metadata": {"name": name},
            "spec": spec}  # fmt: skip


__all__ = ["documents", "flags_document"]
