"""After a large request the serving process gives its freed heap back: an idle server holds what it needs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading

import pytest

from services.serving.heap import MALLOC_TRIM, HeapTrimmer

# A heap left as a large request leaves it: 2,000 blocks of 100 kB (under glibc's mmap threshold, so inside
# the heap), every 50th still alive, so that no free block is at the top, where free() alone would return it.
FRAGMENTED_HEAP = textwrap.dedent(
    """
    import psutil
    from services.serving.heap import trim_heap

    def rss():
        return psutil.Process().memory_info().rss // 2**20

    blocks = [bytearray(100_000) for _ in range(2_000)]
    kept = blocks[::50]
    del blocks
    freed = rss()
    released = trim_heap()
    print(freed, rss(), released)
    """
)


@pytest.mark.skipif(MALLOC_TRIM is None, reason="the C library has no malloc_trim (not glibc)")
def test_trimming_returns_the_freed_middle_of_the_heap_to_the_system() -> None:
    out = subprocess.run([sys.executable, "-c", FRAGMENTED_HEAP], capture_output=True, text=True, check=True)
    freed, trimmed, released = out.stdout.split()

    # 190 MiB were freed but stayed resident; the trim gives back most of it.
    assert released == "True"
    assert int(freed) - int(trimmed) > 150, out.stdout


def test_one_trim_follows_a_burst_of_requests_off_the_event_loop_and_none_runs_while_they_keep_coming() -> None:
    threads: list[str] = []

    def trim() -> bool:
        threads.append(threading.current_thread().name)
        return True

    trimmer = HeapTrimmer(idle=0.1, trim=trim)

    async def serve() -> None:
        for _ in range(15):  # a request every 20 ms for 0.3 s: never 0.1 s of quiet
            trimmer.after_request()
            await asyncio.sleep(0.02)
        assert threads == [], "no trim while requests keep coming"
        await asyncio.sleep(0.3)

    asyncio.run(serve())
    assert trimmer.trims == 1
    assert len(threads) == 1 and threads[0] != "MainThread"
