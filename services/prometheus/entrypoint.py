"""The sandbox's metrics server: Debian's (or your) `prometheus` binary, configured from PrometheusSettings.

    python -m services.prometheus.entrypoint

Writes prometheus.yml into SANDBOX_PROMETHEUS_DATA_DIR and runs Prometheus on it. The local stack runs it;
compose (profile monitoring) runs Prometheus's own image on the committed rendering, prometheus.compose.yml.
"""

from __future__ import annotations

import os
import shutil
import sys

import yaml
from pydantic import ValidationError

from mlops_sandbox.processes import replace_process
from services.prometheus.config import render
from services.prometheus.settings import PrometheusSettings


def prometheus_binary() -> str:
    """The `prometheus` executable on PATH; SystemExit naming the package when there is none."""
    found = shutil.which("prometheus")
    if not found:
        raise SystemExit("prometheus not found: apt-get install prometheus (Debian), or put its binary on PATH")
    return found


def main() -> int:
    try:
        settings = PrometheusSettings()
    except ValidationError as err:
        print(f"invalid Prometheus settings:\n{err}", file=sys.stderr)
        return 2
    binary = prometheus_binary()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    config = settings.data_dir / "prometheus.yml"
    config.write_text(yaml.safe_dump(render(settings), sort_keys=False))
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={settings.data_dir / 'tsdb'}",
        f"--storage.tsdb.retention.time={settings.retention}",
        f"--web.listen-address={settings.address}",
        # POST /-/reload re-reads the configuration and rules without losing samples.
        "--web.enable-lifecycle",
    ]
    print(f"prometheus: http://{settings.address} scraping every {settings.scrape_interval_seconds:g} s", flush=True)
    # Exec into Prometheus itself: one process that shuts down cleanly on SIGTERM (it flushes its TSDB head),
    # so no supervisor interpreter is kept for it (7 MiB of PSS, measured with tools/benchmark/memory.py).
    replace_process(argv, dict(os.environ))


if __name__ == "__main__":
    sys.exit(main())
