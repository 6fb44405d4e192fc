"""The router's process once its configuration is written: Envoy under a supervisor, and the lease watchdog.

    python -m services.router.watchdog --admin http://127.0.0.1:8079 --grace 10 -- envoy --config-path ...

The entrypoint (services/router/entrypoint.py) reads the settings and renders Envoy's configuration, then
execs into this, which imports neither pydantic nor the settings: it lives as long as the router does
(10 MiB of PSS against 28 MiB for the entrypoint that did it all, measured with tools/benchmark/memory.py).
The watchdog thread sends all traffic back to production when the split is not covered by a live rollout
lease: a killed rollout controller leaves no candidate weight behind.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

from mlops_sandbox.processes import run_supervised
from mlops_sandbox.router import RouterAdmin, RouterUnavailable

WATCHDOG_SECONDS = 1.0
"""How often the watchdog looks at the split and the lease (seconds)."""


def withdraw_unleased_split(admin: RouterAdmin, now: float) -> bool:
    """Send all traffic back to production when the candidate has a share, or a mirror, that no live lease
    covers: its controller was killed, or someone changed the split by hand. True when it did.

    RouterUnavailable when the admin API does not answer.
    """
    split = admin.split()
    if not split.candidate_percent and not split.shadow_percent:
        return False
    lease = admin.lease()
    if lease is not None and lease.live(now):
        return False
    admin.reset()
    who = f"the lease of {lease.owner} expired" if lease else "no rollout holds the lease"
    print(
        f"router: {who}: all traffic back on production (was {split.candidate_percent:g} % to the candidate,"
        f" {split.shadow_percent:g} % mirrored)",
        flush=True,
    )
    return True


def watch(admin: RouterAdmin, stop: threading.Event) -> None:
    """Run withdraw_unleased_split every WATCHDOG_SECONDS until `stop` is set."""
    while not stop.wait(WATCHDOG_SECONDS):
        try:
            withdraw_unleased_split(admin, time.time())
        except (RouterUnavailable, ValueError):
            pass  # Envoy is starting or stopping; the next look decides


def main(argv: list[str] | None = None) -> int:
    """Run Envoy's command under run_supervised with the watchdog beside it; Envoy's exit code (0 after a
    requested stop). 2 with the usage for wrong arguments."""
    parser = argparse.ArgumentParser(prog="python -m services.router.watchdog", description=__doc__)
    parser.add_argument("--admin", required=True, help="Envoy's admin API, http://host:port")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds before Envoy is killed on a stop")
    parser.add_argument("command", nargs="+", help="Envoy's command, after --")
    args = parser.parse_args(argv)
    stop = threading.Event()
    admin = RouterAdmin(args.admin, timeout=2.0)
    threading.Thread(target=watch, args=(admin, stop), name="lease-watchdog", daemon=True).start()
    try:
        return run_supervised(args.command, env=dict(os.environ), grace=args.grace, name="router")
    finally:
        stop.set()


if __name__ == "__main__":
    sys.exit(main())
