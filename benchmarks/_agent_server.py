"""Child process of ``benchmarks.agent``: a fleet-agent-like local inference server.

Usage: ``python -m benchmarks._agent_server MODEL FORMAT LISTEN [LISTEN ...]``.

Imports only :mod:`agent.serving` and :mod:`agent.localapi` (and what they
import), loads MODEL into a :class:`ModelHost` (warm-up included), serves it on
every LISTEN address, prints one JSON line ``{"pid", "addresses"}`` when
ready, and stops when its stdin closes. Its ``/proc/<pid>/status`` is what the
benchmark reads for the agent's memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from agent.localapi import LocalApi
from agent.serving import ModelHost, ModelInfo


def main() -> None:
    model, fmt, *listens = sys.argv[1:]
    path = Path(model)
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    host = ModelHost()
    host.activate(path, fmt, ModelInfo("sensor", 1, sha256, fmt))
    apis = [LocalApi(host, listen) for listen in listens]
    for api in apis:
        api.start()
    print(json.dumps({"pid": os.getpid(), "addresses": [a.address for a in apis]}))
    sys.stdout.flush()
    sys.stdin.read()  # until the benchmark closes our stdin
    for api in apis:
        api.stop()


if __name__ == "__main__":
    main()
