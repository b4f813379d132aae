"""The drift report: sections per release and cohort, their JSON, filters, and the PNG."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from control_plane.drift.plot import write_png
from control_plane.drift.report import PLOTTED_FEATURES
from control_plane.drift.service import parse_cohort
from control_plane.errors import InvalidInputError, NotFoundError
from fleetcore.drift import FEATURE_COUNTS, FEATURE_EDGES
from fleetcore.drift.summary import DriftSummary
from tests.unit.control_plane.drift.support import (
    FEATURES,
    MODEL,
    REFERENCE,
    START,
    T0,
    FakeStore,
    device,
    device_summaries,
    drift_service,
    make_reference,
)

NORTH = [device(0), device(1)]
SOUTH = [device(2), device(3)]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _store() -> FakeStore:
    summaries: list[DriftSummary] = []
    for i, name in enumerate(NORTH + SOUTH + [device(4)]):
        shift = {1: 0.5} if name in SOUTH else None
        summaries += device_summaries(REFERENCE, name, 6, 120, seed=60 + i, shift=shift)
    labels = {name: {"site": "north"} for name in NORTH} | {
        name: {"site": "south"} for name in SOUTH
    }
    labels[device(4)] = {"hw": "rpi4"}
    return FakeStore(references={1: REFERENCE}, labels=labels, summaries=summaries)


def _sections(report: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    return {(s["cohort"] or {}).get("value"): s for s in report["sections"]}


def test_a_cohort_label_gives_one_section_per_value_and_only_the_drifted_one_alarms() -> None:
    report = drift_service(_store()).report(MODEL, cohort="site")
    json.dumps(report, allow_nan=False)  # plain JSON: no NaN or infinity anywhere
    assert report["model"] == MODEL
    assert report["generated_at"] == "2025-03-03T11:00:00Z"
    assert report["settings"] == {"bucket_s": 60, "min_samples": 80, "persistence": "3 of 4"}
    sections = _sections(report)
    assert list(sections) == [None, "north", "south"]  # devices without the label come first
    south, north = sections["south"], sections["north"]
    assert south["cohort"] == {"label": "site", "value": "south"}
    assert south["alarm"] and south["persistent_features"] == ["f1"]
    assert not north["alarm"] and north["persistent_features"] == []
    assert south["release"] == 1 and south["reference"] == REFERENCE.digest()
    assert south["breadth"] == {
        "devices_tested": 2, "devices_drifted": 2, "share_devices": 1.0, "share_traffic": 1.0,
    }  # fmt: skip
    assert south["samples"] == 2 * 4 * 120
    assert (south["windows_drifted"], south["windows_considered"]) == (4, 4)
    assert south["span"] == {"start": "2025-03-03T10:02:00Z", "end": "2025-03-03T10:06:00Z"}

    # Drifted features first, each with its effect sizes and p-values.
    first = south["features"][0]
    assert first["name"] == "f1" and first["drifted"] and first["persistent_windows"] == 4
    assert first["mean_shift_sd"] == pytest.approx(0.5, abs=0.1)
    assert first["q_value"] < 1e-6 and first["testable"] and first["reason"] == "tested"
    assert sorted(f["name"] for f in south["features"]) == sorted(FEATURES)
    assert not any(f["drifted"] for f in north["features"])

    windows = south["windows"]
    assert [w["end"] for w in windows][:2] == ["2025-03-03T10:01:00Z", "2025-03-03T10:02:00Z"]
    assert all(w["tested"] and w["drifted"] == ["f1"] and w["devices"] == 2 for w in windows)
    assert all(w["score"] > 0.3 for w in windows)
    assert all(w["score"] == 0.0 for w in north["windows"] if not w["drifted"])

    accuracy = south["accuracy"]
    assert accuracy["method"] == "cbpe" and accuracy["labelled"] is False
    assert accuracy["low"] <= accuracy["value"] <= accuracy["high"]
    assert south["reference_accuracy"] == pytest.approx(REFERENCE.accuracy.accuracy(), abs=1e-4)  # type: ignore[union-attr]

    # Histograms to plot: the features that moved most, reference and current bins.
    hist = south["histograms"]
    assert len(hist) == min(PLOTTED_FEATURES, len(FEATURES)) and "f1" in hist
    assert len(hist["f1"]["edges"]) == FEATURE_EDGES
    assert len(hist["f1"]["reference"]) == len(hist["f1"]["current"]) == FEATURE_COUNTS
    assert sum(hist["f1"]["current"]) == south["samples"]
    assert sum(hist["f1"]["reference"]) == REFERENCE.n


def test_one_cohort_keeps_only_its_devices() -> None:
    report = drift_service(_store()).report(MODEL, cohort="site=north")
    (section,) = report["sections"]
    assert section["cohort"] == {"label": "site", "value": "north"}
    assert section["breadth"]["devices_tested"] == 2 and not section["alarm"]


def test_without_a_cohort_the_fleet_is_one_section_per_release() -> None:
    store = _store()
    second = make_reference(seed=5)
    store.references[2] = second
    store.summaries += device_summaries(second, device(0), 3, 100, seed=1, release=2, first=6)
    service = drift_service(store)
    report = service.report(MODEL)
    assert [(s["release"], s["cohort"]) for s in report["sections"]] == [(1, None), (2, None)]
    fleet = report["sections"][0]
    assert fleet["breadth"]["devices_tested"] == 5 and fleet["breadth"]["devices_drifted"] == 2
    assert fleet["breadth"]["share_devices"] == 0.4
    assert report["sections"][1]["reference"] == second.digest()

    only = service.report(MODEL, release=2)
    assert [s["release"] for s in only["sections"]] == [2]


def test_since_and_the_look_back_bound_the_windows() -> None:
    service = drift_service(_store())
    late = service.report(MODEL, since=T0 + timedelta(minutes=4))
    (section,) = late["sections"]
    assert [w["start"] for w in section["windows"]] == [
        "2025-03-03T10:04:00Z",
        "2025-03-03T10:05:00Z",
    ]
    naive = service.report(MODEL, since=(T0 + timedelta(minutes=4)).replace(tzinfo=None))
    assert naive["sections"] == late["sections"]
    # Without ``since``: the look-back (a day) before the clock.
    later = drift_service(_store(), now=T0 + timedelta(days=1, minutes=3))
    (recent,) = later.report(MODEL)["sections"]
    assert recent["windows"][0]["start"] == "2025-03-03T10:03:00Z"
    assert drift_service(_store(), now=T0 + timedelta(days=2)).report(MODEL)["sections"] == []


def test_windows_that_no_longer_decode_are_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = _store()
    store.payloads.append((device(0), START, b"EFDS\x01 not a summary"))
    with caplog.at_level(logging.WARNING, "edgefleet.drift"):
        report = drift_service(store).report(MODEL)
    assert "skipped a stored drift window of dev-0000" in caplog.text
    assert report["sections"][0]["samples"] == 5 * 4 * 120


def test_a_release_without_a_reference_has_no_section() -> None:
    store = _store()
    store.references[1] = None
    assert drift_service(store).report(MODEL)["sections"] == []


@pytest.mark.parametrize("text", ["=north", "site=", "="])
def test_bad_cohorts_are_refused_with_the_forms_that_work(text: str) -> None:
    with pytest.raises(InvalidInputError, match="give a label"):
        drift_service(_store()).report(MODEL, cohort=text)


def test_cohort_forms() -> None:
    assert parse_cohort(None) == (None, None)
    assert parse_cohort("") == (None, None)
    assert parse_cohort("site") == ("site", None)
    assert parse_cohort("site=north") == ("site", "north")


def test_an_unknown_model_is_not_found() -> None:
    with pytest.raises(NotFoundError, match="no model named 'nope'"):
        drift_service(_store()).report("nope")


# -- the plot ----------------------------------------------------------------------------------


def test_the_png_has_a_row_per_section(tmp_path: Path) -> None:
    report = drift_service(_store()).report(MODEL, cohort="site")
    path = write_png(report["sections"], tmp_path / "plots" / "drift.png")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    # IHDR: width and height, big-endian, right after the signature and chunk header.
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > height > 0
    one = write_png(report["sections"][-1:], tmp_path / "one.png").read_bytes()
    assert int.from_bytes(one[20:24], "big") < height


def test_nothing_to_plot_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no drift windows to plot"):
        write_png([], tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()
