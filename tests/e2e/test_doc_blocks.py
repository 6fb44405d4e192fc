"""README.md and then docs/operations.md, run as written: every block marked `test` (docker ones aside), in
order, in a fresh copy of the checkout, as a newcomer's terminal would run them.

The copy shares this checkout's .venv and .venv-tracking (the blocks' `bash infra/sandbox.sh` finds them up to
date) and gets the one line of .env that the README tells an offline user to write. The blocks use the
sandbox's default ports, so those must be free.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.doc_blocks import DOCUMENTS, PROJECT_ROOT, Session, blocks

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]

# The sandbox's and the workflow's ports (5001 MLflow UI, 5005-5007 `mlflow models serve`; 8070, 8071, 8079
# the router, 9090 Prometheus).
PORTS = (5000, 5001, 5005, 5006, 5007, 8070, 8071, 8079, 8080, 8081, 8082, 8090, 8091, 8092, 9000, 9090)


def fresh_copy(target: Path) -> Path:
    """The checkout's files as git sees them (tracked, and untracked but not ignored), as a clone would have them."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        source = PROJECT_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    for venv in (".venv", ".venv-tracking"):
        (target / venv).symlink_to(PROJECT_ROOT / venv)
    return target


def test_the_documented_commands_run_as_written(tmp_path: Path, mnist_root: Path) -> None:
    # The copy shares this checkout's venvs: bring them up to date here first, so that the copy's bootstrap finds
    # nothing to do (installing from the copy would point the venvs' editable installs at it).
    subprocess.run(["bash", "infra/bootstrap.sh"], cwd=PROJECT_ROOT, check=True, timeout=1800)
    busy = [port for port in PORTS if socket.socket().connect_ex(("127.0.0.1", port)) == 0]
    assert not busy, f"the documented commands use ports {busy}, which another program holds: stop it first"
    checkout = fresh_copy(tmp_path / "mlops-sandbox")
    (checkout / ".env").write_text(f"SANDBOX_MNIST_ROOT={mnist_root}\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    # A newcomer's terminal: no variable of this project or of MLflow set.
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TERM") if name in os.environ}
    session = Session(checkout, env, logs)
    ran = []
    try:
        for document in DOCUMENTS:
            for block in blocks(document):
                if block.tested and not block.docker:
                    session.run(block)
                    ran.append(str(block))
    finally:
        session.close()
        subprocess.run(["bash", "infra/sandbox.sh", "down"], cwd=checkout, env=env, capture_output=True, timeout=300)
    print(f"\nran {len(ran)} documented blocks: {', '.join(ran)}")
    assert len(ran) >= 9
    installed = subprocess.run(
        [str(PROJECT_ROOT / ".venv/bin/python"), "-c", "import mlops_sandbox; print(mlops_sandbox.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert installed.stdout.startswith(str(PROJECT_ROOT)), f"the venv's project moved to {installed.stdout}"
