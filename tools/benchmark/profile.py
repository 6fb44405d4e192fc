"""Where a served request's time goes: py-spy samples of the server's event loop, summed by stage.

MLServer answers REST and gRPC and runs the model (parallel_workers=0) on one asyncio event loop in one
process, so that loop's thread is the server's critical path. The sampled stacks of that thread are put
into stages by the first rule that matches. Each stage's share of the samples, times the CPU time that
thread used in the same window (psutil), divided by the requests answered, is its cost in
microseconds per request. Other threads (gRPC's C core, the metrics server) and idle waits are not counted.

py-spy pauses the process for each sample (without pausing, fast-changing stacks come back torn and are
dropped, which hides whole stages), so a profiled run is slower than an unprofiled one; the sampling
rate is kept low to keep that small, and the throughput during profiling is printed beside the table.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from tools.benchmark.load import Measurement

SAMPLE_RATE = 50  # samples per second: at 250, pausing for samples halved the server's throughput
EVENT_LOOP_FRAME = "(asyncio/runners.py"

# (stage, substrings of frame names): a sample goes to the first stage with a matching frame anywhere in
# its stack, so the order decides nesting (the model's forward pass runs inside the request handler).
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("model forward pass (torch)", ("Module._call_impl",)),
    # request_of, decoded, raw_images, Gathered, answer_json, answer_of: the shortcuts past MLServer's path
    # (services/serving/rest_direct.py, grpc_direct.py, shortcut.py).
    ("JSON parsing (orjson)", ("Request.json (", "request_of (")),
    ("tensor decoding (JSON list or raw bytes -> numpy)", ("_to_ndarray", "inject_raw", "decoded (", "raw_images")),
    ("adaptive batching (queue, merge, split)", ("AdaptiveBatcher", "BatchedRequests", "Gathered", "predict_arrays")),
    ("request validation (FastAPI/pydantic, protobuf conversion)", ("solve_dependencies", "RequestConverter")),
    (
        "response encoding and sending",
        (
            "encode_response",
            "serialize_response",
            "Response.__call__",
            "ResponseConverter",
            "RequestResponseCycle.send",
            "answer_json (",
            "answer_of (",
            "respond (",
            "cloudevents_headers",
        ),
    ),
    ("Prometheus metrics", ("prometheus_client", "get_matching_route_path", "_infer_contextmanager")),
    (
        "HTTP/gRPC plumbing (uvicorn, Starlette, FastAPI, grpc.aio, MLServer)",
        ("run_asgi", "data_received", "InferenceServicer", "handle_mlserver_error", "PromServerInterceptor"),
    ),
    ("event loop, native I/O (uvloop, gRPC C core) and the rest", ("",)),
]


@dataclass(frozen=True)
class Profile:
    case: str
    measurement: Measurement
    samples: Counter[str]
    """Samples of the event-loop thread by stage."""
    cpu_seconds: float
    """CPU time of the event-loop thread during the run."""

    def share(self, stage: str) -> float:
        total = sum(self.samples.values())
        return self.samples[stage] / total if total else 0.0

    def microseconds_per_request(self, stage: str | None = None) -> float:
        """CPU microseconds of the event loop per request answered, for one stage or (None) all."""
        handled = self.measurement.requests + self.measurement.errors
        if not handled:
            return float("nan")
        return 1e6 * self.cpu_seconds * (self.share(stage) if stage else 1.0) / handled


def thread_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the process's main thread (the thread whose id is the pid)."""
    main = next(thread for thread in psutil.Process(pid).threads() if thread.id == pid)
    return main.user_time + main.system_time


def stage_of(stack: str) -> str:
    for stage, needles in STAGES:
        if any(needle in stack for needle in needles):
            return stage
    raise AssertionError("the last stage matches every stack")


def event_loop_samples(raw: str) -> Counter[str]:
    """py-spy's raw output (one `frame;frame;... count` line per distinct stack), summed by stage."""
    samples: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if EVENT_LOOP_FRAME in stack and count.isdigit():
            samples[stage_of(stack)] += int(count)
    return samples


def py_spy() -> str | None:
    """py-spy from this interpreter's environment (an unactivated venv is not on PATH), else from PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def profiled(pid: int, case: str, seconds: float, run: Callable[..., Measurement], out: Path) -> Profile:
    """Run `run(seconds=seconds)` while py-spy samples process `pid` for the same time."""
    executable = py_spy()
    if executable is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    raw_path = out / f"profile-{case.replace(' ', '-')}.txt"
    argv = [
        executable,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(SAMPLE_RATE),
        "--format",
        "raw",
        "--output",
        str(raw_path),
    ]
    recorder = threading.Thread(target=subprocess.run, args=(argv,), kwargs={"capture_output": True, "timeout": 120})
    cpu = thread_cpu_seconds(pid)
    recorder.start()
    measurement = run(seconds=seconds)
    cpu = thread_cpu_seconds(pid) - cpu
    recorder.join()
    if not raw_path.exists():
        raise RuntimeError(f"py-spy wrote no profile of pid {pid} (may this user ptrace it?)")
    return Profile(case, measurement, event_loop_samples(raw_path.read_text()), cpu)


def markdown(profiles: list[Profile]) -> str:
    """CPU microseconds of the event loop per request, by stage, one column per profiled case."""
    if not profiles:
        return ""
    lines = [
        "| stage | " + " | ".join(f"{p.case} (us/request)" for p in profiles) + " |",
        "|---|" + "--:|" * len(profiles),
    ]
    for stage, _ in STAGES:
        cells = [f"{p.microseconds_per_request(stage):,.0f} ({p.share(stage):.0%})" for p in profiles]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines.append(
        "| **event loop CPU per request** | "
        + " | ".join(
            f"**{p.microseconds_per_request():,.0f}** ({sum(p.samples.values())} samples, "
            f"{p.measurement.req_s:,.0f} req/s while profiled)"
            for p in profiles
        )
        + " |"
    )
    return "\n".join(lines) + "\n"
