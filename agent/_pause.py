"""Test-only switch: stop the updater on entering a given state.

With ``EDGEFLEET_AGENT_PAUSE_AT=<state>`` in the environment (a value of
:class:`fleetcore.protocol.UpdateState`, e.g. ``downloading``), the updater,
right after it has persisted a transition into that state and before it acts
on it, prints ``edgefleet-agent: paused at <state>`` to stderr, flushes, and
sleeps forever. A fault test waits for that line and ``kill -9``s the agent,
which is then known to die at exactly that point. Only transitions pause; a
restart that resumes in the state does not (restart without the variable
anyway, or the agent pauses at the next transition into it).
"""

from __future__ import annotations

import os
import sys
import threading

from fleetcore.protocol import UpdateState

PAUSE_ENV = "EDGEFLEET_AGENT_PAUSE_AT"
PAUSE_LINE = "edgefleet-agent: paused at {state}"


def pause_if_requested(state: UpdateState) -> None:
    if os.environ.get(PAUSE_ENV, "").strip() != state.value:
        return
    sys.stderr.write(PAUSE_LINE.format(state=state.value) + "\n")
    sys.stderr.flush()
    threading.Event().wait()  # forever: the test kills the process


__all__ = ["PAUSE_ENV", "PAUSE_LINE", "pause_if_requested"]
