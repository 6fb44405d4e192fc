"""Copy a SQLite-backed MLflow store into an empty PostgreSQL-backed one, then verify the copy.

    python -m infra.ops.migrate_store --source sqlite:///.sandbox/mlflow.db \\
        --target postgresql+psycopg2://mlflow:PASSWORD@127.0.0.1:5432/mlflow [--dry-run] [--force]

MLflow ships no such tool. This one copies every table of MLflow's schema as it is, primary keys
included, so run ids, experiment ids, model-version numbers and logged-model ids (and every link between
them) stay the same. The target's schema is made by MLflow's own migrations, at the source's revision;
the rows are copied in foreign-key order in one transaction, and PostgreSQL's sequences are moved past
the copied ids. Then every table is read back on both sides: row counts and an order-independent
checksum of the normalised contents are printed source next to target, and any difference exits 1.

Artifacts are not moved: artifact locations are copied verbatim, so start the new server with the same
MLFLOW_ARTIFACTS_DESTINATION. Stop the tracking server that writes to the source before migrating.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

ALEMBIC = "alembic_version"
# Rows that a fresh MLflow store has before anyone uses it; a target holding only these counts as empty.
SEED_ROWS = {
    "experiments": "experiment_id = 0 AND name = 'Default'",
    "workspaces": "name = 'default'",
}
CHECKSUM_BITS = 128


class MigrationError(RuntimeError):
    """The migration cannot go ahead; the message says why and what to do."""


@dataclass(frozen=True)
class TableReport:
    table: str
    source_rows: int
    target_rows: int
    source_checksum: str
    target_checksum: str

    @property
    def equal(self) -> bool:
        return self.source_rows == self.target_rows and self.source_checksum == self.target_checksum


def reflect(engine: Engine) -> sa.MetaData:
    metadata = sa.MetaData()
    metadata.reflect(engine)
    return metadata


def schema_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def expected_revision() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def data_tables(metadata: sa.MetaData) -> list[sa.Table]:
    """MLflow's tables in foreign-key order (parents first), without alembic's bookkeeping table."""
    return [table for table in metadata.sorted_tables if table.name != ALEMBIC]


def user_rows(conn: Connection, tables: Iterable[sa.Table]) -> dict[str, int]:
    """Rows per table that a fresh store would not have."""
    counts = {}
    for table in tables:
        query = sa.select(sa.func.count()).select_from(table)
        if table.name in SEED_ROWS:
            query = query.where(sa.text(f"NOT ({SEED_ROWS[table.name]})"))
        counts[table.name] = conn.execute(query).scalar_one()
    return {name: count for name, count in counts.items() if count}


def check_schemas(source: sa.MetaData, target: sa.MetaData) -> None:
    source_tables, target_tables = set(source.tables), set(target.tables)
    if source_tables != target_tables:
        raise MigrationError(
            f"the schemas differ: only in the source {sorted(source_tables - target_tables)}, "
            f"only in the target {sorted(target_tables - source_tables)}"
        )
    for name in sorted(source_tables):
        source_columns = {c.name for c in source.tables[name].columns}
        target_columns = {c.name for c in target.tables[name].columns}
        if source_columns != target_columns:
            raise MigrationError(f"table {name} has different columns: {sorted(source_columns ^ target_columns)}")


# --- checksums -------------------------------------------------------------------------------------
def _normalise(value: Any, column: sa.Column[Any]) -> str:
    """One text form per value, whichever database and driver it came from."""
    if value is None:
        return "\\N"
    if isinstance(column.type, sa.Boolean) or isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int | Decimal) and value == int(value):
        return str(int(value))
    if isinstance(value, float | Decimal):
        number = float(value)
        return repr(number) if not math.isnan(number) else "nan"
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def table_checksum(conn: Connection, table: sa.Table) -> tuple[int, str]:
    """Row count and a checksum of the contents that does not depend on row order or collation.

    Each row's normalised columns (by name, in name order) are hashed; the sum of the row hashes is
    the table's checksum, so both sides agree without having to sort rows the same way."""
    columns = sorted(table.columns, key=lambda c: c.name)
    total = rows = 0
    result = conn.execution_options(stream_results=True).execute(sa.select(*columns))
    for row in result:
        text = "\x1f".join(_normalise(value, column) for value, column in zip(row, columns, strict=True))
        digest = hashlib.sha256(text.encode()).digest()
        total = (total + int.from_bytes(digest[: CHECKSUM_BITS // 8], "big")) % (1 << CHECKSUM_BITS)
        rows += 1
    return rows, f"{total:0{CHECKSUM_BITS // 4}x}"


def verify(source: Engine, target: Engine) -> list[TableReport]:
    source_meta, target_meta = reflect(source), reflect(target)
    reports = []
    with source.connect() as src, target.connect() as dst:
        for name in sorted(source_meta.tables):
            source_rows, source_sum = table_checksum(src, source_meta.tables[name])
            target_rows, target_sum = table_checksum(dst, target_meta.tables[name])
            reports.append(TableReport(name, source_rows, target_rows, source_sum, target_sum))
    return reports


def format_report(reports: list[TableReport]) -> str:
    width = max(len(r.table) for r in reports)
    lines = [
        f"{'table':<{width}}  {'source rows':>11}  {'target rows':>11}  {'source checksum':<16}  "
        f"{'target checksum':<16}  result"
    ]
    for r in reports:
        lines.append(
            f"{r.table:<{width}}  {r.source_rows:>11}  {r.target_rows:>11}  {r.source_checksum[:16]:<16}  "
            f"{r.target_checksum[:16]:<16}  {'equal' if r.equal else 'DIFFERENT'}"
        )
    return "\n".join(lines)


# --- copying ---------------------------------------------------------------------------------------
def _batches(conn: Connection, table: sa.Table, size: int) -> Iterator[list[dict[str, Any]]]:
    result = conn.execution_options(stream_results=True).execute(sa.select(table))
    for part in result.mappings().partitions(size):
        yield [dict(row) for row in part]


def fix_sequences(conn: Connection, tables: Iterable[sa.Table]) -> list[str]:
    """Move each serial column's sequence past the copied ids, so new experiments etc. do not collide."""
    moved = []
    for table in tables:
        for column in table.columns:
            if not isinstance(column.type, sa.Integer):
                continue
            sequence = conn.execute(
                sa.text("SELECT pg_get_serial_sequence(:table, :column)"), {"table": table.name, "column": column.name}
            ).scalar()
            if sequence is None:
                continue
            highest = conn.execute(sa.select(sa.func.max(column))).scalar()
            conn.execute(
                sa.text("SELECT setval(:sequence, :next, false)"), {"sequence": sequence, "next": (highest or 0) + 1}
            )
            moved.append(f"{sequence} -> {(highest or 0) + 1}")
    return moved


def copy_store(source: Engine, target: Engine, tables: list[sa.Table], *, batch_size: int) -> dict[str, int]:
    """Replace the target's rows with the source's, in one transaction; returns rows copied per table."""
    copied = {}
    with source.connect() as src, target.begin() as dst:
        for table in reversed(tables):
            dst.execute(table.delete())
        for table in tables:
            source_table = sa.Table(table.name, sa.MetaData(), autoload_with=src)
            copied[table.name] = 0
            for rows in _batches(src, source_table, batch_size):
                dst.execute(table.insert(), rows)
                copied[table.name] += len(rows)
        for line in fix_sequences(dst, tables):
            print(f"  sequence {line}")
    return copied


# --- the command -----------------------------------------------------------------------------------
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
    head = expected_revision()
    source_revision = schema_revision(source)
    if source_revision is None:
        raise MigrationError(f"{describe(args.source)} is not an MLflow store (it has no alembic_version)")
    if source_revision != head:
        raise MigrationError(
            f"the source is at schema revision {source_revision}, this MLflow expects {head}: "
            f"back it up, run `mlflow db upgrade {args.source}`, then migrate"
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
        from mlflow.store.db.utils import _initialize_tables

        _initialize_tables(target)
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
