"""The main command: `python -m infra.local.stack up`, `down`, and `up` again with the data kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from mlops_sandbox.processes import group_alive
from tests.support import local_stack_env, run_module

pytestmark = pytest.mark.e2e


def test_up_down_up_serves_the_next_version_and_down_stops_everything(tmp_path: Path, mnist_root: Path) -> None:
    env, ports = local_stack_env(tmp_path / "sandbox", mnist_root)
    serving = f"http://127.0.0.1:{ports['SANDBOX_SERVING_HTTP_PORT']}/v2/models/pytorch_simplenn_mnist"
    run_dir = tmp_path / "sandbox" / "run"
    try:
        first = run_module("infra.local.stack", "up", env=env)
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
        assert "The sandbox is up" in first.stdout
        assert f"http://127.0.0.1:{ports['SANDBOX_MLFLOW_PORT']}" in first.stdout
        assert "served version 1" in first.stdout
        assert requests.get(f"{serving}/ready", timeout=5).status_code == 200
        logs = {p.name for p in (tmp_path / "sandbox" / "logs").iterdir()}
        assert {
            "s3.log",
            "mlflow.log",
            "training.log",
            "serving.log",
            "predict.log",
            "router.log",
            "prometheus.log",
        } <= logs
        credentials = tmp_path / "sandbox" / "s3-credentials.json"
        assert credentials.stat().st_mode & 0o077 == 0

        groups = [json.loads(p.read_text())["pid"] for p in run_dir.glob("*.pid")]
        # s3, mlflow, both serving endpoints, the router and Prometheus
        assert len(groups) == 6 and all(group_alive(g) for g in groups)
        down = run_module("infra.local.stack", "down", env=env)
        assert down.returncode == 0, down.stderr
        assert not any(group_alive(g) for g in groups)
        assert not list(run_dir.glob("*.pid"))
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{serving}/ready", timeout=2)

        second = run_module("infra.local.stack", "up", env=env)
        assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
        assert "version 2 is now @production (was version 1)" in second.stdout
        assert "served version 2" in second.stdout
        staging = f"http://127.0.0.1:{ports['SANDBOX_STAGING_HTTP_PORT']}/v2/models/pytorch_simplenn_mnist"
        assert requests.get(f"{staging}/ready", timeout=5).status_code == 200

        rehearsal = run_module("infra.local.stack", "rehearse", env=env)
        assert rehearsal.returncode == 0, rehearsal.stdout[-4000:] + rehearsal.stderr[-4000:]
        for step in (
            "train and stage",
            "smoke-test staging",
            "gate, then promote",
            "verify production",
            "roll back",
            "verify production again",
        ):
            assert any(step in line and " ok " in line for line in rehearsal.stdout.splitlines()), step
        assert "rehearsal passed" in rehearsal.stdout

        # From a shell that knows neither the tracking URI nor the stack's ports (none of them is a default):
        # `sandbox list` finds the running stack's server, instead of waiting for 127.0.0.1:5000.
        shell = {key: value for key, value in env.items() if key not in ports}
        listing = run_module("infra.cli", "list", env=dict(shell, SANDBOX_TRACKING_WAIT_SECONDS="5"))
        assert listing.returncode == 0, listing.stdout[-2000:] + listing.stderr[-2000:]
        rows = [line.split()[:2] for line in listing.stdout.splitlines()[1:]]
        # The rehearsal staged version 3, promoted it over 2, and rolled back to 2.
        assert rows == [["3", "Archived"], ["2", "Production"], ["1", "Archived"]]
        # The registry never contradicts itself (registry.inconsistencies): `list` would say so on stderr, and
        # @staging left the archived version 3 for production's.
        assert "warning:" not in listing.stderr, listing.stderr
        assert listing.stdout.splitlines()[2].split()[2] == "production,staging", listing.stdout
    finally:
        run_module("infra.local.stack", "down", env=env)
    assert not list(run_dir.glob("*.pid"))
