"""``fleetctl release sign|verify``: the offline half of releasing (no server needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from control_plane.cli._common import (
    console,
    human_bytes,
    one_line_errors,
    parse_duration,
    parse_pairs,
    parse_time,
)
from control_plane.signing import keyring
from control_plane.signing.keyring import DEFAULT_PASSPHRASE_ENV, write_public_file
from control_plane.signing.manifests import ReleaseRequest, build_manifest, sign_manifest
from control_plane.signing.verify import read_metadata, verify_release_files
from fleetcore.envelope import Envelope
from fleetcore.errors import MetadataError
from fleetcore.metadata import ReleaseManifest

app = typer.Typer(help="Create, sign, verify and revoke releases.", no_args_is_help=True)


@app.command("sign")
@one_line_errors
def sign(
    model_file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            metavar="FILE",
            help="An ONNX or TFLite model, or a release manifest to add signatures to.",
        ),
    ],
    key: Annotated[
        list[Path],
        typer.Option(
            "--key", metavar="KEYFILE", help="Release private key (repeat for a threshold)."
        ),
    ],
    name: Annotated[
        str | None, typer.Option("--name", help="Model name, e.g. sensor (model files).")
    ] = None,
    release: Annotated[
        int | None,
        typer.Option("--release", min=1, help="Release counter; must increase per model."),
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="Human version label; defaults to the counter.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Where to write the signed manifest.")
    ] = None,
    expires_in: Annotated[
        str, typer.Option("--expires-in", help="Manifest lifetime: 365d, 12h, 30m.")
    ] = "365d",
    floor: Annotated[
        int, typer.Option(min=0, help="Refuse releases of this model below this counter.")
    ] = 0,
    quantization: Annotated[
        str | None, typer.Option(help="Quantization recipe, e.g. int8-static.")
    ] = None,
    hardware_tag: Annotated[
        list[str] | None,
        typer.Option("--hardware-tag", metavar="TAG", help="Required hardware tag (repeatable)."),
    ] = None,
    drift_reference: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="Drift reference file to bind by digest."),
    ] = None,
    smoke_inputs: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help=".npy of smoke-test input rows."),
    ] = None,
    smoke_count: Annotated[
        int, typer.Option(min=1, max=64, help="Number of smoke-test vectors.")
    ] = 4,
    atol: Annotated[
        float, typer.Option(min=0.0, help="Absolute tolerance for smoke outputs.")
    ] = 1e-2,
    rtol: Annotated[
        float, typer.Option(min=0.0, help="Relative tolerance for smoke outputs.")
    ] = 0.0,
    revoke: Annotated[
        list[str] | None,
        typer.Option("--revoke", metavar="SHA256", help="sha256 to revoke (repeatable)."),
    ] = None,
    provenance: Annotated[
        list[str] | None,
        typer.Option(
            "--provenance", metavar="KEY=VALUE", help="key=value provenance (repeatable)."
        ),
    ] = None,
    passphrase_env: Annotated[
        str, typer.Option(help="Environment variable with the key passphrase.")
    ] = DEFAULT_PASSPHRASE_ENV,
) -> None:
    """Write a signed release manifest for a model file, or sign an existing manifest.

    For a model file: measure it, run it to record smoke-test outputs, and
    write a signed manifest (--name and --release are required). For a
    manifest (e.g. from 'fleetctl release download' of an offline release):
    add this key's signature, for 'fleetctl release attach-signature'.
    """
    if is_manifest(model_file):
        _countersign(model_file, key, out, passphrase_env)
        return
    if name is None or release is None:
        raise typer.BadParameter("--name and --release are required to sign a model file")
    inputs = None
    if smoke_inputs is not None:
        try:
            inputs = np.load(smoke_inputs, allow_pickle=False)
        except ValueError as exc:
            raise MetadataError(f"{smoke_inputs} is not a .npy array: {exc}") from exc
    request = ReleaseRequest(
        model_file=model_file,
        model=name,
        release=release,
        version=version or str(release),
        expires_in=parse_duration(expires_in),
        floor=floor,
        quantization={"scheme": quantization} if quantization else {},
        hardware_tags=tuple(hardware_tag or ()),
        drift_reference=drift_reference,
        smoke_inputs=inputs,
        smoke_count=smoke_count,
        atol=atol,
        rtol=rtol,
        revoked=tuple(revoke or ()),
        provenance=parse_pairs(provenance, "--provenance"),
    )
    signers = [keyring.read_private(path, passphrase_env) for path in key]
    manifest = build_manifest(request, issued=parse_time(None))
    envelope = sign_manifest(manifest, signers)
    target = out or Path(f"{name}-{release}.release.json")
    write_public_file(target, envelope.to_bytes())
    console.print(
        f"wrote {target}: {name} release {release} ({manifest.version}), {manifest.format}, "
        f"sha256 {manifest.artifact.sha256[:16]}…, {human_bytes(manifest.artifact.length)}, "
        f"{len(manifest.smoke_tests.vectors)} smoke vectors, {len(signers)} signature(s)"
    )


def is_manifest(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(64).lstrip()
    return head.startswith(b"{")


def _countersign(path: Path, keys: list[Path], out: Path | None, passphrase_env: str) -> None:
    envelope = Envelope.from_bytes(read_metadata(path))
    manifest = ReleaseManifest.from_dict(envelope.signed)
    for key_path in keys:
        envelope.sign(keyring.read_private(key_path, passphrase_env))
    target = out or path
    write_public_file(target, envelope.to_bytes())
    console.print(
        f"wrote {target}: {manifest.model} release {manifest.release} ({manifest.version}) now "
        f"carries {len(envelope.signatures)} signature(s)"
    )


@app.command("verify")
@one_line_errors
def verify(
    manifest: Annotated[Path, typer.Argument(metavar="MANIFEST", help="Signed release manifest.")],
    artifact: Annotated[
        Path, typer.Argument(metavar="ARTIFACT", help="The model file it describes.")
    ],
    root: Annotated[
        list[Path],
        typer.Option(
            "--root", metavar="ROOT", help="Trusted root; repeat to walk newer versions in order."
        ),
    ],
    at: Annotated[
        str | None,
        typer.Option("--at", metavar="TIME", help="Judge expiry at this ISO time instead of now."),
    ] = None,
    smoke: Annotated[
        bool,
        typer.Option(
            "--smoke", help="Also run the signed smoke-test vectors in the model's runtime."
        ),
    ] = False,
) -> None:
    """Check MANIFEST and ARTIFACT as a device would; exit 0 only if everything holds.

    On failure it prints one line that names the failed check in brackets
    (threshold, expiry, floor, revoked, length, hash, format, smoke, ...) and
    exits 1. --smoke runs the model only after its hash matched.
    """
    report = verify_release_files(manifest, artifact, root, parse_time(at), smoke=smoke)
    m = report.manifest
    smoked = "" if report.smoke is None else f", smoke test passed ({report.smoke.detail})"
    console.print(
        f"OK {m.model} release {m.release} ({m.version}): {m.format}, "
        f"{human_bytes(report.artifact_bytes)}, sha256 {m.artifact.sha256[:16]}…, "
        f"root v{report.root_version}, expires {m.expires:%Y-%m-%d}{smoked}"
    )
