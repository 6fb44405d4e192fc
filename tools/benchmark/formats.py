"""Pickled against torch.export (pt2) model files: the same weights, served both ways, measured side by side.

    python -m tools.benchmark.formats [--rounds 4] [--seconds 4]

The shipped architecture (784-512-256-10, untrained: timing does not depend on the weights) is logged twice in
one run of a throwaway MLflow server, as MLflow pickles it by default (version 1) and as the training job logs
it (`serialization_format="pt2"`, version 2). Then, in alternation, ABBA order from round to round, so that a
busy machine slows both alike:

- in-process: CPU microseconds per forward pass (the thread's own CPU time, which other processes on a busy
  machine change far less than wall time) of the module as `mlflow.pytorch.load_model` gives it, and of the
  module that serving's direct path runs (services/serving/direct.py), for batches of 1 and 32 on one thread;
- served: this project's serving as shipped (python -m services.serving.entrypoint), one server per version,
  both running, loaded in turn with wrk (REST JSON) and h2load (gRPC), one client each: the CPU
  time the `mlserver` process (which parses, infers and answers) spent per request, and requests/s (wall time:
  noisy on a busy machine).

What is reported is the ratio pt2 / pickle of each pair measured back to back (median, lowest and highest
over the rounds), never an absolute figure. Needs wrk and h2load. Serving runs in child processes that import this
project as installed: run from a second checkout with PYTHONPATH=. so that they run that checkout's code.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import numpy as np
import psutil

from mlops_sandbox.v2 import rest_request_body
from tools.benchmark import load, servers

MODEL = "pytorch_simplenn_mnist"
FORMATS = ("pickle", "pt2")


def log_both(tracking_uri: str, work: Path) -> dict[str, Path]:
    """Versions 1 (pickle) and 2 (pt2) of MODEL with the same weights; each one's local MLflow model folder."""
    import mlflow
    import mlflow.pytorch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from training.model import build_model, for_serving

    mlflow.set_tracking_uri(tracking_uri)
    module = for_serving(build_model((512, 256), 0.1, seed=0))
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, 28, 28))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 10))]),
    )
    example = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    folders = {}
    with mlflow.start_run(run_name="serialization formats"):
        for version, serialization in enumerate(FORMATS, start=1):
            info = mlflow.pytorch.log_model(
                module,
                name=serialization,
                signature=signature,
                input_example=example,
                serialization_format=serialization,
                registered_model_name=MODEL,
                pip_requirements=[],
            )
            assert str(info.registered_model_version) == str(version)
            # A logged model's files land straight in dst_path: one folder each.
            (work / serialization).mkdir()
            local = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(work / serialization))
            folders[serialization] = Path(local)
    assert (folders["pickle"] / "data" / "model.pth").is_file() and (folders["pt2"] / "data" / "model.pt2").is_file()
    return folders


def in_process(folders: dict[str, Path], rounds: int, seconds: float) -> dict[str, list[float]]:
    """Ratios pt2 / pickle of microseconds per forward pass, by case, one value per round."""
    import mlflow.pyfunc
    import mlflow.pytorch
    import torch

    from services.serving.direct import DirectTorchModel

    torch.set_num_threads(1)  # as served (OMP_NUM_THREADS=1)
    modules: dict[tuple[str, str], Callable[[torch.Tensor], object]] = {}
    for fmt, folder in folders.items():
        modules["mlflow.pytorch.load_model", fmt] = mlflow.pytorch.load_model(str(folder))
        direct = DirectTorchModel.of(mlflow.pyfunc.load_model(str(folder)), folder)
        assert direct is not None, f"no direct path for the {fmt} model"
        modules["serving's direct path", fmt] = direct.module

    def per_call_us(call: Callable[[torch.Tensor], object], images: torch.Tensor) -> float:
        calls, began, cpu = 0, time.perf_counter(), time.thread_time()
        with torch.inference_mode():
            while time.perf_counter() - began < seconds:
                for _ in range(20):
                    call(images)
                calls += 20
        return (time.thread_time() - cpu) / calls * 1e6

    ratios: dict[str, list[float]] = defaultdict(list)
    for round_ in range(rounds):
        order = FORMATS if round_ % 2 == 0 else FORMATS[::-1]
        for batch in (1, 32):
            images = torch.rand(batch, 1, 28, 28)
            for path in ("mlflow.pytorch.load_model", "serving's direct path"):
                for fmt in order:
                    per_call_us(modules[path, fmt], images)  # warm-up
                us = {fmt: per_call_us(modules[path, fmt], images) for fmt in order}
                case = f"in-process forward, {path}, batch {batch}"
                ratios[case].append(us["pt2"] / us["pickle"])
                print(f"  round {round_ + 1} {case}: pickle {us['pickle']:.0f} us, pt2 {us['pt2']:.0f} us", flush=True)
    return ratios


def served(tracking_uri: str, work: Path, rounds: int, seconds: float) -> dict[str, list[float]]:
    """Ratios pt2 / pickle of requests per second through this project's serving, by case, one per round."""
    from tools.benchmark.setup import check_grpc, check_rest, grpc_request

    rng = np.random.default_rng(0)
    images = {batch: rng.random((batch, 1, 28, 28), dtype=np.float32) for batch in (1, 32)}
    bodies = {batch: rest_request_body(array) for batch, array in images.items()}
    grpc_bodies = {batch: grpc_request(MODEL, array) for batch, array in images.items()}
    ratios: dict[str, list[float]] = defaultdict(list)
    with ExitStack() as stack:
        running = {}
        for version, fmt in enumerate(FORMATS, start=1):
            (work / f"serving-{fmt}").mkdir()
            running[fmt] = stack.enter_context(
                servers.ours(tracking_uri, MODEL, work / f"serving-{fmt}", SANDBOX_MODEL_REF=str(version))
            )
            print(f"  serving {fmt} (version {version}): ready in {running[fmt].cold_start_s:.1f} s", flush=True)

        def rest(batch: int, srv: servers.Running) -> load.Measurement:
            url = f"{srv.http_url}/v2/models/{MODEL}/infer"
            return load.wrk(url, bodies[batch], clients=1, seconds=seconds, batch=batch)

        def grpc(batch: int, srv: servers.Running) -> load.Measurement:
            return load.grpc_infer(str(srv.grpc_target), grpc_bodies[batch], clients=1, seconds=seconds, batch=batch)

        cases: dict[str, Callable[[servers.Running], load.Measurement]] = {}
        for batch in (1, 32):
            cases[f"served, REST JSON, batch {batch}, 1 client"] = partial(rest, batch)
            cases[f"served, gRPC, batch {batch}, 1 client"] = partial(grpc, batch)
        mlserver = {fmt: srv.mlserver_pid() for fmt, srv in running.items()}
        for srv in running.values():
            for batch in (1, 32):
                check_rest(f"{srv.http_url}/v2/models/{MODEL}/infer", bodies[batch], batch)
                check_grpc(str(srv.grpc_target), grpc_bodies[batch], batch)
        for round_ in range(rounds):
            order = FORMATS if round_ % 2 == 0 else FORMATS[::-1]
            for case, run in cases.items():
                result, cpu_us = {}, {}
                for fmt in order:
                    before = cpu_seconds(mlserver[fmt])
                    result[fmt] = run(running[fmt])
                    cpu_us[fmt] = (cpu_seconds(mlserver[fmt]) - before) / max(1, result[fmt].requests) * 1e6
                if any(m.errors for m in result.values()):
                    raise RuntimeError(f"{case}: errors {[m.errors for m in result.values()]}")
                ratios[f"{case}, server CPU per request"].append(cpu_us["pt2"] / cpu_us["pickle"])
                ratios[f"{case}, requests/s"].append(result["pt2"].req_s / result["pickle"].req_s)
                print(
                    f"  round {round_ + 1} {case}: pickle {result['pickle'].req_s:,.0f} req/s, "
                    f"{cpu_us['pickle']:,.0f} CPU us/request; pt2 {result['pt2'].req_s:,.0f} req/s, "
                    f"{cpu_us['pt2']:,.0f} CPU us/request",
                    flush=True,
                )
    return ratios


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process `pid` so far."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the two formats (default 4)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per measurement (default 4)")
    parser.add_argument("--parts", default="in-process,served", help="in-process, served, or both (the default)")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    if "served" in parts and (missing := load.missing_load_generators()):
        print(f"error: {missing}", file=sys.stderr)
        return 2
    from tools.benchmark.setup import throwaway_server

    work = Path(tempfile.mkdtemp(prefix="formats-bench-"))
    try:
        with throwaway_server(work) as tracking_uri:
            # In a fresh interpreter: MLServer's gRPC protocol classes (imported by serving's direct path) and
            # tritonclient's (the benchmark's gRPC requests) cannot share one process's protobuf registry.
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
                folders = child.submit(log_both, tracking_uri, work).result()
                ratios = {}
                if "in-process" in parts:
                    ratios = child.submit(in_process, folders, args.rounds, args.seconds / 2).result()
            if "served" in parts:
                ratios.update(served(tracking_uri, work, args.rounds, args.seconds))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n| case | pt2 / pickle, median | lowest | highest |\n|---|--:|--:|--:|")
    for case, values in ratios.items():
        what = f"{case}, CPU time per call" if case.startswith("in-process") else case
        print(f"| {what} | {statistics.median(values):.3f} | {min(values):.3f} | {max(values):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
