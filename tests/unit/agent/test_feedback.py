"""POST /v1/infer request ids and POST /v1/feedback, over the real local API and model."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from agent.capture import CAPTURE, CaptureSampler
from agent.feedback import FeedbackError, RequestLog
from agent.local import Client
from agent.localapi import LocalApi
from agent.probe import DRIFT, DriftProbe
from agent.serving import ModelHost
from agent.serving_errors import ApiError
from fleetcore.drift.encoding import decode
from fleetcore.runtimes import available_runtimes
from models.tiny import FEATURES, tiny_onnx_bytes
from tests.unit.agent.driftkit import CLASS_NAMES, channels, model_info, reference

pytestmark = pytest.mark.skipif(
    "onnxruntime" not in available_runtimes(), reason="needs onnxruntime"
)
X = np.linspace(-1.0, 1.0, 2 * FEATURES, dtype=np.float32).reshape(2, FEATURES)


@pytest.fixture
def parts(tmp_path: Path) -> tuple[ModelHost, DriftProbe, CaptureSampler, RequestLog]:
    path = tmp_path / "tiny.onnx"
    path.write_bytes(tiny_onnx_bytes(0))
    host = ModelHost()
    host.activate(path, "onnx", model_info(1))
    outbox = channels(tmp_path)
    probe = DriftProbe(device="dev-1", window_s=60, outbox=outbox, resolve=lambda i: reference())
    probe.sync(host.info, 0)
    capture = CaptureSampler(
        outbox=outbox, window_s=60, rate=1.0, max_rows=100, max_bytes=1 << 20, label_grace_s=0
    )
    return host, probe, capture, RequestLog(probe, capture, capacity=3)


@pytest.fixture
def web(parts: tuple[ModelHost, DriftProbe, CaptureSampler, RequestLog]) -> Iterator[httpx.Client]:
    host, _, _, log = parts
    with (
        LocalApi(host, "127.0.0.1:0", requests=log) as api,
        httpx.Client(base_url=f"http://{api.address}") as client,
    ):
        yield client


def infer(web: httpx.Client, rows: np.ndarray = X) -> dict[str, object]:
    answer = web.post("/v1/infer", json={"inputs": rows.tolist()})
    assert answer.status_code == 200
    doc: dict[str, object] = answer.json()
    return doc


def test_answers_carry_a_fresh_request_id(web: httpx.Client) -> None:
    ids = {infer(web)["request_id"] for _ in range(3)}
    assert len(ids) == 3 and all(isinstance(i, str) and len(i) >= 16 for i in ids)
    npy = web.post(
        "/v1/infer",
        json={"inputs": X.tolist()},
        headers={"Accept": "application/x-npy"},
    )
    assert npy.status_code == 200 and len(npy.headers["X-Request-Id"]) >= 16


def test_feedback_counts_in_the_summary_and_fills_the_capture(
    web: httpx.Client, parts: tuple[ModelHost, DriftProbe, CaptureSampler, RequestLog]
) -> None:
    _, probe, capture, _ = parts
    doc = infer(web)
    predicted = np.asarray(doc["outputs"]["probabilities"]).argmax(axis=1)  # type: ignore[index]
    labels = [int(predicted[0]), CLASS_NAMES[(int(predicted[1]) + 1) % 3]]
    answer = web.post("/v1/feedback", json={"request_id": doc["request_id"], "label": labels})
    assert answer.status_code == 200
    assert answer.json() == {"rows": 2, "correct": 1, "counted": True, "captured": 2}
    probe.close(0)
    (item,) = probe.outbox.peek(DRIFT)
    body = decode(item.body).body
    assert body.n == 2 and int(body.labelled.sum()) == 2 and int(body.correct.sum()) == 1
    capture.finalize(everything=True)
    import io

    (sample,) = probe.outbox.peek(CAPTURE)
    with np.load(io.BytesIO(sample.body), allow_pickle=False) as npz:
        assert npz["y"].tolist() == [int(predicted[0]), (int(predicted[1]) + 1) % 3]
        assert np.array_equal(npz["x"], X)


def test_feedback_errors(web: httpx.Client) -> None:
    doc = infer(web)
    rid = doc["request_id"]

    def code(body: object) -> tuple[int, str]:
        answer = web.post("/v1/feedback", json=body)
        return answer.status_code, answer.json()["error"]["code"]

    assert code({"request_id": "nope", "label": 0}) == (404, "unknown_request")
    assert code({"request_id": rid, "label": 0}) == (422, "bad_label")  # two rows, one label
    assert code({"request_id": rid, "label": [0, 3]}) == (422, "bad_label")
    assert code({"request_id": rid, "label": [0, "cat"]}) == (422, "bad_label")
    assert code({"request_id": rid, "label": [True, 0]}) == (422, "bad_label")
    assert code({"label": 0}) == (422, "bad_request")
    assert web.post("/v1/feedback", content=b"{").status_code == 400
    assert web.post("/v1/feedback", json={"request_id": rid, "label": [0, 1]}).status_code == 200
    assert code({"request_id": rid, "label": [0, 1]}) == (409, "already_recorded")


def test_old_request_ids_expire_from_the_bounded_log(web: httpx.Client) -> None:
    first = infer(web)["request_id"]
    for _ in range(3):
        infer(web)
    answer = web.post("/v1/feedback", json={"request_id": first, "label": [0, 0]})
    assert answer.status_code == 404


def test_the_client_predicts_and_gives_feedback(
    parts: tuple[ModelHost, DriftProbe, CaptureSampler, RequestLog],
) -> None:
    host, _, _, log = parts
    with LocalApi(host, "127.0.0.1:0", requests=log) as api, Client(f"http://{api.address}") as c:
        prediction = c.predict({"features": X[:1]})
        assert prediction.request_id is not None and prediction.model["release"] == 1
        assert c.feedback(prediction.request_id, "low")["rows"] == 1
        with pytest.raises(ApiError) as refused:
            c.feedback(prediction.request_id, "low")
        assert refused.value.http_status == 409


def test_without_a_request_log_there_is_no_id_and_feedback_is_off(
    parts: tuple[ModelHost, DriftProbe, CaptureSampler, RequestLog],
) -> None:
    host = parts[0]
    with LocalApi(host, "127.0.0.1:0") as api, httpx.Client(base_url=f"http://{api.address}") as w:
        assert "request_id" not in infer(w)
        assert w.post("/v1/feedback", json={"request_id": "x", "label": 0}).status_code == 404


def test_the_probe_adds_little_to_an_inference(
    parts: tuple[ModelHost, DriftProbe, CaptureSampler, RequestLog],
) -> None:
    host, _, _, log = parts
    feeds = {"features": X}
    info = host.info
    assert info is not None
    outputs = host.infer(feeds)
    rounds = 2000
    start = time.perf_counter()
    for _ in range(rounds):
        log.observe(info, feeds, outputs)
    per_call_us = (time.perf_counter() - start) / rounds * 1e6
    assert per_call_us < 200, f"observe takes {per_call_us:.0f} µs per request"


def test_a_request_log_refuses_a_non_string_id(
    parts: tuple[ModelHost, DriftProbe, CaptureSampler, RequestLog],
) -> None:
    with pytest.raises(FeedbackError) as refused:
        parts[3].feedback(12, 0)
    assert refused.value.status == 422
