"""The benchmark's report over repeated runs: each ratio is taken inside one run, then its minimum and median."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tools.benchmark.cores import CoreUse
from tools.benchmark.load import Measurement
from tools.benchmark.report import Row, chart, markdown, repeated


def _row(config: str, protocol: str, req_s: float, p99_ms: float, *, batch: int = 1) -> Row:
    measured = Measurement(int(req_s * 10), 10.0, 0, p99_ms / 2, p99_ms, batch)
    return Row(config, f"label {config}", protocol, batch, 16, measured)


def _run(stock: float, ours: float, kserve: float, limit: float) -> list[Row]:
    return [
        _row("a", "call", limit, 5.0),
        _row("c", "REST", stock, 30.0),
        _row("d", "REST", ours, 10.0),
        _row("e", "REST", kserve, 20.0),
    ]


def test_min_and_median_of_each_ratio_and_how_many_runs_met_each_goal() -> None:
    # (c) is faster in the second run: ratios are taken run by run, never against another run's (c).
    runs = [_run(1000, 3500, 2000, 7000), _run(2000, 5000, 4500, 8000), _run(1000, 2500, 1000, 5000)]
    text = repeated(runs)
    assert "| (d) label d | REST | 1 | 16 | 3,500 | 2.50 / 2.50 | 0.500 / 0.500 | 0.33 / 0.33 |" in text, text
    assert "| (c) label c | REST | 1 | 16 | 1,000 | 1 | 0.143 / 0.200 | 1.00 / 1.00 |" in text, text
    assert "| single image, 16 clients, REST req/s vs (c) | >= 3x | 2.50 / 2.50 / 3.50x | 1 of 3 runs |" in text, text
    kserve_goal = "| (d) vs (e) KServe, images/s, batch 1, 16 client(s), REST | >= 1.2x | 1.11 / 1.75 / 2.50x |"
    assert f"{kserve_goal} 2 of 3 runs |" in text, text


def test_a_single_run_keeps_its_table_and_the_chart_draws_the_runs(tmp_path: Path) -> None:
    run = _run(1000, 3500, 2000, 7000)
    table = markdown(run, [])
    assert "| (e) label e | REST | 1 | 16 | 2,000 | 2,000 | 10.00 | 20.00 | 0 | 2.00 | 0.286 | 0.67 |" in table, table
    assert "Minimum / median" not in table
    chart([run, _run(2000, 5000, 4500, 8000)], tmp_path / "chart.png", "two runs")
    assert (tmp_path / "chart.png").stat().st_size > 10_000


def test_two_replicas_are_measured_against_one_behind_the_router_without_a_verdict() -> None:
    runs = [
        [_row("f", "REST", 2000, 10.0), _row("g", "REST", 2600, 8.0)],
        [_row("f", "REST", 1800, 10.0), _row("g", "REST", 1710, 8.0)],
    ]
    figure = "| replicas: images/s, two (d) vs one through the router, batch 1, 16 clients, REST | measured |"
    one_run = markdown(runs[0], [])
    assert f"{figure} 1.30x | - |" in one_run, one_run
    text = repeated(runs)
    assert f"{figure} 0.95 / 1.12 / 1.30x | - |" in text, text


def test_the_router_cases_say_whether_envoy_took_cores_or_left_the_server_waiting() -> None:
    def run(through_envoy: float, idle: float) -> list[Row]:
        direct, routed = _row("d", "REST", 3000, 7.0), _row("f", "REST", 2400, 10.0)
        return [
            replace(direct, cores=CoreUse({"d": 1.0, "f": 0.0}, idle=0.93, seconds=10.0)),
            replace(routed, cores=CoreUse({"d": through_envoy, "f": 0.3}, idle=idle, seconds=10.0)),
        ]

    one_run = markdown(run(0.88, 0.76), [])
    assert "| batch 1, 16 client(s), REST: (d)'s cores, through Envoy | 0.88 |" in one_run, one_run
    assert "| batch 1, 16 client(s), REST: idle cores, through Envoy | 0.76 |" in one_run, one_run
    # (d) spent 0.88 core-seconds per second on 2,400 requests/s through Envoy, 1.0 on 3,000 direct: 1.1x.
    assert "| batch 1, 16 client(s), REST: (d)'s CPU per request, through Envoy vs direct (x) | 1.10 |" in one_run
    text = repeated([run(0.88, 0.76), run(0.80, 0.90), run(0.92, 0.70)])
    assert "| batch 1, 16 client(s), REST: (d)'s cores, through Envoy | 0.80 / 0.88 / 0.92 |" in text, text
    assert "| batch 1, 16 client(s), REST: Envoy's cores | 0.30 / 0.30 / 0.30 |" in text, text
    # Without cores measured (the in-process config, older runs), the table is left out.
    assert "Where the cores went" not in markdown([_row("d", "REST", 3000, 7.0), _row("f", "REST", 2400, 10.0)], [])
