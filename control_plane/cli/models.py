"""``fleetctl model``: push versions (quantizing on the operator's side), list, show."""

from __future__ import annotations

import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer

from control_plane.cli._client import ApiClient
from control_plane.cli._common import (
    console,
    err_console,
    one_line_errors,
    parse_pairs,
    working,
)
from control_plane.cli._output import Format, OutputOption, record, rows
from control_plane.errors import InvalidInputError
from control_plane.signing.manifests import digest_file

app = typer.Typer(help="Register model versions and read the registry.", no_args_is_help=True)
VERSION_COLUMNS = ["model", "version", "state", "format", "parent_version", "reasons"]
SHOWN = [
    "model", "version", "state", "format", "artifact_sha256", "parent_version", "reasons",
    "validation", "quantization", "drift_reference_sha256", "provenance", "created_by",
    "created_at",
]  # fmt: skip


def split_ref(ref: str) -> tuple[str, str]:
    name, sep, version = ref.partition("@")
    if not sep or not name or not version:
        raise typer.BadParameter(f"{ref!r} must look like NAME@VERSION")
    return name, version


def _git_version() -> str | None:
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _register(
    client: ApiClient,
    name: str,
    body: dict[str, Any],
) -> dict[str, Any]:
    with working(f"validating {name}@{body['version']} on the server"):
        result: dict[str, Any] = client.post(f"/v1/models/{name}/versions", body)
    return result


def _summary(version: dict[str, Any]) -> str:
    v = version["validation"]
    parts = [f"{version['model']}@{version['version']}: {version['state']}"]
    if v.get("accuracy") is not None:
        parts.append(f"accuracy {v['accuracy']:.4f}")
    if v.get("accuracy_delta") is not None:
        parts.append(f"vs parent {v['accuracy_delta']:+.4f}")
    if v.get("latency_p95_ms") is not None:
        parts.append(f"p95 {v['latency_p95_ms']:.3f} ms")
    parts.append(f"{v.get('size_bytes', 0)} bytes")
    line = ", ".join(parts)
    if version["reasons"]:
        line += "\n  reasons: " + "; ".join(version["reasons"])
    return line


@app.command("push")
@one_line_errors
def push(
    model_file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, metavar="FILE", help="ONNX or TFLite.")
    ],
    name: Annotated[str, typer.Option("--name", help="Model name.")],
    version: Annotated[
        str | None,
        typer.Option(
            "--version", help="Version label, e.g. 1.2.0 (default: UTC time of the push)."
        ),
    ] = None,
    quantize: Annotated[
        str | None,
        typer.Option(
            help="'int8': quantize a float ONNX model here first (static with "
            "--calibration-data, else dynamic) and push the float model as its parent."
        ),
    ] = None,
    calibration_data: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, metavar="NPZ", help="x rows for static int8 calibration."
        ),
    ] = None,
    eval_data: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, metavar="NPZ", help="x and y for accuracy."),
    ] = None,
    reference_data: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, metavar="NPZ", help="x (and y) for the drift reference."
        ),
    ] = None,
    training_data: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, metavar="FILE", help="Recorded by digest in provenance."
        ),
    ] = None,
    parent: Annotated[
        str | None, typer.Option(metavar="VERSION", help="An existing parent version.")
    ] = None,
    provenance: Annotated[
        list[str] | None,
        typer.Option("--provenance", metavar="KEY=VALUE", help="Extra provenance (repeatable)."),
    ] = None,
    output: OutputOption = Format.table,
) -> None:
    """Upload a model version; the server runs the validation gate on it."""
    if version is None:
        version = datetime.now(timezone.utc).strftime("%Y%m%d.%H%M%S")
        err_console.print(f"version {version}")
    client = ApiClient.from_config()
    extra: dict[str, Any] = parse_pairs(provenance, "--provenance")
    if training_data is not None:
        extra["training_data_sha256"] = digest_file(training_data).sha256
    code = _git_version()
    if code and "code_version" not in extra:
        extra["code_version"] = code
    data = {}
    for key, path in (("eval_data_sha256", eval_data), ("reference_data_sha256", reference_data)):
        if path is not None:
            data[key] = client.upload(path, "npz")["sha256"]
    with tempfile.TemporaryDirectory() as tmp:
        quantization: dict[str, Any] = {}
        upload = model_file
        if quantize is not None:
            if quantize != "int8":
                raise typer.BadParameter("--quantize takes int8")
            upload, quantization = _quantize(model_file, Path(tmp), calibration_data)
            parent = f"{version}-float"
            float_artifact = client.upload(model_file, "onnx")
            float_version = _register(
                client,
                name,
                {"version": parent, "artifact_sha256": float_artifact["sha256"],
                 "provenance": extra, **data},
            )  # fmt: skip
            err_console.print(_summary(float_version))
        kind = "tflite" if upload.suffix == ".tflite" else "onnx"
        artifact = client.upload(upload, kind)
        body = {
            "version": version,
            "artifact_sha256": artifact["sha256"],
            "parent_version": parent,
            "quantization": quantization,
            "provenance": extra,
            **data,
        }
        result = _register(client, name, body)
    if output is Format.json:
        record(result, output)
    else:
        console.print(_summary(result))


def _quantize(model_file: Path, tmp: Path, calibration: Path | None) -> tuple[Path, dict[str, Any]]:
    from control_plane.registry.datasets import load_dataset  # noqa: PLC0415
    from control_plane.registry.quantize import quantize_onnx  # noqa: PLC0415

    if model_file.suffix == ".tflite":
        raise InvalidInputError("--quantize works on float ONNX models; TFLite is pushed as is")
    out = tmp / f"{model_file.stem}-int8.onnx"
    data = None if calibration is None else load_dataset(calibration)
    with working("quantizing to int8"):
        recipe = quantize_onnx(
            model_file,
            out,
            calibration=data,
            calibration_sha256=None if calibration is None else digest_file(calibration).sha256,
        )
    return out, recipe.to_dict()


@app.command("list")
@one_line_errors
def list_versions(
    name: Annotated[
        str | None, typer.Argument(metavar="[NAME]", help="One model's versions.")
    ] = None,
    output: OutputOption = Format.table,
) -> None:
    """List models, or one model's versions."""
    client = ApiClient.from_config()
    if name is None:
        rows(client.get("/v1/models"), ["name", "versions", "latest_version", "released"], output)
    else:
        rows(client.get(f"/v1/models/{name}/versions"), VERSION_COLUMNS, output)


@app.command("show")
@one_line_errors
def show(
    ref: Annotated[str, typer.Argument(metavar="NAME@VERSION")],
    output: OutputOption = Format.table,
) -> None:
    """Show one version: state, validation report, reasons, provenance."""
    name, version = split_ref(ref)
    record(ApiClient.from_config().get(f"/v1/models/{name}/versions/{version}"), output, SHOWN)


@app.command("validate")
@one_line_errors
def validate(
    ref: Annotated[str, typer.Argument(metavar="NAME@VERSION")],
    output: OutputOption = Format.table,
) -> None:
    """Run the validation gate again (e.g. after thresholds changed)."""
    name, version = split_ref(ref)
    result = ApiClient.from_config().post(f"/v1/models/{name}/versions/{version}/validate")
    if output is Format.json:
        record(result, output)
    else:
        console.print(_summary(result))
