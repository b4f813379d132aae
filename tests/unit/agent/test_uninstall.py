"""fleet-agent uninstall: the pure plan, and carrying it out on a temporary tree."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from agent import uninstall
from agent.uninstall import Facts, Layout, Plan, Step, execute, plan_uninstall

SYSTEM = Layout.for_prefix(None)


def everything(layout: Layout) -> frozenset[Path]:
    return frozenset({layout.unit_file, layout.opt_dir, layout.config_dir, layout.data_dir})


def kinds(plan: Plan) -> list[tuple[str, str]]:
    return [(s.kind, s.target) for s in plan.steps]


def test_system_uninstall_keeps_config_data_and_user() -> None:
    facts = Facts(everything(SYSTEM), systemd_running=True, user_exists=True, group_exists=True)
    plan = plan_uninstall(SYSTEM, facts, purge=False)
    assert plan.refusal is None
    assert kinds(plan) == [
        ("stop-unit", "edgefleet-agent.service"),
        ("remove", "/etc/systemd/system/edgefleet-agent.service"),
        ("daemon-reload", "edgefleet-agent.service"),
        ("remove", "/opt/edgefleet"),
    ]
    assert [what for what, _ in plan.kept] == [
        "/etc/edgefleet",
        "/var/lib/edgefleet",
        "user and group edgefleet",
    ]


def test_system_purge_removes_everything_and_the_virtualenv_last() -> None:
    facts = Facts(everything(SYSTEM), systemd_running=True, user_exists=True, group_exists=True)
    plan = plan_uninstall(SYSTEM, facts, purge=True)
    assert kinds(plan) == [
        ("stop-unit", "edgefleet-agent.service"),
        ("remove", "/etc/systemd/system/edgefleet-agent.service"),
        ("daemon-reload", "edgefleet-agent.service"),
        ("remove", "/etc/edgefleet"),
        ("remove", "/var/lib/edgefleet"),
        ("delete-user", "edgefleet"),
        ("delete-group", "edgefleet"),
        ("remove", "/opt/edgefleet"),
    ]
    assert plan.kept == ()


def test_without_systemd_no_systemctl() -> None:
    facts = Facts(everything(SYSTEM), systemd_running=False, user_exists=True)
    steps = kinds(plan_uninstall(SYSTEM, facts, purge=True))
    assert not [k for k, _ in steps if k in ("stop-unit", "daemon-reload")]
    assert ("delete-user", "edgefleet") in steps
    assert ("delete-group", "edgefleet") not in steps  # none was seen


def test_no_unit_file_means_no_systemctl() -> None:
    facts = Facts(frozenset({SYSTEM.opt_dir}), systemd_running=True)
    assert kinds(plan_uninstall(SYSTEM, facts, purge=False)) == [("remove", "/opt/edgefleet")]


def test_prefix_is_files_only(tmp_path: Path) -> None:
    layout = Layout.for_prefix(tmp_path)
    # Even if the host runs systemd and has the user, a prefix install touches neither.
    facts = Facts(everything(layout), systemd_running=True, user_exists=True, group_exists=True)
    plan = plan_uninstall(layout, facts, purge=True)
    assert {k for k, _ in kinds(plan)} == {"remove"}
    assert kinds(plan)[-1] == ("remove", str(tmp_path / "opt/edgefleet"))


def test_debian_package_install_is_refused() -> None:
    plan = plan_uninstall(SYSTEM, Facts(everything(SYSTEM), dpkg_owned=True), purge=True)
    assert plan.steps == ()
    assert plan.refusal is not None
    assert "apt remove edgefleet-agent" in plan.refusal


def test_nothing_installed_plans_nothing(tmp_path: Path) -> None:
    assert plan_uninstall(Layout.for_prefix(tmp_path), Facts(), purge=True) == Plan()


def make_tree(root: Path) -> Layout:
    layout = Layout.for_prefix(root)
    (layout.opt_dir / "venv/bin").mkdir(parents=True)
    layout.config_dir.mkdir(parents=True)
    (layout.config_dir / "agent.toml").write_text("")
    (layout.data_dir / "identity").mkdir(parents=True)
    layout.unit_file.parent.mkdir(parents=True)
    layout.unit_file.write_text("[Service]\n")
    return layout


def test_gather_facts_on_a_prefix(tmp_path: Path) -> None:
    layout = make_tree(tmp_path)
    facts = uninstall.gather_facts(layout)
    assert facts.existing == everything(layout)
    assert not (facts.systemd_running or facts.user_exists or facts.dpkg_owned)


def test_execute_runs_commands_and_records_failures(tmp_path: Path) -> None:
    layout = make_tree(tmp_path)
    calls: list[list[str]] = []

    def run(argv: Sequence[str]) -> int:
        calls.append(list(argv))
        return 1 if argv[0] == "userdel" else 0

    plan = Plan(
        (
            Step("stop-unit", "edgefleet-agent.service"),
            Step("remove", str(layout.unit_file)),
            Step("daemon-reload", "edgefleet-agent.service"),
            Step("delete-user", "edgefleet-test-nobody"),
            Step("remove", str(layout.opt_dir)),
            Step("remove", str(tmp_path / "never-existed")),
        )
    )
    outcome = execute(plan, run)
    assert calls == [
        ["systemctl", "disable", "--now", "--quiet", "edgefleet-agent.service"],
        ["systemctl", "daemon-reload"],
        ["userdel", "edgefleet-test-nobody"],
    ]
    assert [s.kind for s, _ in outcome.failed] == ["delete-user"]
    assert len(outcome.done) == 5
    assert not layout.unit_file.exists()
    assert not layout.opt_dir.exists()
    assert layout.data_dir.exists()


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(uninstall.uninstall_command)
    return app


def test_command_keeps_data_without_purge(tmp_path: Path) -> None:
    layout = make_tree(tmp_path)
    result = CliRunner().invoke(cli(), ["--prefix", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"done: remove {layout.opt_dir}" in result.stdout
    assert f"kept: {layout.data_dir}" in result.stdout
    assert f"kept: {layout.config_dir}" in result.stdout
    assert not layout.opt_dir.exists()
    assert not layout.unit_file.exists()
    assert (layout.config_dir / "agent.toml").exists()
    assert (layout.data_dir / "identity").is_dir()


def test_purge_needs_yes(tmp_path: Path) -> None:
    layout = make_tree(tmp_path)
    result = CliRunner().invoke(cli(), ["--prefix", str(tmp_path), "--purge"])
    assert result.exit_code == 2
    assert "--yes" in result.stderr
    assert layout.opt_dir.exists()  # nothing was touched
    result = CliRunner().invoke(cli(), ["--prefix", str(tmp_path), "--purge", "--yes"])
    assert result.exit_code == 0, result.output
    for path in everything(layout):
        assert not path.exists()


def test_nothing_to_remove(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli(), ["--prefix", str(tmp_path)])
    assert result.exit_code == 0
    assert "nothing to remove" in result.stdout


def test_system_uninstall_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agent.uninstall.os.geteuid", lambda: 1000)
    with pytest.raises(typer.Exit) as exc:
        uninstall.uninstall_command()
    assert exc.value.exit_code == 1
