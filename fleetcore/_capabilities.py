"""Device capabilities, as a device reports them at enrollment (part of :mod:`fleetcore.protocol`).

Rollouts match a release's compatibility (format, runtime, ONNX opset,
hardware tags) against these, so the shape is part of the wire contract.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fleetcore.errors import EdgefleetError, ProtocolError
from fleetcore.metadata._fields import Fields

_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}")


@dataclass(frozen=True)
class Capabilities:
    """What a device reports at enrollment so rollouts can match releases to it.

    ``runtimes`` maps runtime name (``onnxruntime``, ``tflite-runtime``,
    ``ai-edge-litert``) to its version; ``onnx_opsets`` is the inclusive range
    of ONNX opsets the installed onnxruntime accepts, or ``None``.
    """

    runtimes: dict[str, str]
    formats: tuple[str, ...]
    onnx_opsets: tuple[int, int] | None
    arch: str
    ram_bytes: int
    disk_free_bytes: int
    accelerators: tuple[str, ...] = ()
    os: str = ""
    python: str = ""
    agent_version: str = ""
    unrecognized: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, obj: Any) -> Capabilities:
        try:
            f = Fields(obj, "capabilities")
            runtimes = f.required_object("runtimes")
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in runtimes.items()):
                raise ProtocolError("capabilities runtimes must map names to version strings")
            opsets = f.array("onnx_opsets", optional=True, max_items=2)
            if opsets and (
                len(opsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in opsets)
                or opsets[0] > opsets[1]
            ):
                raise ProtocolError("capabilities onnx_opsets must be [lowest, highest]")
            return cls(
                runtimes=dict(sorted(runtimes.items())),
                formats=f.string_list("formats", pattern=_TOKEN),
                onnx_opsets=(opsets[0], opsets[1]) if opsets else None,
                arch=f.string("arch"),
                ram_bytes=f.integer("ram_bytes"),
                disk_free_bytes=f.integer("disk_free_bytes"),
                accelerators=f.string_list("accelerators", pattern=_TOKEN, optional=True),
                os=f.optional_string("os") or "",
                python=f.optional_string("python") or "",
                agent_version=f.optional_string("agent_version") or "",
                unrecognized=f.rest(),
            )
        except ProtocolError:
            raise
        except EdgefleetError as exc:
            raise ProtocolError(f"malformed capabilities: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.unrecognized,
            "runtimes": dict(sorted(self.runtimes.items())),
            "formats": list(self.formats),
            "onnx_opsets": None if self.onnx_opsets is None else list(self.onnx_opsets),
            "arch": self.arch,
            "ram_bytes": self.ram_bytes,
            "disk_free_bytes": self.disk_free_bytes,
            "accelerators": list(self.accelerators),
            "os": self.os,
            "python": self.python,
            "agent_version": self.agent_version,
        }


__all__ = ["Capabilities"]
