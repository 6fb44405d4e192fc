"""Serving benchmark: the same registered model, served several ways, measured side by side in one run.

    python -m tools.benchmark.serving [--duration 10] [--repeat 1] [--out bench-results/]

    (a) in-process: mlflow.pyfunc.load_model(...).predict(images), no server (the limit)
    (b) stock `mlflow models serve` scoring server
    (c) the stock command `mlflow models serve --env-manager local --enable-mlserver`, MLServer defaults
    (d) this project's serving as shipped (python -m services.serving.entrypoint): V2 REST and V2 gRPC
    (e) KServe's Python model server (kserve on PyPI) with a model class that loads the MLflow model, V2 REST and
        gRPC, in its own venv (.venv-kserve, built on first use: tools/benchmark/kserve_env.py)
    (f) (d) behind the router of rollouts (Envoy), V2 REST and gRPC: what the router costs
    (g) two replicas of (d) behind the router, half the requests each: what a second replica gives, against (f)

For each: requests/s, images/s, p50 and p99 latency, for one image and a batch of 32 per request, at 1 and
16 concurrent clients (closed loop); beside each case, the cores each server's process tree used and the cores
the machine left idle (tools/benchmark/cores.py: whether a shortfall was cores or waiting); cold start to
ready; RSS of the server's whole process tree. REST load comes from wrk (apt install wrk), gRPC load from
h2load (apt install nghttp2-client), both C, sending requests serialized once (h2load's CPU cost per request is
printed with the results). Without --tracking-uri, it starts a throwaway MLflow server and trains the shipped
model architecture on a slice of MNIST (SANDBOX_MNIST_ROOT). Writes <out>/serving-benchmark.md and
<out>/serving-benchmark.png. Everything runs on loopback and is stopped at the end.

Every config of a run is started first; then each case (batch, clients) is measured on every config back to
back, so that the two sides of each ratio are measured seconds apart (run_once).

With --repeat N, the whole run (every config, every case) is made N times against the same registered model,
and the report adds the minimum and median of each ratio over the N runs; the chart shows medians.

With --profile, (d) is also run once more per profiled case under py-spy, and the table says where the
server's event loop spends each request's time (tools/benchmark/profile.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime, timezone
from functools import cached_property, partial
from pathlib import Path

import mlflow
import numpy as np

from mlops_sandbox.processes import stop_on_sigterm
from mlops_sandbox.v2 import rest_request_body
from tools.benchmark import cores, kserve_env, load, profile, servers
from tools.benchmark.load import Measurement, Target, measuring_order
from tools.benchmark.profile import Profile
from tools.benchmark.report import Row, Server, chart, markdown, repeated
from tools.benchmark.setup import (
    check_grpc,
    check_rest,
    check_rest_binary,
    grpc_request,
    rest_binary_request_body,
    throwaway_registry,
)

MODEL = "pytorch_simplenn_mnist"
CONFIGS = ("a", "b", "c", "d", "e", "f", "g")


class Bench:
    def __init__(self, args: argparse.Namespace, images: dict[int, np.ndarray]) -> None:
        self.args = args
        self.images = images
        self.rows: list[Row] = []
        self.servers: list[Server] = []
        self.profiles: list[Profile] = []
        self.targets: list[Target] = []
        self.trees: dict[str, int] = {}
        """The leader pid of each started server's process tree, by config ("g" is its router; "g2" the second
        replica): whose cores each measurement records."""

    def measure(self, target: Target, batch: int, clients: int) -> None:
        if self.args.warmup:
            target.run(batch, clients, self.args.warmup)
        result, cores_used = cores.while_running(lambda: target.run(batch, clients, self.args.duration), self.trees)
        self.rows.append(Row(target.config, target.label, target.protocol, batch, clients, result, cores_used))
        print(
            f"  ({target.config}) {target.protocol:4} batch {batch:2} x{clients:2}: {result.req_s:9,.0f} req/s "
            f"{result.img_s:10,.0f} img/s  p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  "
            f"errors {result.errors}",
            flush=True,
        )

    def rest(
        self, config: str, label: str, url: str, bodies: dict[int, bytes], expected: dict[int, np.ndarray] | None = None
    ) -> None:
        for batch, body in bodies.items():
            check_rest(url, body, batch, expected[batch] if expected else None)
        self.targets.append(
            Target(config, label, "REST", lambda b, c, s: load.wrk(url, bodies[b], clients=c, seconds=s, batch=b))
        )

    def rest_binary(self, config: str, label: str, url: str) -> None:
        """The V2 binary tensor extension, as tritonclient.http sends it by default (binary in and out)."""
        for batch, (body, length) in self.binary_bodies.items():
            check_rest_binary(url, body, length, batch)
        self.targets.append(
            Target(
                config,
                label,
                "REST binary",
                lambda b, c, s: load.wrk(
                    url, self.binary_bodies[b][0], clients=c, seconds=s, batch=b, header_length=self.binary_bodies[b][1]
                ),
            )
        )

    def grpc(self, config: str, label: str, target: str) -> None:
        requests_ = self.grpc_requests
        for batch, request in requests_.items():
            check_grpc(target, request, batch)
        self.targets.append(
            Target(
                config,
                label,
                "gRPC",
                lambda b, c, s: load.grpc_infer(target, requests_[b], clients=c, seconds=s, batch=b),
            )
        )

    @cached_property
    def v2_bodies(self) -> dict[int, bytes]:
        """V2 JSON request bodies (JSON answers) by batch size, serialized once for every server."""
        return {batch: rest_request_body(images) for batch, images in self.images.items()}

    @cached_property
    def binary_bodies(self) -> dict[int, tuple[bytes, int]]:
        """V2 binary tensor request bodies and their JSON header lengths by batch size."""
        return {batch: rest_binary_request_body(images) for batch, images in self.images.items()}

    @cached_property
    def grpc_requests(self) -> dict[int, bytes]:
        return {batch: grpc_request(MODEL, images) for batch, images in self.images.items()}

    def profile(self, srv: servers.Running, work: Path) -> None:
        """The cases of the goals, (d) once more each, under py-spy."""
        assert srv.grpc_target is not None
        pid, bodies, grpc_requests = srv.mlserver_pid(), self.v2_bodies, self.grpc_requests
        url = f"{srv.http_url}/v2/models/{MODEL}/infer"
        for protocol, batch, clients in (("REST", 1, 16), ("REST", self.args.batch, 1), ("gRPC", self.args.batch, 1)):
            run: Callable[..., Measurement]
            if protocol == "REST":
                run = partial(load.wrk, url, bodies[batch], clients=clients, batch=batch)
            else:
                run = partial(load.grpc_infer, srv.grpc_target, grpc_requests[batch], clients=clients, batch=batch)
            case = f"{protocol} batch {batch} x{clients}"
            found = profile.profiled(pid, case, self.args.duration, run, work)
            self.profiles.append(found)
            print(
                f"  (d) profiled {case}: {found.measurement.req_s:,.0f} req/s, event loop CPU "
                f"{found.cpu_seconds:.1f} s of {found.measurement.seconds:.1f} s",
                flush=True,
            )


def run(args: argparse.Namespace, work: Path) -> list[Bench]:
    """The whole run, `args.repeat` times against one registered model: one Bench per run."""
    rng = np.random.default_rng(0)
    images = {b: rng.random((b, 1, 28, 28), dtype=np.float32) for b in (1, args.batch)}
    with ExitStack() as stack:
        if args.tracking_uri:
            tracking_uri, version = args.tracking_uri, args.model_version
        else:
            print("starting a throwaway MLflow server and training the model ...", flush=True)
            tracking_uri, version = stack.enter_context(throwaway_registry(work, args.train_limit))
        model_uri = f"models:/{MODEL}/{version}"
        print(f"model: {model_uri} at {tracking_uri}", flush=True)
        runs = []
        for index in range(args.repeat):
            if args.repeat > 1:
                print(f"run {index + 1} of {args.repeat}", flush=True)
            bench = Bench(args, images)
            run_once(bench, tracking_uri, model_uri, work)
            runs.append(bench)
    return runs


def run_once(bench: Bench, tracking_uri: str, model_uri: str, work: Path) -> None:
    """One run: every config is started first, one after the other (each one's cold start is timed while the
    ones before it sit idle), then each case (batch, clients) is measured on every config back to back, (c)
    beside (d) and (e), (f) and (g) beside (d). So whatever else the machine does meanwhile (another tenant,
    the CPU's clock) weighs on the two sides of a ratio alike, within seconds of each other, where a run
    config by config measured them minutes apart. Then RSS after load, and (d) under py-spy with --profile."""
    args = bench.args
    running: list[tuple[str, str, servers.Running]] = []
    with ExitStack() as stack:
        ours = start_configs(bench, stack, tracking_uri, model_uri, work, running)
        targets = sorted(bench.targets, key=measuring_order)
        for batch in bench.images:
            for clients in args.clients:
                for target in targets:
                    bench.measure(target, batch, clients)
        for config, label, srv in running:
            bench.servers.append(Server(config, label, srv.cold_start_s, srv.rss_mb()))
        if args.profile and ours is not None:
            bench.profile(ours, work)


def start_configs(
    bench: Bench,
    stack: ExitStack,
    tracking_uri: str,
    model_uri: str,
    work: Path,
    running: list[tuple[str, str, servers.Running]],
) -> servers.Running | None:
    """Start the run's configs on `stack`, check that each answers, and add their targets to `bench`; each
    server goes in `running` with its config and label. Returns (d)'s server, if (d) is in the run."""
    args = bench.args
    overrides = dict(item.split("=", 1) for item in args.ours_env)  # (d)'s settings, and (g)'s second replica's

    def started(config: str, label: str, srv: servers.Running) -> servers.Running:
        print(f"({config}) {label}: ready in {srv.cold_start_s:.1f} s", flush=True)
        running.append((config, label, srv))
        bench.trees[config] = srv.pid
        return srv

    if "c" in args.configs:
        label = "--enable-mlserver, defaults"
        srv = started("c", label, stack.enter_context(servers.stock_mlserver(tracking_uri, model_uri, work)))
        bench.rest("c", label, f"{srv.http_url}/v2/models/{servers.STOCK_MLSERVER_MODEL}/infer", bench.v2_bodies)
    ours = None
    if "d" in args.configs:
        label = "ours, as shipped" if not args.ours_env else "ours, " + " ".join(args.ours_env)
        ours = started("d", label, stack.enter_context(servers.ours(tracking_uri, MODEL, work, **overrides)))
        url = f"{ours.http_url}/v2/models/{MODEL}/infer"
        bench.rest("d", label, url, bench.v2_bodies)
        if overrides.get("SANDBOX_SERVING_FAST_TENSORS", "true").lower() != "false":
            bench.rest_binary("d", label, url)
        assert ours.grpc_target is not None
        bench.grpc("d", label, ours.grpc_target)
    if "e" in args.configs:
        label = f"KServe {kserve_env.KSERVE_VERSION}, " + (" ".join(args.kserve_env) or "defaults")
        environment = dict(item.split("=", 1) for item in args.kserve_env)
        srv = started(
            "e",
            label,
            stack.enter_context(
                servers.kserve(tracking_uri, model_uri, MODEL, args.kserve_python, work, **environment)
            ),
        )
        url = f"{srv.http_url}/v2/models/{MODEL}/infer"
        # A server of another environment: its answers must be MLflow's before it is timed.
        mlflow.set_tracking_uri(tracking_uri)
        reference = mlflow.pyfunc.load_model(model_uri)
        expected = {batch: reference.predict(images) for batch, images in bench.images.items()}
        bench.rest("e", label, url, bench.v2_bodies, expected)
        bench.rest_binary("e", label, url)
        assert srv.grpc_target is not None
        bench.grpc("e", label, srv.grpc_target)
    if "f" in args.configs and ours is not None:
        (work / "router-f").mkdir(exist_ok=True)
        label = "(d) through the router (Envoy)"
        router = started("f", label, stack.enter_context(servers.routed(ours, work / "router-f")))
        bench.rest("f", label, f"{router.http_url}/v2/models/{MODEL}/infer", bench.v2_bodies)
        assert router.grpc_target is not None
        bench.grpc("f", label, router.grpc_target)
    if "g" in args.configs and ours is not None:
        (work / "replica-2").mkdir(exist_ok=True)
        (work / "router-g").mkdir(exist_ok=True)
        second = stack.enter_context(servers.ours(tracking_uri, MODEL, work / "replica-2", **overrides))
        label = "two replicas of (d) through the router, 50/50"
        router = stack.enter_context(servers.routed(ours, work / "router-g", second))
        bench.trees.update(g=router.pid, g2=second.pid)
        print(f"(g) {label}: ready in {router.cold_start_s:.1f} s", flush=True)
        bench.rest("g", label, f"{router.http_url}/v2/models/{MODEL}/infer", bench.v2_bodies)
        assert router.grpc_target is not None
        bench.grpc("g", label, router.grpc_target)
    if "a" in args.configs:
        label = "in-process pyfunc.predict"
        mlflow.set_tracking_uri(tracking_uri)
        began = time.monotonic()
        in_process = mlflow.pyfunc.load_model(model_uri)
        bench.servers.append(Server("a", label, time.monotonic() - began, None))
        print(f"(a) {label}: loaded in {bench.servers[-1].cold_start_s:.1f} s", flush=True)
        bench.targets.append(
            Target(
                "a",
                label,
                "call",
                lambda b, c, s: load.in_process(
                    lambda: in_process.predict(bench.images[b]), clients=c, seconds=s, batch=b
                ),
            )
        )
    if "b" in args.configs:
        label = "mlflow models serve"
        srv = started("b", label, stack.enter_context(servers.stock_scoring(tracking_uri, model_uri, work)))
        bodies = {b: json.dumps({"inputs": im.tolist()}).encode() for b, im in bench.images.items()}
        bench.rest("b", label, f"{srv.http_url}/invocations", bodies)
    return ours


def machine() -> str:
    loadavg = os.getloadavg()
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, "
        f"Python {platform.python_version()}, load average at the end {loadavg[0]:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per case (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load before each case")
    parser.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16])
    parser.add_argument("--batch", type=int, default=32, help="images per request of the batch case")
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help="which of a,b,c,d,e,f,g to run (default all; f and g need d)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="make the whole run N times; report min and median of each ratio"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--train-limit", type=int, default=2000, help="images to train the throwaway model on")
    parser.add_argument("--tracking-uri", help="use this MLflow server's model instead of a throwaway one")
    parser.add_argument("--model-version", default="1", help="with --tracking-uri: the version to serve")
    parser.add_argument("--profile", action="store_true", help="also profile (d) with py-spy, stage by stage")
    parser.add_argument(
        "--ours-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a serving setting for (d), to try one before it becomes the default (repeatable)",
    )
    parser.add_argument(
        "--kserve-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for (e), KServe's server (OMP_NUM_THREADS=1, ...; repeatable)",
    )
    args = parser.parse_args(argv)
    stop_on_sigterm()  # a stopped benchmark stops the servers it started, as Ctrl+C does
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if unknown := set(args.configs) - set(CONFIGS):
        parser.error(f"unknown configs {sorted(unknown)}; choose from {','.join(CONFIGS)}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if set(args.configs) & {"f", "g"} and "d" not in args.configs:
        parser.error("configs f and g (the router in front of (d)) need d")
    if set(args.configs) & {"b", "c", "d", "e", "f", "g"} and (missing := load.missing_load_generators()):
        print(f"error: {missing}", file=sys.stderr)
        return 2
    if args.profile and profile.py_spy() is None:
        print("error: --profile needs py-spy (pip install py-spy; it is in this project's dev extra)", file=sys.stderr)
        return 2
    # Before anything is measured: building the venv takes a while the first time, and fails loudly here.
    args.kserve_python = kserve_env.python() if "e" in args.configs else None
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    try:
        runs = run(args, work)
        for raw in work.glob("profile-*.txt"):
            shutil.copy(raw, args.out / raw.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"Serving benchmark, {stamp}; {args.duration:g} s per case after {args.warmup:g} s warm-up; "
        f"closed-loop clients on loopback"
        + (f"; the whole run {args.repeat} times" if args.repeat > 1 else "")
        + f".\nMachine: {machine()}."
    )
    table = args.out / "serving-benchmark.md"
    parts = [header, ""]
    if len(runs) > 1:
        parts += [repeated([bench.rows for bench in runs]), ""]
    for index, bench in enumerate(runs, 1):
        if len(runs) > 1:
            parts += [f"### Run {index} of {len(runs)}", ""]
        parts.append(markdown(bench.rows, bench.servers))
        if bench.profiles:
            parts.append(
                "Where (d)'s event loop spends each request's CPU time (py-spy, "
                f"{profile.SAMPLE_RATE} samples/s; raw stacks in {args.out}/profile-*.txt):\n\n"
                + profile.markdown(bench.profiles)
            )
    table.write_text("\n".join(parts))
    title = f"Serving benchmark ({stamp})" + (
        f", median of {len(runs)} runs, bars from min to max" if len(runs) > 1 else ""
    )
    chart([bench.rows for bench in runs], args.out / "serving-benchmark.png", title)
    print("\n" + table.read_text())
    print(f"wrote {table} and {args.out / 'serving-benchmark.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
