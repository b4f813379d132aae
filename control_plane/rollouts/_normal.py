"""The normalised form of a rollout spec: every default filled in, durations exact.

What :meth:`~control_plane.rollouts.spec.RolloutSpec.to_dict` returns and the
database stores; parsing it again gives an equal spec with the same digest.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from control_plane.rollouts.spec import Gates, RolloutSpec, Wave


def _exact(value: float) -> str:
    """``900.0`` -> ``900``: no exponent and no rounding, so the text parses back equal."""
    return f"{Decimal(repr(value)).normalize():f}"


def _gates_dict(gates: Gates) -> dict[str, Any]:
    health = gates.health
    return {
        "install": vars(gates.install).copy(),
        "health": None if health is None else vars(health).copy(),
        "quality": {"mode": gates.quality.mode.value},
        "inconclusive": {
            "timeout": f"{_exact(gates.inconclusive_timeout_s)}s",
            "then": gates.after_inconclusive.value,
        },
    }


def _wave_dict(wave: Wave) -> dict[str, Any]:
    out: dict[str, Any] = {"min_devices": wave.min_devices}
    if wave.percent is not None:
        out["percent"] = wave.percent
    if wave.count is not None:
        out["count"] = wave.count
    out["soak"] = f"{_exact(wave.soak_s)}s"
    out["approval"] = wave.approval
    if wave.gates is not None:
        out["gates"] = _gates_dict(wave.gates)
    return out


def spec_to_dict(spec: RolloutSpec) -> dict[str, Any]:
    unavailable: int | str | None = spec.max_unavailable
    if spec.max_unavailable_percent is not None:
        unavailable = f"{_exact(spec.max_unavailable_percent)}%"
    body: dict[str, Any] = {
        "model": spec.model,
        "selector": str(spec.selector),
        "waves": [_wave_dict(w) for w in spec.waves],
        "stratify_by": spec.stratify_by,
        "rate_per_minute": spec.rate_per_minute,
        "device_timeout": f"{_exact(spec.device_timeout_s)}s",
        "retries": spec.retries,
        "max_unavailable": unavailable,
        "gates": _gates_dict(spec.gates),
        "on_failure": spec.on_failure.value,
        "dry_run": spec.dry_run,
        "paused": spec.paused,
    }
    if spec.version is not None:
        body["version"] = spec.version
    if spec.release is not None:
        body["release"] = spec.release
    return {
        "apiVersion": "edgefleet/v1",
        "kind": "Rollout",
        "metadata": {"name": spec.name},
        "spec": body,
    }


__all__ = ["spec_to_dict"]
