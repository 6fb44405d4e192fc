"""MLflow's tables on both sides of a migration: reading their layout, and copying their rows."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

ALEMBIC = "alembic_version"
# Rows that a fresh MLflow store has before anyone uses it; a target holding only these counts as empty.
SEED_ROWS = {
    "experiments": "experiment_id = 0 AND name = 'Default'",
    "workspaces": "name = 'default'",
}


class MigrationError(RuntimeError):
    """The migration cannot go ahead; the message says why and what to do."""


def reflect(engine: Engine) -> sa.MetaData:
    metadata = sa.MetaData()
    metadata.reflect(engine)
    return metadata


def schema_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


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
