"""memory.release: freed heap goes back to the OS (what keeps assemble's peak down after
the streamed stages)."""

from __future__ import annotations

import threading

import pytest

from saferinstruct import memory
from saferinstruct.memory import resident_mb


def churn_in_a_thread(n: int = 160_000) -> list[bytes]:
    """What a request thread does: many ~1 KB objects from its own arena, most freed, a
    few kept (they pin the arena so it cannot simply shrink from the top)."""
    kept: list[bytes] = []

    def work() -> None:
        made = [bytes(1000) + i.to_bytes(4, "little") for i in range(n)]
        kept.extend(made[::64])
        del made

    t = threading.Thread(target=work)
    t.start()
    t.join()
    return kept


def test_release_returns_freed_heap_to_the_os() -> None:
    try:
        resident_mb()
    except OSError:
        pytest.skip("no /proc/self/status here")
    base = resident_mb()
    kept = churn_in_a_thread()
    before = resident_mb()
    if before - base < 100:
        pytest.skip(f"this allocator gave freed memory back by itself ({before - base:.0f} MB)")
    asked = memory.release()
    after = resident_mb()
    if not asked:
        pytest.skip("no glibc malloc_trim here")
    assert len(kept) == 2500  # still alive and readable
    assert all(k[:1000] == bytes(1000) for k in kept)
    assert before - after > 0.6 * (before - base), (base, before, after)
