"""Make a Docker engine usable on this machine, for the compose smoke test; idempotent. Prints the client's path.

    .venv/bin/python .ci/ensure_dockerd.py

As root and when missing, it installs docker.io and debootstrap from Debian, then starts dockerd in the
background (there is no systemd here) and waits, boundedly, until `docker info` answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from mlops_sandbox.waiting import DependencyUnavailable, NotReadyYet, wait_for

# Debian's client; another `docker` earlier in PATH may not build images.
DOCKER = "/usr/bin/docker"
LOG = Path(os.environ.get("DOCKERD_LOG", "/var/log/dockerd-smoke.log"))
WAIT_SECONDS = float(os.environ.get("DOCKERD_WAIT_SECONDS", "60"))


def engine_answers() -> bool:
    return subprocess.run([DOCKER, "info"], capture_output=True, timeout=30).returncode == 0


def main() -> int:
    root = os.geteuid() == 0
    if not (Path(DOCKER).exists() and shutil.which("dockerd") and shutil.which("debootstrap")):
        if not root:
            sys.exit("error: docker.io and debootstrap are missing; as root: apt-get install docker.io debootstrap")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "docker.io", "debootstrap"],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
    if not engine_answers():
        if not root:
            sys.exit("error: the Docker engine is not running and only root can start it here")
        if subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode != 0:
            print(f"starting dockerd (log: {LOG})", file=sys.stderr)
            with open(LOG, "ab") as log:
                # A session of its own: the engine outlives this script and the test that called it.
                subprocess.Popen(["dockerd"], stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)

        def probe() -> None:
            if not engine_answers():
                raise NotReadyYet("docker info fails")

        try:
            wait_for(probe, service="dockerd", address="unix:///var/run/docker.sock", timeout=WAIT_SECONDS)
        except DependencyUnavailable as err:
            tail = LOG.read_text(errors="replace").splitlines()[-20:] if LOG.exists() else []
            sys.exit(f"error: {err}\nits log {LOG} ends with:\n" + "\n".join(tail))
    print(DOCKER)
    return 0


if __name__ == "__main__":
    sys.exit(main())
