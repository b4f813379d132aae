"""The rollout engine's vocabulary: phases, events, actions and the persisted state.

Pure data, no behaviour beyond (de)serialising :class:`RolloutState`; the rules
live in :mod:`control_plane.rollouts.engine`, which re-exports every name here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from control_plane.errors import StateError
from control_plane.rollouts.gates import GateResult, HealthEvidence, WaveCounts


class IllegalEventError(StateError):
    """The event is not allowed in the rollout's phase; nothing changed."""


class Phase(str, Enum):
    CREATED = "created"
    PROGRESSING = "progressing"
    SOAKING = "soaking"
    AWAITING_APPROVAL = "awaiting_approval"
    PAUSED = "paused"
    COMPLETED = "completed"
    ABORTED = "aborted"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def assigning(self) -> bool:
        """Devices of the open waves are assigned in this phase."""
        return self in (Phase.PROGRESSING, Phase.SOAKING)


TERMINAL = frozenset({Phase.COMPLETED, Phase.ABORTED, Phase.FAILED, Phase.ROLLED_BACK})
ACTIVE = frozenset(Phase) - TERMINAL


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    pass


@dataclass(frozen=True)
class Observe:
    """What the driver measured on the current wave."""

    counts: WaveCounts
    health: HealthEvidence | None = None
    quality: GateResult | None = None


@dataclass(frozen=True)
class Pause:
    actor: str
    reason: str = "paused by an operator"


@dataclass(frozen=True)
class Resume:
    actor: str


@dataclass(frozen=True)
class Promote:
    """Open the next wave now: approves a waiting wave, skips soak and gates."""

    actor: str


@dataclass(frozen=True)
class Abort:
    actor: str
    reason: str = "aborted by an operator"


@dataclass(frozen=True)
class Rollback:
    actor: str
    reason: str = "rolled back by an operator"


Event = Start | Observe | Pause | Resume | Promote | Abort | Rollback


# -- actions ---------------------------------------------------------------------------------


class RevertScope(str, Enum):
    WAVE = "wave"
    ALL = "all"


@dataclass(frozen=True)
class OpenWave:
    """Devices of waves up to ``wave`` may now be assigned."""

    wave: int


@dataclass(frozen=True)
class Revert:
    """Assign each device of the scope its previous committed release again."""

    scope: RevertScope
    wave: int


@dataclass(frozen=True)
class Record:
    """A decision for the audit log, with its evidence."""

    decision: str
    evidence: dict[str, Any]


Action = OpenWave | Revert | Record


# -- state -------------------------------------------------------------------------------------


@dataclass
class RolloutState:
    phase: Phase = Phase.CREATED
    wave: int = 0
    wave_opened_at: datetime | None = None
    soak_until: datetime | None = None
    inconclusive_since: datetime | None = None
    paused_from: Phase | None = None
    reason: str | None = None
    gates: list[dict[str, Any]] = field(default_factory=list)  # last evaluation

    def to_dict(self) -> dict[str, Any]:
        def when(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "phase": self.phase.value,
            "wave": self.wave,
            "wave_opened_at": when(self.wave_opened_at),
            "soak_until": when(self.soak_until),
            "inconclusive_since": when(self.inconclusive_since),
            "paused_from": None if self.paused_from is None else self.paused_from.value,
            "reason": self.reason,
            "gates": self.gates,
        }

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> RolloutState:
        def when(value: Any) -> datetime | None:
            return None if value is None else datetime.fromisoformat(value)

        paused_from = obj.get("paused_from")
        return cls(
            phase=Phase(obj["phase"]),
            wave=int(obj["wave"]),
            wave_opened_at=when(obj.get("wave_opened_at")),
            soak_until=when(obj.get("soak_until")),
            inconclusive_since=when(obj.get("inconclusive_since")),
            paused_from=None if paused_from is None else Phase(paused_from),
            reason=obj.get("reason"),
            gates=list(obj.get("gates") or []),
        )


__all__ = [
    "ACTIVE",
    "TERMINAL",
    "Abort",
    "Action",
    "Event",
    "IllegalEventError",
    "Observe",
    "OpenWave",
    "Pause",
    "Phase",
    "Promote",
    "Record",
    "Resume",
    "Revert",
    "RevertScope",
    "Rollback",
    "RolloutState",
    "Start",
]
