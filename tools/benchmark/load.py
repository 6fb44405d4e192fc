"""Load generators of the serving benchmark: wrk for REST, an async gRPC client, and in-process calls.

Each runs closed-loop (every client sends its next request when the previous answer arrives) for a
bounded time and returns one `Measurement`. Traffic goes to loopback addresses only.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

WRK_SCRIPT = Path(__file__).with_name("post.lua")
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class Measurement:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    batch: int
    client_cpu_per_request_ms: float | None = None
    """CPU time the load generator itself spent per request (Python clients only): its ceiling is
    about 1000 / this value requests/s per core, which shows whether it, not the server, limits."""

    @property
    def req_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def img_s(self) -> float:
        return self.req_s * self.batch


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    if not latencies:
        return float("nan"), float("nan")
    p50, p99 = np.percentile(np.asarray(latencies) * 1000.0, [50, 99])
    return float(p50), float(p99)


def wrk(
    url: str, body: bytes, *, clients: int, seconds: float, batch: int, header_length: int | None = None
) -> Measurement:
    """POST `body` to `url` from `clients` connections for `seconds` with wrk (one thread: wrk is C and
    needs a fraction of a core; the rest stays with the server under test). With `header_length` (bytes),
    `body` is a V2 binary tensor request whose JSON header is that long."""
    if not url.startswith(("http://127.0.0.1:", "http://localhost:")):
        raise ValueError(f"the benchmark only sends traffic to loopback, not to {url}")
    with tempfile.NamedTemporaryFile(suffix=".json") as payload:
        payload.write(body)
        payload.flush()
        argv = ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "30s", "-s", str(WRK_SCRIPT)]
        done = subprocess.run(
            [*argv, url],
            env=dict(os.environ, BENCH_BODY=payload.name, BENCH_HEADER_LENGTH=str(header_length or "")),
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
    found = re.search(r"BENCH requests=(\d+) duration_us=(\d+) errors=(\d+) p50_us=(\d+) p99_us=(\d+)", done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-1000:]} {done.stderr[-1000:]}")
    requests, duration_us, errors, p50, p99 = (int(x) for x in found.groups())
    return Measurement(requests - errors, duration_us / 1e6, errors, p50 / 1000, p99 / 1000, batch)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _grpc_load(target: str, request: bytes, clients: int, seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    # Requests are serialized once up front and answers are not parsed: the client does no per-request
    # protobuf work, so what is measured is the server.
    async with grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
        infer = channel.unary_unary(GRPC_INFER)
        deadline = time.monotonic() + seconds

        async def client() -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                sent = time.perf_counter()
                try:
                    await infer(request, timeout=30)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, errors


def grpc_infer(target: str, request: bytes, *, clients: int, seconds: float, batch: int) -> Measurement:
    """Send the serialized ModelInferRequest `request` to `target` (host:port) from `clients` coroutines."""
    if not target.startswith(("127.0.0.1:", "localhost:")):
        raise ValueError(f"the benchmark only sends traffic to loopback, not to {target}")
    cpu, began = _cpu_seconds(), time.monotonic()
    latencies, errors = asyncio.run(_grpc_load(target, request, clients, seconds))
    cpu, elapsed = _cpu_seconds() - cpu, time.monotonic() - began
    p50, p99 = _percentiles(latencies)
    per_request = 1000 * cpu / max(1, len(latencies) + errors)
    return Measurement(len(latencies), elapsed, errors, p50, p99, batch, client_cpu_per_request_ms=per_request)


def in_process(call: Callable[[], object], *, clients: int, seconds: float, batch: int) -> Measurement:
    """Call `call` from `clients` threads for `seconds`: the model without any server in front."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    def client() -> None:
        mine = []
        while time.monotonic() < deadline:
            sent = time.perf_counter()
            call()
            mine.append(time.perf_counter() - sent)
        latencies.extend(mine)

    began = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    p50, p99 = _percentiles(latencies)
    return Measurement(len(latencies), time.monotonic() - began, 0, p50, p99, batch)
