"""Streaming artifact verification and safe names."""

from __future__ import annotations

import hashlib
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetcore.artifact import StreamVerifier, check_digest, safe_name, store_path, verify_stream
from fleetcore.errors import HashMismatchError, LengthMismatchError, UnsafePathError

DATA = bytes(range(256)) * 4099  # not a multiple of any chunk size
SHA = hashlib.sha256(DATA).hexdigest()


class CountingStream(io.BytesIO):
    """Records how many bytes were requested, to prove reads are capped."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.requested = 0

    def readinto(self, buffer):  # type: ignore[no-untyped-def, override]
        self.requested += len(buffer)
        return super().readinto(buffer)


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_exact_artifact_verifies(chunk: int) -> None:
    assert verify_stream(io.BytesIO(DATA), len(DATA), SHA, chunk_bytes=chunk) == len(DATA)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (DATA + b"x", LengthMismatchError),  # oversized by one byte
        (DATA + b"x" * 10_000_000, LengthMismatchError),  # oversized a lot
        (DATA[:-1], LengthMismatchError),  # truncated
        (b"", LengthMismatchError),  # empty
        (DATA[:100] + bytes([DATA[100] ^ 0x01]) + DATA[101:], HashMismatchError),  # one bit flipped
        (DATA[::-1], HashMismatchError),  # same length, other bytes
    ],
    ids=["oversized-1", "oversized-10MB", "truncated", "empty", "bit-flipped", "reordered"],
)
def test_bad_artifacts_are_refused(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        verify_stream(io.BytesIO(data), len(DATA), SHA, chunk_bytes=65536)


def test_oversized_stream_is_not_read_past_signed_length_plus_one() -> None:
    stream = CountingStream(DATA + b"y" * (50 << 20))
    with pytest.raises(LengthMismatchError):
        verify_stream(stream, len(DATA), SHA, chunk_bytes=65536)
    assert stream.tell() == len(DATA) + 1
    assert stream.requested <= len(DATA) + 1


def test_update_refuses_the_chunk_that_crosses_the_length() -> None:
    verifier = StreamVerifier(10, hashlib.sha256(b"0123456789").hexdigest())
    verifier.update(b"01234")
    with pytest.raises(LengthMismatchError):
        verifier.update(b"567890")
    assert verifier.received == 5  # the offending chunk was not counted


@given(st.binary(max_size=4096), st.integers(min_value=1, max_value=512))
def test_any_chunking_gives_the_same_answer(data: bytes, chunk: int) -> None:
    digest = hashlib.sha256(data).hexdigest()
    assert verify_stream(io.BytesIO(data), len(data), digest, chunk_bytes=chunk) == len(data)


@pytest.mark.parametrize(
    "name",
    [
        "../etc/passwd",
        "..",
        "a/../../b",
        "/abs",
        "dir/model.onnx",
        "model.onnx\x00.txt",
        ".hidden",
        "a\\b.onnx",
        "",
        "x" * 300,
        "mo\ndel",
    ],
)
def test_unsafe_artifact_names_are_refused(name: str) -> None:
    with pytest.raises(UnsafePathError):
        safe_name(name)


@pytest.mark.parametrize("name", ["model.onnx", "sensor-int8.tflite", "a_b+c-1.2.onnx"])
def test_plain_names_are_accepted(name: str) -> None:
    assert safe_name(name) == name


@pytest.mark.parametrize("digest", ["../" + "a" * 61, "A" * 64, "a" * 63, "g" * 64, "a" * 64 + "/"])
def test_store_path_refuses_non_digests(digest: str) -> None:
    with pytest.raises(UnsafePathError):
        store_path(digest)


def test_store_path_is_content_addressed() -> None:
    assert str(store_path(SHA)) == f"sha256/{SHA[:2]}/{SHA}"
    assert check_digest(SHA) == SHA
