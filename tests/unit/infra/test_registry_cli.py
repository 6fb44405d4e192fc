"""`python -m infra.ops.registry` against a temporary SQLite registry: what a user types and reads."""

from __future__ import annotations

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
