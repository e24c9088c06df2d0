"""Parallel loops for memory-bound CPU kernels: nogil numba kernels on a Python thread pool.

Why not ``prange``: numba's OpenMP threading layer (GNU libgomp) leaves its workers
spinning for milliseconds after every parallel region (libgomp's default spin count).
The CR kernels are always followed by a BLAS product, and on a machine with few cores
the spinning workers steal the cores OpenBLAS needs: measured on 2 vCPUs, a 3 ms column
gather followed by a 22 ms float32 GEMM took 38 ms instead of 26 ms. Threads of a
``ThreadPoolExecutor`` sleep on a lock between calls, need no threading layer at all (so
no layer choice or ``OMP_WAIT_POLICY`` is imposed on the user's process), and survive a
fork (the child starts its own pool).

The volume kernel runs here too: numba's static ``prange`` schedule waits for every
worker, so one core held by another library's spinning threads stalls the whole region
(measured in ``bench/peers/compare_volume.py``: float32 volumes 2.1x slower than float64
and 64×8 volumes 4.6x slower than ``slogdet(aᵀa)`` with ``prange``, against 0.8-1.0x and
0.5x here). Many small chunks, the calling thread taking its share, and helpers that have
not started by the end cancelled, make a busy core cost nothing.

Kernels take ``(lo, hi, *args)`` and process items ``lo..hi-1``; they must be compiled
with ``nogil=True`` (``_jit.njit``) so the chunks really run at once.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

__all__ = ["n_workers", "parallel_for"]

_POOL: ThreadPoolExecutor | None = None
_LOCK = threading.Lock()


def n_workers() -> int:
    """Threads used by :func:`parallel_for`: ``NUMBA_NUM_THREADS`` or the usable cores."""
    env = os.environ.get("NUMBA_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _forget_pool_in_child() -> None:
    # a forked child inherits the executor object but none of its threads: work sent to
    # it would never run, so the child starts a pool of its own on first use
    global _POOL, _LOCK
    _POOL, _LOCK = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(
                max_workers=max(1, n_workers() - 1), thread_name_prefix="lowrank-kernel"
            )
        return _POOL


def parallel_for(kernel, n_items: int, *args, n_chunks: int | None = None) -> None:
    """Run ``kernel(lo, hi, *args)`` over ``[0, n_items)`` split into contiguous chunks.

    ``n_chunks`` (default: one per worker) may exceed the workers for load balance: the
    calling thread and the pool threads take chunks in order until none is left. With
    one chunk this is a plain call. The first exception from any chunk propagates after
    every running chunk has finished.
    """
    chunks = min(n_items, n_chunks or n_workers())
    if chunks <= 1:
        kernel(0, n_items, *args)
        return
    bounds = iter([(c * n_items // chunks, (c + 1) * n_items // chunks) for c in range(chunks)])
    lock = threading.Lock()

    def drain():
        while True:
            with lock:
                span = next(bounds, None)
            if span is None:
                return
            kernel(*span, *args)

    helpers = [_pool().submit(drain) for _ in range(min(n_workers(), chunks) - 1)]
    try:
        drain()
    finally:
        # a helper that has not started yet (its core is busy elsewhere) would only find
        # the chunks gone: cancel it instead of waiting for it to be scheduled
        for fut in helpers:
            fut.cancel()
        wait(helpers)  # no chunk may still be writing when we return or raise
    for fut in helpers:
        if not fut.cancelled():
            fut.result()
