"""The local stack's processes: each service a process group with a PID file and a log, each job run to its end.

A PID file records the group leader's pid and its start time (psutil's create_time), so that `down` stops
exactly what `up` started, even when the pid has since been reused by an unrelated process.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import requests

from mlops_sandbox.processes import group_alive, start_group, stop_group
from mlops_sandbox.waiting import http_ok, wait_for

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STOP_GRACE_SECONDS = 15.0


class StackError(RuntimeError):
    """A step of the stack failed; the message names it and where its log is."""


def start_time(pid: int) -> float | None:
    """When `pid` started (seconds since the epoch): with the pid, it identifies a process after pid reuse."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


@dataclass(frozen=True)
class Running:
    """A service's process group, as its PID file records it."""

    name: str
    pid: int
    start: float | None


class Processes:
    """Services and jobs of one sandbox: PID files in `run_dir`, one log per name in `log_dir`.

    `env(name)` gives each process its environment.
    """

    def __init__(self, run_dir: Path, log_dir: Path, env: Callable[[str], dict[str, str]]) -> None:
        self.run_dir = run_dir
        self.log_dir = log_dir
        self.env = env

    def _pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            text = self.log(name).read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n".join(f"    {line}" for line in text)

    def running(self, name: str) -> Running | None:
        """The recorded process of `name`, if it is still the process that `up` started."""
        try:
            record = json.loads(self._pidfile(name).read_text())
        except (OSError, ValueError):
            return None
        pid = int(record["pid"])
        recorded = record.get("start")
        if not group_alive(pid) or (recorded is not None and start_time(pid) != recorded):
            return None
        return Running(name, pid, recorded)

    def start(self, name: str, argv: list[str]) -> None:
        """Start a long-running service unless it already runs (see `wait_ready`)."""
        if (existing := self.running(name)) is not None:
            print(f"  {name}: already running (pid {existing.pid})")
            return
        with open(self.log(name), "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}\n".encode())
            log.flush()
            child = start_group(argv, env=self.env(name), stdout=log.fileno(), cwd=str(PROJECT_ROOT))
        self._pidfile(name).write_text(json.dumps({"pid": child.pid, "start": start_time(child.pid)}))
        print(f"  {name}: started (pid {child.pid}), log {self.log(name)}")

    def wait_ready(self, name: str, ready_url: str, *, timeout: float, any_answer: bool = False) -> None:
        """Wait until GET `ready_url` answers 200 (or answers at all, with `any_answer`). StackError when the
        service exits meanwhile, DependencyUnavailable when it is not ready within `timeout` seconds."""
        probe = (lambda: requests.get(ready_url, timeout=3)) if any_answer else http_ok(ready_url)

        def ready() -> None:
            if self.running(name) is None:
                raise StackError(
                    f"{name} exited during start-up; its log {self.log(name)} ends with:\n{self.log_tail(name)}"
                )
            probe()

        wait_for(ready, service=name, address=ready_url, timeout=timeout, hint=f"See its log: {self.log(name)}")

    def stop(self, name: str) -> bool:
        """Stop `name`'s process group (SIGTERM, then SIGKILL after 15 s); False when it was not running."""
        record = self.running(name)
        self._pidfile(name).unlink(missing_ok=True)
        if record is None:
            return False
        killed = stop_group(record.pid, grace=STOP_GRACE_SECONDS)
        print(f"  {name}: stopped (pid {record.pid}{', killed after 15 s' if killed else ''})")
        return True

    def job(self, name: str, argv: list[str]) -> None:
        """Run a one-shot job to completion, echoing its output and appending it to its log; StackError if it fails."""
        with open(self.log(name), "ab") as log:
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
            raise StackError(f"{name} failed (exit code {code}); see {self.log(name)}")

    def check_port(self, name: str, port: int, variable: str) -> None:
        """StackError when another program already listens on `port` (unless it is `name` itself), naming the
        setting `variable` that moves it."""
        if self.running(name) is not None:
            return
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                raise StackError(
                    f"port {port} for {name} is already in use by another program; stop it, or give {name} "
                    f"another port: {variable}=... in .env (docs/settings.md)"
                )
