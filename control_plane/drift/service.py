"""Fleet drift: reports on demand, and a monitor that hands alarms to retraining.

Theory of operation. :class:`DriftService` reads the stored summaries of a
model (raw windows and rollups, never both for the same time: the store's
query guarantees it), decodes them, splits them by release and, with a cohort
label, by the label's value on each device *now*, and runs
:func:`~control_plane.drift.analysis.analyze` on each group against the
release's signed reference. A release's reference is the artifact whose
sha256 its manifest signs; references are cached by digest (immutable).

The drift monitor (:mod:`control_plane.drift.monitor`) calls :meth:`DriftService.alarms`
every ``drift.check_interval_s`` in each control-plane process (like the rollout
driver) for the models and cohort labels the drift policies name, and hands
each group whose newest window drifted to the retraining policies.

Invariants: summaries of one digest are merged only with the same digest; a
window whose payload no longer decodes (it was checked on ingest) is skipped
with a warning, never fatal to the report.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from control_plane.artifacts.port import ArtifactStore
from control_plane.drift.analysis import (
    Analysis,
    AnalysisSettings,
    Window,
    analyze,
    merge_windows,
)
from control_plane.drift.report import Cohort, section_dict
from control_plane.errors import InvalidInputError, NotFoundError
from control_plane.store import Store
from fleetcore.drift import DriftReference
from fleetcore.drift.encoding import decode
from fleetcore.drift.summary import DriftCounts
from fleetcore.errors import EdgefleetError

log = logging.getLogger("edgefleet.drift")


@dataclass(frozen=True)
class Group:
    release: int
    cohort: Cohort | None
    reference: DriftReference
    windows: tuple[Window, ...]
    analysis: Analysis

    def current(self) -> DriftCounts | None:
        """The merged counts over the analysis span (for plots)."""
        a = self.analysis
        if a.span_start is None or a.span_end is None:
            return None
        inside = [w for w in self.windows if a.span_start <= w.start < a.span_end]
        return merge_windows(inside) if inside else None


def parse_cohort(text: str | None) -> tuple[str | None, str | None]:
    """``site`` splits by the label; ``site=north`` keeps one cohort."""
    if not text:
        return None, None
    label, sep, value = text.partition("=")
    if not label or (sep and not value):
        raise InvalidInputError(f"cohort {text!r}: give a label (site) or label=value (site=north)")
    return label, value if sep else None


class DriftService:
    def __init__(
        self,
        store: Store,
        artifacts: ArtifactStore,
        settings: AnalysisSettings,
        clock: Callable[[], datetime],
        *,
        lookback: timedelta = timedelta(days=1),
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.settings = settings
        self.clock = clock
        self.lookback = lookback
        self._references: dict[str, DriftReference] = {}
        self._lock = threading.Lock()

    # -- reading ----------------------------------------------------------------------------

    def reference(self, model: str, release: int) -> DriftReference | None:
        record = self.store.get_release(model, release)
        if record is None:
            raise NotFoundError(f"{model} has no release {release}")
        version = self.store.get_version_by_id(record.version_id)
        digest = None if version is None else version.drift_reference_sha256
        if digest is None:
            return None
        with self._lock:
            cached = self._references.get(digest)
        if cached is None:
            with self.artifacts.open(digest) as handle:
                cached = DriftReference.from_bytes(handle.read())
            with self._lock:
                self._references[digest] = cached
        return cached

    def windows(
        self, model: str, *, release: int | None, since: datetime, until: datetime | None = None
    ) -> list[Window]:
        out = []
        for row in self.store.drift_windows(model, release=release, since=since, until=until):
            try:
                summary = decode(row.payload)
            except EdgefleetError as exc:
                log.warning("skipped a stored drift window of %s: %s", row.device_id, exc)
                continue
            key = summary.key
            out.append(Window(key.device, key.release, key.start, key.length, summary.body))
        return out

    def groups(
        self,
        model: str,
        *,
        cohort: str | None = None,
        since: datetime | None = None,
        release: int | None = None,
        windows: Sequence[Window] | None = None,
    ) -> list[Group]:
        """Analyses per release (and cohort); ``windows`` skips reading them again."""
        if model not in self.store.list_models():
            raise NotFoundError(f"no model named {model!r}")
        label, value = parse_cohort(cohort)
        if windows is None:
            start = since or self.clock() - self.lookback
            if start.tzinfo is None:
                start = start.replace(tzinfo=timezone.utc)
            windows = self.windows(model, release=release, since=start)
        labels = self._labels({w.device for w in windows}) if label else {}
        split: dict[tuple[int, str | None], list[Window]] = {}
        for window in windows:
            own = labels.get(window.device, {}).get(label) if label else None
            if label and value is not None and own != value:
                continue
            split.setdefault((window.release, own), []).append(window)
        groups = []
        for (counter, own), members in sorted(
            split.items(), key=lambda i: (i[0][0], i[0][1] or "")
        ):
            reference = self.reference(model, counter)
            if reference is None:
                continue  # summaries of a release without a reference were refused on ingest
            analysis = analyze(reference, counter, members, self.settings)
            cohort_of = Cohort(label, own) if label else None
            groups.append(Group(counter, cohort_of, reference, tuple(members), analysis))
        return groups

    def report(
        self,
        model: str,
        *,
        cohort: str | None = None,
        since: datetime | None = None,
        release: int | None = None,
    ) -> dict[str, Any]:
        groups = self.groups(model, cohort=cohort, since=since, release=release)
        return {
            "model": model,
            "generated_at": self.clock().isoformat().replace("+00:00", "Z"),
            "settings": {
                "bucket_s": self.settings.bucket_s,
                "min_samples": self.settings.min_samples,
                "persistence": f"{self.settings.persist_k} of {self.settings.persist_m}",
            },
            "sections": [
                section_dict(model, g.analysis, g.cohort, g.reference, g.current()) for g in groups
            ],
        }

    def _labels(self, devices: set[str]) -> dict[str, dict[str, str]]:
        """Labels of ``devices``, read a page of the fleet at a time (not one query each)."""
        found: dict[str, dict[str, str]] = {}
        after = None
        while len(found) < len(devices):
            page = self.store.list_devices(include_decommissioned=True, after=after, limit=1000)
            found.update((d.id, d.labels) for d in page if d.id in devices)
            if len(page) < 1000:
                break
            after = page[-1].id
        return found

    # -- monitoring -------------------------------------------------------------------------

    def alarms(self, model: str, cohorts: Sequence[str | None]) -> list[Group]:
        """Groups of ``model`` whose newest tested window has a drifted feature.

        Reads only what persistence can look at: the last ``persist_m`` evidence
        windows of ``bucket_s`` and one more (a window still filling), not the
        report's whole look-back; and reads it once for every cohort label.
        """
        span = timedelta(seconds=(self.settings.persist_m + 2) * self.settings.bucket_s)
        since = self.clock() - min(self.lookback, span)
        windows = self.windows(model, release=None, since=since)
        found = []
        for cohort in cohorts:
            for group in self.groups(model, cohort=cohort, windows=windows):
                tested = [w for w in group.analysis.windows if w.tested]
                if tested and tested[-1].drifted:
                    found.append(group)
        return found


def utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


__all__ = ["DriftService", "Group", "parse_cohort", "utc"]
