"""Fleet drift: merged on-device summaries, tested, reported, gated on and watched.

- :mod:`.analysis` (pure): evidence windows, tests, persistence, breadth, accuracy;
- :mod:`.service`: reads stored summaries, splits by release and cohort, reports;
- :mod:`.monitor`: hands alarms to the retraining policies every interval;
- :mod:`.quality` and :mod:`.health`: the rollout quality and health gates' evidence;
- :mod:`.report` and :mod:`.plot`: the report's JSON form and its PNG.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from control_plane.artifacts.port import ArtifactStore
from control_plane.config import DriftSettings
from control_plane.drift.analysis import AnalysisSettings
from control_plane.drift.service import DriftService
from control_plane.store import Store


def build_drift(
    settings: DriftSettings,
    store: Store,
    artifacts: ArtifactStore,
    clock: Callable[[], datetime],
) -> DriftService:
    analysis = AnalysisSettings(
        bucket_s=settings.bucket_s,
        min_samples=settings.min_samples,
        persist_k=settings.persist_k,
        persist_m=settings.persist_m,
    )
    return DriftService(
        store, artifacts, analysis, clock, lookback=timedelta(seconds=settings.lookback_s)
    )


__all__ = ["DriftService", "build_drift"]
