"""The sandbox as local processes, no Docker: the same entrypoints and variables as compose.

    python -m infra.local.stack up       # S3 + MLflow, train, promote, serve, predict; prints the URLs
    python -m infra.local.stack rehearse # train, stage, gate, promote, verify, roll back, verify
    python -m infra.local.stack status
    python -m infra.local.stack down     # stops what `up` started, by process group; data stays

State lives in SANDBOX_DIR (.sandbox): the SQLite store, S3 objects, one log file per service in logs/,
and PID files in run/. Running `up` again registers the next version; serving follows @production to it.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from pydantic import ValidationError

from infra.local.settings import LocalStackSettings
from mlops_sandbox.gate import wait_until_served
from mlops_sandbox.processes import group_alive, start_group, stop_group
from mlops_sandbox.v2 import InferenceError
from mlops_sandbox.waiting import DependencyUnavailable, http_ok, wait_for

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
SERVICE_ORDER = ("s3", "mlflow", "serving", "serving-staging")


class StackError(RuntimeError):
    """A step of the stack failed; the message names it and where its log is."""


def _start_time(pid: int) -> str | None:
    """The kernel's start time of `pid`: with the pid, it identifies a process even after pid reuse."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@dataclass(frozen=True)
class Running:
    name: str
    pid: int
    start: str | None


class Stack:
    def __init__(self, settings: LocalStackSettings) -> None:
        self.settings = settings

    # --- PID files -------------------------------------------------------------------------------
    def _pidfile(self, name: str) -> Path:
        return self.settings.run / f"{name}.pid"

    def running(self, name: str) -> Running | None:
        """The recorded process of `name`, if it is still the process that `up` started."""
        try:
            record = json.loads(self._pidfile(name).read_text())
        except (OSError, ValueError):
            return None
        pid = int(record["pid"])
        if not group_alive(pid) or (record.get("start") and _start_time(pid) != record["start"]):
            return None
        return Running(name, pid, record.get("start"))

    # --- environment -------------------------------------------------------------------------------
    def _s3_credentials(self) -> dict[str, str]:
        """The S3 keys: from the environment when set, else generated once and kept (mode 600)."""
        if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
            return {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        path = self.settings.root / "s3-credentials.json"
        if not path.exists():
            keys = {
                "AWS_ACCESS_KEY_ID": f"sandbox{secrets.token_hex(6)}",
                "AWS_SECRET_ACCESS_KEY": secrets.token_hex(20),
            }
            path.touch(mode=0o600)
            path.write_text(json.dumps(keys))
        return json.loads(path.read_text())

    def env(self, name: str) -> dict[str, str]:
        s = self.settings
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["MLFLOW_TRACKING_URI"] = s.mlflow_url
        env["SERVING_URL"] = s.serving_url
        env["SERVING_STAGING_URL"] = s.staging_url
        if name == "s3":
            env.update(self._s3_credentials())
            env["S3_SERVER_ADDRESS"] = f"127.0.0.1:{s.s3_port}"
            env["S3_SERVER_DIR"] = str(s.root / "s3")
        elif name in ("mlflow", "create-bucket"):
            env["MLFLOW_BACKEND_STORE_URI"] = s.backend_store_uri or f"sqlite:///{s.root / 'mlflow.db'}"
            env["MLFLOW_HOST"] = "127.0.0.1"
            env["MLFLOW_PORT"] = str(s.mlflow_port)
            if s.artifact_store == "s3":
                env.update(self._s3_credentials())
                env["MLFLOW_S3_ENDPOINT_URL"] = s.s3_url
                env["MLFLOW_ARTIFACTS_DESTINATION"] = f"s3://{s.s3_bucket}/"
            else:
                env["MLFLOW_ARTIFACTS_DESTINATION"] = str(s.root / "artifacts")
        elif name == "serving":
            env.setdefault("MLSERVER_HOST", "127.0.0.1")
            env["MLSERVER_HTTP_PORT"] = str(s.http_port)
            env["SERVING_DIR"] = str(s.root / "serving" / "production")
        elif name == "serving-staging":
            env.setdefault("MLSERVER_HOST", "127.0.0.1")
            env["SERVING_MODEL_REF"] = "@staging"
            env["MLSERVER_HTTP_PORT"] = str(s.staging_http_port)
            env["MLSERVER_GRPC_PORT"] = str(s.staging_grpc_port)
            env["MLSERVER_METRICS_PORT"] = str(s.staging_metrics_port)
            env["SERVING_DIR"] = str(s.root / "serving" / "staging")
        return env

    # --- processes ---------------------------------------------------------------------------------
    def _log(self, name: str) -> Path:
        return self.settings.logs / f"{name}.log"

    def _log_tail(self, name: str, lines: int = 15) -> str:
        try:
            text = self._log(name).read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n".join(f"    {line}" for line in text)

    def start(self, name: str, argv: list[str], ready_url: str, *, any_answer: bool = False) -> None:
        """Start a long-running service unless it already runs, then wait until `ready_url` answers 200
        (or answers at all, with `any_answer`)."""
        if (existing := self.running(name)) is not None:
            print(f"  {name}: already running (pid {existing.pid})")
        else:
            with open(self._log(name), "ab") as log:
                log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}\n".encode())
                log.flush()
                child = start_group(argv, env=self.env(name), stdout=log.fileno(), cwd=str(PROJECT_ROOT))
            self._pidfile(name).write_text(json.dumps({"pid": child.pid, "start": _start_time(child.pid)}))
            print(f"  {name}: started (pid {child.pid}), log {self._log(name)}")
        probe = (lambda: requests.get(ready_url, timeout=3)) if any_answer else http_ok(ready_url)

        def ready() -> None:
            if self.running(name) is None:
                raise StackError(
                    f"{name} exited during start-up; its log {self._log(name)} ends with:\n{self._log_tail(name)}"
                )
            probe()

        wait_for(
            ready,
            service=name,
            address=ready_url,
            timeout=self.settings.start_timeout,
            hint=f"See its log: {self._log(name)}",
        )

    def stop(self, name: str) -> bool:
        record = self.running(name)
        if record is None:
            self._pidfile(name).unlink(missing_ok=True)
            return False
        killed = stop_group(record.pid, grace=15.0)
        self._pidfile(name).unlink(missing_ok=True)
        print(f"  {name}: stopped (pid {record.pid}{', killed after 15 s' if killed else ''})")
        return True

    def job(self, name: str, argv: list[str]) -> None:
        """Run a one-shot job to completion, echoing its output and appending it to its log."""
        with open(self._log(name), "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv[1:])}\n".encode())
            proc = subprocess.Popen(
                argv, env=self.env(name), cwd=str(PROJECT_ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                sys.stdout.write(f"  {name} | {line.decode(errors='replace')}")
                sys.stdout.flush()
            code = proc.wait()
        if code != 0:
            raise StackError(f"{name} failed (exit code {code}); see {self._log(name)}")

    def check_port(self, name: str, port: int) -> None:
        if self.running(name) is not None:
            return
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                raise StackError(
                    f"port {port} for {name} is already in use by another program; "
                    "stop it or choose another port (see the README's settings table)"
                )


def up(stack: Stack, *, train: bool) -> None:
    s = stack.settings
    began = time.monotonic()
    for folder in (s.root, s.logs, s.run):
        folder.mkdir(parents=True, exist_ok=True)
    print(f"sandbox in {s.root}")
    if s.artifact_store == "s3":
        stack.check_port("s3", s.s3_port)
        # rclone answers 403 to an unsigned request once it is up: any HTTP answer means "listening".
        stack.start("s3", [PYTHON, "-m", "services.s3.entrypoint"], s.s3_url, any_answer=True)
        stack.job("create-bucket", [PYTHON, "-m", "infra.ops.create_bucket"])
    stack.check_port("mlflow", s.mlflow_port)
    stack.start("mlflow", [PYTHON, "-m", "services.mlflow.entrypoint"], f"{s.mlflow_url}/health")
    result_file = s.run / "last-training.json"
    if train:
        stack.job("training", [PYTHON, "-m", "training.train", "--output-json", str(result_file)])
        version = json.loads(result_file.read_text())["version"]
        stack.job("promote", [PYTHON, "-m", "infra.ops.registry", "promote", version, "--to", "production"])
    # A running server follows @production (and @staging) by itself: a rerun needs no restart.
    endpoints = (("serving", s.http_port, s.serving_url), ("serving-staging", s.staging_http_port, s.staging_url))
    for name, port, url in endpoints:
        stack.check_port(name, port)
        stack.start(name, [PYTHON, "-m", "services.serving.entrypoint"], f"{url}/v2/models/{s.model_name}/ready")
    if train:
        took = wait_until_served(s.serving_url, s.model_name, version, timeout=s.start_timeout)
        print(f"  serving: production serves version {version} ({took:.1f} s after the promotion)")
    predict = ["-n", str(s.predict_images), "--min-accuracy", str(s.min_accuracy)]
    stack.job("predict", [PYTHON, "-m", "infra.ops.predict", "--serving-url", s.serving_url, *predict])
    grpc_port = os.environ.get("MLSERVER_GRPC_PORT", "8081")
    metrics_port = os.environ.get("MLSERVER_METRICS_PORT", "8082")
    print(
        f"\nThe sandbox is up ({time.monotonic() - began:.0f} s).\n"
        f"  MLflow UI and tracking:  {s.mlflow_url}\n"
        f"  Inference (V2 REST):     {s.serving_url}/v2/models/{s.model_name}/infer\n"
        f"  Inference (V2 gRPC):     127.0.0.1:{grpc_port}\n"
        f"  Staging (V2 REST):       {s.staging_url}/v2/models/{s.model_name}/infer (@staging)\n"
        f"  Prometheus metrics:      http://127.0.0.1:{metrics_port}/metrics\n"
        + (f"  S3 (rclone):             {s.s3_url}, bucket {s.s3_bucket}\n" if s.artifact_store == "s3" else "")
        + f"  Logs:                    {s.logs}\n"
        f"  Registry:                MLFLOW_TRACKING_URI={s.mlflow_url} python -m infra.ops.registry list\n"
        "  Stop:                    python -m infra.local.stack down"
    )


def rehearse(stack: Stack) -> None:
    missing = [name for name in SERVICE_ORDER if name != "s3" and stack.running(name) is None]
    if missing:
        raise StackError(f"not running: {', '.join(missing)}; start the sandbox first: python -m infra.local.stack up")
    stack.job("rehearsal", [PYTHON, "-m", "infra.ops.rehearsal"])


def down(stack: Stack) -> None:
    stopped = [name for name in reversed(SERVICE_ORDER) if stack.stop(name)]
    print("stopped " + ", ".join(stopped) if stopped else "nothing was running")


def status(stack: Stack) -> None:
    for name in SERVICE_ORDER:
        record = stack.running(name)
        print(f"{name:8} {'running, pid ' + str(record.pid) if record else 'stopped'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=("up", "rehearse", "down", "status"))
    parser.add_argument("--no-train", action="store_true", help="serve the current production version as is")
    args = parser.parse_args(argv)
    try:
        stack = Stack(LocalStackSettings())
        if args.command == "up":
            up(stack, train=not args.no_train)
        elif args.command == "rehearse":
            rehearse(stack)
        elif args.command == "down":
            down(stack)
        else:
            status(stack)
    except ValidationError as err:
        print(f"invalid settings:\n{err}", file=sys.stderr)
        return 2
    except (StackError, DependencyUnavailable, InferenceError) as err:
        print(
            f"\nerror: {err}\nWhat is running stays up for inspection; stop it with: python -m infra.local.stack down",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
