"""Rehearsals: a rollout rehearsal refuses to judge traffic it did not send; a mistyped scenario is named."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.ops import rehearsal
from infra.ops.rollout.controller import Outcome, Plan
from infra.ops.rollout.rehearse import Traffic, check
from tools.ports import free_port


def summary(sent: int) -> dict[str, object]:
    """A traffic generator's --summary-json with every request answered by production's version 1."""
    requests = {"ok": sent, "client_error": 0, "server_error": 0, "transport_error": 0}
    return {"sent": sent, "backends": [{"backend": "production", "model_version": "1", "requests": requests}]}


def test_a_rehearsal_whose_own_traffic_sent_nothing_is_not_as_expected() -> None:
    aborted = Outcome(promoted=False, reason="online accuracy 0.5", run_id="r", production_before="1", steps_passed=0)
    plan = Plan("m", candidate="2")
    assert check("worse", aborted, Traffic({"rest": summary(100), "grpc": summary(100)}), plan, 40, "1") == []
    # The case a newcomer met: generators of their own held the ports, the rehearsal's could not start, and the
    # rollout was judged on the newcomer's traffic; "0 requests, 0 failed; as expected" followed.
    for summaries in ({}, {"rest": summary(100), "grpc": summary(0)}):
        [problem] = check("worse", aborted, Traffic(summaries), plan, 40, "1")
        assert "sent nothing" in problem, problem


def test_a_metrics_port_held_by_another_process_stops_the_rehearsal_before_it_trains(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        address = f"127.0.0.1:{held.getsockname()[1]}"
        env = {
            **os.environ,
            "SANDBOX_REHEARSAL_REST_TRAFFIC_METRICS": address,
            "SANDBOX_REHEARSAL_GRPC_TRAFFIC_METRICS": f"127.0.0.1:{free_port()}",
            # Nothing listens here: a rehearsal that went on would wait for the tracking server.
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        }
        began = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "infra.ops.rollout.rehearse", "worse"],
            cwd=tmp_path,
            env={**env, "PYTHONPATH": str(Path(__file__).parents[3])},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"something listens on {address}" in done.stderr and "sandbox traffic" in done.stderr, done.stderr
    assert "waiting up to" not in done.stderr and time.monotonic() - began < 30


def test_a_mistyped_scenario_lists_the_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    assert rehearsal.main(["godo"]) == 2
    error = capsys.readouterr().err
    assert "no scenario 'godo'" in error and "good, schema, worse, slower, shadow" in error, error
