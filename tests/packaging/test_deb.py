"""packaging/debian/build-deb.sh: the package's layout, control fields and maintainer scripts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fleetcore import __version__
from tests.packaging.support import BUILD_DEB, DEBIAN_DIR, UNIT_FILE, run_install


@pytest.fixture(autouse=True)
def _dpkg_deb() -> None:
    if not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb is not installed (not a Debian system)")


def build(*args: str | Path) -> Path:
    result = subprocess.run(
        ["sh", BUILD_DEB, *map(str, args)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


def info(deb: Path) -> dict[str, str]:
    """The control fields (continuation lines dropped)."""
    text = subprocess.run(
        ["dpkg-deb", "-f", deb], capture_output=True, text=True, check=True
    ).stdout
    fields = {}
    for line in text.splitlines():
        if line and not line[0].isspace():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def contents(deb: Path) -> dict[str, str]:
    """Path -> "mode owner/group" from `dpkg-deb -c`."""
    listing = subprocess.run(
        ["dpkg-deb", "-c", deb], capture_output=True, text=True, check=True
    ).stdout
    out = {}
    for line in listing.splitlines():
        perms, owner, _size, _date, _time, name = line.split(maxsplit=5)
        out[name.removeprefix(".").rstrip("/") or "/"] = f"{perms} {owner}"
    return out


@pytest.fixture(scope="module")
def stub_wheelhouse(tmp_path_factory: pytest.TempPathFactory, project_wheel: Path) -> Path:
    """Only the edgefleet wheel: a quick, architecture-independent package."""
    out = tmp_path_factory.mktemp("stub-wheelhouse")
    shutil.copy(project_wheel, out)
    return out


def test_package_layout(tmp_path: Path, stub_wheelhouse: Path, project_wheel: Path) -> None:
    deb = build("--out", tmp_path, "--wheelhouse", stub_wheelhouse)
    assert deb == tmp_path / f"edgefleet-agent_{__version__}_all.deb"

    fields = info(deb)
    assert fields["Package"] == "edgefleet-agent"
    assert fields["Version"] == __version__
    assert fields["Architecture"] == "all"
    assert fields["Depends"] == "python3 (>= 3.10), python3-venv, adduser"
    assert int(fields["Installed-Size"]) > 0

    files = contents(deb)
    assert files["/etc/edgefleet/agent.toml"] == "-rw-r----- root/root"
    assert files["/lib/systemd/system/edgefleet-agent.service"] == "-rw-r--r-- root/root"
    assert f"/usr/lib/edgefleet-agent/wheelhouse/{project_wheel.name}" in files
    assert "/usr/lib/edgefleet-agent/requirement" in files
    assert "/usr/share/doc/edgefleet-agent/copyright" in files
    # The virtualenv and the data directory are made by postinst, not shipped.
    assert not [name for name in files if name.startswith(("/opt", "/var"))]

    # Control area: conffiles and the maintainer scripts from packaging/debian.
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "-e", deb, control], check=True)
    assert (control / "conffiles").read_text() == "/etc/edgefleet/agent.toml\n"
    for script in ("postinst", "prerm", "postrm"):
        assert (control / script).read_bytes() == (DEBIAN_DIR / script).read_bytes()
        assert (control / script).stat().st_mode & 0o111

    # Payload: the unit is packaging/systemd's, the config is the installer's.
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
    unit = root / "lib/systemd/system/edgefleet-agent.service"
    assert unit.read_text() == UNIT_FILE.read_text()
    config = run_install("--print-config").stdout
    assert (root / "etc/edgefleet/agent.toml").read_text() == config
    requirement = (root / "usr/lib/edgefleet-agent/requirement").read_text()
    assert requirement == f"edgefleet[agent,onnx]=={__version__}\n"


def test_postinst_prints_the_enroll_command_and_never_enrolls() -> None:
    postinst = (DEBIAN_DIR / "postinst").read_text()
    assert "fleet-agent enroll" in postinst
    assert "--no-index" in postinst  # offline: only the embedded wheelhouse
    code = [line for line in postinst.splitlines() if not line.lstrip().startswith("#")]
    runs_enroll = [line for line in code if "fleet-agent enroll" in line and "sudo" not in line]
    assert runs_enroll == [], "postinst must only print the enroll command"


def test_binary_wheels_make_an_architecture_specific_package(
    tmp_path: Path, wheelhouse: Path
) -> None:
    deb = build("--out", tmp_path, "--wheelhouse", wheelhouse)
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert deb.name == f"edgefleet-agent_{__version__}_{arch}.deb"
    major, minor = sys.version_info[:2]
    assert info(deb)["Depends"] == (
        f"python3 (>= {major}.{minor}), python3 (<< {major}.{minor + 1}), python3-venv, adduser"
    )
    wheels = {Path(n).name for n in contents(deb) if n.endswith(".whl")}
    assert wheels == {p.name for p in wheelhouse.glob("*.whl")}


def test_tflite_runtime_changes_the_requirement(tmp_path: Path, stub_wheelhouse: Path) -> None:
    deb = build("--out", tmp_path, "--runtime", "tflite", "--wheelhouse", stub_wheelhouse)
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
    requirement = (root / "usr/lib/edgefleet-agent/requirement").read_text()
    assert requirement == f"edgefleet[agent,tflite]=={__version__}\n"


@pytest.mark.parametrize(
    ("wheels", "message"),
    [
        ([], "holds no .whl files"),
        (["numpy-2.0.0-cp311-cp311-linux_x86_64.whl"], "exactly one edgefleet-*.whl"),
        (
            [
                "edgefleet-0.1.0-py3-none-any.whl",
                "numpy-2.0.0-cp311-cp311-linux_x86_64.whl",
                "cffi-1.0.0-cp312-cp312-linux_x86_64.whl",
            ],
            "the wheelhouse mixes wheels for Python 3.",
        ),
    ],
)
def test_bad_wheelhouses_are_refused(tmp_path: Path, wheels: list[str], message: str) -> None:
    house = tmp_path / "wheels"
    house.mkdir()
    for name in wheels:
        (house / name).write_bytes(b"")
    result = subprocess.run(
        ["sh", BUILD_DEB, "--out", tmp_path / "out", "--wheelhouse", house],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert message in result.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_prerelease_versions_sort_before_the_release(tmp_path: Path) -> None:
    house = tmp_path / "wheels"
    house.mkdir()
    (house / "edgefleet-1.2.0rc1-py3-none-any.whl").write_bytes(b"")
    deb = build("--out", tmp_path, "--wheelhouse", house)
    assert info(deb)["Version"] == "1.2.0~rc1"
