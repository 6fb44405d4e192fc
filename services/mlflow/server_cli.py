"""`mlflow server`, MLflow's own CLI, whose web server (uvicorn) takes over its process instead of being its child.

    python -m services.mlflow.server_cli server --host ... --port ... [every `mlflow server` option]

MLflow's `server` command checks its options, prepares the store and then starts uvicorn as a child process
(`mlflow.server._run_server`: `server_proc = _exec_cmd(command, ..., synchronous=False)`), only to forward
signals to it and wait: a second Python process that holds all of MLflow (161 MiB of PSS, measured with
tools/benchmark/memory.py). Here that one call replaces the process with uvicorn (os.execvpe, with the
environment MLflow built for it), so uvicorn receives the signals itself.

Only that call is replaced, and only when MLflow's job runner is off (the entrypoint turns it off: with it
on, MLflow's process also runs the runner and must stay). The tracking server follows MLflow's releases
(pyproject.toml's `tracking` extra), so a release whose `_run_server` no longer starts the server that way
runs as MLflow runs it, with a note; tests/unit/services/mlflow/test_server_cli.py fails for the locked one.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mlops_sandbox.processes import replace_process

SERVER_START = "server_proc = _exec_cmd("


def fits(run_server: Callable[..., Any]) -> bool:
    """Whether MLflow's `_run_server` starts its web server with the one `_exec_cmd(...)` call replaced here."""
    source = inspect.getsource(run_server)
    return source.count(SERVER_START) == 1 and "synchronous=False" in source


def exec_server(
    command: Sequence[str],
    *,
    extra_env: Mapping[str, str] | None = None,
    synchronous: bool = True,
    **kwargs: Any,
) -> Any:
    """MLflow's `_exec_cmd` for the web server's start (synchronous=False): replace this process with `command`,
    in this environment plus `extra_env`. Any other call goes to MLflow's own `_exec_cmd`. Does not return
    for the server; OSError when the command cannot be executed."""
    from mlflow.utils.process import _exec_cmd

    if synchronous:
        return _exec_cmd(command, extra_env=extra_env, synchronous=synchronous, **kwargs)
    replace_process([str(part) for part in command], {**os.environ, **(extra_env or {})})


def main(argv: list[str] | None = None) -> int:
    import mlflow.server
    from mlflow.cli import cli

    jobs = os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "").lower() in ("1", "true")
    if jobs:
        print("mlflow: the job runner is on: MLflow's process stays, beside its web server", flush=True)
    elif not fits(mlflow.server._run_server):
        print(
            f"mlflow: MLflow {mlflow.__version__} starts its web server another way: it runs as a child of "
            "MLflow's process (services/mlflow/server_cli.py)",
            flush=True,
        )
    else:
        mlflow.server._exec_cmd = exec_server  # type: ignore[assignment]
    cli.main(args=sys.argv[1:] if argv is None else argv, prog_name="mlflow")
    return 0  # not reached: click exits, or uvicorn replaced this process


if __name__ == "__main__":
    sys.exit(main())
