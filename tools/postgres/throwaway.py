"""A throwaway PostgreSQL server from Debian's binaries: temporary data directory, free loopback port.

    python -m tools.postgres.throwaway [--port 5432] [--dir /tmp/pg]   # prints the URI; Ctrl-C stops it

The tests use `throwaway_postgres()` to get a real server. PostgreSQL refuses to run as root, so as root
the server runs as the `postgres` user (Debian's package creates it) in a directory owned by that user.
"""

from __future__ import annotations

import argparse
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from mlops_sandbox.processes import start_group, stop_group
from mlops_sandbox.waiting import NotReadyYet, wait_for
from tools.ports import free_port

RUN_AS = "postgres"


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    database: str
    data_dir: Path
    log_path: Path

    def uri(self, database: str | None = None, *, password: str | None = None) -> str:
        """The MLflow backend-store URI of `database` (this server's default one when None)."""
        secret = self.password if password is None else password
        return f"postgresql+psycopg2://{self.user}:{secret}@{self.host}:{self.port}/{database or self.database}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URI."""
        conn = psycopg2.connect(**self._params("postgres"))
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.uri(name)

    def _params(self, database: str) -> dict[str, object]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "dbname": database,
            "connect_timeout": 5,
        }


def bin_dir() -> Path:
    """Where initdb and postgres are: PG_BIN, else the newest /usr/lib/postgresql/*/bin, else PATH."""
    if configured := os.environ.get("PG_BIN"):
        return Path(configured)
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    for candidate in versions:
        if (candidate / "initdb").exists():
            return candidate
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise FileNotFoundError(
        "PostgreSQL's initdb was not found: install Debian's postgresql package "
        "(apt-get install postgresql) or set PG_BIN to the folder holding initdb and postgres"
    )


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    # setpriv execs (runuser would stay as the parent), so signals reach postgres itself.
    return ["setpriv", f"--reuid={RUN_AS}", f"--regid={RUN_AS}", "--init-groups", "--", *argv]


def start_postgres(server: PostgresServer) -> subprocess.Popen[bytes]:
    """Start PostgreSQL on `server`'s data directory and port, in a process group of its own (its log appended):
    the first start, or a start after a crash (it then recovers from its write-ahead log)."""
    with open(server.log_path, "ab") as log:
        return start_group(
            _as_server_user(
                [
                    str(bin_dir() / "postgres"),
                    "-D",
                    str(server.data_dir),
                    "-p",
                    str(server.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={server.data_dir.parent}",
                    "-c",
                    "fsync=off",
                ]
            ),
            stdout=log.fileno(),
        )


def wait_until_accepting(server: PostgresServer, proc: subprocess.Popen[bytes], *, timeout: float) -> None:
    """Wait until `server` accepts a connection; RuntimeError with its log's end if `proc` exits first."""

    def ready() -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {proc.returncode}:\n{server.log_path.read_text()[-3000:]}")
        try:
            psycopg2.connect(**server._params("postgres")).close()
        except psycopg2.OperationalError as err:
            raise NotReadyYet(str(err).strip()) from None

    wait_for(ready, service="PostgreSQL", address=f"{server.host}:{server.port}", timeout=timeout)


@contextmanager
def throwaway_postgres(
    *,
    port: int | None = None,
    user: str = "mlflow",
    database: str = "mlflow",
    directory: Path | None = None,
    timeout: float = 60.0,
) -> Iterator[PostgresServer]:
    """Run a fresh PostgreSQL on 127.0.0.1 until the block ends, then stop it and delete its data."""
    binaries = bin_dir()
    owned = directory is None
    root = Path(tempfile.mkdtemp(prefix="throwaway-pg-")) if directory is None else directory
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        account = pwd.getpwnam(RUN_AS)
        os.chown(root, account.pw_uid, account.pw_gid)
    password = secrets.token_urlsafe(16)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        os.chown(pwfile, account.pw_uid, account.pw_gid)
    data_dir, log_path = root / "data", root / "postgres.log"
    init = subprocess.run(
        _as_server_user(
            [
                str(binaries / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                user,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
            ]
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    pwfile.unlink()
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
    server = PostgresServer("127.0.0.1", port or free_port(), user, password, database, data_dir, log_path)
    proc = start_postgres(server)
    try:
        wait_until_accepting(server, proc, timeout=timeout)
        server.create_database(database)
        yield server
    finally:
        # SIGINT is PostgreSQL's "fast" shutdown; SIGTERM would wait for every client to disconnect.
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        stop_group(proc.pid, grace=5, leader=proc)
        if owned:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.postgres.throwaway", description=__doc__)
    parser.add_argument("--port", type=int, help="default: a free port")
    parser.add_argument("--dir", type=Path, help="data folder to keep (default: a temporary one, deleted at exit)")
    args = parser.parse_args(argv)
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    with throwaway_postgres(port=args.port, directory=args.dir) as server:
        print(f"PostgreSQL is up; data in {server.data_dir}, log {server.log_path}", flush=True)
        print(f"MLFLOW_BACKEND_STORE_URI={server.uri()}", flush=True)
        try:
            while not stop:
                signal.pause()
        except KeyboardInterrupt:
            pass
    print("PostgreSQL stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
