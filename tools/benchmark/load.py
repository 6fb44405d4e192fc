"""Load generators of the serving benchmark: wrk for REST, h2load for gRPC (both C), and in-process calls.

Each runs closed-loop (every client sends its next request when the previous answer arrives) for a
bounded time and returns one `Measurement`. Traffic goes to loopback addresses only.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import struct
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
LOAD_GENERATORS = {"wrk": "wrk", "h2load": "nghttp2-client"}
"""The load generators of served configs, and the Debian/Ubuntu package of each."""
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
    """CPU time the load generator itself spent per request (h2load's, for gRPC): its ceiling is about
    1000 / this value requests/s per core, which shows whether it, not the server, limits."""

    @property
    def req_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def img_s(self) -> float:
        return self.req_s * self.batch


@dataclass(frozen=True)
class Target:
    """One way of sending requests to one config: what each case of the run is measured on."""

    config: str
    label: str
    protocol: str
    run: Callable[[int, int, float], Measurement]  # (batch, clients, seconds) -> one measurement


MEASURING_ORDER = ("c", "d", "e", "f", "g", "b", "a")


def measuring_order(target: Target) -> tuple[int, int, str]:
    """REST (JSON, then binary) of every server, then gRPC, then in-process: the configs of each ratio
    ((d) / (c), (d) / (e), (f) / (d), (g) / (f)) a few seconds apart."""
    group = {"gRPC": 1, "call": 2}.get(target.protocol, 0)
    return group, MEASURING_ORDER.index(target.config), target.protocol


def missing_load_generators() -> str | None:
    """An error message naming the load generators not installed (and how to install them), or None."""
    missing = [name for name in LOAD_GENERATORS if shutil.which(name) is None]
    if not missing:
        return None
    packages = " ".join(LOAD_GENERATORS[name] for name in missing)
    return f"{' and '.join(missing)} not installed (Debian/Ubuntu: apt-get install {packages})"


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


GRPC_FRAME_PREFIX = 5
"""Bytes before each gRPC message on the wire: a compressed flag and a big-endian uint32 length (gRPC over
HTTP/2, "Length-Prefixed-Message", https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md)."""


def grpc_frame(message: bytes) -> bytes:
    """`message` as one uncompressed gRPC length-prefixed message: what goes in an HTTP/2 DATA frame."""
    return b"\0" + struct.pack(">I", len(message)) + message


def grpc_call(target: str, request: bytes) -> bytes:
    """The server's answer to the serialized ModelInferRequest `request`, serialized: one call, as the load makes
    it, with no protocol classes (tritonclient's and MLServer's register the same names, and a process can hold
    only one of them). grpc.RpcError when the call fails."""
    with grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
        answer: bytes = channel.unary_unary(GRPC_INFER)(request, timeout=60)
    return answer


def _h2load_seconds(text: str) -> float:
    found = re.search(r"finished in ([\d.]+)(s|ms|us)", text)
    if not found:
        raise RuntimeError(f"h2load printed no duration: {text[-1000:]}")
    return float(found.group(1)) / {"s": 1, "ms": 1e3, "us": 1e6}[found.group(2)]


def grpc_infer(target: str, request: bytes, *, clients: int, seconds: float, batch: int) -> Measurement:
    """Send the serialized ModelInferRequest `request` to `target` (host:port) from `clients` HTTP/2 connections,
    one call at a time each (as wrk's connections for REST), for `seconds`, with h2load (nghttp2's load
    generator, C, one thread; apt-get install nghttp2-client). A gRPC call is an HTTP/2 POST of the
    length-prefixed message with `content-type: application/grpc` and `te: trailers`.

    h2load reads HTTP statuses, not gRPC's (which come in the trailers: a failed call is a 200 without a
    message), so the calls that failed are counted from the bytes: every answer to the same request has the
    length of the one answer taken first, and a failed call sends none. grpc.RpcError when that first call
    fails; RuntimeError when h2load fails, or when the answers' bytes are not a whole number of answers or
    hold more answers than calls."""
    if not target.startswith(("127.0.0.1:", "localhost:")):
        raise ValueError(f"the benchmark only sends traffic to loopback, not to {target}")
    answer_bytes = GRPC_FRAME_PREFIX + len(grpc_call(target, request))
    with tempfile.TemporaryDirectory() as scratch:
        body, log = Path(scratch, "request"), Path(scratch, "requests.log")
        body.write_bytes(grpc_frame(request))
        argv = ["h2load", f"--clients={clients}", "--max-concurrent-streams=1", "--threads=1"]
        argv += [f"--duration={max(1, round(seconds))}", f"--data={body}", f"--log-file={log}"]
        argv += ["--header=content-type: application/grpc", "--header=te: trailers"]
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(
            [*argv, f"http://{target}{GRPC_INFER}"], capture_output=True, text=True, timeout=seconds + 60
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        # Tab-separated per request: start (us since the epoch), HTTP status, microseconds to the answer's end.
        durations = [int(line.split("\t")[2]) / 1e6 for line in log.read_text().splitlines()] if log.exists() else []
    found = re.search(r"traffic: .*? total, .*? headers .*?, \S+ \((\d+)\) data", done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"h2load failed ({done.returncode}): {done.stdout[-1000:]} {done.stderr[-1000:]}")
    answered, left = divmod(int(found.group(1)), answer_bytes)
    # A call whose message came in as h2load stopped, before its trailers, is in the bytes but not in the log.
    if left or answered > len(durations) + clients:
        raise RuntimeError(
            f"gRPC {target}: {found.group(1)} bytes of answers for {len(durations)} calls, not a whole number "
            f"of {answer_bytes}-byte answers (do the answers' lengths vary?)"
        )
    answered = min(answered, len(durations))
    p50, p99 = _percentiles(durations)
    client_cpu = (after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime)
    per_request = 1000 * client_cpu / max(1, len(durations))
    return Measurement(answered, _h2load_seconds(done.stdout), len(durations) - answered, p50, p99, batch, per_request)


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
