"""The compose smoke test's images: a Docker engine, the base image, the wheelhouse, then `docker compose build`.

    python tests/compose/compose_images.py REPORT.json     # build what is missing; REPORT: what existed before

A test session that runs the docker tests with others starts this in the background as it begins
(tests/conftest.py) and runs the docker tests last: the builds (7 to 13 minutes on 2 cores) overlap the other
tests instead of adding to them. They run there at background priority (niceness 10, the engine's processes
too, restored afterwards): the tests ahead of the docker ones are the session's critical path, and the builds
have half an hour of slack before the smoke test needs them. The smoke test's `images` fixture waits for
them, or builds inline, at normal priority, when no background build was started (`pytest -m docker` alone).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: the project's packages, then this folder's modules
    sys.path.insert(0, str(ROOT))
from compose_stack import (  # noqa: E402
    BASE_IMAGE,
    DOCKER,
    SMOKE_IMAGES,
    WHEELHOUSE_PORT,
    ComposeStack,
    image_exists,
)

from mlops_sandbox.settings import MnistSettings, bindable  # noqa: E402
from tests.support import module_env, server  # noqa: E402

WHEELHOUSE = ROOT / "infra" / "images" / "wheelhouse"
# Another smoke run on this machine uses the same image tags: they take turns.
LOCK = Path("/tmp/mlops-sandbox-compose-smoke.lock")
BACKGROUND_NICENESS = 10
"""The niceness of the builds beside other tests (Linux: 0 normal, 19 lowest priority)."""
ENGINE_PROCESSES = ("dockerd", "containerd")
"""The engine's daemons: each build step runs in a container whose processes descend from containerd."""


def run(argv: list[str], timeout: float) -> str:
    """Run a build step from the project root; AssertionError with its output's tail when it fails."""
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@contextmanager
def locked() -> Iterator[None]:
    """Hold the machine-wide smoke lock (flock, blocking) for the duration."""
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextmanager
def wheelhouse_server(log_dir: Path) -> Iterator[None]:
    """The wheelhouse over HTTP on 127.0.0.1:WHEELHOUSE_PORT, for pip's --find-links in the image builds."""
    args = ("--bind", "127.0.0.1", str(WHEELHOUSE_PORT), "--directory", str(WHEELHOUSE))
    # A server left on the port by an interrupted run would answer the readiness probe, and the builds would
    # take another checkout's wheels: refuse a taken port instead.
    if not bindable("127.0.0.1", WHEELHOUSE_PORT):
        raise AssertionError(
            f"127.0.0.1:{WHEELHOUSE_PORT}, the wheelhouse's port, is taken: a wheelhouse server left by an "
            f"interrupted run? (ss -ltnp | grep {WHEELHOUSE_PORT})"
        )
    with server("wheelhouse", "http.server", module_env(), log_dir, f"http://127.0.0.1:{WHEELHOUSE_PORT}/", args=args):
        yield


@contextmanager
def build_priority(niceness: int | None) -> Iterator[None]:
    """With `niceness`, the builds run at it: this process and what it starts from now on (the base image, the
    wheelhouse's download and server), and, for the duration, the engine's daemons (ENGINE_PROCESSES), whose
    containers run the build steps. The daemons' niceness is restored afterwards, so that the smoke test's
    containers run at normal priority; they are left alone unless this runs as root (only root may lower a
    niceness again). Does nothing without `niceness`."""
    if niceness is None:
        yield
        return
    os.setpriority(os.PRIO_PROCESS, 0, max(niceness, os.getpriority(os.PRIO_PROCESS, 0)))
    root = os.geteuid() == 0
    engine = [proc for proc in psutil.process_iter(["name"]) if root and proc.info["name"] in ENGINE_PROCESSES]
    before = {}
    for proc in engine:
        try:
            before[proc] = proc.nice()
            proc.nice(niceness)
        except psutil.NoSuchProcess:
            pass
    try:
        yield
    finally:
        for proc, value in before.items():
            try:
                proc.nice(value)
            except psutil.NoSuchProcess:
                pass


def build(work: Path, mnist_root: Path, niceness: int | None = None) -> list[str]:
    """Build every smoke image that is missing (the caller holds the lock); with `niceness`, at that priority
    (build_priority). Returns the image names that existed before, which the test leaves in place at the end.
    AssertionError naming the step that failed."""
    began = time.monotonic()
    run([sys.executable, ".ci/ensure_dockerd.py"], timeout=900)
    with build_priority(niceness):
        existed = build_images(work, mnist_root)
    print(f"smoke images built in {time.monotonic() - began:.0f} s", flush=True)
    return existed


def build_images(work: Path, mnist_root: Path) -> list[str]:
    """build's steps once the engine runs: the base image, the wheelhouse, then `docker compose build`."""
    existed = [name for name in [BASE_IMAGE, *SMOKE_IMAGES.values()] if image_exists(name)]
    run(["bash", ".ci/build_base_image.sh", BASE_IMAGE], timeout=900)
    run(["bash", "infra/images/build_wheelhouse.sh", str(WHEELHOUSE)], timeout=1800)
    (work / "build").mkdir(parents=True, exist_ok=True)
    builder = ComposeStack("build", work / "build", mnist_root)
    builder.set(COMPOSE_PROFILES="postgres")
    (work / "wheelhouse").mkdir(exist_ok=True)
    with wheelhouse_server(work / "wheelhouse"):
        # One build at a time: the legacy builder shares stages through its cache, and an ML build
        # alone peaks at about 16 GB.
        builder.compose("build", timeout=2400, env={"COMPOSE_PARALLEL_LIMIT": "1"})
    return existed


def image_ids() -> dict[str, str]:
    """The ID of each smoke image (tag -> sha256:...), or "" for a tag that does not exist."""
    ids = {}
    for name in SMOKE_IMAGES.values():
        found = subprocess.run(
            [DOCKER, "image", "inspect", "--format", "{{.Id}}", name], capture_output=True, text=True, timeout=60
        )
        ids[name] = found.stdout.strip() if found.returncode == 0 else ""
    return ids


def main(report: Path) -> int:
    """The background build (tests/conftest.py), at BACKGROUND_NICENESS once the engine runs."""
    with locked():
        existed = build(report.parent, MnistSettings().root.resolve(), niceness=BACKGROUND_NICENESS)
        # Another smoke run may take the lock between this build and the test, and build the same tags from
        # its own checkout: the test compares these IDs and rebuilds if they moved.
        report.write_text(json.dumps({"existed": existed, "ids": image_ids()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
