from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.agent.fakecp import FakeControlPlane


@pytest.fixture
def fakecp() -> Iterator[FakeControlPlane]:
    cp = FakeControlPlane().start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def rig(tmp_path: Path, fakecp: FakeControlPlane):  # type: ignore[no-untyped-def]
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from tests.unit.agent.rig import Rig

    rig = Rig(tmp_path / "data", fakecp)
    yield rig
    if rig.db is not None:
        rig.db.close()
