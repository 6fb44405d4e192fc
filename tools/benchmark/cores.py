"""Where the machine's cores went while one case was measured: each server's process tree, and what stayed idle.

A closed-loop load (every client waits for its answer before it sends again) can fall short of a server's
capacity in two ways that throughput alone cannot tell apart: the machine ran out of cores (the server, the
load generator and a proxy in front of the server fought over them), or the server ran out of requests (the
answers and the next requests spent their time somewhere else, and the server waited for them). Measured
beside each case: CPU seconds of each process tree per second of wall time (cores; 1.00 is one core busy all
along), and the idle cores of the whole machine (psutil: /proc/PID/stat of every process in a tree, all its
threads, and /proc/stat).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import psutil

from tools.benchmark.servers import process_tree

T = TypeVar("T")


@dataclass(frozen=True)
class CoreUse:
    """Cores each process tree used over `seconds` of wall time, by the name it was given, and the cores of
    the machine that stayed idle over the same time (a 2-core machine has 2.00 cores to spend)."""

    trees: dict[str, float]
    idle: float
    seconds: float

    def cpu_per_request_us(self, tree: str, requests: int) -> float:
        """CPU time of `tree` per request answered, in microseconds; NaN without requests or that tree."""
        if not requests or tree not in self.trees:
            return float("nan")
        return self.trees[tree] * self.seconds / requests * 1e6


def tree_cpu_seconds(pid: int) -> float:
    """User and system CPU seconds so far of process `pid` and every process below it (all their threads).
    A descendant that exits while this reads is left out; psutil.NoSuchProcess if `pid` itself is gone."""
    total = 0.0
    for process in process_tree(pid):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def while_running(run: Callable[[], T], trees: dict[str, int]) -> tuple[T, CoreUse]:
    """`run()`'s result, and the cores each tree of `trees` (a name -> its leader's pid) and the idle machine
    had while it ran. Processes that start and exit inside `run` (a load generator) are in no tree's figure,
    only in the machine's idle one."""
    before = {name: tree_cpu_seconds(pid) for name, pid in trees.items()}
    idle_before = psutil.cpu_times().idle
    began = time.monotonic()
    result = run()
    seconds = time.monotonic() - began
    idle = (psutil.cpu_times().idle - idle_before) / seconds
    used = {name: (tree_cpu_seconds(pid) - before[name]) / seconds for name, pid in trees.items()}
    return result, CoreUse(used, idle, seconds)
