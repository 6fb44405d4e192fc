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


def test_every_package_is_pinned_and_the_exact_pins_of_pyproject_are_kept() -> None:
    pins: dict[str, str] = {}
    for line in (REQUIREMENTS / "dev.txt").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            requirement = line.split(";")[0].strip()
            assert "==" in requirement, f"not pinned: {line}"
            name, version = requirement.split("==")
            pins[name.lower()] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [req for extra in project["optional-dependencies"].values() for req in extra]
    for requirement in wanted:
        if "==" in requirement:
            name, version = requirement.split("==")
            assert pins[name.split("[")[0].lower()] == version, requirement
    assert "torch" in pins and "nvidia-cublas" not in (REQUIREMENTS / "ml.txt").read_text()
