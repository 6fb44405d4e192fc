"""Child processes in their own process groups, stopped as a whole.

`mlflow models serve` runs `mlserver start` as a child and does not pass signals on, and MLServer in
turn starts worker processes. Stopping only the parent leaves the server running, so every service is
started as the leader of a new process group and stopped by signalling the group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import NoReturn


def group_alive(pgid: int) -> bool:
    """Whether any process of the group `pgid` is still running (or not yet reaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def stop_group(pgid: int, *, grace: float, leader: subprocess.Popen[bytes] | AdoptedChild | None = None) -> bool:
    """SIGTERM the group, then SIGKILL what is left after `grace` seconds. True when it had to kill.

    Pass `leader` when the group's leader is our own child: it is reaped while waiting, since an
    unreaped zombie would keep the group alive. (Not from a signal handler: Popen is not re-entrant.)
    """

    def alive() -> bool:
        if leader is not None:
            leader.poll()
        return group_alive(pgid)

    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not alive():
            return False
        time.sleep(0.1)
    _signal_group(pgid, signal.SIGKILL)
    while alive():
        time.sleep(0.05)
    return True


def start_group(
    argv: list[str], *, env: dict[str, str] | None = None, stdout: int | None = None, cwd: str | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` as the leader of a new process group (its pgid equals its pid)."""
    return subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout is not None else None,
        start_new_session=True,
    )


class AdoptedChild:
    """A child that this process started before it exec'd into its current program (fork, then exec): the
    same pid, so still this process's child, but with no Popen object; waited for by pid. The part of
    `subprocess.Popen` that run_supervised and stop_group use: `pid`, `poll()`, `wait(timeout)`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit code (negative: the signal that ended it) once it has exited, else None; reaps it."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: nothing left to learn
                self.returncode = 0
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        """poll() until it has exited; subprocess.TimeoutExpired after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.02)
        return code


def run_supervised(
    argv: list[str] | None, *, env: dict[str, str], grace: float, name: str, pid: int | None = None
) -> int:
    """Run `argv` in its own process group until it exits; SIGTERM/SIGINT stop the whole group.

    This is how every long-running entrypoint runs its server: the group is signalled as a whole (so
    grandchildren such as MLServer's workers stop too), and anything still running `grace` seconds
    after the stop request is killed. The signal handler only sends signals: reaping stays in the main
    loop, because Popen's wait is not re-entrant. With `pid` instead of `argv`, the child is one that this
    process forked before it exec'd into the supervisor (AdoptedChild), and leads its own process group.
    """
    child: subprocess.Popen[bytes] | AdoptedChild
    if argv is not None:
        child = start_group(argv, env=env)
    elif pid is not None:
        child = AdoptedChild(pid)
    else:
        raise ValueError("run_supervised needs a command or the pid of a child")
    stop_requested_at: float | None = None

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stop_requested_at
        if stop_requested_at is None:
            stop_requested_at = time.monotonic()
            print(f"{name}: {signal.Signals(signum).name}, stopping process group {child.pid}", flush=True)
        _signal_group(child.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    killed = False
    try:
        while True:
            try:
                code = child.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if stop_requested_at is not None and not killed and time.monotonic() - stop_requested_at > grace:
                    print(f"{name}: still running {grace:.0f} s after the stop request, killing it", flush=True)
                    _signal_group(child.pid, signal.SIGKILL)
                    killed = True
        # The leader is gone; take down whatever it left behind in its group (MLServer, its workers).
        stop_group(child.pid, grace=grace)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stop_requested_at is not None and not killed else code


def stop_on_sigterm() -> None:
    """Turn SIGTERM (docker stop, kill, a CI timeout) into SystemExit(143), so that `finally` blocks and context
    managers run as they do for Ctrl+C: a rollout puts all traffic back on production, a benchmark stops the
    servers it started. Python's default for SIGTERM ends the process without running them."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def replace_process(argv: Sequence[str], env: Mapping[str, str]) -> NoReturn:
    """Replace this process with `argv` (looked up on PATH), in environment `env`: the same pid, so its parent
    and signals now reach the new program. What this process printed is flushed first, since exec discards
    Python's buffers. Does not return; OSError when `argv[0]` cannot be executed."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(argv[0], list(argv), dict(env))


def supervise_command(
    argv: list[str] | None, *, grace: float, name: str, remove: str | None = None, pid: int | None = None
) -> list[str]:
    """The command that runs `argv` under `run_supervised` in a fresh interpreter (`python -m
    mlops_sandbox.processes`), for an entrypoint to exec into once it has prepared everything: the supervisor
    then holds only this module (about 7 MiB of PSS, measured), not what the preparation imported. `remove`:
    a folder deleted once the group has stopped (a private configuration file's). `pid` instead of `argv`: the
    entrypoint has already forked the server as a child that leads its own process group, and the supervisor
    adopts it (the pid stays this process's child across the exec)."""
    options = ["--grace", str(grace), "--name", name, *(["--remove", remove] if remove else [])]
    if pid is not None:
        return [sys.executable, "-m", "mlops_sandbox.processes", *options, "--pid", str(pid)]
    if argv is None:
        raise ValueError("supervise_command needs a command or the pid of a child")
    return [sys.executable, "-m", "mlops_sandbox.processes", *options, "--", *argv]


def main(argv: list[str] | None = None) -> int:
    """`python -m mlops_sandbox.processes --grace S --name N [--remove DIR] (--pid PID | -- ARGV...)`:
    run_supervised(ARGV), or of the child PID; its exit code. 2 with the usage for wrong arguments."""
    import argparse
    import shutil

    parser = argparse.ArgumentParser(prog="python -m mlops_sandbox.processes", description=run_supervised.__doc__)
    parser.add_argument("--grace", type=float, required=True, help="seconds before the group is killed")
    parser.add_argument("--name", required=True, help="the service's name, in the supervisor's messages")
    parser.add_argument("--remove", help="a folder to delete once the group has stopped")
    parser.add_argument("--pid", type=int, help="a child of this process, leader of its group, to supervise")
    parser.add_argument("command", nargs="*", help="the program and its arguments, after --")
    args = parser.parse_args(argv)
    if (args.pid is None) == (not args.command):
        parser.error("give either --pid or a command after --")
    try:
        return run_supervised(
            args.command or None, env=dict(os.environ), grace=args.grace, name=args.name, pid=args.pid
        )
    finally:
        if args.remove:
            shutil.rmtree(args.remove, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
