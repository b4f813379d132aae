"""Metadata parsing: round trips, unknown fields kept, hostile input refused cleanly."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetcore.errors import EdgefleetError, MetadataError
from fleetcore.metadata import Assignment, ReleaseManifest, Root
from fleetcore.trust import TrustedSet, TrustState
from tests.support.repo import DEVICE, T0, RepoSim

SIM = RepoSim.create(root=2, root_threshold=2)
MANIFEST = SIM.manifest()
DOCS: dict[str, tuple[type[Any], dict[str, Any]]] = {
    "root": (Root, SIM.root().to_dict()),
    "release": (ReleaseManifest, MANIFEST.to_dict()),
    "assignment": (Assignment, SIM.assignment(MANIFEST).to_dict()),
}
json_leaf = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=70)
)
json_value = st.recursive(
    json_leaf,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=6,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


def mutate(doc: dict[str, Any], path: tuple[Any, ...], new: Any, delete: bool) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    parent: Any = doc
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return doc


@pytest.mark.parametrize("kind", sorted(DOCS))
def test_round_trip(kind: str) -> None:
    cls, doc = DOCS[kind]
    assert cls.from_dict(doc).to_dict() == doc


NESTED_RECORDS = {
    "root": [("roles", "release")],
    "release": [("artifact",), ("compatibility",), ("smoke_tests",)],
    "assignment": [("artifact",), ("compatibility",)],
}


@pytest.mark.parametrize("kind", sorted(DOCS))
def test_unknown_fields_are_kept_at_every_level(kind: str) -> None:
    cls, doc = DOCS[kind]
    doc = copy.deepcopy(doc)
    doc["x_new"] = [1, {"b": None}]
    for path in NESTED_RECORDS[kind]:
        record = doc
        for step in path:
            record = record[step]
        record["x_nested"] = "kept"
    again = cls.from_dict(doc).to_dict()
    assert again == doc


@pytest.mark.parametrize("kind", sorted(DOCS))
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), new=json_value, delete=st.booleans())
def test_mutated_metadata_is_accepted_or_refused_with_metadata_error(
    kind: str, data: st.DataObject, new: Any, delete: bool
) -> None:
    cls, doc = DOCS[kind]
    path = data.draw(st.sampled_from(paths(doc)))
    broken = mutate(doc, path, new, delete)
    try:
        parsed = cls.from_dict(broken)
    except MetadataError:
        return
    # Accepted input must survive its own round trip.
    assert cls.from_dict(parsed.to_dict()).to_dict() == parsed.to_dict()


@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_escape_the_error_tree(data: bytes) -> None:
    device = TrustedSet(SIM.root_bytes(), device_id=DEVICE)
    for call in (
        lambda: TrustedSet(data),
        lambda: device.update_root(data),
        lambda: device.verify_release(data, T0),
    ):
        with pytest.raises(EdgefleetError):
            call()


def test_every_truncation_of_signed_metadata_is_refused() -> None:
    data = SIM.release_bytes()
    device = TrustedSet(SIM.root_bytes(), device_id=DEVICE)
    for cut in range(0, len(data), max(1, len(data) // 300)):
        with pytest.raises(EdgefleetError):
            device.verify_release(data[:cut], T0 + timedelta(days=1))


@given(json_value)
def test_trust_state_from_junk_raises_metadata_error(value: Any) -> None:
    with pytest.raises(MetadataError):
        TrustState.from_dict(value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", "a/b"),
        ("model", "a+b"),
        ("model", "#"),
        ("release", 0),
        ("release", True),
        ("expires", "2030-01-01 00:00:00"),
        ("spec_version", "2.0"),
        ("format", "pickle"),
    ],
)
def test_specific_bad_fields(field: str, value: Any) -> None:
    doc = copy.deepcopy(DOCS["release"][1])
    doc[field] = value
    with pytest.raises(MetadataError, match=field if field != "format" else "format"):
        ReleaseManifest.from_dict(doc)
