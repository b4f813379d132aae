"""agent.probe and agent._driftref: bound to the served release, one summary per window."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest

from agent._driftref import UNKNOWN, ReferenceRejectedError, ReferenceStore
from agent.errors import TransportError
from agent.probe import DRIFT, DriftProbe, store_resolver
from agent.serving import ModelInfo
from agent.statedb import StateDB
from fleetcore.drift import DriftReference
from fleetcore.drift.encoding import decode
from fleetcore.drift.summary import DriftAccumulator, DriftSummary
from fleetcore.metadata import DigestRef
from tests.unit.agent.driftkit import batch, channels, model_info, reference

REF = reference()


def probe_for(tmp_path: Path, ref: DriftReference | None = REF, **kw: object) -> DriftProbe:
    return DriftProbe(
        device="dev-1",
        window_s=60,
        outbox=channels(tmp_path),
        resolve=lambda info: ref,
        **kw,  # type: ignore[arg-type]
    )


def summaries(probe: DriftProbe) -> list[DriftSummary]:
    items = probe.outbox.peek(DRIFT)
    probe.outbox.ack(i.id for i in items)
    return [decode(i.body) for i in items]


def observe(probe: DriftProbe, info: ModelInfo, x: np.ndarray, p: np.ndarray) -> object:
    return probe.observe(info, {"features": x}, {"probabilities": p})


def test_a_window_summary_counts_every_observed_row_exactly(tmp_path: Path) -> None:
    probe, info = probe_for(tmp_path), model_info(3)
    probe.sync(info, 120)
    batches = [batch(1, seed=s) for s in range(5)] + [batch(37, seed=9)]
    for x, p in batches:
        assert observe(probe, info, x, p) is not None
    assert probe.close(120) == 1
    (summary,) = summaries(probe)
    key = summary.key
    assert (key.device, key.model, key.release, key.start, key.length, key.seq) == (
        "dev-1",
        "tiny",
        3,
        120,
        60,
        1,
    )
    assert key.reference == REF.digest()
    # The same rows through a fresh accumulator give the same counts (moments within the
    # wire format's float32 rounding of M3/M4 and min/max).
    accumulator = DriftAccumulator(REF)
    accumulator.update(
        np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
    )
    expected, body = accumulator.take(), summary.body
    for name in ("counts", "nan", "inf", "class_counts", "histograms", "labelled", "correct"):
        assert np.array_equal(getattr(body, name), getattr(expected, name)), name
    assert np.allclose(body.moments, expected.moments, rtol=1e-6, atol=1e-6)
    assert body.n == 42


def test_empty_windows_send_nothing_and_seqs_only_increase(tmp_path: Path) -> None:
    probe, info = probe_for(tmp_path), model_info()
    probe.sync(info, 0)
    assert probe.close(0) is None
    observe(probe, info, *batch(3))
    assert probe.close(60) == 1
    observe(probe, info, *batch(2))
    assert probe.close(120) == 2
    assert [s.key.seq for s in summaries(probe)] == [1, 2]


def test_rows_from_another_release_are_not_counted(tmp_path: Path) -> None:
    probe = probe_for(tmp_path)
    probe.sync(model_info(1), 0)
    assert observe(probe, model_info(2), *batch(4)) is None
    assert probe.close(0) is None


def test_a_release_switch_closes_the_old_binding_first(tmp_path: Path) -> None:
    probe = probe_for(tmp_path)
    probe.sync(model_info(1), 0)
    observe(probe, model_info(1), *batch(4))
    probe.sync(model_info(2), 0)  # switched within the window starting at 0
    observe(probe, model_info(2), *batch(6))
    probe.close(0)
    got = [(s.key.release, s.key.start, s.body.n) for s in summaries(probe)]
    assert got == [(1, 0, 4), (2, 0, 6)]


def test_without_a_reference_there_are_no_summaries(tmp_path: Path) -> None:
    probe = probe_for(tmp_path, ref=None)
    probe.sync(model_info(), 0)
    assert probe.binding is None
    assert observe(probe, model_info(), *batch(4)) is None
    assert probe.close(0) is None


def test_a_model_that_does_not_fit_the_reference_is_not_bound(tmp_path: Path) -> None:
    probe = probe_for(tmp_path, ref=reference())
    wrong = ModelInfo("tiny", 1, "1" * 64, "onnx")  # no input/output specs at all
    probe.sync(wrong, 0)
    assert probe.binding is None


def test_feedback_counts_for_the_bound_release_only(tmp_path: Path) -> None:
    probe, info = probe_for(tmp_path), model_info()
    probe.sync(info, 0)
    x, p = batch(2)
    obs = observe(probe, info, x, p)
    assert obs is not None
    assert probe.feedback(obs, 0, int(p[0].argmax()))  # type: ignore[arg-type]
    assert probe.feedback(obs, 1, (int(p[1].argmax()) + 1) % 3)  # type: ignore[arg-type]
    probe.close(0)
    (summary,) = summaries(probe)
    assert int(summary.body.labelled.sum()) == 2 and int(summary.body.correct.sum()) == 1
    probe.sync(model_info(2), 60)
    assert not probe.feedback(obs, 0, 0)  # type: ignore[arg-type]


def test_the_request_path_only_queues_and_a_full_queue_flushes(tmp_path: Path) -> None:
    probe, info = probe_for(tmp_path, flush_rows=10), model_info()
    probe.sync(info, 0)
    binding = probe.binding
    assert binding is not None
    observe(probe, info, *batch(4))
    assert binding.accumulator.n == 0  # not folded on the request thread
    observe(probe, info, *batch(6))
    assert binding.accumulator.n == 10  # the request that filled the queue folded it


def test_non_finite_probabilities_are_dropped_not_poisoning_the_window(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    probe, info = probe_for(tmp_path), model_info()
    probe.sync(info, 0)
    x, p = batch(3)
    observe(probe, info, x, p)
    probe.flush()
    p_bad = p.copy()
    p_bad[0, 0] = np.nan
    observe(probe, info, x, p_bad)
    with caplog.at_level(logging.WARNING):
        probe.close(0)
    (summary,) = summaries(probe)
    assert summary.body.n == 3 and probe.skipped_rows == 3


# -- the reference store ------------------------------------------------------------------


class Fetcher:
    def __init__(self, data: bytes) -> None:
        self.data, self.calls = data, 0

    def __call__(self, sha256: str, length: int, part: Path) -> None:
        self.calls += 1
        part.write_bytes(self.data[:length])


def store(tmp_path: Path, fetch: Fetcher, manifests: list[object] | None = None) -> ReferenceStore:
    return ReferenceStore(
        tmp_path,
        StateDB.open(tmp_path),
        fetch=fetch,
        manifests=lambda: manifests or [],  # type: ignore[return-value]
        max_bytes=1 << 20,
    )


def ref_of(data: bytes) -> DigestRef:
    return DigestRef(hashlib.sha256(data).hexdigest(), len(data))


def test_a_reference_is_fetched_once_verified_and_cached(tmp_path: Path) -> None:
    data = REF.to_bytes()
    fetch = Fetcher(data)
    s = store(tmp_path, fetch)
    assert s.load(ref_of(data)).digest() == REF.digest()
    assert s.load(ref_of(data)).digest() == REF.digest()
    assert fetch.calls == 1
    assert s.path(ref_of(data).sha256).read_bytes() == data


def test_a_reference_that_fails_verification_is_never_used(tmp_path: Path) -> None:
    data = REF.to_bytes()
    forged = reference(seed=7).to_bytes()
    fetch = Fetcher(forged)
    s = store(tmp_path, fetch)
    signed = ref_of(data)
    with pytest.raises(ReferenceRejectedError):
        s.load(signed)
    assert not s.path(signed.sha256).exists()
    with pytest.raises(ReferenceRejectedError, match="recently"):
        s.load(signed)
    assert fetch.calls == 1  # not hammered again


def test_a_corrupted_cache_is_fetched_again(tmp_path: Path) -> None:
    data = REF.to_bytes()
    fetch = Fetcher(data)
    s = store(tmp_path, fetch)
    s.load(ref_of(data))
    s.path(ref_of(data).sha256).write_bytes(b"x" * len(data))
    assert s.load(ref_of(data)).digest() == REF.digest()
    assert fetch.calls == 2


def test_a_download_failure_is_retried_later_not_rejected(tmp_path: Path) -> None:
    def down(sha256: str, length: int, part: Path) -> None:
        raise TransportError("control plane unreachable")

    s = ReferenceStore(
        tmp_path, StateDB.open(tmp_path), fetch=down, manifests=list, max_bytes=1 << 20
    )
    probe = DriftProbe(
        device="dev-1", window_s=60, outbox=channels(tmp_path), resolve=store_resolver(s)
    )
    data = REF.to_bytes()

    class Manifest:  # only what lookup reads
        model, release = "tiny", 1
        artifact = type("A", (), {"sha256": "1".rjust(64, "0")})()
        drift_reference = ref_of(data)

    s._manifests = lambda: [Manifest()]  # type: ignore[assignment,list-item,return-value]
    probe.sync(model_info(1), 0)
    assert probe.binding is None
    with pytest.raises(TransportError):
        s.load(ref_of(data))  # not marked as rejected


def test_lookup_remembers_manifest_answers_for_later(tmp_path: Path) -> None:
    data = REF.to_bytes()

    class Manifest:
        model, release = "tiny", 1
        artifact = type("A", (), {"sha256": "1".rjust(64, "0")})()
        drift_reference = ref_of(data)

    s = store(tmp_path, Fetcher(data), [Manifest()])
    assert s.lookup("tiny", 1, "1".rjust(64, "0")) == ref_of(data)
    later = store(tmp_path, Fetcher(data), [])  # the journal moved on (a revert)
    assert later.lookup("tiny", 1, "1".rjust(64, "0")) == ref_of(data)
    assert later.lookup("tiny", 2, "2".rjust(64, "0")) is UNKNOWN
