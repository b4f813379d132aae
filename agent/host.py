"""The seam between the updater and whatever serves the model.

Theory of operation. The updater needs three things from the serving side:
load a slot and serve it (:meth:`Host.activate`, which raises if the model
cannot be loaded), stop serving (:meth:`Host.deactivate`), and the health of
the model since it was activated (:meth:`Host.health`: inferences, errors,
p95 latency), which probation judges with :func:`judge`. :class:`Host` is that
protocol; tests use a fake, the daemon uses :class:`ServingHost`, an adapter
over :class:`agent.serving.ModelHost` (whose statistics restart at every
activation, so probation only ever sees the new model's figures).

:class:`RuntimeHost` is a stand-in that loads the model with
:func:`fleetcore.runtimes.load_model` and serves nothing; the daemon uses it
only if :mod:`agent.serving` cannot be imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from agent.slots import Slot
from fleetcore.runtimes import ModelRuntime, load_model

if TYPE_CHECKING:
    from agent.serving import ModelHost


@dataclass(frozen=True)
class Health:
    """Figures of the active model since its activation.

    ``inferences`` counts successful runs and ``errors`` failed runs of the
    model itself (never the caller's malformed input).
    """

    inferences: int = 0
    errors: int = 0
    p95_ms: float | None = None

    @property
    def runs(self) -> int:
        return self.inferences + self.errors

    @property
    def error_rate(self) -> float:
        return self.errors / self.runs if self.runs else 0.0


class Host(Protocol):
    def activate(self, slot: Slot) -> None:
        """Load ``slot`` and serve it; raise (keeping the old model) if it cannot load."""
        ...

    def deactivate(self) -> None: ...

    def health(self) -> Health: ...


def judge(
    health: Health, *, min_inferences: int, max_error_rate: float, max_latency_p95_ms: float
) -> tuple[str, str] | None:
    """``(reason, message)`` when probation must fail, else None."""
    if health.runs < max(1, min_inferences):
        return None
    if health.error_rate > max_error_rate:
        return (
            "error-rate",
            f"{health.errors} of {health.runs} inferences failed "
            f"({health.error_rate:.1%} > {max_error_rate:.1%})",
        )
    p95 = health.p95_ms
    if p95 is not None and p95 > max_latency_p95_ms:
        return ("latency", f"p95 latency {p95:.1f} ms > {max_latency_p95_ms:.1f} ms")
    return None


class ServingHost:
    """Adapts :class:`agent.serving.ModelHost` to :class:`Host`."""

    def __init__(self, model_host: ModelHost) -> None:
        self.model_host = model_host

    @classmethod
    def create(cls, threads: int = 1) -> ServingHost:
        from agent.serving import ModelHost  # noqa: PLC0415 - numpy-heavy, load on demand

        return cls(ModelHost(threads=threads))

    def activate(self, slot: Slot) -> None:
        from agent.serving import ModelInfo  # noqa: PLC0415

        info = ModelInfo(
            model=slot.model, release=slot.release, sha256=slot.sha256, format=slot.format
        )
        self.model_host.activate(slot.path, slot.format, info)

    def deactivate(self) -> None:
        self.model_host.deactivate()

    def health(self) -> Health:
        snap = self.model_host.stats.snapshot()
        runs = int(snap.inferences) + int(snap.errors)
        return Health(int(snap.inferences), int(snap.errors), float(snap.p95_ms) if runs else None)


class RuntimeHost:
    """Loads models to prove they load; serves nothing and reports no traffic."""

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self.runtime: ModelRuntime | None = None
        self.slot: Slot | None = None

    def activate(self, slot: Slot) -> None:
        self.runtime = load_model(slot.path, slot.format, threads=self.threads)
        self.slot = slot

    def deactivate(self) -> None:
        self.runtime, self.slot = None, None

    def health(self) -> Health:
        return Health()


__all__ = ["Health", "Host", "RuntimeHost", "ServingHost", "judge"]
