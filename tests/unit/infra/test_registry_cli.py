"""`python -m infra.ops.registry` against a temporary SQLite registry: what a user types and reads."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from infra.ops.registry import main as cli


def test_cli_promote_rollback_list(client: MlflowClient, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["promote", "1", "--to", "production"]) == 0
    assert cli(["promote", "2", "--to", "Production"]) == 0
    assert "version 2 is now @production (was version 1)" in capsys.readouterr().out
    assert cli(["rollback"]) == 0
    assert "version 1 is now @production (was version 2)" in capsys.readouterr().out
    assert cli(["list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[3].split()[:3] == ["1", "Production", "production"]
    assert cli(["promote", "7", "--to", "staging"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert cli(["resolve", "@production"]) == 0
    assert capsys.readouterr().out.strip() == "1"
    assert cli(["resolve", "@staging"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_cli_archive_and_delete_leave_no_alias_behind_and_list_flags_one(
    client: MlflowClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["promote", "1", "--to", "production"]) == 0
    assert cli(["promote", "2", "--to", "staging"]) == 0
    assert cli(["delete", "2"]) == 0
    assert cli(["archive", "1"]) == 1
    assert "is @production: promote another version or roll back first" in capsys.readouterr().err
    assert cli(["list"]) == 0
    listing = capsys.readouterr()
    assert [line.split()[:3] for line in listing.out.splitlines()[1:]] == [
        ["3", "None", "-"],
        ["1", "Production", "production,staging"],
    ]
    assert "warning" not in listing.err
    # What MLflow 3.12 does on its own: the alias outlives the version it names. `list` says so, with the fix.
    client.set_registered_model_alias("pytorch_simplenn_mnist", "champion", "3")
    client.delete_model_version("pytorch_simplenn_mnist", "3")
    assert cli(["list"]) == 0
    assert "warning: @champion names version 3, which does not exist" in capsys.readouterr().err


def test_commands_other_than_the_gate_do_not_import_torch() -> None:
    # torch and torchvision took about 4 s of CPU to import, and made `sandbox list` take 8.6 s before it asked
    # the server anything (2026-12-03); only --gate, which measures MNIST images, needs them.
    probe = "import sys, infra.ops.registry; print(sorted({'torch', 'torchvision'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_list_tells_a_model_without_versions_from_a_mistyped_name(
    client: MlflowClient, capsys: pytest.CaptureFixture[str]
) -> None:
    client.create_registered_model("empty_model")
    assert cli(["--model-name", "empty_model", "list"]) == 1
    assert "empty_model has no versions yet at " in capsys.readouterr().err
    assert cli(["--model-name", "pytorch_mnist", "list"]) == 1
    err = capsys.readouterr().err
    assert "no registered model is named pytorch_mnist" in err
    assert "it holds empty_model, pytorch_simplenn_mnist (--model-name or SANDBOX_MODEL_NAME)" in err
