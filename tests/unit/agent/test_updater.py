"""The update workflow end to end in-process: real metadata, HTTP, onnxruntime; fake host."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pytest

from agent.host import Health
from agent.identity import load_root
from agent.slots import blob_path, part_path
from fleetcore.keys import PrivateKey
from fleetcore.protocol import UpdateState as S
from tests.unit.agent.rig import Rig, tiny_filesystem, tiny_model

HAPPY = [
    "notified",
    "downloading",
    "verifying",
    "staged",
    "smoke_test",
    "activating",
    "probation",
    "committed",
]


def test_happy_path_installs_commits_and_reports_every_state(rig: Rig) -> None:
    rig.start()
    manifest = rig.release(1)
    rig.handle(rig.desired(manifest))
    assert rig.states() == HAPPY
    sha = manifest.artifact.sha256
    assert rig.active_sha() == sha
    assert rig.host.activations == [sha]
    assert blob_path(rig.data_dir, sha).exists()
    assert not part_path(rig.data_dir, sha).exists()
    journal = rig.updater.journal  # type: ignore[union-attr]
    assert journal.trust.committed == {"sensor": {1}}
    assert journal.trust.assignment_sequence == 1
    reports = rig.reports()
    assert [r.seq for r in reports] == list(range(1, len(HAPPY) + 1))
    assert reports[-1].active is not None and reports[-1].active.release == 1
    assert all(r.assignment_sequence == 1 for r in reports)


def test_second_release_keeps_previous_and_collects_older_blobs(rig: Rig) -> None:
    rig.start()
    m1, m2, m3 = rig.release(1), rig.release(2), rig.release(3)
    for m in (m1, m2):
        rig.handle(rig.desired(m))
    journal = rig.updater.journal  # type: ignore[union-attr]
    assert journal.committed is not None and journal.committed.release == 2
    assert journal.previous is not None and journal.previous.release == 1
    assert rig.stored() == {m1.artifact.sha256, m2.artifact.sha256}
    assert rig.reports()[-1].previous is not None
    rig.handle(rig.desired(m3))
    assert rig.stored() == {m2.artifact.sha256, m3.artifact.sha256}


def test_duplicate_and_redelivered_desired_states_never_start_a_second_update(rig: Rig) -> None:
    rig.start()
    document = rig.desired(rig.release(1))
    for _ in range(3):
        rig.handle(document)
    assert rig.states() == HAPPY
    rig.restart()
    rig.handle(document)  # the retained message again, after a restart
    assert rig.states() == HAPPY


def test_stale_assignment_is_rejected_once_even_across_restarts(rig: Rig) -> None:
    rig.start()
    m1, m2 = rig.release(1), rig.release(2)
    stale = rig.desired(m1, sequence=1)
    rig.handle(rig.desired(m2, sequence=5))
    for _ in range(3):
        rig.handle(stale)
    rig.restart()
    rig.handle(stale)
    rejected = [r for r in rig.reports() if r.state == S.REJECTED]
    assert len(rejected) == 1
    assert rejected[0].reason == "sequence"
    assert rejected[0].assignment_sequence == 1
    assert rig.active_sha() == m2.artifact.sha256
    assert rig.state == S.REJECTED


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("forged", "threshold"),
        ("expired", "expiry"),
        ("other-device", "mismatch"),
        ("garbage", "protocol"),
        ("revoked", "revoked"),
    ],
)
def test_refused_desired_states_report_the_failed_check(rig: Rig, tamper: str, reason: str) -> None:
    rig.start()
    manifest = rig.release(1)
    if tamper == "forged":
        assignment = rig.repo.assignment(manifest)
        document = rig.repo.assignment_bytes(assignment, signers=[PrivateKey.generate()])
        from fleetcore.protocol import DesiredState

        document = DesiredState(document, rig.repo.release_bytes(manifest)).encode()
    elif tamper == "expired":
        old = datetime(2020, 1, 1, tzinfo=timezone.utc)
        document = rig.desired(manifest, issued=old, expires=old + timedelta(days=1))
    elif tamper == "other-device":
        document = rig.desired(manifest, device="dev-other")
    elif tamper == "revoked":
        document = rig.desired(manifest, revoked=(manifest.artifact.sha256,))
    else:
        document = b'{"_type": "desired"}'
    rig.handle(document)
    assert rig.states() == ["rejected"]
    report = rig.reports()[0]
    assert report.reason == reason
    assert report.message
    assert rig.active_sha() is None
    assert rig.cp.artifact_ranges() == []  # nothing was downloaded


def test_smoke_test_failure_fails_and_keeps_the_active_model(rig: Rig) -> None:
    rig.start()
    m1 = rig.release(1)
    rig.handle(rig.desired(m1))
    bad = rig.failing_smoke(rig.release(2))
    rig.handle(rig.desired(bad))
    assert rig.states()[-2:] == ["smoke_test", "failed"]
    assert rig.reports()[-1].reason == "smoke"
    assert rig.active_sha() == m1.artifact.sha256
    assert rig.stored() == {m1.artifact.sha256}


def test_activation_failure_reverts_to_the_committed_model(rig: Rig) -> None:
    rig.start()
    m1, m2 = rig.release(1), rig.release(2)
    rig.handle(rig.desired(m1))
    rig.host.fail_on.add(m2.artifact.sha256)
    rig.handle(rig.desired(m2))
    assert rig.states()[-2:] == ["activating", "reverted"]
    assert rig.reports()[-1].reason == "runtime"
    assert rig.active_sha() == m1.artifact.sha256
    assert rig.host.active is not None and rig.host.active.sha256 == m1.artifact.sha256


@pytest.mark.parametrize(
    ("health", "reason"),
    [
        (Health(inferences=10, errors=5, p95_ms=1.0), "error-rate"),
        (Health(inferences=100, errors=0, p95_ms=10_000.0), "latency"),
    ],
)
def test_unhealthy_probation_reverts(rig: Rig, health: Health, reason: str) -> None:
    rig.start()
    m1, m2 = rig.release(1), rig.release(2)
    rig.handle(rig.desired(m1))
    rig.host.health_value = health
    rig.handle(rig.desired(m2))
    assert rig.states()[-2:] == ["probation", "reverted"]
    assert rig.reports()[-1].reason == reason
    assert rig.active_sha() == m1.artifact.sha256
    assert rig.updater.journal.trust.committed == {"sensor": {1}}  # type: ignore[union-attr]


def test_first_install_reverted_leaves_no_model(rig: Rig) -> None:
    rig.start()
    rig.host.health_value = Health(inferences=10, errors=10)
    rig.handle(rig.desired(rig.release(1)))
    assert rig.states()[-1] == "reverted"
    assert rig.active_sha() is None
    assert rig.host.active is None


def test_healthy_traffic_below_the_minimum_is_not_judged(rig: Rig) -> None:
    rig.start()
    rig.host.health_value = Health(inferences=1, errors=1)
    rig.handle(rig.desired(rig.release(1)))
    assert rig.states()[-1] == "committed"


def test_fleet_revert_to_a_committed_release_reuses_the_stored_blob(rig: Rig) -> None:
    rig.start()
    m1, m2 = rig.release(1), rig.release(2)
    rig.handle(rig.desired(m1))
    rig.handle(rig.desired(m2))
    downloads = len(rig.cp.artifact_ranges())
    rig.handle(rig.desired(m1, revoked=(m2.artifact.sha256,)))
    assert rig.states()[-1] == "committed"
    assert rig.active_sha() == m1.artifact.sha256
    assert len(rig.cp.artifact_ranges()) == downloads  # no download: the blob was kept


def test_downgrade_to_a_release_never_committed_is_refused(rig: Rig) -> None:
    rig.start()
    m1, m2 = rig.release(1), rig.release(2)
    rig.handle(rig.desired(m2))
    rig.handle(rig.desired(m1))
    assert rig.reports()[-1].state == S.REJECTED
    assert rig.reports()[-1].reason == "downgrade"


def test_reassigning_the_committed_release_commits_without_work(rig: Rig) -> None:
    rig.start()
    m1 = rig.release(1)
    rig.handle(rig.desired(m1))
    rig.handle(rig.desired(m1))  # a new sequence for the same release
    assert rig.states()[-2:] == ["notified", "committed"]
    assert rig.host.activations == [m1.artifact.sha256]


def test_a_newer_assignment_supersedes_a_download(rig: Rig) -> None:
    rig.start()
    m1, m2 = rig.release(1), rig.release(2)
    newer = rig.desired(m2, sequence=2)

    def hook(state: S) -> None:
        if state == S.DOWNLOADING and rig.updater.journal.update.sequence == 1:  # type: ignore[union-attr]
            rig.updater.offer(newer)  # type: ignore[union-attr]

    rig.start(on_enter=hook)
    rig.handle(rig.desired(m1, sequence=1))
    states = rig.states()
    assert states[:3] == ["notified", "downloading", "failed"]
    assert rig.reports()[2].reason == "superseded"
    assert states[3:] == HAPPY
    assert rig.active_sha() == m2.artifact.sha256
    assert m1.artifact.sha256 not in rig.stored()


def test_a_newer_assignment_during_probation_reverts_then_installs(rig: Rig) -> None:
    m1, m2, m3 = rig.release(1), rig.release(2), rig.release(3)
    newer = rig.desired(m3, sequence=3)

    def hook(state: S) -> None:
        upd = rig.updater.journal.update  # type: ignore[union-attr]
        if state == S.PROBATION and upd is not None and upd.sequence == 2:
            rig.updater.offer(newer)  # type: ignore[union-attr]

    rig.start(on_enter=hook)
    rig.handle(rig.desired(m1, sequence=1))
    rig.handle(rig.desired(m2, sequence=2))
    assert "reverted" in rig.states()
    reverted = next(r for r in rig.reports() if r.state == S.REVERTED)
    assert reverted.reason == "superseded"
    assert rig.states()[-1] == "committed"
    assert rig.active_sha() == m3.artifact.sha256


def test_missing_artifact_fails_with_download(rig: Rig) -> None:
    rig.start()
    manifest = rig.repo.manifest(release=1, data=tiny_model(1))  # never added to the server
    rig.handle(rig.desired(manifest))
    assert rig.states()[-1] == "failed"
    assert rig.reports()[-1].reason == "download"


def test_root_rotation_is_walked_before_verifying(rig: Rig) -> None:
    rig.start()
    rig.handle(rig.desired(rig.release(1)))
    # Root v2 rotates the release key; it is signed by the old and the new root keys.
    old_root_keys = rig.repo.keys["root"]
    rig.repo.keys["release"] = [PrivateKey.generate()]
    rig.repo.keys["root"] = [PrivateKey.generate()]
    v2 = rig.repo.root_bytes(signers=[*old_root_keys, *rig.repo.keys["root"]], version=2)
    rig.cp.state.roots[2] = v2
    rig.handle(rig.desired(rig.release(2)))
    assert rig.states()[-1] == "committed"
    assert load_root(rig.data_dir) == v2


def test_rotation_that_does_not_chain_is_refused(rig: Rig) -> None:
    rig.start()
    rig.repo.keys["release"] = [PrivateKey.generate()]
    rig.repo.keys["root"] = [PrivateKey.generate()]
    rig.cp.state.roots[2] = rig.repo.root_bytes(version=2)  # not signed by root v1
    rig.handle(rig.desired(rig.release(1)))
    assert rig.states() == ["rejected"]
    assert rig.reports()[0].reason == "threshold"


def test_disk_full_during_download_fails_with_disk_and_keeps_the_model(rig: Rig) -> None:
    rig.start()
    m1 = rig.release(1)
    rig.handle(rig.desired(m1))
    data = os.urandom(400_000)  # never parsed: the download fails first
    big = rig.repo.manifest(release=2, data=data)
    rig.cp.add_artifact(data)
    with tiny_filesystem(rig.data_dir / "downloads", 100):
        rig.handle(rig.desired(big))
        assert rig.states()[-1] == "failed"
        assert rig.reports()[-1].reason == "disk"
        assert not part_path(rig.data_dir, big.artifact.sha256).exists()
    assert rig.active_sha() == m1.artifact.sha256
    assert rig.host.active is not None and rig.host.active.sha256 == m1.artifact.sha256
