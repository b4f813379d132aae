"""agent.localapi: the local HTTP API over real loopback TCP and Unix sockets."""

from __future__ import annotations

import http.client
import io
import json
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from agent.local import Client
from agent.localapi import LocalApi, parse_listen
from agent.serving import ModelHost, ModelInfo
from agent.serving_errors import ApiError, InputError, NoModelError
from fleetcore.runtimes import available_runtimes
from models.tiny import FEATURES, tiny_onnx_bytes

NPY = "application/x-npy"
X = np.linspace(-1.0, 1.0, 2 * FEATURES, dtype=np.float32).reshape(2, FEATURES)


def tiny(tmp_path: Path, seed: int) -> Path:
    path = tmp_path / f"tiny-{seed}.onnx"
    path.write_bytes(tiny_onnx_bytes(seed))
    return path


def info(release: int = 1, name: str = "tiny", fmt: str = "onnx") -> ModelInfo:
    return ModelInfo(model=name, release=release, sha256=f"{release:064x}", format=fmt)


def npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


@pytest.fixture
def host(tmp_path: Path) -> ModelHost:
    served = ModelHost()
    served.activate(tiny(tmp_path, 0), "onnx", info())
    return served


@pytest.fixture
def api(host: ModelHost) -> Iterator[LocalApi]:
    with LocalApi(host, "127.0.0.1:0", status=lambda: {"state": "committed"}) as running:
        yield running


@pytest.fixture
def web(api: LocalApi) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{api.address}") as client:
        yield client


def raw(api: LocalApi, data: bytes) -> bytes:
    """Send raw bytes and end the stream; return everything until the server closes."""
    host, port = api.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def error_of(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/json"
    code: str = response.json()["error"]["code"]
    assert response.json()["error"]["message"]
    return code


# -- listen addresses ---------------------------------------------------------------------


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:8470") == ("127.0.0.1", 8470)
    assert parse_listen("localhost:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:80") == ("::1", 80)
    assert parse_listen("unix:/run/x/agent.sock") == Path("/run/x/agent.sock")
    for remote in ("0.0.0.0:8470", "192.168.1.10:80", "[::]:80"):
        with pytest.raises(ValueError, match="not loopback"):
            parse_listen(remote)
    assert parse_listen("0.0.0.0:8470", allow_remote=True) == ("0.0.0.0", 8470)
    for bad in ("8470", "127.0.0.1:http", "127.0.0.1:70000", "example.com:80", "unix:"):
        with pytest.raises(ValueError):
            parse_listen(bad)
    with pytest.raises(ValueError):
        LocalApi(ModelHost(), "0.0.0.0:0")


# -- inference ------------------------------------------------------------------------------


def test_json_inference_named_and_bare(api: LocalApi, web: httpx.Client, host: ModelHost) -> None:
    want = host.infer({"features": X})["probabilities"]
    for inputs in ({"features": X.tolist()}, X.tolist()):
        response = web.post("/v1/infer", json={"inputs": inputs})
        assert response.status_code == 200
        doc = response.json()
        np.testing.assert_array_equal(np.array(doc["outputs"]["probabilities"], np.float32), want)
        assert doc["model"] == {"model": "tiny", "release": 1, "sha256": f"{1:064x}"}


def test_npy_inference(web: httpx.Client, host: ModelHost) -> None:
    want = host.infer({"features": X})["probabilities"]
    headers = {"Content-Type": NPY, "Accept": NPY}
    response = web.post("/v1/infer", content=npy(X), headers=headers)
    assert response.status_code == 200 and response.headers["content-type"] == NPY
    np.testing.assert_array_equal(np.load(io.BytesIO(response.content), allow_pickle=False), want)
    fortran = np.asfortranarray(X)
    as_json = web.post("/v1/infer", content=npy(fortran), headers={"Content-Type": NPY})
    assert as_json.headers["content-type"] == "application/json"
    np.testing.assert_array_equal(
        np.array(as_json.json()["outputs"]["probabilities"], np.float32), want
    )


def test_model_and_health(web: httpx.Client, host: ModelHost) -> None:
    model = web.get("/v1/model")
    assert model.status_code == 200
    assert ModelInfo.from_dict(model.json()) == host.info
    health = web.get("/v1/health")
    assert health.status_code == 200
    doc = health.json()
    assert doc["status"] == "ok" and doc["state"] == "committed"
    assert doc["model"]["sha256"] == f"{1:064x}"
    assert set(doc["serving"]) >= {"inferences", "errors", "p50_ms", "p99_ms"}


def test_no_model_is_503(host: ModelHost, web: httpx.Client) -> None:
    host.deactivate()
    assert error_of(web.post("/v1/infer", json={"inputs": X.tolist()})) == "no_model"
    assert web.post("/v1/infer", json={"inputs": X.tolist()}).status_code == 503
    assert web.get("/v1/model").status_code == 503
    health = web.get("/v1/health")
    assert health.status_code == 503
    assert health.json()["status"] == "no_model" and health.json()["state"] == "committed"


def test_a_failing_status_callback_does_not_break_health(host: ModelHost) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("state file locked")

    with LocalApi(host, "127.0.0.1:0", status=broken) as api:
        doc = httpx.get(f"http://{api.address}/v1/health").json()
    assert doc["status"] == "ok" and "state file locked" in doc["status_error"]


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"\xff\xfe\x00",
        b"[1, 2]",
        b'{"inputs": 5}',
        b'{"something": []}',
        b'{"inputs": {"unknown": [[1, 2, 3, 4]]}}',
        b'{"inputs": {"features": [[1, 2], [3]]}}',
        b'{"inputs": {"features": [["a", "b", "c", "d"]]}}',
        b'{"inputs": {"features": [[true, false, true, false]]}}',
        b'{"inputs": {"features": [[null, 1, 2, 3]]}}',
        b'{"inputs": {"features": [[1e999999, 1, 2, 3, 99999999999999999999999999]]}}',
        b'{"inputs": {"features": [[1, 2, 3]]}}',
        b'{"inputs": {"features": []}}',
        b'{"inputs": {"features": 1.5}}',
        b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
)
def test_bad_json_is_400(web: httpx.Client, host: ModelHost, body: bytes) -> None:
    response = web.post("/v1/infer", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert error_of(response) == "bad_input"
    assert host.stats.snapshot().errors == 0


def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        out, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return out.getvalue()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"plain text",
        b"\x93NUMPY\x01\x00garbage",
        b"\x93NUMPY\x09\x00" + b"\x00" * 64,
        npy(X)[:-4],  # truncated data
        npy(X) + b"\x00" * 4,  # trailing bytes
        _npy_header("<f4", (10**12, 4)),  # claims a terabyte, sends nothing
        _npy_header("|O", (2,)) + b"\x00" * 16,  # object dtype (pickles)
        npy(X.astype(np.float64)),  # wrong dtype
        npy(X.astype(">f4")),  # wrong byte order
        npy(X[:, :3]),  # wrong shape
        npy(np.zeros((0, FEATURES), np.float32)),  # empty batch
        npy(np.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", "<f8")])),  # structured
    ],
)
def test_bad_npy_is_400(web: httpx.Client, host: ModelHost, body: bytes) -> None:
    response = web.post("/v1/infer", content=body, headers={"Content-Type": NPY})
    assert response.status_code == 400, response.text
    assert error_of(response) == "bad_input"
    assert host.stats.snapshot().errors == 0


def test_unknown_route_and_wrong_method(web: httpx.Client) -> None:
    assert web.get("/v1/nothing").status_code == 404
    assert error_of(web.get("/v1/nothing")) == "not_found"
    for method, path in (("GET", "/v1/infer"), ("POST", "/v1/model"), ("DELETE", "/v1/health")):
        response = web.request(method, path, content=b"x" * 10)
        assert response.status_code == 405 and error_of(response) == "method_not_allowed"
    assert web.get("/v1/health?verbose=1").status_code == 200


def test_oversized_body_is_413_without_reading_it(host: ModelHost) -> None:
    with LocalApi(host, "127.0.0.1:0", max_body_bytes=1024) as api:
        big = json.dumps({"inputs": np.zeros((100, FEATURES)).tolist()}).encode()
        answer = raw(
            api, b"POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(big)
        )
        assert answer.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in answer
        assert b'"too_large"' in answer
        ok = httpx.post(f"http://{api.address}/v1/infer", json={"inputs": X[:1].tolist()})
        assert ok.status_code == 200


def test_malformed_requests_never_stop_the_server(api: LocalApi, web: httpx.Client) -> None:
    for data in (
        b"garbage\r\n\r\n",
        b"POST /v1/infer HTTP/1.1\r\nHost: x\r\n\r\n",  # no length
        b"POST /v1/infer HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"POST /v1/infer HTTP/1.1\r\nContent-Length: 100\r\n\r\n{",  # ends early
        b"POST /v1/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"BREW /v1/infer HTTP/1.1\r\n\r\n",
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"\x00\x01\x02\x03" * 1000,
    ):
        answer = raw(api, data)
        assert answer.startswith(b"HTTP/1.1 4") or answer.startswith(b"HTTP/1.1 5"), answer[:80]
        assert b'{"error": {"code": ' in answer
    rng = np.random.default_rng(0)
    for _ in range(50):
        junk = rng.integers(0, 256, int(rng.integers(1, 400)), dtype=np.uint8).tobytes()
        status = web.post("/v1/infer", content=junk, headers={"Content-Type": NPY}).status_code
        assert status == 400
    assert web.get("/v1/health").status_code == 200


def test_keep_alive_reuses_one_connection(api: LocalApi) -> None:
    host, port = api.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    body = json.dumps({"inputs": X.tolist()})
    for _ in range(3):
        conn.request("POST", "/v1/infer", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("Connection") is None
        response.read()
    conn.request("GET", "/nowhere")  # an error keeps the connection too
    assert conn.getresponse().status == 404
    conn.close()


def test_stop_closes_idle_keep_alive_connections(host: ModelHost) -> None:
    api = LocalApi(host, "127.0.0.1:0")
    api.start()
    with httpx.Client(base_url=f"http://{api.address}") as client:
        assert client.get("/v1/health").status_code == 200
        started = time.monotonic()
        api.stop()
        assert time.monotonic() - started < 5
        with pytest.raises(httpx.TransportError):
            client.get("/v1/health")


# -- Unix socket ------------------------------------------------------------------------------


def test_unix_socket_mode_and_client(host: ModelHost, tmp_path: Path) -> None:
    path = tmp_path / "run" / "agent.sock"
    with LocalApi(host, f"unix:{path}") as api:
        assert api.address == f"unix:{path}"
        mode = path.stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
        with Client(api.address) as client:
            got = client.infer({"features": X})["probabilities"]
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, host.infer({"features": X})["probabilities"])
            np.testing.assert_array_equal(client.infer_npy(X), got)
            assert client.model() == host.info
            assert client.health()["status"] == "ok"
            with pytest.raises(InputError, match="shape"):
                client.infer(X[:, :2])
            host.deactivate()
            with pytest.raises(NoModelError):
                client.infer(X)
            assert client.health()["status"] == "no_model"
    assert not path.exists()


def test_unix_socket_stale_file_in_use_and_not_a_socket(host: ModelHost, tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a socket file nobody listens on, as a crash leaves it
    with LocalApi(host, f"unix:{path}") as api:
        with pytest.raises(OSError, match="another process"):
            LocalApi(host, f"unix:{path}").start()
        assert Client(api.address).health()["status"] == "ok"
    path.write_text("not a socket")
    with pytest.raises(OSError, match="not a socket"):
        LocalApi(host, f"unix:{path}").start()
    assert path.read_text() == "not a socket"


def test_custom_socket_mode(host: ModelHost, tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"
    with LocalApi(host, f"unix:{path}", socket_mode=0o600):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- client over TCP and hot swap -----------------------------------------------------------------


def test_client_errors_over_tcp(api: LocalApi, tmp_path: Path) -> None:
    with Client(f"http://{api.address}") as client:
        assert set(client.infer(X)) == {"probabilities"}
        with pytest.raises(InputError):
            client.infer({"nope": X})
    with Client(f"unix:{tmp_path / 'absent.sock'}") as client, pytest.raises(ApiError) as caught:
        client.infer(X)
    assert caught.value.code == "unavailable" and caught.value.http_status == 0


def test_hot_swap_over_http(tmp_path: Path) -> None:
    host = ModelHost()
    host.activate(tiny(tmp_path, 0), "onnx", info(1))
    expected = {}
    for release, seed in ((1, 0), (2, 1), (3, 2)):
        probe = ModelHost()
        probe.activate(tiny(tmp_path, seed), "onnx", info(release))
        expected[f"{release:064x}"] = probe.infer({"features": X})["probabilities"]
    stop, failures, answers = threading.Event(), [], []
    with LocalApi(host, "127.0.0.1:0") as api:

        def load() -> None:
            with httpx.Client(base_url=f"http://{api.address}") as client:
                while not stop.is_set():
                    response = client.post("/v1/infer", json={"inputs": X.tolist()})
                    if response.status_code != 200:
                        failures.append(response.text)
                    answers.append(response.json())

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        for release, seed in ((2, 1), (3, 2)):
            time.sleep(0.2)
            host.activate(tiny(tmp_path, seed), "onnx", info(release))
        time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(10)
    assert failures == []
    seen = set()
    for doc in answers:
        sha = doc["model"]["sha256"]
        got = np.array(doc["outputs"]["probabilities"], np.float32)
        np.testing.assert_array_equal(got, expected[sha])
        seen.add(sha)
    assert len(seen) == 3


@pytest.mark.tflite
@pytest.mark.skipif(
    not set(available_runtimes()) & {"ai-edge-litert", "tflite-runtime"},
    reason="no TFLite interpreter",
)
def test_tflite_model_over_http(committed: Any, tmp_path: Path) -> None:
    host = ModelHost()
    host.activate(committed.tflite, "tflite", info(name="sensor", fmt="tflite"))
    features = committed.heldout[0][:8]
    with LocalApi(host, f"unix:{tmp_path / 'a.sock'}") as api, Client(api.address) as client:
        got = client.infer({"features": features})["probabilities"]
        np.testing.assert_array_equal(got, host.infer({"features": features})["probabilities"])
        np.testing.assert_array_equal(client.infer_npy(features), got)
        assert client.model().runtime in {"ai-edge-litert", "tflite-runtime"}


def test_head_answers_carry_no_body(api: LocalApi) -> None:
    host, port = api.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("HEAD", "/v1/health")
    response = conn.getresponse()
    assert response.status == 405 and int(response.getheader("Content-Length", "0")) > 0
    assert response.read() == b""
    conn.request("GET", "/v1/health")  # the connection is still in step
    assert conn.getresponse().status == 200
    conn.close()
