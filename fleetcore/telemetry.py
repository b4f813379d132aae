"""Device health telemetry: one report per device and window, and the latency buckets.

Theory of operation. A device serves inferences and counts, per clock-aligned
window, how many it served, how many failed (``errors``: the model raised;
``input_errors``: the request was refused before running), a latency
histogram over the fixed buckets :data:`LATENCY_BUCKET_BOUNDS_NS`, and its
resource use. At the end of a window it publishes one :class:`TelemetryReport`
on ``edgefleet/v1/devices/{d}/telemetry`` (or posts it over HTTP). Because
every device uses the same buckets, histograms of any devices and windows add
up bucket by bucket, and the control plane computes fleet percentiles from
sums (:func:`latency_quantile_ns`) without importing the agent.

Wire form: canonical JSON (:mod:`fleetcore.canonical`) with ``_type`` =
``"telemetry"``. Latency buckets travel sparse, as ``{"<index>": count}`` with
only the non-zero buckets, so a quiet window costs a few bytes.

Invariants, enforced by :meth:`TelemetryReport.from_dict` (which raises
:class:`~fleetcore.errors.ProtocolError`): ``seq`` and ``release`` fit the
protocol's counters; ``window_start`` is a multiple of ``window_s``;
``model`` and ``release`` are both present or both absent; every count is a
non-negative integer; bucket indexes are within the histogram; the encoded
report is at most :data:`MAX_TELEMETRY_BYTES`. Unknown fields are kept, so
newer agents' additions survive older control planes.

Decoding has a fast path for the control plane's ingestion (one report per
device and window): a report of exactly the known fields is parsed by one
``json.loads`` and checked field by field (:func:`_fast_report`), skipping the
generic readers. It only ever *accepts*: whatever it does not accept (an
unknown field, a duplicate key, a non-finite number, any refusal) goes the
generic way (:mod:`fleetcore.canonical`, :class:`~fleetcore.metadata._fields.Fields`),
so the refusals and their messages are the generic path's, and a report the
fast path accepts is the one the generic path builds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from itertools import compress
from typing import Any

from fleetcore import canonical
from fleetcore.errors import EdgefleetError, ProtocolError
from fleetcore.metadata._fields import NAME, Fields, format_time, parse_time
from fleetcore.protocol import DEVICE_ID, MAX_COUNTER, check_device_id

#: Upper bounds (ns) of the latency buckets: 1 µs * 2**(k/4), k = 0..104 (~67 s).
#: Bucket i counts latencies in (BOUNDS[i-1], BOUNDS[i]]; one more bucket holds the rest.
LATENCY_BUCKET_BOUNDS_NS: tuple[int, ...] = tuple(round(1000 * 2 ** (k / 4)) for k in range(105))
#: Buckets of a latency histogram: one per bound plus the overflow bucket.
LATENCY_BUCKETS = len(LATENCY_BUCKET_BOUNDS_NS) + 1
#: Largest encoded report; a full histogram with every field takes about 2 KiB.
MAX_TELEMETRY_BYTES = 16 * 1024
#: Longest window, seconds (a day), as for drift summaries.
MAX_WINDOW_S = 86_400
#: Window starts are unix seconds below 2**33 (year 2242): any datetime column holds them.
MAX_WINDOW_START = 2**33 - 1
_MAX_COUNT = 2**62


def latency_quantile_ns(counts: tuple[int, ...] | list[int], q: float) -> float:
    """Estimate of the ``q``-quantile (0..1) of a bucket histogram, in nanoseconds.

    The geometric middle of the bucket holding the rank; the first bucket
    answers its bound and the overflow bucket the last bound (a lower bound of
    the truth). ``0.0`` for an empty histogram.
    """
    if len(counts) != LATENCY_BUCKETS:
        raise ValueError(f"a latency histogram has {LATENCY_BUCKETS} buckets, not {len(counts)}")
    n = sum(counts)
    if n == 0:
        return 0.0
    rank = max(1, math.ceil(min(max(q, 0.0), 1.0) * n))
    bounds = LATENCY_BUCKET_BOUNDS_NS
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            if index == 0:
                return float(bounds[0])
            if index == len(bounds):
                return float(bounds[-1])
            return math.sqrt(bounds[index - 1] * bounds[index])
    return float(bounds[-1])  # pragma: no cover - seen reaches n


def sparse_buckets(counts: tuple[int, ...]) -> dict[str, int]:
    """``{"<index>": count}`` for the non-zero buckets (the wire and storage form)."""
    # compress() skips the zero buckets in C: most of a histogram's 106 are zero.
    return {str(i): counts[i] for i in compress(range(len(counts)), counts)}


def dense_buckets(obj: Any, what: str = "latency_buckets") -> tuple[int, ...]:
    """The full histogram from its sparse form; ProtocolError for anything else."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} must be an object of bucket index to count")
    counts = [0] * LATENCY_BUCKETS
    for key, value in obj.items():
        if not (isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 3):
            raise ProtocolError(f"{what}: bucket {str(key)[:16]!r} is not an index")
        index = int(key)
        if index >= LATENCY_BUCKETS or key != str(index):
            raise ProtocolError(f"{what}: bucket {key!r} is not in 0..{LATENCY_BUCKETS - 1}")
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_COUNT:
            raise ProtocolError(f"{what}: bucket {key} must count 0 or more")
        counts[index] = value
    return tuple(counts)


def _count(f: Fields, name: str) -> int:
    return f.integer(name, minimum=0, maximum=_MAX_COUNT)


def _optional_number(f: Fields, name: str) -> float | None:
    if f.rest().get(name) is None:
        f.rest().pop(name, None)
        return None
    return f.number(name)


@dataclass(frozen=True)
class TelemetryReport:
    """One device's health over one window (see the module docstring)."""

    device: str
    seq: int
    time: datetime
    window_start: int
    window_s: int
    model: str | None
    release: int | None
    inferences: int
    errors: int
    input_errors: int
    latency_buckets: tuple[int, ...]
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    disk_free_bytes: int | None = None
    unrecognized: dict[str, Any] = field(default_factory=dict, compare=False)

    type = "telemetry"

    def __post_init__(self) -> None:
        if len(self.latency_buckets) != LATENCY_BUCKETS:
            raise ProtocolError(
                f"telemetry has {len(self.latency_buckets)} latency buckets, not {LATENCY_BUCKETS}"
            )

    @property
    def window_end(self) -> int:
        return self.window_start + self.window_s

    @classmethod
    def from_dict(cls, obj: Any) -> TelemetryReport:
        fast = _fast_report(obj)
        return fast if fast is not None else cls._from_fields(obj)

    @classmethod
    def _from_fields(cls, obj: Any) -> TelemetryReport:
        """The generic reader: every shape, every refusal with its message."""
        try:
            f = Fields(obj, "telemetry report")
            f.expect("_type", cls.type)
            device = check_device_id(f.string("device"))
            seq = f.integer("seq", minimum=1, maximum=MAX_COUNTER)
            time = f.time("time")
            window_s = f.integer("window_s", minimum=1, maximum=MAX_WINDOW_S)
            window_start = f.integer("window_start", minimum=0, maximum=MAX_WINDOW_START)
            if window_start % window_s:
                raise ProtocolError(
                    f"telemetry window_start {window_start} is not a multiple of {window_s}"
                )
            model = f.optional_string("model")
            if model is not None and not NAME.fullmatch(model):
                raise ProtocolError(f"telemetry model {model[:64]!r} is not a model name")
            release = f.optional_integer("release", minimum=1, maximum=MAX_COUNTER)
            if (model is None) != (release is None):
                raise ProtocolError("telemetry names a model and its release, or neither")
            rss = f.optional_integer("rss_bytes", maximum=_MAX_COUNT)
            disk = f.optional_integer("disk_free_bytes", maximum=_MAX_COUNT)
            return cls(
                device=device,
                seq=seq,
                time=time,
                window_start=window_start,
                window_s=window_s,
                model=model,
                release=release,
                inferences=_count(f, "inferences"),
                errors=_count(f, "errors"),
                input_errors=_count(f, "input_errors"),
                latency_buckets=dense_buckets(f.required_object("latency_buckets")),
                cpu_percent=_optional_number(f, "cpu_percent"),
                rss_bytes=rss,
                disk_free_bytes=disk,
                unrecognized=f.rest(),
            )
        except ProtocolError:
            raise
        except EdgefleetError as exc:
            raise ProtocolError(f"malformed telemetry report: {exc}") from exc
        except OverflowError as exc:  # an integer too large for a float (cpu_percent)
            raise ProtocolError(f"malformed telemetry report: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.unrecognized,
            "_type": self.type,
            "device": self.device,
            "seq": self.seq,
            "time": format_time(self.time),
            "window_start": self.window_start,
            "window_s": self.window_s,
            "model": self.model,
            "release": self.release,
            "inferences": self.inferences,
            "errors": self.errors,
            "input_errors": self.input_errors,
            "latency_buckets": sparse_buckets(self.latency_buckets),
            "cpu_percent": self.cpu_percent,
            "rss_bytes": self.rss_bytes,
            "disk_free_bytes": self.disk_free_bytes,
        }

    def encode(self) -> bytes:
        data = canonical.encode(self.to_dict())
        if len(data) > MAX_TELEMETRY_BYTES:
            raise ProtocolError(
                f"telemetry report is {len(data)} bytes, over {MAX_TELEMETRY_BYTES}"
            )
        return data

    @classmethod
    def decode(cls, data: bytes) -> TelemetryReport:
        if len(data) > MAX_TELEMETRY_BYTES:
            raise ProtocolError(
                f"telemetry report is {len(data)} bytes, over {MAX_TELEMETRY_BYTES}"
            )
        fast = _fast_report(_fast_object(data))
        if fast is not None:
            return fast
        try:
            obj = canonical.decode(data, max_bytes=MAX_TELEMETRY_BYTES)
        except EdgefleetError as exc:
            raise ProtocolError(f"telemetry report: {exc}") from exc
        return cls.from_dict(obj)


class _NotFastError(Exception):
    """The fast path declines; the generic path decides."""


def _distinct_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _NotFastError  # a duplicate key: the generic parser refuses it by name
    return obj


def _fast_object(data: bytes) -> Any:
    """``data`` parsed as JSON without duplicate keys, or None (then the generic path
    decides). Depth and number checks are left to :func:`_fast_report`, which
    accepts only the known, flat shape and finite numbers."""
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_distinct_keys)
    except (_NotFastError, ValueError, RecursionError, TypeError, AttributeError):
        return None


_FIELDS = frozenset(
    (
        "_type",
        "device",
        "seq",
        "time",
        "window_start",
        "window_s",
        "model",
        "release",
        "inferences",
        "errors",
        "input_errors",
        "latency_buckets",
        "cpu_percent",
        "rss_bytes",
        "disk_free_bytes",
    )
)


def _int(value: Any, low: int, high: int) -> int:
    # type() is int: JSON gives int or bool, and the generic reader refuses bools.
    if type(value) is not int or not low <= value <= high:
        raise _NotFastError
    return value


def _fast_report(obj: Any) -> TelemetryReport | None:
    """The report ``obj`` holds if it has exactly the known fields and every check of
    :meth:`TelemetryReport.from_dict` passes on it; None otherwise."""
    try:
        return _known_report(obj)
    except (_NotFastError, KeyError, EdgefleetError, OverflowError):
        return None


def _require(condition: bool) -> None:
    if not condition:
        raise _NotFastError


def _known_report(obj: Any) -> TelemetryReport:
    _require(type(obj) is dict and obj.get("_type") == TelemetryReport.type)
    _require(not obj.keys() - _FIELDS)
    device, time = obj["device"], obj["time"]
    _require(type(device) is str and DEVICE_ID.fullmatch(device) is not None)
    _require(type(time) is str)
    window_s = _int(obj["window_s"], 1, MAX_WINDOW_S)
    window_start = _int(obj["window_start"], 0, MAX_WINDOW_START)
    model, release = obj.get("model"), obj.get("release")
    _require((model is None) == (release is None) and not window_start % window_s)
    if model is not None:
        _require(type(model) is str and NAME.fullmatch(model) is not None)
        release = _int(release, 1, MAX_COUNTER)
    rss, disk = obj.get("rss_bytes"), obj.get("disk_free_bytes")
    cpu = obj.get("cpu_percent")
    if cpu is not None:
        _require(type(cpu) in (int, float) and 0.0 <= cpu < math.inf)  # also refuses NaN
        cpu = float(cpu)
    buckets = obj["latency_buckets"]
    _require(type(buckets) is dict)
    return TelemetryReport(
        device=device,
        seq=_int(obj["seq"], 1, MAX_COUNTER),
        time=parse_time(time, "telemetry time"),
        window_start=window_start,
        window_s=window_s,
        model=model,
        release=release,
        inferences=_int(obj["inferences"], 0, _MAX_COUNT),
        errors=_int(obj["errors"], 0, _MAX_COUNT),
        input_errors=_int(obj["input_errors"], 0, _MAX_COUNT),
        latency_buckets=dense_buckets(buckets),
        cpu_percent=cpu,
        rss_bytes=None if rss is None else _int(rss, 0, _MAX_COUNT),
        disk_free_bytes=None if disk is None else _int(disk, 0, _MAX_COUNT),
    )


__all__ = [
    "LATENCY_BUCKETS",
    "LATENCY_BUCKET_BOUNDS_NS",
    "MAX_TELEMETRY_BYTES",
    "MAX_WINDOW_S",
    "MAX_WINDOW_START",
    "TelemetryReport",
    "dense_buckets",
    "latency_quantile_ns",
    "sparse_buckets",
]
