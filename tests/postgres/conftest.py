"""One real PostgreSQL server for these tests (Debian's binaries, a temporary data directory, a free
loopback port); each test gets its own empty database on it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tools.postgres.throwaway import PostgresServer, throwaway_postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with throwaway_postgres() as server:
        yield server


@pytest.fixture
def postgres_uri(postgres: PostgresServer) -> str:
    """The URI of a new, empty database."""
    return postgres.create_database(f"test_{secrets.token_hex(4)}")
