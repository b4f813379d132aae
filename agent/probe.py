"""The drift probe: live inputs and outputs, summarized per clock-aligned window.

Theory of operation. The probe is *bound* to the release being served: the
model, release and artifact digest, the verified
:class:`~fleetcore.drift.DriftReference` of that release (see
:mod:`agent._driftref`), which model input holds the features and which
output the class probabilities, and a
:class:`~fleetcore.drift.summary.DriftAccumulator` built from the reference.
:meth:`DriftProbe.sync`, called by the window timer's thread about once a
second, follows the served model: when it changes, the old binding's partial
window is summarized, and the new release's reference is looked up and
loaded (downloading it there, never on a request thread). A release without
a drift reference, or whose reference fails verification, leaves the probe
unbound: no summaries (telemetry still flows).

:meth:`DriftProbe.observe` is on the inference path, so it does almost
nothing: it checks that the request ran on the bound release, appends the
batch's feature and probability arrays to a pending list and returns the
batch's predicted classes and max probabilities (for feedback). The pending
batches are folded into the accumulator in *one* vectorized
:meth:`~DriftAccumulator.update` per flush: by the timer thread every
``flush_s``, or by the request that makes the pending rows pass
``flush_rows`` (which bounds memory when the timer lags).

:meth:`DriftProbe.close` ends a window: flush, take the accumulated counts,
and queue ``encode(DriftSummary(key, counts))`` on the ``drift`` channel of
the :class:`~agent._channel_outbox.ChannelOutbox`, the key naming the device,
model, release, reference digest, window start and length, and the channel's
next ``seq`` (assigned in the queue's transaction). An empty window queues
nothing.

Invariants: a summary only ever holds rows that ran on the release its key
names and were binned against the reference whose digest it carries; rows
observed between a release switch and the new binding are not counted; a
batch is counted once; feedback is counted only for a request that ran on
the bound release. Rows observed in the few milliseconds between a window
boundary and the timer's close count towards the closing window.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from agent._channel_outbox import ChannelOutbox
from agent._driftref import UNKNOWN, ReferenceRejectedError, ReferenceStore
from agent.errors import AgentError
from agent.serving import ModelInfo
from fleetcore.drift import DriftReference
from fleetcore.drift.encoding import encode
from fleetcore.drift.summary import DriftAccumulator, DriftCounts, DriftSummary, WindowKey
from fleetcore.errors import EdgefleetError
from fleetcore.metadata import DigestRef
from fleetcore.protocol import Channel

log = logging.getLogger(__name__)
Array = npt.NDArray[Any]
DRIFT = Channel.DRIFT.value
#: Pending rows that make the observing request flush them itself.
FLUSH_ROWS = 4096
#: After a failed reference download, wait this long before trying again.
RETRY_S = 30.0

Resolve = Callable[[ModelInfo], "DriftReference | None"]


@dataclass(frozen=True)
class Observation:
    """What feedback needs of one observed request."""

    generation: tuple[str, int, str]  # (model, release, artifact sha256)
    predicted: Array  # [B] int64 predicted class per row
    max_probability: Array  # [B] float64


@dataclass
class Binding:
    """The served release the probe accumulates for."""

    model: str
    release: int
    sha256: str
    reference: DriftReference
    digest: str
    input_name: str
    output_name: str
    accumulator: DriftAccumulator

    @property
    def generation(self) -> tuple[str, int, str]:
        return (self.model, self.release, self.sha256)


def generation_of(info: ModelInfo) -> tuple[str, int, str]:
    return (info.model, info.release, info.sha256)


def _tensor_names(info: ModelInfo, reference: DriftReference) -> tuple[str, str] | None:
    """The input holding the features and the output holding the probabilities."""
    features, classes = len(reference.features), len(reference.class_names)
    inputs = [s.name for s in info.inputs if len(s.shape) == 2 and s.shape[1] == features]
    outputs = [s.name for s in info.outputs if len(s.shape) == 2 and s.shape[1] == classes]
    if "probabilities" in outputs:
        outputs = ["probabilities"]
    if len(inputs) != 1 or len(outputs) != 1:
        return None
    return inputs[0], outputs[0]


class DriftProbe:
    """Accumulates drift counts of the served release and queues one summary per window."""

    def __init__(
        self,
        *,
        device: str,
        window_s: int,
        outbox: ChannelOutbox,
        resolve: Resolve,
        flush_rows: int = FLUSH_ROWS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.device, self.window_s, self.outbox = device, window_s, outbox
        self._resolve, self.flush_rows, self._clock = resolve, flush_rows, clock
        self._binding: Binding | None = None
        self._bound_to: tuple[str, int, str] | None = None  # generation resolved (or not)
        self._retry_at = 0.0
        self._pending: list[tuple[Binding, Array, Array]] = []
        self._pending_rows = 0
        self._pending_lock = threading.Lock()
        self._fold_lock = threading.Lock()  # accumulator updates and takes
        self.skipped_rows = 0  # rows seen while unbound or on another release

    @property
    def binding(self) -> Binding | None:
        return self._binding

    # -- the request path -------------------------------------------------------------

    def observe(
        self, info: ModelInfo, feeds: Mapping[str, Array], outputs: Mapping[str, Array]
    ) -> Observation | None:
        """Count one successful batch that ran on ``info``; None when not counted."""
        binding = self._binding
        if binding is None or binding.sha256 != info.sha256 or binding.release != info.release:
            return None
        x, p = feeds.get(binding.input_name), outputs.get(binding.output_name)
        if x is None or p is None or x.ndim != 2 or p.ndim != 2 or len(x) != len(p):
            return None
        with self._pending_lock:
            self._pending.append((binding, x, p))
            self._pending_rows += len(x)
            full = self._pending_rows >= self.flush_rows
        if full:
            self.flush()
        return Observation(binding.generation, p.argmax(axis=1), p.max(axis=1).astype(np.float64))

    def feedback(self, observation: Observation, row: int, label: int) -> bool:
        """Count whether row ``row`` was predicted right; False if it is not countable now."""
        binding = self._binding
        if binding is None or binding.generation != observation.generation:
            return False
        correct = int(observation.predicted[row]) == label
        with self._fold_lock:
            binding.accumulator.feedback(float(observation.max_probability[row]), correct)
        return True

    # -- the timer thread -----------------------------------------------------------------

    def flush(self) -> None:
        """Fold the pending batches into the accumulator with one vectorized update."""
        with self._fold_lock:
            with self._pending_lock:
                pending, self._pending, self._pending_rows = self._pending, [], 0
            binding = self._binding
            # A batch observed just before a release switch belongs to the old binding.
            batches = [(x, p) for b, x, p in pending if b is binding]
            if not batches or binding is None:
                return
            x = np.concatenate([b[0] for b in batches]) if len(batches) > 1 else batches[0][0]
            p = np.concatenate([b[1] for b in batches]) if len(batches) > 1 else batches[0][1]
            try:
                binding.accumulator.update(x, p)
            except (ValueError, EdgefleetError) as exc:
                # Malformed outputs must not poison the window: drop this flush, say why.
                self.skipped_rows += len(x)
                log.warning("drift probe: %d rows not counted: %s", len(x), exc)

    def close(self, start: int) -> int | None:
        """Queue the summary of the window starting at ``start``; its seq, or None if empty."""
        self.flush()
        binding = self._binding
        if binding is None:
            return None
        with self._fold_lock:
            counts = binding.accumulator.take()
        return self._queue(binding, counts, start)

    def _queue(self, binding: Binding, counts: DriftCounts, start: int) -> int | None:
        if counts.n == 0 and not int(counts.labelled.sum()):
            return None
        key = WindowKey(
            device=self.device,
            model=binding.model,
            release=binding.release,
            reference=binding.digest,
            start=start - start % self.window_s,
            length=self.window_s,
            seq=1,
        )

        def build(seq: int) -> bytes:
            return encode(DriftSummary(dataclasses.replace(key, seq=seq), counts))

        try:
            return self.outbox.enqueue(DRIFT, build)
        except (AgentError, ValueError, EdgefleetError) as exc:
            log.error("drift summary of window %d not queued: %s", start, exc)
            return None

    def sync(self, info: ModelInfo | None, window_start: int) -> None:
        """Follow the served model; on a change, summarize the old binding's window first."""
        generation = None if info is None else generation_of(info)
        if generation == self._bound_to and (self._binding is not None or generation is None):
            return
        if generation != self._bound_to:
            old = self._binding
            if old is not None:
                self.close(window_start)
            self._binding, self._bound_to = None, generation
            self._retry_at = 0.0
            with self._pending_lock:
                self._pending, self._pending_rows = [], 0
        if info is None or self._clock() < self._retry_at:
            return
        self._bind(info)

    def _bind(self, info: ModelInfo) -> None:
        try:
            reference = self._resolve(info)
        except ReferenceRejectedError:
            self._retry_at = float("inf")  # fail closed for this release
            return
        except (AgentError, EdgefleetError, OSError) as exc:
            log.warning("drift reference of %s@%d not available yet: %s", *_who(info), exc)
            self._retry_at = self._clock() + RETRY_S
            return
        if reference is None:
            self._retry_at = float("inf")
            return
        names = _tensor_names(info, reference)
        if names is None:
            log.error(
                "%s@%d: no input with %d features and output with %d classes; no drift summaries",
                *_who(info),
                len(reference.features),
                len(reference.class_names),
            )
            self._retry_at = float("inf")
            return
        self._binding = Binding(
            model=info.model,
            release=info.release,
            sha256=info.sha256,
            reference=reference,
            digest=reference.digest(),
            input_name=names[0],
            output_name=names[1],
            accumulator=DriftAccumulator(reference),
        )
        log.info("drift probe bound to %s@%d (reference %s…)", *_who(info), reference.digest()[:12])


def _who(info: ModelInfo) -> tuple[str, int]:
    return info.model, info.release


def store_resolver(store: ReferenceStore) -> Resolve:
    """``resolve(info)`` over a :class:`ReferenceStore`: the reference, or None without one."""

    def resolve(info: ModelInfo) -> DriftReference | None:
        ref = store.lookup(info.model, info.release, info.sha256)
        if ref is UNKNOWN:
            log.info("no verified manifest names %s@%d: no drift summaries", *_who(info))
            return None
        if not isinstance(ref, DigestRef):
            log.info("%s@%d has no drift reference: no drift summaries", *_who(info))
            return None
        return store.load(ref)

    return resolve


__all__ = ["FLUSH_ROWS", "Binding", "DriftProbe", "Observation", "generation_of", "store_resolver"]
