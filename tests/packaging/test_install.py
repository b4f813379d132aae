"""packaging/install.sh, run like `curl ... | sh -s -- ...` (dash, script on stdin)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import load_config
from agent.uninstall import uninstall_command
from fleetcore import __version__
from tests.packaging.support import INSTALL_SH, UNIT_FILE, run_install

TOKEN = "efe_0123456789abcdef0123456789abcdef"  # a made-up enrollment token


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def layout(prefix: Path) -> dict[str, Path]:
    return {
        "venv": prefix / "opt/edgefleet/venv",
        "etc": prefix / "etc/edgefleet",
        "config": prefix / "etc/edgefleet/agent.toml",
        "data": prefix / "var/lib/edgefleet",
        "unit": prefix / "etc/systemd/system/edgefleet-agent.service",
    }


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


@pytest.mark.slow
def test_install_into_a_prefix_twice_then_uninstall(tmp_path: Path, wheelhouse: Path) -> None:
    prefix = tmp_path / "root"
    paths = layout(prefix)
    args = (
        *("--prefix", prefix, "--no-enroll", "--no-start", "--python", sys.executable),
        *("--pip-args", f"--no-index --find-links {wheelhouse}"),
    )
    first = ok(run_install(*args))
    assert f"installed fleet-agent {__version__}" in first.stdout

    # The virtualenv has a working entry point and a real model runtime.
    agent = paths["venv"] / "bin/fleet-agent"
    version = subprocess.run([agent, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"fleet-agent {__version__}"
    runtimes = subprocess.run(
        [agent, "runtimes"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert "onnxruntime" in runtimes.stdout

    # Files and modes.
    assert mode(paths["etc"]) == 0o750
    assert mode(paths["config"]) == 0o640
    assert mode(paths["data"]) == 0o700
    assert mode(paths["unit"]) == 0o644
    config = load_config(paths["config"])  # the agent's own parser accepts it
    assert config.data_dir == paths["data"]
    assert config.server == ""
    assert config.local_api.listen == f"unix:{prefix}/run/edgefleet/agent.sock"

    # The unit is packaging/systemd's, with the paths moved under the prefix.
    expected = UNIT_FILE.read_text()
    for path in ("/opt/edgefleet", "/etc/edgefleet", "/var/lib/edgefleet"):
        expected = expected.replace(path, f"{prefix}{path}")
    assert paths["unit"].read_text() == expected
    assert f"ExecStart={agent} run --config {paths['config']}" in expected
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(
            ["systemd-analyze", "verify", paths["unit"]],
            capture_output=True,
            text=True,
            check=False,
        )
        assert verify.returncode == 0, verify.stderr

    # Again: the virtualenv is upgraded in place; configuration and data are kept.
    with paths["config"].open("a") as f:
        f.write("# a local edit\n")
    (paths["data"] / "identity").mkdir()
    (paths["data"] / "identity/device.json").write_text("{}")
    second = ok(run_install(*args))
    assert "keeping the existing" in second.stdout
    assert "upgrading the virtualenv" in second.stdout
    assert paths["config"].read_text().endswith("# a local edit\n")
    assert (paths["data"] / "identity/device.json").read_text() == "{}"
    assert mode(paths["config"]) == 0o640
    assert mode(paths["data"]) == 0o700
    subprocess.run([agent, "--version"], capture_output=True, check=True)

    # Uninstall with the installed virtualenv's own Python: it deletes the
    # virtualenv it runs from, and keeps configuration and data.
    script = "import typer; from agent.uninstall import uninstall_command as c; typer.run(c)"
    removed = subprocess.run(
        [paths["venv"] / "bin/python", "-c", script, "--prefix", prefix],
        check=False,
        capture_output=True,
        text=True,
    )
    assert removed.returncode == 0, removed.stderr
    assert f"done: remove {prefix}/opt/edgefleet" in removed.stdout
    assert f"kept: {paths['data']}" in removed.stdout
    assert not (prefix / "opt/edgefleet").exists()
    assert not paths["unit"].exists()
    assert (paths["data"] / "identity/device.json").exists()
    assert paths["config"].exists()

    # --purge --yes removes the rest.
    uninstall_command(prefix=prefix, purge=True, yes=True)
    assert not paths["etc"].exists()
    assert not paths["data"].exists()


def install_stub(
    prefix: Path, stub_wheel: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_install(
        *("--prefix", prefix, "--server", "https://fleet.example.com:8443"),
        *("--package", stub_wheel, "--pip-args", "--no-index --no-deps"),
        *("--python", sys.executable, "--label", "site=lab", "--label", "room=2 b"),
        *extra,
        env=env,
    )


@pytest.mark.parametrize("source", ["--token", "--token-file", "environment"])
def test_enroll_gets_the_token_in_its_environment(
    tmp_path: Path, stub_wheel: Path, source: str
) -> None:
    prefix = tmp_path / "root"
    paths = layout(prefix)
    extra: tuple[str, ...] = ()
    env: dict[str, str] = {}
    if source == "--token":
        extra = ("--token", TOKEN)
    elif source == "--token-file":
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        extra = ("--token-file", str(token_file))
    else:
        env = {"EDGEFLEET_ENROLL_TOKEN": TOKEN}
    result = ok(install_stub(prefix, stub_wheel, *extra, env=env))

    record = json.loads((paths["data"] / "identity.json").read_text())
    assert record["token"] == TOKEN
    assert record["argv"] == [
        *("enroll", "--server", "https://fleet.example.com:8443"),
        *("--config", str(paths["config"]), "--data-dir", str(paths["data"])),
        *("--label", "site=lab", "--label", "room=2 b"),
    ]
    assert record["cwd"] == "/"
    assert TOKEN not in result.stdout + result.stderr
    assert load_config(paths["config"]).server == "https://fleet.example.com:8443"


def test_an_enrolled_device_is_not_enrolled_again(tmp_path: Path, stub_wheel: Path) -> None:
    prefix = tmp_path / "root"
    paths = layout(prefix)
    (paths["data"] / "identity").mkdir(parents=True)
    (paths["data"] / "identity/device.json").write_text("{}")
    result = ok(install_stub(prefix, stub_wheel, "--token", TOKEN))
    assert "enrolled already" in result.stdout
    assert not (paths["data"] / "identity.json").exists()  # the stub never ran enroll


def test_token_falls_back_to_argv_when_enroll_has_no_env_var(
    tmp_path: Path, stub_wheel: Path
) -> None:
    prefix = tmp_path / "root"
    result = ok(
        install_stub(prefix, stub_wheel, "--token", TOKEN, env={"STUB_ENROLL_NO_ENVVAR": "1"})
    )
    record = json.loads((layout(prefix)["data"] / "identity.json").read_text())
    assert record["argv"][-2:] == ["--token", TOKEN]
    assert "cannot read the token from EDGEFLEET_ENROLL_TOKEN" in result.stderr
    assert TOKEN not in result.stdout + result.stderr


def fake_python(tmp_path: Path, version: str) -> Path:
    """A `python3` that reports VERSION and fails the >= 3.10 check."""
    path = tmp_path / "python3"
    path.write_text(f'#!/bin/sh\ncase "$2" in *print*) echo {version} ;; *) exit 1 ;; esac\n')
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--token", TOKEN], "--server URL is required"),
        (["--server", "https://fleet.example.com"], "an enrollment token is required"),
        (["--server", "fleet.example.com", "--token", TOKEN], "http:// or https://"),
        (["--server", 'https://x"y', "--token", TOKEN], "plain URL"),
        (["--no-enroll", "--runtime", "pytorch"], "--runtime must be onnx or tflite"),
        (["--no-enroll", "--label", "=x"], "--label takes KEY=VALUE"),
        (["--no-enroll", "--bogus"], "unknown option: --bogus"),
        (["--no-enroll", "--token"], "--token needs a value"),
        (["--no-enroll", "--python", "/nonexistent/python3"], "/nonexistent/python3 not found"),
        (
            ["--server", "https://x.example", "--token-file", "/nonexistent/token"],
            "cannot read the token file",
        ),
    ],
)
def test_bad_arguments_fail_clearly(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_install("--prefix", tmp_path / "root", *args)
    assert result.returncode == 1
    assert f"edgefleet-install: error: {message}" in result.stderr or message in result.stderr
    assert TOKEN not in result.stdout + result.stderr


def test_unexpected_argument_is_not_echoed(tmp_path: Path) -> None:
    result = run_install("--prefix", tmp_path, "--server", "https://x.example", TOKEN)
    assert result.returncode == 1
    assert "unexpected argument" in result.stderr
    assert TOKEN not in result.stdout + result.stderr


def test_old_python_is_refused(tmp_path: Path) -> None:
    python = fake_python(tmp_path, "3.9")
    result = run_install("--prefix", tmp_path / "root", "--no-enroll", "--python", python)
    assert result.returncode == 1
    assert "needs Python 3.10 or newer" in result.stderr
    assert "3.9" in result.stderr


def test_pip_failure_is_reported(tmp_path: Path) -> None:
    result = run_install(
        *("--prefix", tmp_path / "root", "--no-enroll", "--python", sys.executable),
        *("--package", tmp_path / "missing.whl", "--pip-args", "--no-index"),
    )
    assert result.returncode == 1
    assert "pip could not install" in result.stderr


def test_a_system_install_needs_root(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if not setpriv:
            pytest.skip("running as root without setpriv to drop privileges")
        # Run the installer itself as nobody.
        nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
        with INSTALL_SH.open("rb") as stdin:
            result = subprocess.run(
                [*nobody, "sh", "-s", "--", "--no-enroll"],
                check=False,
                stdin=stdin,
                capture_output=True,
                text=True,
                cwd="/",
            )
    else:
        result = run_install("--no-enroll")
    assert result.returncode == 1
    assert "run as root" in result.stderr


def test_print_unit_is_the_unit_file() -> None:
    result = ok(run_install("--print-unit"))
    assert result.stdout == UNIT_FILE.read_text()


def test_print_config_parses_with_the_agents_parser(tmp_path: Path) -> None:
    result = ok(run_install("--print-config", "--server", "https://fleet.example.com"))
    path = tmp_path / "agent.toml"
    path.write_text(result.stdout)
    config = load_config(path)
    assert config.server == "https://fleet.example.com"
    assert str(config.data_dir) == "/var/lib/edgefleet"
    assert config.local_api.listen == "unix:/run/edgefleet/agent.sock"
