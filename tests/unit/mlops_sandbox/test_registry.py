"""Promotion, archiving, rollback and alias semantics against a temporary SQLite registry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mlflow.tracking import MlflowClient

from mlops_sandbox import registry
from mlops_sandbox.references import model_uri

NAME = "pytorch_simplenn_mnist"


def stages(client: MlflowClient) -> dict[str, str]:
    return {str(mv.version): mv.current_stage or "None" for mv in client.search_model_versions(f"name = '{NAME}'")}


def alias(client: MlflowClient, name: str) -> str:
    return str(client.get_model_version_by_alias(NAME, name).version)


LEFT_INCONSISTENT = {"test_inconsistencies_name_each_contradiction_with_its_fix"}


@pytest.fixture(autouse=True)
def registry_stays_consistent(request: pytest.FixtureRequest, client: MlflowClient) -> Iterator[None]:
    """The registry's invariant (registry.inconsistencies), checked after every test's operations."""
    yield
    if request.node.originalname not in LEFT_INCONSISTENT:
        assert registry.inconsistencies(client, NAME) == []


def test_rolling_back_moves_staging_off_the_version_it_archives(client: MlflowClient) -> None:
    """As the rehearsal does it: the version staged, promoted, then rolled back held @staging, Archived."""
    registry.promote(client, NAME, 1, "staging")
    registry.promote(client, NAME, 1, "production")
    registry.promote(client, NAME, 2, "staging")
    registry.promote(client, NAME, 2, "production")
    rolled_back = registry.rollback(client, NAME)
    assert stages(client)["2"] == "Archived"
    assert alias(client, "staging") == alias(client, "production") == "1"
    # What the command prints says all three moves, not the production alias alone.
    assert rolled_back.describe() == (
        f"{NAME} version 1 is now @production (was version 2); version 2 is Archived; "
        "@staging moved from version 2 to version 1"
    )


def test_promoting_straight_to_production_moves_staging_off_the_archived_version(client: MlflowClient) -> None:
    registry.promote(client, NAME, 1, "staging")
    registry.promote(client, NAME, 1, "production")
    promoted = registry.promote(client, NAME, 3, "production")  # no staging first: 1 is archived with @staging
    assert alias(client, "staging") == "3"
    assert promoted.describe().endswith("version 1 is Archived; @staging moved from version 1 to version 3")
    assert (
        registry.promote(client, NAME, 2, "staging").describe() == f"{NAME} version 2 is now @staging (was version 3)"
    )


def test_archive_moves_staging_to_production_and_refuses_production(client: MlflowClient) -> None:
    registry.promote(client, NAME, 1, "production")
    registry.promote(client, NAME, 2, "staging")
    registry.archive(client, NAME, "2")
    assert stages(client)["2"] == "Archived" and alias(client, "staging") == "1"
    with pytest.raises(registry.RegistryError, match="is @production"):
        registry.archive(client, NAME, "1")
    with pytest.raises(registry.RegistryError, match="does not exist"):
        registry.archive(client, NAME, "9")


def test_archiving_the_only_staged_version_without_production_removes_the_alias(client: MlflowClient) -> None:
    registry.promote(client, NAME, 2, "staging")
    registry.archive(client, NAME, "2")
    assert "staging" not in client.get_registered_model(NAME).aliases


def test_delete_takes_the_aliases_off_first(client: MlflowClient) -> None:
    registry.promote(client, NAME, 1, "production")
    registry.promote(client, NAME, 2, "staging")
    client.set_registered_model_alias(NAME, "champion", "2")
    registry.delete_version(client, NAME, "2")
    assert {k: str(v) for k, v in client.get_registered_model(NAME).aliases.items()} == {
        "production": "1",
        "staging": "1",
    }
    assert "2" not in stages(client)
    with pytest.raises(registry.RegistryError, match="is @production"):
        registry.delete_version(client, NAME, "1")


def test_inconsistencies_name_each_contradiction_with_its_fix(client: MlflowClient) -> None:
    registry.promote(client, NAME, 1, "production")
    client.set_registered_model_alias(NAME, "champion", "3")
    client.delete_model_version(NAME, "3")  # MLflow 3.12 keeps @champion, naming a version that is gone
    client.set_registered_model_alias(NAME, "staging", "2")  # an alias moved by hand: stage still None
    problems = registry.inconsistencies(client, NAME)
    assert len(problems) == 2, problems
    assert problems[0].startswith("@champion names version 3, which does not exist")
    assert "delete_registered_model_alias" in problems[0]
    assert problems[1].startswith("@staging names version 2, whose stage is None, not Staging: promote it again")


def test_promote_to_staging_sets_alias_and_stage(client: MlflowClient) -> None:
    result = registry.promote(client, NAME, 2, "staging")
    assert (result.version, result.previous) == ("2", None)
    assert alias(client, "staging") == "2"
    assert stages(client)["2"] == "Staging"


def test_promoting_to_production_archives_the_previous_production_version(client: MlflowClient) -> None:
    registry.promote(client, NAME, 1, "production")
    result = registry.promote(client, NAME, 2, "production")
    assert result.previous == "1"
    assert alias(client, "production") == "2"
    assert stages(client) == {"1": "Archived", "2": "Production", "3": "None"}
    assert client.get_model_version(NAME, "2").tags[registry.PREVIOUS_PRODUCTION_TAG] == "1"


def test_a_new_staging_version_archives_the_old_staging_one_but_not_production(client: MlflowClient) -> None:
    registry.promote(client, NAME, 1, "production")
    registry.promote(client, NAME, 2, "staging")
    registry.promote(client, NAME, 3, "staging")
    assert stages(client) == {"1": "Production", "2": "Archived", "3": "Staging"}
    assert alias(client, "staging") == "3"


def test_rollback_walks_back_through_production_history(client: MlflowClient) -> None:
    for version in (1, 2, 3):
        registry.promote(client, NAME, version, "production")
    assert registry.rollback(client, NAME).version == "2"
    assert alias(client, "production") == "2"
    assert stages(client) == {"1": "Archived", "2": "Production", "3": "Archived"}
    assert registry.ROLLED_BACK_TAG in client.get_model_version(NAME, "3").tags
    assert registry.rollback(client, NAME).version == "1"
    with pytest.raises(
        registry.RegistryError, match=r"no previous production version .*: promote the version you want instead"
    ):
        registry.rollback(client, NAME)
    assert alias(client, "production") == "1"


def test_rollback_without_production_is_a_clear_error(client: MlflowClient) -> None:
    with pytest.raises(registry.RegistryError, match="no @production version"):
        registry.rollback(client, NAME)


def test_promoting_the_current_version_again_changes_nothing(client: MlflowClient) -> None:
    registry.promote(client, NAME, 1, "production")
    assert registry.promote(client, NAME, 1, "production").previous is None
    assert registry.PREVIOUS_PRODUCTION_TAG not in client.get_model_version(NAME, "1").tags


def test_bad_targets_are_refused_and_change_nothing(client: MlflowClient) -> None:
    with pytest.raises(registry.RegistryError, match="does not exist"):
        registry.promote(client, NAME, 9, "production")
    with pytest.raises(registry.RegistryError, match="cannot promote to 'canary'"):
        registry.promote(client, NAME, 1, "canary")
    assert client.get_registered_model(NAME).aliases == {}


def test_references_resolve_to_versions(client: MlflowClient) -> None:
    registry.promote(client, NAME, 2, "production")
    assert registry.resolve_version(client, NAME, "@production") == "2"
    assert registry.resolve_version(client, NAME, "Production") == "2"
    assert registry.resolve_version(client, NAME, "3") == "3"
    with pytest.raises(registry.RegistryError):
        registry.resolve_version(client, NAME, "@staging")


@pytest.mark.parametrize(
    ("ref", "uri"),
    [
        ("1", f"models:/{NAME}/1"),
        ("@production", f"models:/{NAME}@production"),
        ("production", f"models:/{NAME}/Production"),
        ("Staging", f"models:/{NAME}/Staging"),
    ],
)
def test_model_uris(ref: str, uri: str) -> None:
    assert model_uri(NAME, ref) == uri


@pytest.mark.parametrize("ref", ["0", "-1", "@", "@bad alias", "canary", ""])
def test_invalid_references_are_refused(ref: str) -> None:
    with pytest.raises(ValueError):
        model_uri(NAME, ref)


def test_lineage_table_links_versions_to_runs_and_experiment(client: MlflowClient) -> None:
    registry.promote(client, NAME, 3, "production")
    rows = registry.lineage(client, NAME)
    assert [row.version for row in rows] == ["3", "2", "1"]
    assert rows[0].aliases == ("production",) and rows[0].stage == "Production"
    assert rows[0].experiment == "registry-test"
    assert rows[0].metrics["test_accuracy"] == pytest.approx(0.98)
    assert rows[0].run_id == client.get_model_version(NAME, "3").run_id
    table = registry.format_lineage(rows)
    assert table.splitlines()[0].split()[:5] == ["version", "stage", "aliases", "run_id", "experiment"]


def test_repair_finishes_a_promotion_cut_between_its_alias_and_stage_moves(client: MlflowClient) -> None:
    registry.promote(client, NAME, 1, "production")
    registry.promote(client, NAME, 2, "staging")
    client.set_registered_model_alias(NAME, "production", "2")  # where promote() was cut short
    assert registry.inconsistencies(client, NAME) != []
    assert registry.repair(client, NAME) == [
        "version 2 is @production but was in stage Staging: now Production; version 1 Archived"
    ]
    assert stages(client)["2"] == "Production" and stages(client)["1"] == "Archived"
    assert registry.repair(client, NAME) == []


def test_repair_finishes_a_rollback_cut_after_its_alias_move(client: MlflowClient) -> None:
    registry.promote(client, NAME, 1, "production")
    registry.promote(client, NAME, 2, "production")
    client.set_registered_model_alias(NAME, "production", "1")  # where rollback() was cut short
    assert registry.repair(client, NAME) == [
        "version 1 is @production but was in stage Archived: now Production; version 2 Archived"
    ]
    assert stages(client)["1"] == "Production" and stages(client)["2"] == "Archived"


def test_repair_moves_staging_off_a_version_archived_without_settling(client: MlflowClient) -> None:
    registry.promote(client, NAME, 1, "production")
    registry.promote(client, NAME, 2, "staging")
    with pytest.warns(FutureWarning):
        client.transition_model_version_stage(NAME, "2", "Archived")  # where archive() was cut short
    assert registry.repair(client, NAME) == [
        "@staging named version 2, which is Archived: now version 1, the @production one"
    ]
    assert alias(client, "staging") == "1"


def test_repair_of_a_model_that_does_not_exist_is_nothing(client: MlflowClient) -> None:
    assert registry.repair(client, "no_such_model") == []
