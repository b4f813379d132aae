"""What this device can run, as reported at enrollment.

Theory of operation. :func:`collect` builds a
:class:`fleetcore.protocol.Capabilities` from what is really installed and
attached, never from configuration: runtimes and their versions
(:func:`fleetcore.runtimes.available_runtimes`), the formats they load, the
ONNX opset range, CPU architecture, RAM, free disk under the data directory,
and accelerators.

ONNX opsets: the lowest is 7 (every onnxruntime release runs opset 7 and
later, per its versioning policy); the highest comes from
:data:`ORT_MAX_OPSET`, the table in onnxruntime's ``docs/Versioning.md``
mapping a release to the opset it implements. A release newer than the table
gets the table's newest entry: an under-estimate, which can only keep a
release from a device that could have run it, never the reverse. (onnxruntime
can tell exactly, through its operator schemas, but the agent may not import
onnxruntime itself: everything model-specific goes through
:mod:`fleetcore.runtimes`.)

Accelerators: a Coral Edge TPU (``/dev/apex_*`` as ``edgetpu:apex_0``), a
Hailo module (``/dev/hailo*``) and GPU render nodes (``/dev/dri/renderD*`` as
``dri:renderD128``).
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

from agent.steps import FORMAT_RUNTIMES
from fleetcore import __version__
from fleetcore.protocol import Capabilities
from fleetcore.runtimes import available_runtimes

ORT_MIN_OPSET = 7
#: onnxruntime minor version -> highest ONNX opset it implements.
ORT_MAX_OPSET: dict[tuple[int, int], int] = {
    (1, 10): 15,
    (1, 11): 16,
    (1, 12): 17,
    (1, 13): 17,
    (1, 14): 18,
    (1, 15): 19,
    (1, 16): 19,
    (1, 17): 20,
    (1, 18): 21,
    (1, 19): 21,
    (1, 20): 21,
    (1, 21): 22,
    (1, 22): 22,
}


def opset_from_table(version: str) -> int | None:
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        return None
    if (major, minor) in ORT_MAX_OPSET:
        return ORT_MAX_OPSET[(major, minor)]
    newest = max(ORT_MAX_OPSET)
    return ORT_MAX_OPSET[newest] if (major, minor) > newest else None


def onnx_opsets(version: str | None) -> tuple[int, int] | None:
    """The inclusive opset range of onnxruntime ``version``, or None without it."""
    highest = None if version is None else opset_from_table(version)
    return None if highest is None else (ORT_MIN_OPSET, highest)


def accelerators(dev: Path = Path("/dev")) -> tuple[str, ...]:
    found = [f"edgetpu:{p.name}" for p in sorted(dev.glob("apex_*"))]
    found += [f"hailo:{p.name}" for p in sorted(dev.glob("hailo*"))]
    found += [f"dri:{p.name}" for p in sorted((dev / "dri").glob("renderD*"))]
    return tuple(found)


def ram_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError):
        return 0


def disk_free_bytes(path: Path) -> int:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return int(shutil.disk_usage(probe).free)
    except OSError:
        return 0


def collect(data_dir: Path) -> Capabilities:
    runtimes = available_runtimes()
    formats = tuple(
        fmt for fmt, names in FORMAT_RUNTIMES.items() if any(n in runtimes for n in names)
    )
    return Capabilities(
        runtimes=runtimes,
        formats=formats,
        onnx_opsets=onnx_opsets(runtimes.get("onnxruntime")),
        arch=platform.machine() or "unknown",
        ram_bytes=ram_bytes(),
        disk_free_bytes=disk_free_bytes(data_dir),
        accelerators=accelerators(),
        os=f"{platform.system()} {platform.release()}".strip(),
        python=platform.python_version(),
        agent_version=__version__,
    )


__all__ = [
    "ORT_MAX_OPSET",
    "ORT_MIN_OPSET",
    "accelerators",
    "collect",
    "disk_free_bytes",
    "onnx_opsets",
    "opset_from_table",
    "ram_bytes",
]
