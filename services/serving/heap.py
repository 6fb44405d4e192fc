"""Giving the heap that requests used back to the operating system (glibc's `malloc_trim`).

Requests leave their freed buffers inside the C heap: glibc returns memory to the system only from the top of
the heap, and raises its mmap threshold once a request frees a large block, so later large buffers land in
the heap too. An idle server then holds what its last requests used: 8 MiB of PSS after the local stack's
final check (100 requests of 100 images), measured with tools/benchmark/memory.py by calling `malloc_trim(0)`
in the running server. `malloc_trim(0)` also releases whole free pages inside the heap (glibc >= 2.8, man 3
malloc_trim).
"""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable

TRIM_IDLE_SECONDS = 1.0
"""How long the server must have had no request before the trim runs (seconds). Under steady load it never
runs: the trim holds the heap's lock while it walks it, and would add to some request's latency."""


def _libc_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


MALLOC_TRIM = _libc_malloc_trim()


def trim_heap() -> bool:
    """Release the free memory of every malloc arena to the system; True when some was released. False
    without glibc."""
    return bool(MALLOC_TRIM(0)) if MALLOC_TRIM is not None else False


class HeapTrimmer:
    """Runs trim_heap once the server has been idle for `idle` seconds after some requests, in a worker thread
    of the running event loop, so the loop is not held while glibc walks the heap."""

    def __init__(self, idle: float = TRIM_IDLE_SECONDS, trim: Callable[[], bool] = trim_heap) -> None:
        self.idle, self.trim = idle, trim
        self.last_request = 0.0
        # The loop a look is scheduled on; a loop that closed before its look ran leaves none pending.
        self.pending: asyncio.AbstractEventLoop | None = None
        self.trims = 0

    def after_request(self) -> None:
        """Note a request; from inside the event loop (RuntimeError outside it). One float per request: the
        scheduled look reschedules itself while requests keep coming."""
        loop = asyncio.get_running_loop()
        self.last_request = loop.time()
        if self.pending is not loop:
            self.pending = loop
            loop.call_later(self.idle, self._look)

    def _look(self) -> None:
        loop = asyncio.get_running_loop()
        quiet = loop.time() - self.last_request
        if quiet < self.idle:
            loop.call_later(self.idle - quiet, self._look)
            return
        self.pending = None
        self.trims += 1
        loop.run_in_executor(None, self.trim)
