"""Copy a SQLite-backed MLflow store into an empty PostgreSQL-backed one, then verify the copy.

    .venv-tracking/bin/python -m infra.ops.migrate_store --source sqlite:///.sandbox/mlflow.db \\
        --target postgresql+psycopg2://mlflow:PASSWORD@127.0.0.1:5432/mlflow [--dry-run] [--force]

Run it with the tracking server's MLflow (.venv-tracking locally, the mlflow image in compose): the store has
that release's schema. MLflow ships no such tool. This one copies every table of MLflow's schema as it is,
primary keys included, so run ids, experiment ids, model-version numbers and logged-model ids (and every link between
them) stay the same. The target's schema is made by MLflow's own migrations, at the source's revision;
the rows are copied in foreign-key order in one transaction, and PostgreSQL's sequences are moved past
the copied ids. Then every table is read back on both sides: row counts and an order-independent
checksum of the normalised contents are printed source next to target, and any difference exits 1.

Artifacts are not moved: artifact locations are copied verbatim, so start the new server with the same
MLFLOW_ARTIFACTS_DESTINATION. Stop the tracking server that writes to the source before migrating.
"""

from __future__ import annotations

import argparse
import sys
import time

import sqlalchemy as sa
from mlflow.version import VERSION as MLFLOW_VERSION
from sqlalchemy.engine import Engine, make_url

from infra.ops.migrate_store.checksums import format_report, verify
from infra.ops.migrate_store.tables import (
    MigrationError,
    check_schemas,
    copy_store,
    data_tables,
    reflect,
    schema_revision,
    user_rows,
)
from mlops_sandbox import store_schema


def engine_for(uri: str, role: str) -> Engine:
    if uri.startswith("postgresql://"):
        raise MigrationError(f"--{role}: use the postgresql+psycopg2:// scheme (psycopg 3 is not installed)")
    try:
        make_url(uri)
    except sa.exc.ArgumentError as err:
        raise MigrationError(f"--{role} is not a database URI: {err}") from None
    return sa.create_engine(uri)


def describe(uri: str) -> str:
    return make_url(uri).render_as_string(hide_password=True)


def migrate(args: argparse.Namespace) -> int:
    source, target = engine_for(args.source, "source"), engine_for(args.target, "target")
    if target.dialect.name != "postgresql":
        raise MigrationError("--target must be a PostgreSQL URI (postgresql+psycopg2://user:pass@host:5432/db)")
    head = store_schema.head_revision()
    source_revision = schema_revision(source)
    if source_revision is None:
        raise MigrationError(f"{describe(args.source)} is not an MLflow store (it has no alembic_version)")
    if source_revision != head:
        raise MigrationError(
            f"the source is at schema revision {source_revision}, this MLflow ({MLFLOW_VERSION}) expects {head}: "
            "run the migration with the tracking server's MLflow (.venv-tracking/bin/python locally); for a store "
            f"older than that, back it up, run `mlflow db upgrade {args.source}` with it, then migrate"
        )
    source_meta = reflect(source)
    tables = data_tables(source_meta)
    with source.connect() as conn:
        counts = {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() for t in tables}
    print(f"source {describe(args.source)}: MLflow schema {source_revision}, {sum(counts.values())} rows")
    for name, count in counts.items():
        if count:
            print(f"  {name:<28} {count:>9}")
    with source.connect() as conn:
        locations = sorted({row[0] for row in conn.execute(sa.text("SELECT artifact_location FROM experiments"))})
    print("artifact locations, copied as they are (keep them reachable): " + ", ".join(map(str, locations)))

    target_revision = schema_revision(target)
    if target_revision is None:
        if sa.inspect(target).get_table_names():
            raise MigrationError(f"{describe(args.target)} holds tables but no MLflow schema: use an empty database")
        print(f"target {describe(args.target)}: empty database; MLflow's migrations will create schema {head}")
    elif target_revision != head:
        raise MigrationError(
            f"the target is at schema revision {target_revision}, not {head}: run `mlflow db upgrade` on it, "
            "or use an empty database"
        )
    else:
        with target.connect() as conn:
            existing = user_rows(conn, data_tables(reflect(target)))
        if existing:
            summary = ", ".join(f"{name} {count}" for name, count in existing.items())
            if not args.force:
                raise MigrationError(
                    f"the target {describe(args.target)} is not empty ({summary}); "
                    "use an empty database, or --force to replace everything in it"
                )
            print(f"target {describe(args.target)}: NOT empty ({summary}); --force: its contents will be replaced")
        else:
            print(f"target {describe(args.target)}: an empty MLflow store at schema {head}")
    if args.dry_run:
        print("dry run: nothing was written")
        return 0

    began = time.monotonic()
    if target_revision is None:
        store_schema.create(target)
    target_meta = reflect(target)
    check_schemas(source_meta, target_meta)
    copied = copy_store(source, target, data_tables(target_meta), batch_size=args.batch_size)
    copy_seconds = time.monotonic() - began
    print(f"copied {sum(copied.values())} rows in {len(copied)} tables in {copy_seconds:.1f} s")
    return report(source, target)


def report(source: Engine, target: Engine) -> int:
    began = time.monotonic()
    reports = verify(source, target)
    print(format_report(reports))
    different = [r.table for r in reports if not r.equal]
    print(f"verified {len(reports)} tables in {time.monotonic() - began:.1f} s: ", end="")
    if different:
        print(f"{len(different)} DIFFER: {', '.join(different)}")
        return 1
    print("all equal")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m infra.ops.migrate_store",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--source", required=True, help="the store to copy, e.g. sqlite:///.sandbox/mlflow.db")
    parser.add_argument("--target", required=True, help="an empty PostgreSQL database: postgresql+psycopg2://...")
    parser.add_argument("--dry-run", action="store_true", help="check both stores and say what would be copied")
    parser.add_argument("--force", action="store_true", help="replace the contents of a non-empty target")
    parser.add_argument("--verify-only", action="store_true", help="only compare the two stores and print the report")
    parser.add_argument("--batch-size", type=int, default=5_000, help="rows per insert (default 5000)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.verify_only:
            return report(engine_for(args.source, "source"), engine_for(args.target, "target"))
        return migrate(args)
    except MigrationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except sa.exc.OperationalError as err:
        print(f"error: cannot reach a database: {str(err.orig or err).strip().splitlines()[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
