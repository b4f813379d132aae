"""The model registry: versions enter as draft and leave the gate as validated.

Theory of operation: an operator uploads bytes first (artifacts, content
addressed), then registers a version that names them. Registration runs the
validation gate synchronously. A version that passes is ``validated`` and may
be released; one that misses a threshold stays ``draft`` with its reasons, and
can be validated again later (``revalidate``) after thresholds change. Input
that is not usable at all (not a model, data that does not fit the model) is
refused with nothing stored.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from control_plane.artifacts.port import ArtifactStore
from control_plane.audit import audit
from control_plane.config import Settings
from control_plane.errors import ConflictError, InvalidInputError, NotFoundError, StateError
from control_plane.registry.datasets import Dataset, load_dataset
from control_plane.registry.validation import ValidationReport, validate_model
from control_plane.store import ArtifactRecord, ModelVersionRecord, Store, VersionState
from fleetcore.metadata import NAME

MODEL_KINDS = ("onnx", "tflite")


@dataclass(frozen=True)
class VersionRequest:
    model: str
    version: str
    artifact_sha256: str
    parent_version: str | None = None
    eval_data_sha256: str | None = None
    reference_data_sha256: str | None = None
    quantization: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)


class RegistryService:
    def __init__(
        self,
        store: Store,
        artifacts: ArtifactStore,
        settings: Settings,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.settings = settings
        self.clock = clock

    # -- queries -------------------------------------------------------------

    def get(self, model: str, version: str) -> ModelVersionRecord:
        record = self.store.get_version(model, version)
        if record is None:
            raise NotFoundError(f"no version {model}@{version}")
        return record

    def list_versions(self, model: str | None = None) -> list[ModelVersionRecord]:
        versions = self.store.list_versions(model)
        if model is not None and not versions:
            raise NotFoundError(f"no model named {model!r}")
        return versions

    def local_path(self, sha256: str) -> Path:
        path = self.artifacts.local_path(sha256)
        if path is None:
            raise NotFoundError(f"artifact {sha256} is not available locally")
        return path

    # -- commands ------------------------------------------------------------

    def create_version(self, request: VersionRequest, actor: str) -> ModelVersionRecord:
        for what, value in (("model name", request.model), ("version", request.version)):
            if not NAME.fullmatch(value):
                raise InvalidInputError(f"{what} {value!r} must match {NAME.pattern}")
        if self.store.get_version(request.model, request.version) is not None:
            raise ConflictError(f"{request.model}@{request.version} already exists")
        artifact = self._artifact(request.artifact_sha256, MODEL_KINDS, "model")
        parent = None
        if request.parent_version is not None:
            parent = self.get(request.model, request.parent_version)
        eval_data = self._dataset(request.eval_data_sha256, "eval data")
        reference = self._dataset(request.reference_data_sha256, "reference data")
        report = self._validate(artifact, parent, eval_data, reference)
        drift_sha = self._store_drift_reference(report)
        now = self.clock()
        provenance = dict(request.provenance)
        for key, digest in (
            ("eval_data_sha256", request.eval_data_sha256),
            ("reference_data_sha256", request.reference_data_sha256),
        ):
            if digest:
                provenance[key] = digest
        record = ModelVersionRecord(
            model=request.model,
            version=request.version,
            state=VersionState.VALIDATED if report.passed else VersionState.DRAFT,
            artifact_sha256=artifact.sha256,
            format=report.format,
            created_at=now,
            updated_at=now,
            created_by=actor,
            parent_id=None if parent is None else parent.id,
            quantization=dict(request.quantization),
            io_schema=report.io_schema,
            validation=report.to_dict(),
            reasons=list(report.reasons),
            drift_reference_sha256=drift_sha,
            provenance=provenance,
        )
        with self.store.transaction() as tx:
            created = tx.create_version(record)
            change = {
                "state": created.state.value,
                "artifact": artifact.sha256,
                "reasons": created.reasons,
            }
            audit(tx, actor, "model.push", "model_version", _ref(created), change, now)
        return created

    def revalidate(self, model: str, version: str, actor: str) -> ModelVersionRecord:
        record = self.get(model, version)
        release = self.store.get_release_for_version(record.id)
        if release is not None or record.state not in (VersionState.DRAFT, VersionState.VALIDATED):
            # What was released (or is being signed) must stay what was validated.
            raise StateError(
                f"{model}@{version} is {record.state.value}"
                + ("" if release is None else f" with release {release.counter}")
                + "; only unreleased draft or validated versions can be validated again"
            )
        artifact = self._artifact(record.artifact_sha256, MODEL_KINDS, "model")
        parent = None
        if record.parent_id is not None:
            parent = self.store.get_version_by_id(record.parent_id)
        eval_data = self._dataset(record.provenance.get("eval_data_sha256"), "eval data")
        reference = self._dataset(record.provenance.get("reference_data_sha256"), "reference data")
        report = self._validate(artifact, parent, eval_data, reference)
        drift_sha = self._store_drift_reference(report)
        now = self.clock()
        state = VersionState.VALIDATED if report.passed else VersionState.DRAFT
        with self.store.transaction() as tx:
            updated = tx.update_version(
                record.id,
                state=state,
                validation=report.to_dict(),
                reasons=list(report.reasons),
                io_schema=report.io_schema,
                drift_reference_sha256=drift_sha,
                updated_at=now,
                expect_state=record.state,
            )
            change = {
                "from": record.state.value,
                "to": state.value,
                "reasons": list(report.reasons),
            }
            audit(tx, actor, "model.validate", "model_version", _ref(record), change, now)
        return updated

    # -- helpers ---------------------------------------------------------------

    def _artifact(self, sha256: str | None, kinds: tuple[str, ...], what: str) -> ArtifactRecord:
        record = None if sha256 is None else self.store.get_artifact(sha256)
        if record is None:
            raise NotFoundError(f"no uploaded artifact {sha256} for the {what}; upload it first")
        if record.kind not in kinds:
            raise InvalidInputError(
                f"artifact {record.sha256[:16]}… is {record.kind}; "
                f"the {what} must be {' or '.join(kinds)}"
            )
        return record

    def _dataset(self, sha256: str | None, what: str) -> Dataset | None:
        if sha256 is None:
            return None
        record = self._artifact(sha256, ("npz",), what)
        return load_dataset(self.local_path(record.sha256))

    def _validate(
        self,
        artifact: ArtifactRecord,
        parent: ModelVersionRecord | None,
        eval_data: Dataset | None,
        reference: Dataset | None,
    ) -> ValidationReport:
        return validate_model(
            self.local_path(artifact.sha256),
            thresholds=self.settings.validation,
            eval_data=eval_data,
            parent_path=None if parent is None else self.local_path(parent.artifact_sha256),
            reference_data=reference,
            fmt=artifact.kind,
        )

    def _store_drift_reference(self, report: ValidationReport) -> str | None:
        if report.drift_reference is None:
            return None
        data = report.drift_reference.to_bytes()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "drift-reference.json"
            path.write_bytes(data)
            blob = self.artifacts.put_file(path, max_bytes=len(data))
        self.store.add_artifact(ArtifactRecord(blob.sha256, blob.length, "json", self.clock()))
        return blob.sha256


def _ref(record: ModelVersionRecord) -> str:
    return f"{record.model}@{record.version}"


__all__ = ["MODEL_KINDS", "RegistryService", "VersionRequest"]
