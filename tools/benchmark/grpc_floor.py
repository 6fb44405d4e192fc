"""What is left to cut from a gRPC inference: (d) and (e) beside bare grpc.aio servers that do less and less.

    SANDBOX_MNIST_ROOT=... python -m tools.benchmark.grpc_floor [--rounds 2] [--duration 4] [--out DIR]

Five servers of the same registered model over V2 gRPC; each case (one image and a batch of 32, from 1 and 16
clients) is measured on every server back to back, `--rounds` times, with h2load as in the serving benchmark
(tools/benchmark/serving.py):

    bare         grpc.aio on uvloop with MLServer's protocol classes, answering zeros of the answer's shape:
                 the gRPC C core, grpc.aio and protobuf alone, no model (tools/benchmark/grpc_floor_server.py)
    forward      the same, answering with the registered model's forward pass (mlflow.pytorch.load_model,
                 torch on one thread, the input read with np.frombuffer: as (d) runs it)
    interceptor  forward, plus what (d) keeps of MLServer's gRPC layer: its Prometheus interceptor, and the
                 CloudEvents headers sent as trailing metadata
    (d)          this project's serving as shipped (python -m services.serving.entrypoint)
    (e)          KServe's model server (tools/benchmark/kserve_server.py, in .venv-kserve)

The gaps between neighbours say what each layer costs: `bare` is the most any grpc.aio server answers on this
machine; `forward` minus `bare` is the model; (d) minus `interceptor` is what (d) keeps of MLServer's data
plane (its model metrics and model lookup, request ids, the runtime's counters). docs/performance.md, "What
is left to cut over gRPC", gives a run and what it shows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import grpc
import numpy as np

from mlops_sandbox.processes import stop_on_sigterm
from mlops_sandbox.waiting import NotReadyYet
from tools.benchmark import kserve_env, load, servers
from tools.benchmark.grpc_floor_server import LAYERS, MODEL
from tools.ports import free_port

CASES = ((1, 1), (1, 16), (32, 1), (32, 16))
"""(images per request, clients), as the serving benchmark's gRPC cases."""


@contextmanager
def bare_server(layer: str, tracking_uri: str, model_uri: str, log_dir: Path, probe: bytes) -> Iterator[str]:
    """A grpc_floor_server of `layer` as its own process group (servers.started); yields its gRPC target
    (host:port) once it answers `probe` (a serialized ModelInferRequest), and stops the group. Raises
    RuntimeError when it exits before answering, DependencyUnavailable (naming its address) when it does not
    answer within 300 s."""
    port = free_port()
    argv = [servers.PYTHON, "-m", "tools.benchmark.grpc_floor_server", layer, "--port", str(port)]
    argv += ["--model-uri", model_uri]
    target = f"127.0.0.1:{port}"

    def answers() -> None:
        try:
            load.grpc_call(target, probe)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            raise NotReadyYet(f"{target}: {err.code().name}") from err

    with servers.started(f"floor-{layer}", argv, servers.clean_env(tracking_uri), target, log_dir, ready=answers):
        yield target


def markdown(results: dict[tuple[int, int], dict[str, list[float]]], names: list[str]) -> str:
    """A table of requests/s (median, and min to max over the rounds) by case and server, with (d) against (e)."""
    lines = [
        "| case | " + " | ".join(names) + " | (d) / (e) |",
        "|---|" + "--:|" * (len(names) + 1),
    ]
    for (batch, clients), by_server in results.items():
        cells = [
            f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"
            for values in (by_server[name] for name in names)
        ]
        ratios = [d / e for d, e in zip(by_server["(d)"], by_server["(e)"], strict=True)]
        image = "one image" if batch == 1 else f"batch of {batch}"
        lines.append(
            f"| {image}, {clients} client{'s' * (clients > 1)} | " + " | ".join(cells) + " | "
            f"{min(ratios):.2f}-{max(ratios):.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="times each case is measured on every server")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds measured per case and server")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured load before each")
    parser.add_argument("--train-limit", type=int, default=2000, help="images to train the throwaway model on")
    parser.add_argument("--out", type=Path, help="also write the table to DIR/grpc-floor.md")
    args = parser.parse_args(argv)
    # tritonclient's protocol classes (setup's) and MLServer's register the same names: this module stays
    # importable beside MLServer's (the unit tests import both), so the load side's are imported here.
    from tools.benchmark.serving import machine
    from tools.benchmark.setup import check_grpc, grpc_request, throwaway_registry

    stop_on_sigterm()  # a stopped run stops the servers it started, as Ctrl+C does
    if missing := load.missing_load_generators():
        print(f"error: {missing}", file=sys.stderr)
        return 2
    kserve_python = kserve_env.python()
    requests_ = {
        batch: grpc_request(MODEL, np.random.default_rng(0).random((batch, 1, 28, 28), np.float32)) for batch in (1, 32)
    }
    results: dict[tuple[int, int], dict[str, list[float]]] = {case: {} for case in CASES}
    with tempfile.TemporaryDirectory(prefix="grpc-floor-") as scratch, ExitStack() as stack:
        work = Path(scratch)
        tracking_uri, version = stack.enter_context(throwaway_registry(work, args.train_limit))
        model_uri = f"models:/{MODEL}/{version}"
        targets = {
            layer: stack.enter_context(bare_server(layer, tracking_uri, model_uri, work, requests_[1]))
            for layer in LAYERS
        }
        ours = stack.enter_context(servers.ours(tracking_uri, MODEL, work))
        kserve = stack.enter_context(servers.kserve(tracking_uri, model_uri, MODEL, kserve_python, work))
        assert ours.grpc_target is not None and kserve.grpc_target is not None
        targets |= {"(d)": ours.grpc_target, "(e)": kserve.grpc_target}
        for target in targets.values():
            for batch, request in requests_.items():
                check_grpc(target, request, batch)
        for (batch, clients), by_server in results.items():
            for round_ in range(1, args.rounds + 1):
                for name, target in targets.items():
                    if args.warmup:
                        load.grpc_infer(target, requests_[batch], clients=clients, seconds=args.warmup, batch=batch)
                    result = load.grpc_infer(
                        target, requests_[batch], clients=clients, seconds=args.duration, batch=batch
                    )
                    by_server.setdefault(name, []).append(result.req_s)
                    print(
                        f"batch {batch:2} x{clients:2} round {round_}: {name:12} {result.req_s:8,.0f} req/s  "
                        f"p99 {result.p99_ms:6.2f} ms  errors {result.errors}",
                        flush=True,
                    )
    table = (
        f"gRPC requests/s, median (min-max) of {args.rounds} rounds, {args.duration:g} s each, servers side by "
        f"side; machine: {machine()}\n\n" + markdown(results, list(targets))
    )
    print("\n" + table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "grpc-floor.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
