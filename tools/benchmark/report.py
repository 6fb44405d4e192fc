"""The benchmark's outputs: a markdown table (with ratios to the stock MLServer command and to the in-process
limit, and the issue's goals) and a PNG chart."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tools.benchmark.load import Measurement  # noqa: E402

LIMIT, STOCK_MLSERVER, OURS, ROUTED = "a", "c", "d", "e"


@dataclass(frozen=True)
class Row:
    config: str  # a, b, c or d
    label: str
    protocol: str
    batch: int
    clients: int
    result: Measurement

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
            goal = f"batch of {case[0]}, {clients} client(s), images/s, fastest path ({best.protocol}) vs (c)"
            out.append((goal, ">= 4x", speedup, speedup >= 4))  # issue 15's goal
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
    return out


def markdown(rows: list[Row], servers: list[Server], header: str) -> str:
    lines = [header, ""]
    lines.append(
        "| config | protocol | batch | clients | req/s | images/s | p50 ms | p99 ms | errors "
        "| images/s vs (c) | images/s vs (a) | p99 vs (c) |"
    )
    lines.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for row in sorted(rows, key=lambda r: (r.batch, r.clients, r.config, r.protocol)):
        m = row.result
        stock, limit = _find(rows, STOCK_MLSERVER, row.case), _find(rows, LIMIT, row.case)
        vs_c = _fmt(_ratio(m.img_s, stock.result.img_s if stock else None), 2) if row.config != STOCK_MLSERVER else "1"
        vs_a = _fmt(_ratio(m.img_s, limit.result.img_s if limit else None), 3)
        p99_c = _fmt(_ratio(m.p99_ms, stock.result.p99_ms if stock else None), 2)
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
            lines.append(f"| {goal} | {target} | {_fmt(value, 2)}{unit} | {'yes' if met else 'NO'} |")
    clients_cpu = [r for r in rows if r.result.client_cpu_per_request_ms is not None]
    if clients_cpu:
        lines += [
            "",
            "gRPC load generator CPU per request (its ceiling is about 1000/this req/s per core): "
            + ", ".join(
                f"batch {r.batch} x{r.clients}: {r.result.client_cpu_per_request_ms:.3f} ms" for r in clients_cpu
            ),
        ]
    return "\n".join(lines) + "\n"


def chart(rows: list[Row], path: Path, title: str) -> None:
    cases = sorted({row.case for row in rows})
    series = sorted({(row.config, row.label, row.protocol) for row in rows})
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    width = 0.8 / max(1, len(series))
    for index, (config, label, protocol) in enumerate(series):
        found = [_find(rows, config, case, protocol) for case in cases]
        xs = [i + index * width for i in range(len(cases))]
        name = f"({config}) {label} {protocol}"
        axes[0].bar(xs, [r.result.img_s if r else 0 for r in found], width, label=name)
        axes[1].bar(xs, [r.result.p99_ms if r else 0 for r in found], width, label=name)
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
