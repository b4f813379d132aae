"""``fleet-agent uninstall``: remove what ``packaging/install.sh`` put on the machine.

Theory of operation. :func:`plan_uninstall` is pure: from the layout (where
an install lives: ``/`` or a ``--prefix``) and the facts observed about the
machine (:class:`Facts`: which paths exist, whether systemd runs, whether the
``edgefleet`` user exists, whether the Debian package owns the install) it
returns a :class:`Plan`, the ordered steps and the paths it keeps, with the
reason for each. :func:`gather_facts` does the looking and :func:`execute`
the doing; :func:`uninstall_command` ties them together for the CLI.

Invariants:

* without ``--purge`` the configuration and the data directory (the device's
  identity, its models, its outbox) are kept, so installing again brings the
  same device back;
* ``--purge`` deletes them and the ``edgefleet`` user and group, and needs
  ``--yes``: it cannot be undone and the control plane will see a new device;
* a ``--prefix`` install is files only: no systemctl, no users;
* an install made by the ``edgefleet-agent`` Debian package is refused: dpkg
  owns those files (``apt remove`` / ``apt purge``);
* the virtualenv goes last. The command runs from it, which is fine on Linux
  (open files and mapped libraries outlive their names), but nothing may be
  imported after it is gone, so every import is at the top of this module.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import typer

UNIT_NAME = "edgefleet-agent.service"
ACCOUNT = "edgefleet"  # the system user and its group
DEB_PACKAGE = "edgefleet-agent"

StepKind = Literal["stop-unit", "remove", "daemon-reload", "delete-user", "delete-group"]


@dataclass(frozen=True)
class Layout:
    """Where an install lives. ``root`` is ``/`` or the ``--prefix`` directory."""

    root: Path

    @classmethod
    def for_prefix(cls, prefix: Path | None) -> Layout:
        return cls(Path("/") if prefix is None else prefix.absolute())

    @property
    def is_system(self) -> bool:
        return self.root == Path("/")

    @property
    def opt_dir(self) -> Path:
        return self.root / "opt/edgefleet"

    @property
    def config_dir(self) -> Path:
        return self.root / "etc/edgefleet"

    @property
    def data_dir(self) -> Path:
        return self.root / "var/lib/edgefleet"

    @property
    def unit_file(self) -> Path:
        return self.root / "etc/systemd/system" / UNIT_NAME

    @property
    def dpkg_list(self) -> Path:
        return self.root / f"var/lib/dpkg/info/{DEB_PACKAGE}.list"


@dataclass(frozen=True)
class Facts:
    """What was observed on the machine before planning."""

    existing: frozenset[Path] = frozenset()
    systemd_running: bool = False
    user_exists: bool = False
    group_exists: bool = False
    dpkg_owned: bool = False


@dataclass(frozen=True)
class Step:
    kind: StepKind
    target: str

    def describe(self) -> str:
        return {
            "stop-unit": f"stop and disable {self.target}",
            "remove": f"remove {self.target}",
            "daemon-reload": "reload systemd",
            "delete-user": f"delete the user {self.target}",
            "delete-group": f"delete the group {self.target}",
        }[self.kind]


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...] = ()
    kept: tuple[tuple[str, str], ...] = ()  # (what, why it stays)
    refusal: str | None = None  # set when nothing may be done


def plan_uninstall(layout: Layout, facts: Facts, *, purge: bool) -> Plan:
    """The steps that uninstall ``layout``, in order, and what stays. Pure."""
    if layout.is_system and facts.dpkg_owned:
        return Plan(
            refusal=f"the {DEB_PACKAGE} Debian package installed this agent: "
            f"use `apt remove {DEB_PACKAGE}` (or `apt purge {DEB_PACKAGE}` to delete its data)"
        )
    steps = list(_unit_steps(layout, facts))
    kept: list[tuple[str, str]] = []
    for path, what in (
        (layout.config_dir, "configuration"),
        (layout.data_dir, "device identity and models"),
    ):
        if path not in facts.existing:
            continue
        if purge:
            steps.append(Step("remove", str(path)))
        else:
            kept.append((str(path), f"{what}; --purge deletes it"))
    if layout.is_system and purge:
        steps += [Step("delete-user", ACCOUNT)] if facts.user_exists else []
        steps += [Step("delete-group", ACCOUNT)] if facts.group_exists else []
    elif layout.is_system and (facts.user_exists or facts.group_exists):
        kept.append((f"user and group {ACCOUNT}", "own the data; --purge deletes them"))
    if layout.opt_dir in facts.existing:
        steps.append(Step("remove", str(layout.opt_dir)))  # last: we run from it
    return Plan(tuple(steps), tuple(kept))


def _unit_steps(layout: Layout, facts: Facts) -> list[Step]:
    if layout.unit_file not in facts.existing:
        return []
    if not (layout.is_system and facts.systemd_running):
        return [Step("remove", str(layout.unit_file))]
    return [
        Step("stop-unit", UNIT_NAME),
        Step("remove", str(layout.unit_file)),
        Step("daemon-reload", UNIT_NAME),
    ]


def _account_exists(lookup: Callable[[str], object]) -> bool:
    try:
        lookup(ACCOUNT)
    except KeyError:
        return False
    return True


def gather_facts(layout: Layout) -> Facts:
    """Look at the machine: the only reads :func:`plan_uninstall` depends on."""
    candidates = (layout.unit_file, layout.opt_dir, layout.config_dir, layout.data_dir)
    system = layout.is_system
    return Facts(
        existing=frozenset(p for p in candidates if p.is_symlink() or p.exists()),
        systemd_running=system and Path("/run/systemd/system").is_dir(),
        user_exists=system and _account_exists(pwd.getpwnam),
        group_exists=system and _account_exists(grp.getgrnam),
        dpkg_owned=layout.dpkg_list.exists(),
    )


Runner = Callable[[Sequence[str]], int]


def _run(argv: Sequence[str]) -> int:
    return subprocess.run(list(argv), check=False, stdin=subprocess.DEVNULL).returncode  # noqa: S603


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@dataclass
class Outcome:
    done: list[Step] = field(default_factory=list)
    failed: list[tuple[Step, str]] = field(default_factory=list)


#: The command each system step runs; a non-zero exit status is a failure.
_COMMANDS: dict[StepKind, Callable[[str], list[str]]] = {
    # disable --now stops the unit too.
    "stop-unit": lambda unit: ["systemctl", "disable", "--now", "--quiet", unit],
    "daemon-reload": lambda _: ["systemctl", "daemon-reload"],
    "delete-user": lambda name: ["userdel", name],
    "delete-group": lambda name: ["groupdel", name],
}


def _do(step: Step, run: Runner) -> str:
    """Carry out one step; the error text, or "" on success."""
    if step.kind == "remove":
        try:
            _remove(Path(step.target))
        except OSError as exc:
            return exc.strerror or str(exc)
        return ""
    if step.kind == "delete-group" and not _account_exists(grp.getgrnam):
        return ""  # userdel removes a user's own group on most systems
    argv = _COMMANDS[step.kind](step.target)
    return "" if run(argv) == 0 else f"{' '.join(argv)} failed"


def execute(plan: Plan, run: Runner = _run) -> Outcome:
    """Carry out ``plan``'s steps; a failed step is recorded and the rest still run."""
    outcome = Outcome()
    for step in plan.steps:
        error = _do(step, run)
        if error:
            outcome.failed.append((step, error))
        else:
            outcome.done.append(step)
    return outcome


def uninstall_command(
    prefix: Annotated[
        Path | None,
        typer.Option(
            "--prefix",
            help="Uninstall an install made with install.sh --prefix DIR (files only).",
        ),
    ] = None,
    purge: Annotated[
        bool,
        typer.Option(
            "--purge",
            help="Also delete the configuration, the data directory (the device's identity) "
            "and the edgefleet user. Needs --yes.",
        ),
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Confirm --purge without asking.")
    ] = False,
) -> None:
    """Remove the agent: the systemd unit and /opt/edgefleet; with --purge, everything."""
    layout = Layout.for_prefix(prefix)
    if purge and not yes:
        typer.echo(
            "--purge deletes this device's identity and models for good; add --yes to confirm",
            err=True,
        )
        raise typer.Exit(2)
    if layout.is_system and os.geteuid() != 0:
        typer.echo("uninstalling needs root: sudo fleet-agent uninstall", err=True)
        raise typer.Exit(1)
    plan = plan_uninstall(layout, gather_facts(layout), purge=purge)
    if plan.refusal:
        typer.echo(plan.refusal, err=True)
        raise typer.Exit(1)
    if not plan.steps:
        typer.echo(f"nothing to remove under {layout.root}")
    outcome = execute(plan)
    lines = [f"done: {step.describe()}" for step in outcome.done]
    lines += [f"FAILED: {step.describe()}: {error}" for step, error in outcome.failed]
    lines += [f"kept: {path} ({why})" for path, why in plan.kept]
    # Plain writes: the virtualenv may be gone now, so nothing may need importing.
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    sys.stdout.flush()
    if outcome.failed:
        raise typer.Exit(1)


__all__ = [
    "Facts",
    "Layout",
    "Outcome",
    "Plan",
    "Step",
    "execute",
    "gather_facts",
    "plan_uninstall",
    "uninstall_command",
]
