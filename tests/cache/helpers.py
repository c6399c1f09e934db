"""Helpers shared by the cache tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def in_threads(n: int, call: Callable[[], Any], timeout: float = 10.0) -> list[Any]:
    """Run ``call`` in ``n`` threads released together; return each result or exception."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = call()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    return results
