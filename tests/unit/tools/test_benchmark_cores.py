"""Cores per process tree while a case is measured: a busy tree shows about a core, an idle one about none."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from tools.benchmark.cores import CoreUse, while_running

# The leader only waits; the work is done by its child, which a tree must count as well.
BUSY_CHILD = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'while True: pass'])"


@pytest.fixture
def trees() -> Iterator[dict[str, int]]:
    busy = subprocess.Popen([sys.executable, "-c", BUSY_CHILD])
    # It says when it is up: its own start is CPU time, which must fall before the measured second.
    idle_code = "import time; print('sleeping', flush=True); time.sleep(60)"
    idle = subprocess.Popen([sys.executable, "-c", idle_code], stdout=subprocess.PIPE, text=True)
    assert idle.stdout is not None and idle.stdout.readline() == "sleeping\n"
    deadline = time.monotonic() + 30
    while not psutil.Process(busy.pid).children() and time.monotonic() < deadline:
        time.sleep(0.05)  # the busy one's child started, and spinning
    yield {"busy": busy.pid, "idle": idle.pid}
    for process in (busy, idle):
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        process.wait()
    idle.stdout.close()


def test_a_busy_tree_uses_about_a_core_and_an_idle_one_none(trees: dict[str, int]) -> None:
    def measured_case() -> str:
        time.sleep(1.0)
        return "its result"

    (spinner,) = psutil.Process(trees["busy"]).children()

    def spinner_cpu() -> float:
        times = spinner.cpu_times()
        return times.user + times.system

    start = spinner_cpu()
    answer, used = while_running(measured_case, trees)
    spun = (spinner_cpu() - start) / used.seconds
    assert answer == "its result"
    assert used.seconds == pytest.approx(1.0, abs=0.2)
    # The busy tree is its waiting leader and the spinning child: it counts what the child used, measured here
    # on the child itself (on an idle machine a core; less when other tests hold the cores, so not a core).
    assert spun > 0.1, spun
    assert used.trees["busy"] == pytest.approx(spun, abs=0.05), (used, spun)
    assert used.trees["idle"] < 0.05, used
    # The spinning child holds one of the machine's cores: at most the others idle.
    assert used.idle < (os.cpu_count() or 1) - 0.5, used


def test_cpu_per_request_is_the_trees_cpu_time_over_the_requests() -> None:
    used = CoreUse({"d": 0.9}, idle=0.7, seconds=5.0)
    assert used.cpu_per_request_us("d", 15_000) == pytest.approx(300.0)  # 4.5 s of CPU over 15,000 requests
    assert math.isnan(used.cpu_per_request_us("f", 15_000))
    assert math.isnan(used.cpu_per_request_us("d", 0))
