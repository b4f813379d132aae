"""Staged rollouts: spec, targeting, gates, the pure engine, and the driver that carries it out.

Where things live: :mod:`.spec` (the YAML document), :mod:`.selector` (label
selectors), :mod:`.plan` (target, exclusions, waves), :mod:`.gates` (pass, fail,
inconclusive), :mod:`.events` (phases, events, actions, state), :mod:`.engine`
(the state machine and its transition table),
:mod:`.control` (apply an event to a stored rollout), :mod:`.driver` (the
background ticks), :mod:`.revert` (fleet revert and revoke), :mod:`.service`
(what the API calls).
"""

from control_plane.rollouts.engine import Phase, Rollout, RolloutState
from control_plane.rollouts.service import RolloutService
from control_plane.rollouts.spec import RolloutSpec, parse_spec

__all__ = ["Phase", "Rollout", "RolloutService", "RolloutSpec", "RolloutState", "parse_spec"]
