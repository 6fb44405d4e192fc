from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
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
    """The compose smoke test's image builds (tests/compose/compose_images.py), running in the background in
    `directory`, which every test process of the session knows: the builds' `build.log`, `pid` (their process
    group), and once they have ended, `report.json` and `status` (their exit code)."""

    directory: Path
    process: subprocess.Popen[bytes] | None = None
    """The builds' leader when this process started them: reaped here, since a zombie leader keeps its group
    alive."""

    @property
    def log(self) -> Path:
        return self.directory / "build.log"

    def start(self) -> None:
        """Start the builds as a process group of their own, which outlives the test process that started it
        (the session's last process stops it: pytest_unconfigure)."""
        script = 'python="$1"; shift; "$python" "$@"; echo $? > "$STATUS.tmp" && mv "$STATUS.tmp" "$STATUS"'
        argv = ["sh", "-c", script, "sh", sys.executable, str(COMPOSE_IMAGES), str(self.directory / "report.json")]
        env = dict(os.environ, STATUS=str(self.directory / "status"))
        self.directory.mkdir(mode=0o700)
        with self.log.open("wb") as out:
            self.process = start_group(argv, env=env, stdout=out.fileno())
        (self.directory / "pid").write_text(str(self.process.pid))

    def started(self) -> bool:
        return (self.directory / "pid").exists()

    def stop(self) -> None:
        """Stop the builds if they still run: the session ended before they did."""
        if self.started() and not (self.directory / "status").exists():
            stop_group(int((self.directory / "pid").read_text()), grace=30, leader=self.process)

    def wait(self, timeout: float) -> dict[str, Any]:
        """Wait for the builds (seconds); their report: `existed`, the names of the images that existed before,
        and `ids`, each built image's ID. pytest.fail with the log's tail when the builds failed or outlast
        `timeout`."""
        status = self.directory / "status"
        deadline = time.monotonic() + timeout
        while not status.exists():
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the image builds took over {timeout:.0f} s: {self.log}\n{self.log.read_text()[-3000:]}")
            time.sleep(1)
        if self.process is not None:
            self.process.wait()
        code = int(status.read_text())
        if code != 0:
            pytest.fail(f"the image builds failed (exit {code}): {self.log}\n{self.log.read_text()[-5000:]}")
        report: dict[str, Any] = json.loads((self.directory / "report.json").read_text())
        return report


IMAGE_BUILD = pytest.StashKey[ImageBuild]()
IMAGE_BUILD_INPUT = "sandbox_image_build"
"""The key of the builds' directory in pytest-xdist's `workerinput`, which the controller hands each worker."""


def pytest_configure(config: pytest.Config) -> None:
    """The builds' directory: named by the session's first process (pytest-xdist's controller, or the only
    process), and handed to its workers (pytest_configure_node)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:  # made only if the builds start
        directory = Path(tempfile.gettempdir()) / f"mlops-sandbox-images-{uuid.uuid4().hex[:12]}"
    else:
        directory = Path(workerinput[IMAGE_BUILD_INPUT])
    config.stash[IMAGE_BUILD] = ImageBuild(directory)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist's hook, in the controller, for each worker it starts: the builds' directory."""
    node.workerinput[IMAGE_BUILD_INPUT] = str(node.config.stash[IMAGE_BUILD].directory)


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected what they deselect
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Docker tests first: when other tests run too, their image builds start now, in the background, so that
    they overlap those tests (about 10 minutes of builds on CI's 2 cores). In one process, the docker tests run
    last, once the builds are done; with two (infra/test.sh), one process waits for the builds, which take
    the cores it leaves, and runs the docker tests while the other runs the rest."""
    docker = [item for item in items if item.get_closest_marker("docker")]
    others = [item for item in items if not item.get_closest_marker("docker")]
    distributed = hasattr(config, "workerinput")
    items[:] = docker + others if distributed else others + docker
    # Every worker collects the same tests: the first one starts the builds.
    first = not distributed or config.workerinput["workerid"] == "gw0"  # type: ignore[attr-defined]
    if docker and others and first and not config.option.collectonly:
        config.stash[IMAGE_BUILD].start()


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the session's last process: stop the builds if they still run
        build = config.stash.get(IMAGE_BUILD, None)
        if build is not None:
            build.stop()


@pytest.fixture(scope="session")
def image_build(request: pytest.FixtureRequest) -> ImageBuild | None:
    """The background image builds of this session, or None when none were started."""
    build = request.config.stash[IMAGE_BUILD]
    return build if build.started() else None


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
