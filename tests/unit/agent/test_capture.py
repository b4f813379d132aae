"""agent.capture: bounded reservoir samples per window, labels from feedback, .npz uploads."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from agent.capture import CAPTURE, CaptureSampler
from tests.unit.agent.driftkit import batch, channels


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sampler(tmp_path: Path, clock: Clock, **kw: float) -> CaptureSampler:
    args: dict[str, float] = {
        "rate": 1.0,
        "max_rows": 50,
        "max_bytes": 1 << 20,
        "label_grace_s": 30.0,
        **kw,
    }
    return CaptureSampler(
        outbox=channels(tmp_path),
        window_s=60,
        seed=1,
        clock=clock,
        **args,  # type: ignore[arg-type]
    )


def uploads(s: CaptureSampler) -> list[tuple[dict[str, str], dict[str, np.ndarray]]]:
    out = []
    for item in s.outbox.peek(CAPTURE):
        with np.load(io.BytesIO(item.body), allow_pickle=False) as npz:
            out.append((dict(item.meta), {k: npz[k] for k in npz.files}))
    return out


def test_the_sample_never_passes_the_row_cap_and_is_uniform(tmp_path: Path) -> None:
    clock = Clock(960.0)
    s = sampler(tmp_path, clock, max_rows=50)
    x = np.arange(4000 * 4, dtype=np.float32).reshape(4000, 4)
    for start in range(0, 4000, 100):
        s.offer("tiny", 3, x[start : start + 100])
    s.close(960)
    assert s.finalize(everything=True) == 1
    ((meta, arrays),) = uploads(s)
    assert meta == {"model": "tiny", "release": "3", "window_start": "960"}
    assert arrays["x"].dtype == np.float32 and arrays["x"].shape == (50, 4)
    assert arrays["y"].dtype == np.int64 and (arrays["y"] == -1).all()
    assert arrays["time"].dtype == np.int64 and (arrays["time"] == 960).all()
    rows = arrays["x"][:, 0] / 4
    assert len(set(rows.tolist())) == 50
    assert rows.mean() > 1000  # not just the first rows: later ones replaced some


def test_the_byte_cap_bounds_the_rows_too(tmp_path: Path) -> None:
    s = sampler(tmp_path, Clock(), max_rows=1000, max_bytes=32 * 10)  # 32 bytes per 4-feature row
    assert s.capacity(4) == 10
    s.offer("tiny", 1, batch(100)[0])
    s.finalize(everything=True)
    ((_, arrays),) = uploads(s)
    assert len(arrays["x"]) == 10


def test_the_rate_thins_the_stream(tmp_path: Path) -> None:
    s = sampler(tmp_path, Clock(), rate=0.1, max_rows=100_000)
    for seed in range(20):
        s.offer("tiny", 1, batch(500, seed=seed)[0])
    s.finalize(everything=True)
    ((_, arrays),) = uploads(s)
    assert 800 < len(arrays["x"]) < 1200  # about 10 % of 10,000


def test_labels_fill_y_until_the_grace_period_ends(tmp_path: Path) -> None:
    clock = Clock(1000.0)  # window [960, 1020)
    s = sampler(tmp_path, clock)
    refs = s.offer("tiny", 1, batch(3)[0])
    assert s.label(refs[1], 2)
    clock.now = 1030.0
    s.close(960)
    assert s.finalize() == 0  # the grace lasts until 1020 + 30
    assert s.label(refs[2], 0)  # late feedback still lands
    clock.now = 1050.0
    assert s.finalize() == 1
    assert not s.label(refs[0], 1)  # uploaded: too late
    ((_, arrays),) = uploads(s)
    assert arrays["y"].tolist() == [-1, 2, 0]


def test_a_new_window_or_release_starts_a_new_sample(tmp_path: Path) -> None:
    clock = Clock(1000.0)
    s = sampler(tmp_path, clock)
    s.offer("tiny", 1, batch(2)[0])
    s.offer("tiny", 2, batch(3)[0])
    clock.now = 1100.0
    s.offer("tiny", 2, batch(4)[0])
    s.finalize(everything=True)
    got = sorted((m["release"], m["window_start"], len(a["x"])) for m, a in uploads(s))
    assert got == [("1", "960", 2), ("2", "1080", 4), ("2", "960", 3)]


def test_a_replaced_row_does_not_take_a_label_meant_for_another(tmp_path: Path) -> None:
    s = sampler(tmp_path, Clock(), max_rows=1)
    first = s.offer("tiny", 1, batch(1, seed=1)[0])[0]
    replaced = None
    for seed in range(2, 50):
        refs = s.offer("tiny", 1, batch(1, seed=seed)[0])
        if refs:
            replaced = refs[0]
            break
    assert replaced is not None and replaced.slot == first.slot
    assert not s.label(first, 1)
    assert s.label(replaced, 2)


@pytest.mark.parametrize("rate", [0.0])
def test_rate_zero_keeps_nothing(tmp_path: Path, rate: float) -> None:
    s = sampler(tmp_path, Clock(), rate=rate)
    assert s.offer("tiny", 1, batch(10)[0]) == {}
    assert s.finalize(everything=True) == 0
