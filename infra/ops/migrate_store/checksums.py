"""Verifying a copy: row counts and an order-independent checksum of every table, source next to target."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from infra.ops.migrate_store.tables import reflect

CHECKSUM_BITS = 128


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
