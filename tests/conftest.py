from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlops_sandbox.mnist import has_raw_files
from mlops_sandbox.processes import start_group, stop_group
from mlops_sandbox.settings import MnistSettings

COMPOSE_IMAGES = Path(__file__).resolve().parent / "compose" / "compose_images.py"


@dataclass
class ImageBuild:
    """The compose smoke test's image builds, running in the background (tests/compose/compose_images.py)."""

    process: subprocess.Popen[bytes]
    log: Path
    report: Path

    def wait(self, timeout: float) -> dict[str, Any]:
        """Wait for the builds (seconds); their report: `existed`, the names of the images that existed before,
        and `ids`, each built image's ID. pytest.fail with the log's tail when the builds failed or outlast
        `timeout`."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(self.process.pid, grace=30, leader=self.process)
            pytest.fail(f"the image builds took over {timeout:.0f} s: {self.log}\n{self.log.read_text()[-3000:]}")
        if code != 0:
            pytest.fail(f"the image builds failed (exit {code}): {self.log}\n{self.log.read_text()[-5000:]}")
        report: dict[str, Any] = json.loads(self.report.read_text())
        return report


IMAGE_BUILD = pytest.StashKey[ImageBuild]()


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected what they deselect
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Docker tests last; when other tests run first, their image builds start now, in the background, so
    that they overlap those tests (about 7 minutes of builds, in CI's run on 2 cores)."""
    docker = [item for item in items if item.get_closest_marker("docker")]
    others = [item for item in items if not item.get_closest_marker("docker")]
    items[:] = others + docker
    if docker and others and not config.option.collectonly:
        work = Path(tempfile.mkdtemp(prefix="mlops-sandbox-images-"))
        log = work / "build.log"
        with log.open("wb") as out:
            process = start_group([sys.executable, str(COMPOSE_IMAGES), str(work / "report.json")], stdout=out.fileno())
        config.stash[IMAGE_BUILD] = ImageBuild(process, log, work / "report.json")


def pytest_unconfigure(config: pytest.Config) -> None:
    build = config.stash.get(IMAGE_BUILD, None)
    if build is not None and build.process.poll() is None:  # the session ended early: stop the builds
        stop_group(build.process.pid, grace=30, leader=build.process)


@pytest.fixture(scope="session")
def image_build(request: pytest.FixtureRequest) -> ImageBuild | None:
    """The background image builds of this session, or None when none were started."""
    return request.config.stash.get(IMAGE_BUILD, None)


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The MNIST root the tests read: SANDBOX_MNIST_ROOT, else data/mnist (.ci/run sets SANDBOX_MNIST_ROOT)."""
    root = MnistSettings().root.resolve()
    if not has_raw_files(root):
        pytest.fail(
            f"MNIST is not at {root}: set SANDBOX_MNIST_ROOT to a torchvision root with MNIST/raw/*-ubyte "
            "(the tests need real MNIST images)"
        )
    return root
