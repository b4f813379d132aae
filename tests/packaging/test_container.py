"""packaging/container/Containerfile: parsed, not built (building needs a daemon and a registry)."""

from __future__ import annotations

import json

from tests.packaging.support import CONTAINERFILE, REPO


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in CONTAINERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "a continuation line runs off the end"
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def test_python_slim_base() -> None:
    steps = instructions()
    assert steps[0] == ("ARG", "PYTHON_IMAGE=python:3.11-slim")
    froms = [args for keyword, args in steps if keyword == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS wheels", "${PYTHON_IMAGE}"]


def test_runs_as_a_non_root_user() -> None:
    users = [a for k, a in final_stage() if k == "USER"]
    assert users == ["edgefleet"]


def test_installs_the_agent_from_the_build_context() -> None:
    steps = instructions()
    assert ("COPY", "agent ./agent") in steps
    assert ("COPY", "fleetcore ./fleetcore") in steps
    runs = " ".join(args for keyword, args in steps if keyword == "RUN")
    assert '--wheel-dir /wheels ".[agent,${RUNTIME}]"' in runs
    assert '--no-index --find-links /wheels "edgefleet[agent,${RUNTIME}]"' in runs
    assert ("ARG", "RUNTIME=onnx") in final_stage()


def test_volume_and_entrypoint() -> None:
    stage = dict(final_stage())
    assert stage["VOLUME"] == "/var/lib/edgefleet"
    assert json.loads(stage["ENTRYPOINT"]) == ["fleet-agent", "run"]
    assert json.loads(stage["CMD"]) == ["--config", "/etc/edgefleet/agent.toml"]


def test_build_context_ignores_virtualenvs() -> None:
    ignore = (CONTAINERFILE.parent / "Containerfile.dockerignore").read_text().splitlines()
    assert ".venv" in ignore
    assert ".git" in ignore
    # Everything the Containerfile copies exists in the repository.
    for keyword, args in instructions():
        if keyword == "COPY" and not args.startswith("--from"):
            *sources, _dest = args.split()
            for source in sources:
                assert (REPO / source).exists(), source
