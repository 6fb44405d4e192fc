"""What the running local stack holds in memory: the PSS of each service's process tree.

    python -m tools.benchmark.memory                 # the stack in SANDBOX_DIR (.sandbox), as `up` left it
    python -m tools.benchmark.memory --processes     # and every process of each tree

PSS (proportional set size, from /proc/PID/smaps_rollup through psutil) counts each page a process maps once
in total over all the processes that share it: a library page shared by both serving endpoints' MLServer
processes counts half in each. The sum over the trees is what the stack costs the machine, which RSS, which
counts shared pages in full in every process, overstates. Issue 15's goal: at most 1.5 GiB for the idle
stack, router and Prometheus included.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import psutil

from infra.local.processes import Processes
from infra.local.settings import LocalStackSettings
from infra.local.stack import ENV_FILE, SERVICE_ORDER, read_env_file
from tools.benchmark.servers import process_tree

MIB = 1024 * 1024


@dataclass(frozen=True)
class ProcessMemory:
    """One process: its pid, a short form of its command line, and its PSS and RSS in bytes."""

    pid: int
    command: str
    pss: int
    rss: int


def short_command(process: psutil.Process) -> str:
    """The program and what it runs (`python -m MODULE`, `mlflow models serve`, `mlserver start`), 60 characters."""
    argv = process.cmdline()
    if not argv:
        return process.name()
    words = [argv[0].rsplit("/", 1)[-1], *argv[1:4]]
    return " ".join(words)[:60]


def tree_memory(pid: int) -> list[ProcessMemory]:
    """PSS and RSS of `pid` and all its descendants (bytes). psutil.NoSuchProcess if `pid` is gone; a
    descendant that exits meanwhile is left out."""
    found = []
    for process in process_tree(pid):
        try:
            info = process.memory_full_info()
            found.append(ProcessMemory(process.pid, short_command(process), info.pss, info.rss))
        except psutil.NoSuchProcess:
            continue
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.benchmark.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", action="store_true", help="list every process of each tree")
    args = parser.parse_args(argv)
    read_env_file(ENV_FILE)
    settings = LocalStackSettings()
    processes = Processes(settings.run, settings.logs, lambda name: {})
    total = 0
    print(f"{'service':16} {'processes':>9} {'PSS MiB':>8} {'RSS MiB':>8}")
    for name in SERVICE_ORDER:
        running = processes.running(name)
        if running is None:
            print(f"{name:16} {'not running':>9}")
            continue
        tree = tree_memory(running.pid)
        pss = sum(p.pss for p in tree)
        total += pss
        print(f"{name:16} {len(tree):9d} {pss / MIB:8.0f} {sum(p.rss for p in tree) / MIB:8.0f}")
        if args.processes:
            for p in tree:
                print(f"  {p.pid:>8} {p.pss / MIB:6.0f} {p.rss / MIB:6.0f}  {p.command}")
    print(f"{'total':16} {'':9} {total / MIB:8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
