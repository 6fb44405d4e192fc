"""The benchmark's outputs: a markdown table (with ratios to the stock MLServer command and to the in-process
limit, and the issue's goals), over repeated runs the minimum and median of each ratio, and a PNG chart."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tools.benchmark.cores import CoreUse  # noqa: E402
from tools.benchmark.load import Measurement  # noqa: E402

LIMIT, STOCK_MLSERVER, OURS, KSERVE, ROUTED, REPLICAS = "a", "c", "d", "e", "f", "g"
MEASURED = "measured"
"""The target of a figure that the issue asks to measure, without a goal for it."""


@dataclass(frozen=True)
class Row:
    config: str  # a to g, as in tools/benchmark/serving.py
    label: str
    protocol: str
    batch: int
    clients: int
    result: Measurement
    cores: CoreUse | None = None
    """Cores each server's process tree used while this case was measured, and the machine's idle ones."""

    @property
    def case(self) -> tuple[int, int]:
        return self.batch, self.clients


@dataclass(frozen=True)
class Server:
    config: str
    label: str
    cold_start_s: float
    rss_mb: float | None


def _find(rows: list[Row], config: str, case: tuple[int, int], protocol: str | None = None) -> Row | None:
    for row in rows:
        if row.config == config and row.case == case and (protocol is None or row.protocol == protocol):
            return row
    return None


def _ratio(ours: float, base: float | None) -> float:
    return ours / base if base else math.nan


def _fmt(value: float, digits: int = 0) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def goals(rows: list[Row]) -> list[tuple[str, str, float, bool]]:
    """(goal, target, measured, met) for each goal of the issue that this run measured."""
    out: list[tuple[str, str, float, bool]] = []
    single16 = (1, 16)
    ours_rest, stock = _find(rows, OURS, single16, "REST"), _find(rows, STOCK_MLSERVER, single16)
    if ours_rest and stock:
        speedup = _ratio(ours_rest.result.req_s, stock.result.req_s)
        out.append(("single image, 16 clients, REST req/s vs (c)", ">= 3x", speedup, speedup >= 3))
        p99 = _ratio(ours_rest.result.p99_ms, stock.result.p99_ms)
        out.append(("p99 latency, single image, 16 clients, REST vs (c)", "<= 0.33x", p99, p99 <= 1 / 3))
    for clients in sorted({row.clients for row in rows}):
        case = (max(row.batch for row in rows), clients)
        best = max(
            (row for row in rows if row.config == OURS and row.case == case),
            default=None,
            key=lambda row: row.result.img_s,
        )
        stock = _find(rows, STOCK_MLSERVER, case)
        if best and stock and case[0] > 1:
            speedup = _ratio(best.result.img_s, stock.result.img_s)
            # The path is not in the goal's name, so that repeated runs count the same goal whichever path won.
            goal = f"batch of {case[0]}, {clients} client(s), images/s, (d)'s fastest path vs (c)"
            out.append((goal, ">= 4x", speedup, speedup >= 4))  # issue 15's goal
    for row in rows:
        ours = _find(rows, OURS, row.case, row.protocol) if row.config == KSERVE else None
        if ours is None:
            continue
        # Issue 15: ahead of KServe's model server in every case, by at least 1.2x, same protocol side by side.
        ahead = _ratio(ours.result.img_s, row.result.img_s)
        which = f"batch {row.batch}, {row.clients} client(s), {row.protocol}"
        out.append((f"(d) vs (e) KServe, images/s, {which}", ">= 1.2x", ahead, ahead >= 1.2))
    for row in rows:
        direct = _find(rows, OURS, row.case, row.protocol) if row.config == ROUTED else None
        if direct is None or row.clients != 16:
            continue
        # Issue 11's targets for the router: >= 85 % of direct throughput at 16 clients, <= 2 ms more at p99.
        which = f"batch {row.batch}, 16 clients, {row.protocol}"
        kept = _ratio(row.result.req_s, direct.result.req_s)
        out.append((f"router: req/s through Envoy vs direct (d), {which}", ">= 0.85x", kept, kept >= 0.85))
        added = row.result.p99_ms - direct.result.p99_ms
        out.append((f"router: p99 added through Envoy, {which}", "<= 2 ms", added, added <= 2))
    for row in rows:
        one = _find(rows, ROUTED, row.case, row.protocol) if row.config == REPLICAS else None
        if one is None or row.clients != 16:
            continue
        # Issue 15: measure N=2 against N=1 behind the router. No target: on 2 cores the load generator and
        # Envoy take the core a second replica would use, so this says what scaling out gives on this machine.
        gain = _ratio(row.result.img_s, one.result.img_s)
        which = f"batch {row.batch}, 16 clients, {row.protocol}"
        out.append((f"replicas: images/s, two (d) vs one through the router, {which}", MEASURED, gain, True))
    return out


ROUTER_CORES_TITLE = (
    "Where the cores went in the router's cases (CPU seconds per second of wall time: (d)'s process tree, "
    "Envoy's, and the machine's idle cores; the load generator is in none of the trees):"
)


def router_cores(rows: list[Row]) -> list[tuple[str, float]]:
    """(figure, value) for each case measured both through the router (f) and direct (d), where
    the cores were measured: whether the router's cost is cores (the machine has none idle) or waiting ((d)
    has requests less often through Envoy and is idle in between, while cores are). Cores are CPU seconds per
    second of wall time (tools/benchmark/cores.py)."""
    out: list[tuple[str, float]] = []
    for row in rows:
        direct = _find(rows, OURS, row.case, row.protocol) if row.config == ROUTED else None
        if direct is None or row.cores is None or direct.cores is None:
            continue
        which = f"batch {row.batch}, {row.clients} client(s), {row.protocol}"
        through, alone = row.cores, direct.cores
        per_request = _ratio(
            through.cpu_per_request_us(OURS, row.result.requests),
            alone.cpu_per_request_us(OURS, direct.result.requests),
        )
        out += [
            (f"{which}: (d)'s cores, direct", alone.trees.get(OURS, math.nan)),
            (f"{which}: (d)'s cores, through Envoy", through.trees.get(OURS, math.nan)),
            (f"{which}: Envoy's cores", through.trees.get(ROUTED, math.nan)),
            (f"{which}: idle cores, direct", alone.idle),
            (f"{which}: idle cores, through Envoy", through.idle),
            (f"{which}: (d)'s CPU per request, through Envoy vs direct (x)", per_request),
        ]
    return out


def ratios(rows: list[Row], row: Row) -> tuple[float, float, float]:
    """`row`'s images/s to (c)'s and to (a)'s, and its p99 latency to (c)'s, in the same case of the same run
    (NaN where that run has no such config)."""
    stock, limit = _find(rows, STOCK_MLSERVER, row.case), _find(rows, LIMIT, row.case)
    return (
        _ratio(row.result.img_s, stock.result.img_s if stock else None),
        _ratio(row.result.img_s, limit.result.img_s if limit else None),
        _ratio(row.result.p99_ms, stock.result.p99_ms if stock else None),
    )


def _min_median(values: list[float]) -> tuple[float, float]:
    kept = [v for v in values if not math.isnan(v)]
    return (min(kept), statistics.median(kept)) if kept else (math.nan, math.nan)


def repeated(runs: list[list[Row]]) -> str:
    """Over `runs` (each one run's rows): the minimum and median of each ratio of each case, then of each goal,
    and in how many runs each goal was met. A ratio is always taken inside one run, never across runs."""
    n = len(runs)
    lines = [
        f"Minimum / median over {n} runs of each ratio (each ratio taken inside one run):",
        "",
        "| config | protocol | batch | clients | images/s, median | images/s vs (c), min / median "
        "| images/s vs (a), min / median | p99 vs (c), min / median |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    keys = sorted(
        {(r.batch, r.clients, r.config, r.protocol, r.label) for rows in runs for r in rows},
    )
    for batch, clients, config, protocol, label in keys:
        found = [
            (rows, row)
            for rows in runs
            for row in rows
            if (row.batch, row.clients, row.config, row.protocol, row.label)
            == (batch, clients, config, protocol, label)
        ]
        each = [ratios(rows, row) for rows, row in found]
        cells = [_min_median([r[i] for r in each]) for i in range(3)]
        img_s = statistics.median(row.result.img_s for _, row in found)
        vs_c = "1" if config == STOCK_MLSERVER else f"{_fmt(cells[0][0], 2)} / {_fmt(cells[0][1], 2)}"
        lines.append(
            f"| ({config}) {label} | {protocol} | {batch} | {clients} | {_fmt(img_s)} | {vs_c} "
            f"| {_fmt(cells[1][0], 3)} / {_fmt(cells[1][1], 3)} | {_fmt(cells[2][0], 2)} / {_fmt(cells[2][1], 2)} |"
        )
    measured: dict[tuple[str, str], list[tuple[float, bool]]] = {}
    for rows in runs:
        for goal, target, value, met in goals(rows):
            measured.setdefault((goal, target), []).append((value, met))
    if measured:
        lines += [
            "",
            "| goal | target | min / median / max | met in |",
            "|---|---|--:|--:|",
        ]
        for (goal, target), values in measured.items():
            unit = " ms" if target.endswith("ms") else "x"
            low, mid = _min_median([v for v, _ in values])
            high = max(v for v, _ in values)
            held = "-" if target == MEASURED else f"{sum(ok for _, ok in values)} of {n} runs"
            lines.append(f"| {goal} | {target} | {_fmt(low, 2)} / {_fmt(mid, 2)} / {_fmt(high, 2)}{unit} | {held} |")
    spent: dict[str, list[float]] = {}
    for rows in runs:
        for figure, value in router_cores(rows):
            spent.setdefault(figure, []).append(value)
    if spent:
        lines += ["", ROUTER_CORES_TITLE, "", "| router case: figure | min / median / max |", "|---|--:|"]
        for figure, figures in spent.items():
            low, mid = _min_median(figures)
            high = max((v for v in figures if not math.isnan(v)), default=math.nan)
            lines.append(f"| {figure} | {_fmt(low, 2)} / {_fmt(mid, 2)} / {_fmt(high, 2)} |")
    return "\n".join(lines) + "\n"


def markdown(rows: list[Row], servers: list[Server]) -> str:
    """One run's tables: every case with its ratios to (c) and (a), cold starts and memory, the goals."""
    lines = []
    lines.append(
        "| config | protocol | batch | clients | req/s | images/s | p50 ms | p99 ms | errors "
        "| images/s vs (c) | images/s vs (a) | p99 vs (c) |"
    )
    lines.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for row in sorted(rows, key=lambda r: (r.batch, r.clients, r.config, r.protocol)):
        m = row.result
        img_c, img_a, p99_c_ratio = ratios(rows, row)
        vs_c = _fmt(img_c, 2) if row.config != STOCK_MLSERVER else "1"
        vs_a = _fmt(img_a, 3)
        p99_c = _fmt(p99_c_ratio, 2)
        lines.append(
            f"| ({row.config}) {row.label} | {row.protocol} | {row.batch} | {row.clients} | {_fmt(m.req_s)} "
            f"| {_fmt(m.img_s)} | {_fmt(m.p50_ms, 2)} | {_fmt(m.p99_ms, 2)} | {m.errors} | {vs_c} | {vs_a} | {p99_c} |"
        )
    lines += ["", "| config | cold start to ready (s) | RSS of the process tree after load (MiB) |", "|---|--:|--:|"]
    for server in servers:
        rss = "n/a (in the benchmark process)" if server.rss_mb is None else _fmt(server.rss_mb)
        lines.append(f"| ({server.config}) {server.label} | {server.cold_start_s:.1f} | {rss} |")
    measured_goals = goals(rows)
    if measured_goals:
        lines += ["", "| goal | target | measured | met |", "|---|---|--:|---|"]
        for goal, target, value, met in measured_goals:
            unit = " ms" if target.endswith("ms") else "x"
            verdict = "-" if target == MEASURED else "yes" if met else "NO"
            lines.append(f"| {goal} | {target} | {_fmt(value, 2)}{unit} | {verdict} |")
    if spent := router_cores(rows):
        lines += ["", ROUTER_CORES_TITLE, "", "| router case: figure | measured |", "|---|--:|"]
        lines += [f"| {figure} | {_fmt(value, 2)} |" for figure, value in spent]
    clients_cpu = [r for r in rows if r.result.client_cpu_per_request_ms is not None]
    if clients_cpu:
        lines += [
            "",
            "gRPC load generator (h2load) CPU per request (its ceiling is about 1000/this req/s per core): "
            + ", ".join(
                f"batch {r.batch} x{r.clients}: {r.result.client_cpu_per_request_ms:.3f} ms" for r in clients_cpu
            ),
        ]
    return "\n".join(lines) + "\n"


def chart(runs: list[list[Row]], path: Path, title: str) -> None:
    """Images/s and p99 latency of every config and case: one run's values, or over several runs the median,
    with a bar from the minimum to the maximum."""
    every = [row for rows in runs for row in rows]
    cases = sorted({row.case for row in every})
    series = sorted({(row.config, row.label, row.protocol) for row in every})
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    width = 0.8 / max(1, len(series))
    for index, (config, label, protocol) in enumerate(series):
        xs = [i + index * width for i in range(len(cases))]
        name = f"({config}) {label} {protocol}"
        for axis, value in ((axes[0], lambda m: m.img_s), (axes[1], lambda m: m.p99_ms)):
            found = [[value(r.result) for rows in runs if (r := _find(rows, config, case, protocol))] for case in cases]
            middle = [statistics.median(v) if v else 0 for v in found]
            spread = [
                [m - min(v) if v else 0 for m, v in zip(middle, found, strict=True)],
                [max(v) - m if v else 0 for m, v in zip(middle, found, strict=True)],
            ]
            axis.bar(xs, middle, width, label=name, yerr=spread if len(runs) > 1 else None, capsize=2)
    for axis, ylabel in zip(axes, ["images/s (log)", "p99 latency, ms (log)"], strict=True):
        axis.set_yscale("log")
        axis.set_ylabel(ylabel)
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))])
        axis.set_xticklabels([f"batch {b}\n{c} client(s)" for b, c in cases])
        axis.grid(axis="y", which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
