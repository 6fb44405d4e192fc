"""Model Registry lifecycle: model URIs, promotion with aliases and stages, rollback, archive, delete, lineage.

Aliases (`staging`, `production`) are MLflow's modern form of stages. So that the older stage URIs
(models:/NAME/Production) keep working, every promotion also sets the matching deprecated stage (`Staging`,
`Production`), and the production version it replaces becomes `Archived`. Each production version records
the version it replaced in a tag, so `rollback` can walk back through production's history.

Every operation here leaves the registry consistent with itself, as `inconsistencies` defines it: an archived
version holds no alias (@staging moves to the production version, the state of a sandbox with nothing
staged), and no alias names a deleted version.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlops_sandbox.references import LIFECYCLE_ALIASES, model_uri

PREVIOUS_PRODUCTION_TAG = "previous_production_version"
ROLLED_BACK_TAG = "rolled_back_at"


class RegistryError(RuntimeError):
    """A registry operation that cannot be done; the message says why."""


def resolve_version(client: MlflowClient, name: str, ref: str) -> str:
    """The version number that `ref` (as accepted by `model_uri`) points at now."""
    uri = model_uri(name, ref)
    ref = ref.strip()
    try:
        if ref.startswith("@"):
            return str(client.get_model_version_by_alias(name, ref[1:]).version)
        if ref.isdigit():
            return str(client.get_model_version(name, ref).version)
        stage = None if ref == "latest" else ref.capitalize()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            versions = client.get_latest_versions(name, stages=[stage] if stage else None)
    except MlflowException as err:
        raise RegistryError(f"{uri} does not exist: {err.message}") from err
    if not versions:
        raise RegistryError(f"{uri} does not exist: no version of {name} is in that stage")
    return str(max(int(v.version) for v in versions))


def _alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _set_stage(client: MlflowClient, name: str, version: str, stage: str) -> None:
    # The stage API is deprecated but still supported in MLflow 3.12; stage URIs rely on it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage(name, version, stage, archive_existing_versions=stage != "Archived")


@dataclass(frozen=True)
class Promotion:
    """An alias moved: `version` of `name` is now @`alias`; `previous` is the version it pointed at before."""

    name: str
    version: str
    alias: str
    previous: str | None
    archived: str | None = None
    """The version this move archived (the production version it replaced), or None."""
    staging_moved: tuple[str, str | None] | None = None
    """(from, to) when @staging had to move off the archived version (to None: removed), or None."""

    def describe(self) -> str:
        """One line for a person, for example: pytorch_simplenn_mnist version 3 is now @production (was version
        4); version 4 is Archived; @staging moved from version 4 to version 3."""
        was = f" (was version {self.previous})" if self.previous else ""
        line = f"{self.name} version {self.version} is now @{self.alias}{was}"
        if self.archived:
            line += f"; version {self.archived} is Archived"
        if self.staging_moved:
            source, target = self.staging_moved
            where = f"moved from version {source} to version {target}" if target else f"removed from version {source}"
            line += f"; @staging {where}"
        return line


def _settle_staging_moved(client: MlflowClient, name: str) -> tuple[str, str | None] | None:
    """settle_staging, and where @staging moved: (from, to), or None when it stayed."""
    before = _alias_version(client, name, "staging")
    after = settle_staging(client, name)
    return (str(before.version), after) if before is not None and str(before.version) != after else None


def promote(client: MlflowClient, name: str, version: str | int, alias: str) -> Promotion:
    """Point `alias` at `version` and set its stage; for production, archive the version it replaces."""
    alias = alias.strip().lower()
    if alias not in LIFECYCLE_ALIASES:
        raise RegistryError(f"cannot promote to {alias!r}: use one of {', '.join(LIFECYCLE_ALIASES)}")
    version = str(version)
    try:
        client.get_model_version(name, version)
    except MlflowException as err:
        raise RegistryError(f"{name} version {version} does not exist: {err.message}") from err
    current = _alias_version(client, name, alias)
    previous = str(current.version) if current is not None and str(current.version) != version else None
    if alias == "production" and previous is not None:
        client.set_model_version_tag(name, version, PREVIOUS_PRODUCTION_TAG, previous)
    client.set_registered_model_alias(name, alias, version)
    _set_stage(client, name, version, LIFECYCLE_ALIASES[alias])
    if alias == "production" and previous is not None:
        _set_stage(client, name, previous, "Archived")
    # A stage transition also archives the other versions in that stage (archive_existing_versions): any
    # alias one of them held moves off it.
    moved = _settle_staging_moved(client, name)
    archived = previous if alias == "production" else None
    return Promotion(name, version, alias, previous, archived, moved)


def settle_staging(client: MlflowClient, name: str) -> str | None:
    """Move @staging off an archived version: onto the @production version (a staging endpoint with nothing
    staged serves production's version), or remove it when there is no production version. Returns where
    @staging points afterwards (None: nowhere)."""
    staging, production = _alias_version(client, name, "staging"), _alias_version(client, name, "production")
    if staging is None or staging.current_stage != "Archived":
        return str(staging.version) if staging is not None else None
    if production is not None:
        client.set_registered_model_alias(name, "staging", str(production.version))
        return str(production.version)
    client.delete_registered_model_alias(name, "staging")
    return None


def archive(client: MlflowClient, name: str, version: str) -> None:
    """Set `version`'s stage to Archived and move @staging off it (settle_staging). RegistryError for the
    @production version (roll back or promote another first) or a version that does not exist."""
    production = _alias_version(client, name, "production")
    if production is not None and str(production.version) == str(version):
        raise RegistryError(f"{name} version {version} is @production: promote another version or roll back first")
    try:
        client.get_model_version(name, version)
    except MlflowException as err:
        raise RegistryError(f"{name} version {version} does not exist: {err.message}") from err
    _set_stage(client, name, version, "Archived")
    settle_staging(client, name)


def delete_version(client: MlflowClient, name: str, version: str) -> None:
    """Delete `version` from the registry after taking its aliases off it: MLflow 3.12 leaves an
    alias that names a deleted version (fixed upstream later), and looking that alias up then fails without
    naming it. RegistryError for the @production version or a version that does not exist."""
    archive(client, name, version)
    for alias, target in client.get_registered_model(name).aliases.items():
        if str(target) == str(version):
            client.delete_registered_model_alias(name, alias)
    client.delete_model_version(name, version)


def inconsistencies(client: MlflowClient, name: str) -> list[str]:
    """Every way the registry of `name` contradicts itself, one sentence each with its fix; empty when none.

    The invariant, written once, that every operation of this project keeps:
    1. the @production version has stage Production;
    2. the @staging version has stage Staging, or Production when it is @production too (nothing staged);
    3. an Archived version holds neither @staging nor @production;
    4. at most one version is in stage Production, and at most one in Staging;
    5. every alias names a version that exists (MLflow 3.12 keeps the alias of a deleted version).
    """
    aliases = client.get_registered_model(name).aliases
    versions = {str(v.version): v.current_stage or "None" for v in client.search_model_versions(f"name = '{name}'")}
    problems = []
    for alias, target in sorted(aliases.items()):
        stage = versions.get(str(target))
        if stage is None:
            problems.append(
                f"@{alias} names version {target}, which does not exist: point it at a version with "
                f"`promote VERSION --to {alias}`, or remove it with MlflowClient.delete_registered_model_alias"
            )
        elif stage == "Archived" and alias in LIFECYCLE_ALIASES:
            problems.append(f"@{alias} names version {target}, which is Archived: promote a live version to @{alias}")
        elif alias in LIFECYCLE_ALIASES:
            allowed = {LIFECYCLE_ALIASES[alias]} | (
                {"Production"} if alias == "staging" and str(aliases.get("production")) == str(target) else set()
            )
            if stage not in allowed:
                problems.append(
                    f"@{alias} names version {target}, whose stage is {stage}, not {LIFECYCLE_ALIASES[alias]}: "
                    f"promote it again with `promote {target} --to {alias}`"
                )
    for stage in ("Production", "Staging"):
        holders = sorted((v for v, s in versions.items() if s == stage), key=int)
        if len(holders) > 1:
            problems.append(f"versions {', '.join(holders)} are all in stage {stage}: promote the right one again")
    return problems


def repair(client: MlflowClient, name: str) -> list[str]:
    """Finish the promotion or rollback that was interrupted between its alias move and its stage moves; one
    sentence per repair, empty when there was nothing to finish.

    `promote` and `rollback` move the alias first, and serving follows the alias: once it has moved, the
    alias is what is served, and only the stages lag. So a lifecycle alias whose version has another stage
    is finished as the operation would have: the version gets the alias's stage, and the version that held
    that stage is Archived (`promote` again). @staging left on an Archived version moves off it
    (`settle_staging`), as `archive` would have done. What this cannot know how to finish (an alias naming
    a deleted version) is left to `inconsistencies`, which says how.
    """
    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    stages = {str(v.version): v.current_stage or "None" for v in client.search_model_versions(f"name = '{name}'")}
    repaired = []
    for alias in ("production", "staging"):
        target = str(aliases[alias]) if alias in aliases else None
        if target is None or target not in stages:
            continue
        stage, wanted = stages[target], LIFECYCLE_ALIASES[alias]
        if stage == wanted or (
            alias == "staging" and stage == "Production" and target == str(aliases.get("production"))
        ):
            continue
        if alias == "staging" and stage == "Archived":
            moved = settle_staging(client, name)
            where = f"now version {moved}, the @production one" if moved else "removed, as nothing is in production"
            repaired.append(f"@staging named version {target}, which is Archived: {where}")
        else:
            holders = [v for v, s in stages.items() if s == wanted and v != target]
            promote(client, name, target, alias)
            archived = f"; version {', '.join(holders)} Archived" if holders and alias == "production" else ""
            repaired.append(f"version {target} is @{alias} but was in stage {stage}: now {wanted}{archived}")
        stages = {str(v.version): v.current_stage or "None" for v in client.search_model_versions(f"name = '{name}'")}
        aliases = client.get_registered_model(name).aliases
    return repaired


def rollback(client: MlflowClient, name: str) -> Promotion:
    """Return production to the version that the current production version replaced."""
    current = _alias_version(client, name, "production")
    if current is None:
        raise RegistryError(f"{name} has no @production version to roll back from")
    target = current.tags.get(PREVIOUS_PRODUCTION_TAG)
    if not target:
        raise RegistryError(
            f"{name} version {current.version} is @production but records no previous production version "
            "(the first version made @production records none): promote the version you want instead "
            "(sandbox promote N --to production; sandbox list shows them)"
        )
    try:
        client.get_model_version(name, target)
    except MlflowException as err:
        raise RegistryError(f"cannot roll back to {name} version {target}: {err.message}") from err
    client.set_registered_model_alias(name, "production", target)
    _set_stage(client, name, target, "Production")
    _set_stage(client, name, str(current.version), "Archived")
    moved = _settle_staging_moved(client, name)
    client.set_model_version_tag(name, str(current.version), ROLLED_BACK_TAG, now())
    return Promotion(name, target, "production", str(current.version), str(current.version), moved)


def now() -> str:
    """The current UTC time as ISO 8601 to the second: the format of the timestamps this project writes in tags."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class LineageRow:
    """One version with the run and experiment that produced it and the run's key metrics (fractions and losses)."""

    version: str
    stage: str
    aliases: tuple[str, ...]
    run_id: str
    experiment: str
    metrics: dict[str, float]
    created: str


KEY_METRICS = ("test_accuracy", "val_accuracy", "val_loss")


def lineage(client: MlflowClient, name: str) -> list[LineageRow]:
    """Every version of `name`, newest first, with the run and experiment that produced it."""
    try:
        versions = client.search_model_versions(f"name = '{name}'")
        # search results leave aliases out; the registered model has them all.
        aliases = client.get_registered_model(name).aliases if versions else {}
    except MlflowException as err:
        raise RegistryError(f"cannot list {name}: {err.message}") from err
    aliases_of: dict[str, list[str]] = {}
    for alias, target in aliases.items():
        aliases_of.setdefault(str(target), []).append(alias)
    experiments: dict[str, str] = {}
    rows = []
    for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
        metrics: dict[str, float] = {}
        experiment = ""
        if mv.run_id:
            try:
                run = client.get_run(mv.run_id)
            except MlflowException:
                run = None
            if run is not None:
                metrics = {k: run.data.metrics[k] for k in KEY_METRICS if k in run.data.metrics}
                exp_id = run.info.experiment_id
                if exp_id not in experiments:
                    experiments[exp_id] = client.get_experiment(exp_id).name
                experiment = experiments[exp_id]
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mv.creation_timestamp / 1000))
        rows.append(
            LineageRow(
                version=str(mv.version),
                stage=mv.current_stage or "None",
                aliases=tuple(sorted(aliases_of.get(str(mv.version), ()))),
                run_id=mv.run_id or "",
                experiment=experiment,
                metrics=metrics,
                created=created,
            )
        )
    return rows


def format_lineage(rows: list[LineageRow]) -> str:
    """The rows as a plain-text table with aligned columns, header first."""
    header = ("version", "stage", "aliases", "run_id", "experiment", *KEY_METRICS, "created")
    table: list[tuple[str, ...]] = [header]
    for row in rows:
        table.append(
            (
                row.version,
                row.stage,
                ",".join(row.aliases) or "-",
                row.run_id,
                row.experiment or "-",
                *(f"{row.metrics[k]:.4f}" if k in row.metrics else "-" for k in KEY_METRICS),
                row.created,
            )
        )
    widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
    lines = ("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)) for line in table)
    return "\n".join(line.rstrip() for line in lines)
