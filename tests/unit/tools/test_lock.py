"""The lock: uv.lock matches pyproject.toml, and what pip installs (the exports) matches uv.lock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[3]
REQUIREMENTS = ROOT / "infra" / "images" / "requirements"


def test_the_exports_are_current_with_the_lock_and_the_lock_with_pyproject() -> None:
    check = subprocess.run(
        ["bash", "tools/lock.sh", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "UV": str(Path(sys.executable).with_name("uv"))},
    )
    assert check.returncode == 0, check.stderr


def exported_pins(export: str) -> dict[str, str]:
    """Package -> version of one export; AssertionError for a package that is not pinned exactly."""
    pins: dict[str, str] = {}
    for line in (REQUIREMENTS / export).read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            requirement = line.split(";")[0].strip()
            assert "==" in requirement, f"not pinned in {export}: {line}"
            name, version = requirement.split("==")
            pins[name.lower()] = version
    return pins


def test_every_package_is_pinned_and_the_exact_pins_of_pyproject_are_kept() -> None:
    # The tracking server has its own environment (another MLflow release), so its extra is exported apart from
    # the venv's: each exact pin is checked against the export that installs it.
    exports = {"tracking": exported_pins("tracking.txt")}
    dev = exported_pins("dev.txt")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [(None, req) for req in project["dependencies"]] + [
        (extra, req) for extra, reqs in project["optional-dependencies"].items() for req in reqs
    ]
    for extra, requirement in wanted:
        if "==" in requirement:
            name, version = requirement.split("==")
            assert exports.get(extra or "", dev)[name.split("[")[0].lower()] == version, (extra, requirement)
    assert "torch" in dev and "nvidia-cublas" not in (REQUIREMENTS / "ml.txt").read_text()
    assert "torch" not in exports["tracking"]
