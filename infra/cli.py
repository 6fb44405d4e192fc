"""`sandbox`: one command for the whole sandbox, with subcommands, as MLflow's own CLI is organised.

    sandbox up | down | status          # the local stack (bash infra/sandbox.sh does the same)
    sandbox train [--alias production]  # train and register a new version
    sandbox list | promote 3 --to production [--gate] | rollback | resolve @production | archive 2 | delete 2
    sandbox predict [--serving-url http://127.0.0.1:8080]
    sandbox rehearse [good|schema|...]  # the deployment rehearsal; a rollout rehearsal with a scenario
    sandbox rollout start 7             # a canary through the router, judged on live metrics
    sandbox kserve @production          # KServe's InferenceService for a registered version (Kubernetes)

Each subcommand runs the project's module for it (`python -m training.train`, `python -m infra.ops.registry`,
...) with the remaining arguments, so `sandbox train --help` is the training job's own help (its usage line
says `sandbox train`: SANDBOX_COMMAND tells the module), and the `python -m` forms keep working. Like
compose, and like the local stack, it first reads `.env` in the current folder: a variable already set in
the environment wins. Installed as a console script by pyproject.toml
([project.scripts]).
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

from dotenv import load_dotenv
from pydantic import ValidationError

from mlops_sandbox.settings import COMMAND_VARIABLE, AuthSettings

# subcommand -> (module, arguments put before the user's, one line of help)
SUBCOMMANDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "up": ("infra.local.stack", ("up",), "start the local stack: S3, MLflow, train, promote, serve, predict"),
    "down": ("infra.local.stack", ("down",), "stop what `up` started; the data stays"),
    "status": ("infra.local.stack", ("status",), "what of the local stack runs"),
    "train": ("training.train", (), "train and register a new version (--alias production to serve it)"),
    "list": ("infra.ops.registry", ("list",), "every version with its stage, aliases, run and metrics"),
    "promote": ("infra.ops.registry", ("promote",), "point @staging or @production at a version (--gate)"),
    "rollback": ("infra.ops.registry", ("rollback",), "@production back to the version it replaced"),
    "resolve": ("infra.ops.registry", ("resolve",), "the version an alias, stage or number points at"),
    "archive": ("infra.ops.registry", ("archive",), "set a version's stage to Archived (never @production)"),
    "delete": ("infra.ops.registry", ("delete",), "delete a version, its aliases first (never @production)"),
    "predict": ("infra.ops.predict", (), "accuracy on MNIST test images, in-process or from a V2 endpoint"),
    "rehearse": (
        "infra.ops.rehearsal",
        (),
        "train, stage, gate, promote, verify, roll back, verify; or a rollout: good, schema, worse, slower, shadow",
    ),
    "rollout": ("infra.ops.rollout", (), "start V: canary, shadow or blue-green of a version through the router"),
    "kserve": (
        "infra.ops.kserve",
        (),
        "KServe's InferenceService for @production or a version (--canary V --percent P)",
    ),
    "traffic": ("services.traffic.entrypoint", (), "MNIST traffic that knows its labels (SANDBOX_TRAFFIC_TARGET)"),
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in SUBCOMMANDS.items()]
    return "usage: sandbox SUBCOMMAND [ARGS...]   (sandbox SUBCOMMAND --help for its own options)\n\n" + "\n".join(
        lines
    )


def sign_in_as_admin(env: MutableMapping[str, str]) -> None:
    """With SANDBOX_AUTH on, the subcommands sign in to MLflow as the sandbox's admin (SANDBOX_AUTH_ADMIN_USERNAME
    and _PASSWORD, from .env), through MLflow's own MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, as the
    local stack's jobs do; a user set in MLFLOW_TRACKING_USERNAME wins. Settings that do not validate are left
    to the subcommand, which names what is wrong."""
    if env.get("MLFLOW_TRACKING_USERNAME"):
        return
    try:
        auth = AuthSettings()
    except ValidationError:
        return
    if auth.enabled and auth.admin_password is not None:
        env["MLFLOW_TRACKING_USERNAME"] = auth.admin_username
        env["MLFLOW_TRACKING_PASSWORD"] = auth.admin_password.get_secret_value()


STOPPED_STACK_WAIT_SECONDS = "10"
"""How long a subcommand waits for MLflow when the local stack of this folder is stopped (SANDBOX_TRACKING_WAIT_
SECONDS, instead of 120 s): nothing of this folder is starting, and 10 s still cover a compose stack that is
publishing its ports."""


def use_running_local_stack(env: MutableMapping[str, str], subcommand: str) -> None:
    """Without MLFLOW_TRACKING_URI, the subcommands talk to the running local stack, on the ports it was started
    with (SANDBOX_DIR/run/endpoints.env), so that `sandbox list` in another shell never lands on another
    server or an empty store. A variable set in the environment or .env wins; with no local stack running,
    the default stays (http://127.0.0.1:5000, where compose publishes MLflow). When this folder's local stack
    has run and is stopped, a subcommand other than the stack's own (up, down, status) says so at once and
    waits STOPPED_STACK_WAIT_SECONDS for MLflow instead of 120 s, unless SANDBOX_TRACKING_WAIT_SECONDS is set."""
    if env.get("MLFLOW_TRACKING_URI"):
        return
    try:
        from infra.local.endpoints import local_stack
    except ModuleNotFoundError:  # the images leave the local stack out (.dockerignore): there is none to find
        return
    stack = local_stack()
    if stack is None:
        return
    for key, value in (stack.endpoints or {}).items():
        env.setdefault(key, value)
    if stack.endpoints is None and SUBCOMMANDS[subcommand][0] != "infra.local.stack":
        print(
            f"note: the local stack in {stack.folder} is stopped (start it: bash infra/sandbox.sh up); MLflow is "
            "looked for at MLFLOW_TRACKING_URI's default, where compose publishes it",
            file=sys.stderr,
        )
        env.setdefault("SANDBOX_TRACKING_WAIT_SECONDS", STOPPED_STACK_WAIT_SECONDS)


def main(argv: list[str] | None = None) -> int:
    """Replace this process with `python -m MODULE ARGS` for the subcommand; 2 with the usage for a wrong one."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    if args[0] not in SUBCOMMANDS:
        close = difflib.get_close_matches(args[0], SUBCOMMANDS, n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"sandbox: no subcommand {args[0]!r}{guess}\n\n{usage()}", file=sys.stderr)
        return 2
    module, first, _ = SUBCOMMANDS[args[0]]
    load_dotenv(Path.cwd() / ".env", override=False, interpolate=True)
    use_running_local_stack(os.environ, args[0])
    sign_in_as_admin(os.environ)
    # A module whose own subcommand this is (registry's `list`) adds it to its usage line itself.
    os.environ[COMMAND_VARIABLE] = "sandbox" if first else f"sandbox {args[0]}"
    # exec, not a child: signals (Ctrl+C, docker stop) and the exit code go straight to the module.
    os.execv(sys.executable, [sys.executable, "-m", module, *first, *args[1:]])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
