"""The `sandbox` command: each subcommand runs its module, with .env read as compose reads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra import cli
from infra.local.processes import start_time
from mlops_sandbox.processes import start_group, stop_group
from mlops_sandbox.settings import COMMAND_VARIABLE, command_name


def test_a_subcommand_runs_its_module_with_the_users_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(cli.os, "execv", lambda path, argv: calls.append(argv))
    # .env is loaded into os.environ itself: give the test an environment of its own to load it into.
    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("SANDBOX_MODEL_NAME=from_dot_env\nSANDBOX_MODEL_REF=@staging\n")
    monkeypatch.setenv("SANDBOX_MODEL_REF", "3")  # the environment wins over .env
    monkeypatch.delenv("SANDBOX_MODEL_NAME", raising=False)
    cli.main(["promote", "@staging", "--to", "production", "--gate"])
    assert calls == [
        [sys.executable, "-m", "infra.ops.registry", "promote", "@staging", "--to", "production", "--gate"]
    ]
    assert os.environ["SANDBOX_MODEL_NAME"] == "from_dot_env" and os.environ["SANDBOX_MODEL_REF"] == "3"
    cli.main(["train", "--alias", "production"])
    assert calls[-1][2:] == ["training.train", "--alias", "production"]


def test_unknown_or_missing_subcommands_print_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["deploy"]) == 2
    assert "no subcommand 'deploy'\n" in capsys.readouterr().err
    assert cli.main(["rolout", "start", "3"]) == 2
    assert "no subcommand 'rolout' (did you mean 'rollout'?)" in capsys.readouterr().err
    assert cli.main([]) == 2
    assert cli.main(["--help"]) == 0
    usage = capsys.readouterr().out
    assert all(name in usage for name in ("up", "train", "promote", "rollback", "list", "rehearse"))


def test_with_auth_on_the_subcommands_sign_in_as_the_admin_of_dot_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli.os, "execv", lambda path, argv: None)
    monkeypatch.setattr(os, "environ", dict(os.environ))
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "SANDBOX_AUTH_ADMIN_PASSWORD"):
        os.environ.pop(name, None)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("SANDBOX_AUTH=true\nSANDBOX_AUTH_ADMIN_PASSWORD=admin-password-0123\n")
    cli.main(["list"])
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == (
        "admin",
        "admin-password-0123",
    )
    # A user named in MLflow's own variable wins over the admin.
    os.environ.update(MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD="alices-password-0123")
    cli.main(["list"])
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice"


def test_without_a_tracking_uri_the_subcommands_use_the_running_local_stacks_endpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli.os, "execv", lambda path, argv: None)
    monkeypatch.setattr(os, "environ", dict(os.environ))
    for name in ("MLFLOW_TRACKING_URI", "SANDBOX_SERVING_URL", "SANDBOX_DIR", "SANDBOX_TRACKING_WAIT_SECONDS"):
        os.environ.pop(name, None)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / ".sandbox" / "run"
    run.mkdir(parents=True)
    # No stack ever ran here: the default, and its whole wait (a compose stack may be starting).
    cli.main(["list"])
    assert "MLFLOW_TRACKING_URI" not in os.environ and "SANDBOX_TRACKING_WAIT_SECONDS" not in os.environ
    assert capsys.readouterr().err == ""
    (run / "endpoints.env").write_text("MLFLOW_TRACKING_URI=http://127.0.0.1:5123\nSANDBOX_SERVING_URL=http://x:1\n")
    # Written, but no tracking server runs (after `down`): the default stays, said at once, with a short wait.
    cli.main(["status"])
    assert "SANDBOX_TRACKING_WAIT_SECONDS" not in os.environ and capsys.readouterr().err == ""
    cli.main(["list"])
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert os.environ.pop("SANDBOX_TRACKING_WAIT_SECONDS") == cli.STOPPED_STACK_WAIT_SECONDS
    assert f"the local stack in {tmp_path / '.sandbox'} is stopped" in capsys.readouterr().err
    os.environ["SANDBOX_TRACKING_WAIT_SECONDS"] = "300"  # the user's own wait wins
    cli.main(["list"])
    assert os.environ.pop("SANDBOX_TRACKING_WAIT_SECONDS") == "300"
    tracking_server = start_group(["sleep", "60"])
    try:
        (run / "mlflow.pid").write_text(
            json.dumps({"pid": tracking_server.pid, "start": start_time(tracking_server.pid)})
        )
        cli.main(["list"])
        assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5123"
        assert "SANDBOX_TRACKING_WAIT_SECONDS" not in os.environ
        # A tracking URI of the user's wins, and the rest then stays as the user set it.
        os.environ.update(MLFLOW_TRACKING_URI="http://elsewhere:5000")
        os.environ.pop("SANDBOX_SERVING_URL")
        cli.main(["list"])
        assert os.environ["MLFLOW_TRACKING_URI"] == "http://elsewhere:5000"
        assert "SANDBOX_SERVING_URL" not in os.environ
    finally:
        stop_group(tracking_server.pid, grace=1, leader=tracking_server)


def test_the_cli_runs_where_the_local_stack_is_not_installed(tmp_path: Path) -> None:
    # The images leave infra/local/ out (.dockerignore): `sandbox` there must not need it.
    script = (
        "import os, sys\n"
        "sys.modules['infra.local'] = None  # any import of it raises ModuleNotFoundError, as in the images\n"
        "from infra import cli\n"
        "os.environ.pop('MLFLOW_TRACKING_URI', None)\n"
        "cli.os.execv = lambda path, argv: print(argv[2])\n"
        "cli.main(['list'])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "infra.ops.registry", result.stderr


@pytest.mark.parametrize(
    ("args", "through_sandbox", "alone"),
    [
        # registry's own subcommand, which the module adds to its usage line itself
        (["list", "--help"], "usage: sandbox list [-h]", "usage: python -m infra.ops.registry list [-h]"),
        (
            ["rollout", "start", "--help"],
            "usage: sandbox rollout start [-h]",
            "usage: python -m infra.ops.rollout start",
        ),
        (["kserve", "--help"], "usage: sandbox kserve [-h]", "usage: python -m infra.ops.kserve [-h]"),
    ],
)
def test_a_subcommands_help_names_the_sandbox_command_and_the_module_run_alone_its_own(
    args: list[str], through_sandbox: str, alone: str, tmp_path: Path
) -> None:
    module, first, _ = cli.SUBCOMMANDS[args[0]]
    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[1])}
    env.pop(COMMAND_VARIABLE, None)
    runs = {
        through_sandbox: [sys.executable, "-m", "infra.cli", *args],
        alone: [sys.executable, "-m", module, *first, *args[1:]],
    }
    for usage, command in runs.items():
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stdout.startswith(usage), result.stdout + result.stderr


def test_the_command_name_is_read_once_so_the_processes_a_command_starts_name_themselves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(COMMAND_VARIABLE, "sandbox up")
    assert command_name("infra.local.stack") == "sandbox up"
    assert COMMAND_VARIABLE not in os.environ
    assert command_name("training.train") == "python -m training.train"
