"""`mlflow models serve`, MLflow 3.12.0's own CLI, whose last step becomes `mlserver start` in place.

    python -m services.serving.mlflow_serve models serve -m DIR --env-manager local --enable-mlserver ...

MLflow's CLI does everything as it would (`python -m mlflow models serve ...`): it reads the model, writes
MLServer's settings into the environment and builds the `mlserver start` command. With `--env-manager local`
it then starts that command as a child (`bash -c "exec mlserver start ..."`) and waits for it: one Python
process, with all of MLflow imported, that only waits, and passes no signal on. Here that one call
(`subprocess.Popen` in `mlflow.pyfunc.backend`) replaces this process instead (os.execvpe), with the same
environment and parent-death signal (its preexec_fn): the pid that the serving entrypoint supervises is
MLServer's, signals reach it, and each endpoint holds one process fewer: 157 MiB of PSS each (measured,
tools/benchmark/memory.py). The program is MLServer's CLI with the same arguments, through
services/serving/mlserver_start.py, which starts serving's alias follower in MLServer's process first.

The pin makes this safe (mlflow==3.12.0, the last release with `--enable-mlserver`): `check` refuses another
version, or a backend whose local path no longer calls `subprocess.Popen` with a `bash -c "exec ..."`
command, with a RuntimeError, and tests/unit/services/serving/test_mlflow_serve.py fails on the same.
"""

from __future__ import annotations

import inspect
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click
import mlflow
import mlflow.pyfunc.backend

from mlops_sandbox.processes import replace_process

MLFLOW_VERSION = "3.12.0"


def check() -> None:
    """RuntimeError unless MLflow is the pinned release and its local serving path is the one replaced here."""
    if mlflow.__version__ != MLFLOW_VERSION:
        raise RuntimeError(
            f"services/serving/mlflow_serve.py was written for mlflow=={MLFLOW_VERSION}, not {mlflow.__version__}"
        )
    source = inspect.getsource(mlflow.pyfunc.backend.PyFuncBackend.serve)
    for expected in ('command = "exec " + command', 'command = ["bash", "-c", command]', "subprocess.Popen("):
        if expected not in source:
            raise RuntimeError(f"mlflow.pyfunc.backend.PyFuncBackend.serve no longer has {expected!r}")


def is_server_command(argv: object) -> bool:
    """Whether `argv` is the command MLflow's local path starts: `["bash", "-c", "exec <server> ..."]`."""
    return (
        isinstance(argv, list)
        and len(argv) == 3
        and argv[:2] == ["bash", "-c"]
        and isinstance(argv[2], str)
        and argv[2].startswith("exec ")
    )


def server_argv(argv: list[str]) -> list[str]:
    """The program that takes over from MLflow's server command `argv` (is_server_command): `bash -c "exec
    mlserver start DIR"` becomes `python -m services.serving.mlserver_start start DIR`, MLServer's CLI with the
    same arguments and the follower beside it, in this environment's Python; another program stays as given."""
    words = shlex.split(argv[2])
    if words[:2] == ["exec", "mlserver"]:
        return [sys.executable, "-m", "services.serving.mlserver_start", *words[2:]]
    return argv


def exec_instead(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    preexec_fn: Callable[[], Any] | None = None,
    **_: Any,
) -> None:
    """What MLflow's `subprocess.Popen(command, env=..., preexec_fn=..., stdout=None, stderr=None)` becomes:
    run `preexec_fn` (PR_SET_PDEATHSIG), then replace this process with `argv`. Does not return; OSError when
    `argv[0]` cannot be executed."""
    if preexec_fn is not None:
        preexec_fn()
    replace_process(argv, os.environ if env is None else env)


class _ExecSubprocess:
    """`subprocess` as mlflow.pyfunc.backend sees it: Popen of the server command replaces the process; any
    other call (conda's version check, other env managers) is the real module's."""

    def __getattr__(self, name: str) -> Any:
        if name != "Popen":
            return getattr(subprocess, name)

        def popen(argv: Any, *args: Any, **kwargs: Any) -> Any:
            if args or not is_server_command(argv):
                return subprocess.Popen(argv, *args, **kwargs)
            exec_instead(server_argv(argv), **kwargs)

        return popen


def prepare() -> click.Command:
    """check(), put `_ExecSubprocess` in mlflow.pyfunc.backend's place, and import MLflow's CLI (about 1 s):
    the `mlflow` command group. RuntimeError from check(). Repeated calls are cheap."""
    check()
    mlflow.pyfunc.backend.subprocess = _ExecSubprocess()  # type: ignore[assignment]
    from mlflow.cli import cli

    return cli


def main(argv: list[str] | None = None) -> int:
    """Run MLflow's CLI with `argv` (default: this program's arguments) as prepare() leaves it. Does not return:
    click exits (SystemExit), or MLServer replaces this process."""
    prepare().main(args=sys.argv[1:] if argv is None else argv, prog_name="mlflow")
    return 0  # not reached: click exits, or mlserver replaced this process


if __name__ == "__main__":
    sys.exit(main())
