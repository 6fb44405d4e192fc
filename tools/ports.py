"""Free loopback ports for the servers that tests and the benchmark start."""

from __future__ import annotations

import functools
import os
import random
import socket
from pathlib import Path

from mlops_sandbox.settings import bindable

# Every port handed out in this process: a test asks for several ports before it starts the
# servers that bind them, and the kernel may offer a port again as soon as the probe closes
# it (CI saw MLSERVER_HTTP_PORT and MLSERVER_METRICS_PORT both get 42249).
_HANDED_OUT: set[int] = set()
# Below this, ports are either privileged or commonly configured by hand (5000, 8080, 9000).
_LOWEST = 10_000
# Its own generator, so a test that seeds the random module does not replay the same ports.
_RANDOM = random.Random()


@functools.cache
def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux' default 32768-60999), read once."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999


def _share(low: int, high: int) -> tuple[int, int]:
    """This process's share of the ports [low, high): with pytest-xdist (infra/test.sh), worker gwN of
    PYTEST_XDIST_WORKER_COUNT takes the N-th of that many equal slices, so that two test processes never hand
    out the same port. The processes that a test starts inherit both variables, and with them its slice."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 0):
        return low, high
    size = (high - low) // int(count)
    start = low + int(worker[2:]) % int(count) * size
    return start, start + size


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now and that this process has not handed out.

    The port is taken below the kernel's ephemeral range where there is room, so an outgoing
    connection made between this call and the server's bind cannot take it; and there, from this test
    process's share of the range (_share).

    Raises:
        RuntimeError: no such port was found in 200 tries.
    """
    low, _ = _ephemeral_range()
    share = _share(_LOWEST, low)
    for _ in range(200):
        if low - _LOWEST >= 1_000:
            port = _RANDOM.randrange(*share)
        else:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
        if port not in _HANDED_OUT and bindable("127.0.0.1", port):
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free TCP port on 127.0.0.1 in 200 tries")
