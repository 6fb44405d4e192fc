"""The serving benchmark runs end to end in a few seconds of load and writes its table and chart.

Only a smoke run: the benchmark itself (python -m tools.benchmark.serving) is not part of the test run. It
leaves out (e), KServe's model server: its venv (.venv-kserve, ~750 MB, built on first use) is not built in CI;
the report's handling of (e) and of --repeat is unit-tested in tests/unit/tools/test_benchmark_report.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import module_env, run_module
from tools.benchmark import load

pytestmark = pytest.mark.e2e


def test_benchmark_writes_a_table(tmp_path: Path, mnist_root: Path) -> None:
    assert load.missing_load_generators() is None, f"{load.missing_load_generators()} (.ci/run installs them)"
    out = tmp_path / "bench"
    done = run_module(
        "tools.benchmark.serving",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--clients",
        "1",
        "--batch",
        "4",
        "--configs",
        "a,d,f,g",
        "--train-limit",
        "500",
        "--profile",
        "--out",
        str(out),
        env=module_env(SANDBOX_MNIST_ROOT=str(mnist_root)),
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = (out / "serving-benchmark.md").read_text()
    assert "| (d) ours, as shipped | gRPC | 4 | 1 |" in table, table
    assert "| (f) (d) through the router (Envoy) | REST | 4 | 1 |" in table, table
    assert "| (g) two replicas of (d) through the router, 50/50 | gRPC | 4 | 1 |" in table, table
    assert "| model forward pass (torch) |" in table, table
    # Cores are measured beside each case: (d)'s server is busy while it answers, through Envoy as well.
    busy = re.search(r"\| batch 4, 1 client\(s\), REST: \(d\)'s cores, through Envoy \| ([0-9.]+) \|", table)
    assert busy and float(busy.group(1)) > 0.05, table
    assert sorted(p.name for p in out.glob("profile-*.txt")) == [
        "profile-REST-batch-1-x16.txt",
        "profile-REST-batch-4-x1.txt",
        "profile-gRPC-batch-4-x1.txt",
    ]
    assert (out / "serving-benchmark.png").stat().st_size > 0
