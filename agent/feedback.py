"""Request ids for served inferences, and ground-truth feedback routed by them.

Theory of operation. Every successful request through the local API goes
through :meth:`RequestLog.observe`: the drift probe counts it
(:meth:`agent.probe.DriftProbe.observe`), the capture sampler may keep some
rows (:meth:`agent.capture.CaptureSampler.offer`), and the log hands out a
fresh random request id, remembering what feedback will need (the
prediction's class and max probability per row, the captured rows, the number
of classes and, when the release has a drift reference, its class names) in
a bounded LRU of the most recent ``capacity`` requests.

:meth:`RequestLog.feedback` takes ``(request_id, label)``: a class index or
class name, or a list of them with one per row of a batch. It checks the
label (:class:`FeedbackError` 422 for a bad one), counts per row whether the
prediction was right in the probe's accumulator (only while the same release
is bound, so feedback never lands in another release's summary), and writes
the label into the captured rows. Feedback for a request id that is unknown
or has left the LRU is a 404; a second feedback for the same request is a
409 (each prediction is counted once).
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # the local API imports this module; keep it light
    from agent.capture import CaptureRef, CaptureSampler
    from agent.probe import DriftProbe, Observation
    from agent.serving import ModelInfo

Array = npt.NDArray[Any]


class FeedbackError(Exception):
    """Feedback that cannot be recorded; ``status`` is the HTTP answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class _Request:
    rows: int
    classes: int
    class_names: tuple[str, ...] | None
    observation: Observation | None
    captured: dict[int, CaptureRef] = field(default_factory=dict)
    answered: bool = False


@dataclass(frozen=True)
class FeedbackResult:
    rows: int
    correct: int
    counted: bool  # counted in the drift summary of the request's release
    captured: int  # captured rows that got their label

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "correct": self.correct,
            "counted": self.counted,
            "captured": self.captured,
        }


def _probabilities(info: ModelInfo, outputs: Mapping[str, Array], name: str | None) -> Array | None:
    if name is not None:
        return outputs.get(name)
    candidates = [s.name for s in info.outputs if len(s.shape) == 2]
    if "probabilities" in candidates:
        return outputs.get("probabilities")
    return outputs.get(candidates[0]) if len(candidates) == 1 else None


def _features(info: ModelInfo, feeds: Mapping[str, Array], name: str | None) -> Array | None:
    if name is not None:
        return feeds.get(name)
    candidates = [s.name for s in info.inputs if len(s.shape) == 2]
    return feeds.get(candidates[0]) if len(candidates) == 1 else None


class RequestLog:
    """Recent requests by id, feeding the drift probe and the capture sampler."""

    def __init__(
        self,
        probe: DriftProbe | None,
        capture: CaptureSampler | None = None,
        *,
        capacity: int = 10000,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.probe, self.capture, self.capacity = probe, capture, capacity
        self._requests: OrderedDict[str, _Request] = OrderedDict()
        self._lock = threading.Lock()

    def observe(
        self, info: ModelInfo, feeds: Mapping[str, Array], outputs: Mapping[str, Array]
    ) -> str:
        """Count a successful request that ran on ``info``; its new request id."""
        request_id = secrets.token_hex(12)
        observation = None if self.probe is None else self.probe.observe(info, feeds, outputs)
        binding = None if self.probe is None else self.probe.binding
        bound = binding is not None and observation is not None
        p = _probabilities(info, outputs, binding.output_name if bound and binding else None)
        if p is None or p.ndim != 2:
            return request_id  # nothing to give feedback on, but the id is still unique
        entry = _Request(
            rows=len(p),
            classes=int(p.shape[1]),
            class_names=binding.reference.class_names if bound and binding else None,
            observation=observation,
        )
        if self.capture is not None:
            x = _features(info, feeds, binding.input_name if bound and binding else None)
            if x is not None and x.ndim == 2 and len(x) == len(p):
                entry.captured = self.capture.offer(info.model, info.release, x)
        with self._lock:
            self._requests[request_id] = entry
            if len(self._requests) > self.capacity:
                self._requests.popitem(last=False)
        return request_id

    def feedback(self, request_id: Any, label: Any) -> FeedbackResult:
        """Record the ground truth of a request; FeedbackError (404, 409, 422) if refused."""
        if not isinstance(request_id, str) or not request_id:
            raise FeedbackError(422, "bad_request_id", '"request_id" must be a non-empty string')
        with self._lock:
            entry = self._requests.get(request_id)
            if entry is None:
                raise FeedbackError(404, "unknown_request", "unknown or expired request id")
            if entry.answered:
                raise FeedbackError(409, "already_recorded", "feedback for it is recorded")
            labels = self._labels(entry, label)
            entry.answered = True
        obs = entry.observation
        counted = False
        correct = 0
        if obs is not None:
            correct = int(np.count_nonzero(obs.predicted == np.asarray(labels)))
            if self.probe is not None:
                # Every row is counted: no short-circuit after one that is not.
                results = [self.probe.feedback(obs, row, lab) for row, lab in enumerate(labels)]
                counted = all(results)
        captured = 0
        if self.capture is not None:
            for row, ref in entry.captured.items():
                captured += int(self.capture.label(ref, labels[row]))
        return FeedbackResult(len(labels), correct, counted, captured)

    @staticmethod
    def _labels(entry: _Request, label: Any) -> list[int]:
        items = label if isinstance(label, list) else [label]
        if len(items) != entry.rows:
            raise FeedbackError(
                422,
                "bad_label",
                f"the request had {entry.rows} rows: give one label per row (a list)",
            )
        return [_label_index(entry, item) for item in items]


def _label_index(entry: _Request, item: Any) -> int:
    if isinstance(item, bool):
        raise FeedbackError(422, "bad_label", "a label is a class index or a class name")
    if isinstance(item, int):
        if not 0 <= item < entry.classes:
            raise FeedbackError(
                422, "bad_label", f"label {item} is not a class index 0..{entry.classes - 1}"
            )
        return item
    if isinstance(item, str):
        if entry.class_names is None:
            raise FeedbackError(
                422, "bad_label", "class names are unknown for this release: give the index"
            )
        if item not in entry.class_names:
            raise FeedbackError(422, "bad_label", f"{item[:64]!r} is not a class of this model")
        return entry.class_names.index(item)
    raise FeedbackError(422, "bad_label", "a label is a class index or a class name")


__all__ = ["FeedbackError", "FeedbackResult", "RequestLog"]
