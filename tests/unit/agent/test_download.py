"""Artifact downloads against a real HTTP server: Range resume, ignored Range, caps, disk full."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
from pathlib import Path

import httpx
import pytest

from agent.download import DownloadConfig, Downloader
from agent.errors import DiskFullError, DownloadError, SupersededError
from fleetcore.errors import LengthMismatchError
from tests.unit.agent.fakecp import FakeControlPlane
from tests.unit.agent.rig import tiny_filesystem

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()
FAST = DownloadConfig(attempts=3, backoff_initial_s=0.01, backoff_max_s=0.02)


@pytest.fixture
def cp(fakecp: FakeControlPlane) -> FakeControlPlane:
    fakecp.add_artifact(DATA)
    return fakecp


def downloader(cp: FakeControlPlane, config: DownloadConfig = FAST) -> Downloader:
    client = httpx.Client(
        base_url=cp.url, headers={"Authorization": f"Bearer {cp.state.device_token}"}
    )
    return Downloader(client, config)


def test_full_download(cp: FakeControlPlane, tmp_path: Path) -> None:
    part = tmp_path / "x.part"
    downloader(cp).fetch(SHA, len(DATA), part)
    assert part.read_bytes() == DATA
    assert cp.artifact_ranges() == [None]


def test_resumes_from_the_partial_file_with_range(cp: FakeControlPlane, tmp_path: Path) -> None:
    part = tmp_path / "x.part"
    part.write_bytes(DATA[:100_000])
    downloader(cp).fetch(SHA, len(DATA), part)
    assert part.read_bytes() == DATA
    assert cp.artifact_ranges() == ["bytes=100000-"]


def test_interrupted_transfer_is_retried_with_range(cp: FakeControlPlane, tmp_path: Path) -> None:
    cp.state.faults.cut_after_bytes, cp.state.faults.cuts_left = 70_000, 2
    part = tmp_path / "x.part"
    attempts: list[int] = []
    downloader(cp).fetch(SHA, len(DATA), part, on_attempt=attempts.append)
    assert part.read_bytes() == DATA
    assert cp.artifact_ranges() == [None, "bytes=70000-", "bytes=140000-"]
    assert attempts == [1, 2]


def test_server_ignoring_range_restarts_from_zero(cp: FakeControlPlane, tmp_path: Path) -> None:
    cp.state.faults.ignore_range = True
    part = tmp_path / "x.part"
    part.write_bytes(DATA[:5000])
    downloader(cp).fetch(SHA, len(DATA), part)
    assert part.read_bytes() == DATA  # not the prefix twice
    assert cp.artifact_ranges() == ["bytes=5000-"]


def test_declared_length_beyond_the_signed_one_is_refused_unread(
    cp: FakeControlPlane, tmp_path: Path
) -> None:
    cp.state.faults.extra_bytes = 10
    part = tmp_path / "x.part"
    with pytest.raises(LengthMismatchError):
        downloader(cp).fetch(SHA, len(DATA), part)
    assert not part.exists()


def test_undeclared_extra_bytes_are_never_written(cp: FakeControlPlane, tmp_path: Path) -> None:
    cp.state.faults.extra_bytes = 5_000_000
    cp.state.faults.declare_length = False
    part = tmp_path / "x.part"
    with pytest.raises(LengthMismatchError):
        downloader(cp).fetch(SHA, len(DATA), part)
    assert not part.exists()


def test_a_partial_file_longer_than_signed_is_discarded(
    cp: FakeControlPlane, tmp_path: Path
) -> None:
    part = tmp_path / "x.part"
    part.write_bytes(DATA + b"junk")
    downloader(cp).fetch(SHA, len(DATA), part)
    assert part.read_bytes() == DATA


def test_complete_partial_file_needs_no_request(cp: FakeControlPlane, tmp_path: Path) -> None:
    part = tmp_path / "x.part"
    part.write_bytes(DATA)
    downloader(cp).fetch(SHA, len(DATA), part)
    assert cp.artifact_ranges() == []


def test_not_found_is_not_retried(cp: FakeControlPlane, tmp_path: Path) -> None:
    other = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(DownloadError, match="404"):
        downloader(cp).fetch(other, 10, tmp_path / "x.part")
    assert len(cp.artifact_ranges()) == 1


def test_server_errors_are_retried_then_given_up(cp: FakeControlPlane, tmp_path: Path) -> None:
    cp.state.faults.status = 503
    with pytest.raises(DownloadError, match="after 3 attempts"):
        downloader(cp).fetch(SHA, len(DATA), tmp_path / "x.part")
    assert len(cp.artifact_ranges()) == 3


def test_attempts_before_a_restart_count(cp: FakeControlPlane, tmp_path: Path) -> None:
    cp.state.faults.status = 503
    with pytest.raises(DownloadError):
        downloader(cp).fetch(SHA, len(DATA), tmp_path / "x.part", attempts_made=2)
    assert len(cp.artifact_ranges()) == 1


def test_unreachable_server_is_a_download_error(tmp_path: Path) -> None:
    client = httpx.Client(base_url="http://127.0.0.1:9")
    with pytest.raises(DownloadError):
        Downloader(client, FAST).fetch(SHA, len(DATA), tmp_path / "x.part")


def test_cancellation_stops_between_chunks(cp: FakeControlPlane, tmp_path: Path) -> None:
    with pytest.raises(SupersededError):
        downloader(cp).fetch(SHA, len(DATA), tmp_path / "x.part", cancelled=lambda: True)


def test_disk_full_on_a_tiny_tmpfs(cp: FakeControlPlane, tmp_path: Path) -> None:
    with tiny_filesystem(tmp_path / "tiny", 100) as mnt:
        part = mnt / "x.part"
        with pytest.raises(DiskFullError):
            downloader(cp).fetch(SHA, len(DATA), part)
        assert not part.exists()


def test_file_size_limit_is_disk_full(cp: FakeControlPlane, tmp_path: Path) -> None:
    """RLIMIT_FSIZE with SIGXFSZ ignored: the write fails with EFBIG."""
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    try:
        part = tmp_path / "x.part"
        with pytest.raises(DiskFullError):
            downloader(cp).fetch(SHA, len(DATA), part)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert not part.exists()
