"""Benchmark: verifying a signed artifact against ``openssl dgst -sha256``.

For each size, writes a file, signs a release manifest for it with fresh keys,
then measures, in the same run:

* edgefleet: ``TrustedSet.verify_release`` + ``verify_stream`` over the file,
  in-process (what an agent does after a download);
* baseline: ``openssl dgst -sha256`` on the same file. OpenSSL uses the CPU's
  SHA instructions, so this is the hashing limit. Its process start-up time,
  measured on an empty file, is subtracted so both sides count hashing only.

Runs alternate between the two so machine noise hits both alike; medians are
reported. Peak RSS growth is measured in a fresh child process per size: the
kernel's high-water mark is reset (``/proc/self/clear_refs``) just before the
verification starts.

Usage: ``python -m benchmarks.verify [--sizes-mib 100,1024] [--runs 5] [--dir DIR]``
Prints one JSON line per figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from fleetcore.artifact import verify_stream
from fleetcore.envelope import Envelope
from fleetcore.keys import PrivateKey
from fleetcore.metadata import (
    ArtifactInfo,
    Compatibility,
    ReleaseManifest,
    Role,
    Root,
    SmokeTests,
    SmokeVector,
)
from fleetcore.tensors import TensorSpec
from fleetcore.trust import TrustedSet

MIB = 1 << 20
NOW = datetime.now(timezone.utc).replace(microsecond=0)

CHILD = """
import json, sys, time
from pathlib import Path
from benchmarks.verify import verify_once
root, manifest, artifact = (Path(p) for p in sys.argv[1:4])
def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)
root_bytes, manifest_bytes = root.read_bytes(), manifest.read_bytes()
Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS high-water mark
before = status("VmRSS")
verify_once(root_bytes, manifest_bytes, artifact)
print(json.dumps({"rss_before": before, "peak": status("VmHWM")}))
"""


def write_artifact(path: Path, size: int) -> str:
    block = np.random.default_rng(0).integers(0, 256, MIB, dtype=np.uint8).tobytes()
    sha = hashlib.sha256()
    with path.open("wb") as handle:
        for offset in range(0, size, MIB):
            chunk = block[: min(MIB, size - offset)]
            handle.write(chunk)
            sha.update(chunk)
    return sha.hexdigest()


def sign_release(size: int, sha256: str) -> tuple[bytes, bytes]:
    root_key, release_key, director_key = (PrivateKey.generate() for _ in range(3))
    keys = {k.keyid: k.public_key for k in (root_key, release_key, director_key)}
    roles = {
        "root": Role((root_key.keyid,), 1),
        "release": Role((release_key.keyid,), 1),
        "director": Role((director_key.keyid,), 1),
    }
    root = Envelope(Root(1, NOW, NOW + timedelta(days=1), keys, roles).to_dict())
    root.sign(root_key)
    zeros = np.zeros((1, 4), dtype=np.float32)
    manifest = ReleaseManifest(
        model="bench",
        release=1,
        version="1",
        issued=NOW,
        expires=NOW + timedelta(days=1),
        artifact=ArtifactInfo(size, sha256, name="bench.onnx"),
        format="onnx",
        compatibility=Compatibility(
            "onnxruntime",
            (TensorSpec("x", "float32", (None, 4)),),
            (TensorSpec("y", "float32", (None, 4)),),
        ),
        smoke_tests=SmokeTests((SmokeVector({"x": zeros}, {"y": zeros}),), 0.0, 0.0),
    )
    release = Envelope(manifest.to_dict())
    release.sign(release_key)
    return root.to_bytes(), release.to_bytes()


def verify_once(root: bytes, manifest: bytes, artifact: Path) -> None:
    device = TrustedSet(root)
    signed = device.verify_release(manifest, datetime.now(timezone.utc)).manifest.artifact
    with artifact.open("rb") as handle:
        verify_stream(handle, signed.length, signed.sha256)


def timed(func: object) -> float:
    start = time.perf_counter()
    func()  # type: ignore[operator]
    return time.perf_counter() - start


def openssl(path: Path) -> None:
    subprocess.run(["openssl", "dgst", "-sha256", str(path)], check=True, capture_output=True)


def measure(size_mib: int, runs: int, workdir: Path) -> list[dict[str, object]]:
    size = size_mib * MIB
    artifact, empty = workdir / f"artifact-{size_mib}", workdir / "empty"
    empty.write_bytes(b"")
    sha = write_artifact(artifact, size)
    root, manifest = sign_release(size, sha)
    (workdir / "root.json").write_bytes(root)
    (workdir / "manifest.json").write_bytes(manifest)
    # Warm the page cache for both sides, then alternate.
    verify_once(root, manifest, artifact)
    openssl(artifact)
    ours, theirs, startup = [], [], []
    for _ in range(runs):
        ours.append(timed(lambda: verify_once(root, manifest, artifact)))
        theirs.append(timed(lambda: openssl(artifact)))
        startup.append(timed(lambda: openssl(empty)))
    ours_s = statistics.median(ours)
    theirs_s = max(statistics.median(theirs) - statistics.median(startup), 1e-9)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, workdir / "root.json", workdir / "manifest.json", artifact],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    rss = json.loads(child.stdout)
    artifact.unlink()
    mb = size / 1e6
    return [
        {
            "benchmark": "verify",
            "figure": "throughput",
            "size_mib": size_mib,
            "edgefleet_mb_s": round(mb / ours_s, 1),
            "openssl_dgst_sha256_mb_s": round(mb / theirs_s, 1),
            "ratio": round(theirs_s / ours_s, 3),
            "target_ratio": 0.9,
            "runs": runs,
            "statistic": "median",
            "openssl_startup_ms_subtracted": round(statistics.median(startup) * 1e3, 2),
        },
        {
            "benchmark": "verify",
            "figure": "peak_rss_growth",
            "size_mib": size_mib,
            "peak_rss_growth_mib": round((rss["peak"] - rss["rss_before"]) / MIB, 2),
            "peak_rss_mib": round(rss["peak"] / MIB, 1),
            "target_mib": 16,
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-mib", default="100,1024", help="comma-separated sizes in MiB")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per side and size")
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory (default: temp)")
    args = parser.parse_args()
    if shutil.which("openssl") is None:
        sys.exit("openssl is not installed: the baseline cannot be measured")
    workdir = Path(tempfile.mkdtemp(prefix="edgefleet-bench-", dir=args.dir))
    try:
        for size in (int(s) for s in args.sizes_mib.split(",")):
            for line in measure(size, args.runs, workdir):
                print(json.dumps(line), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        os.sync()


if __name__ == "__main__":
    main()
