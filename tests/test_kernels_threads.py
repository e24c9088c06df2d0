"""The kernels' thread pool (lowrank.kernels._threads): coverage, errors, no lost chunks."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from lowrank.kernels import _threads


@pytest.mark.parametrize("n_items", [0, 1, 2, 7, 100])
@pytest.mark.parametrize("n_chunks", [None, 1, 3, 64])
def test_every_item_is_visited_exactly_once(n_items, n_chunks):
    hits = np.zeros(n_items, dtype=int)
    lock = threading.Lock()

    def kernel(lo, hi, out):
        assert 0 <= lo <= hi <= n_items
        with lock:
            out[lo:hi] += 1

    _threads.parallel_for(kernel, n_items, hits, n_chunks=n_chunks)
    np.testing.assert_array_equal(hits, np.ones(n_items, dtype=int))


def test_chunks_run_on_more_than_one_thread():
    if _threads.n_workers() < 2:
        pytest.skip("one worker: nothing runs concurrently")
    seen = set()
    barrier = threading.Barrier(2, timeout=10)

    def kernel(lo, hi):
        seen.add(threading.get_ident())
        barrier.wait()  # deadlocks (times out) unless two chunks run at once

    _threads.parallel_for(kernel, 2, n_chunks=2)
    assert len(seen) == 2


def test_an_exception_in_any_chunk_propagates_after_all_finish():
    done = []

    def kernel(lo, hi):
        if lo > 0:
            msg = f"chunk at {lo}"
            raise ValueError(msg)
        done.append(lo)

    with pytest.raises(ValueError, match="chunk at"):
        _threads.parallel_for(kernel, 10, n_chunks=5)
    assert done == [0]


def test_workers_follow_numba_num_threads(monkeypatch):
    monkeypatch.setenv("NUMBA_NUM_THREADS", "3")
    assert _threads.n_workers() == 3
    monkeypatch.setenv("NUMBA_NUM_THREADS", "zero")
    assert _threads.n_workers() >= 1


def _sum_in_pool(n):
    out = np.zeros(n)

    def kernel(lo, hi, arr):
        arr[lo:hi] = 1.0

    _threads.parallel_for(kernel, n, out, n_chunks=4)
    return float(out.sum())


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
# JAX, when an earlier test imported it, warns at every fork; the child here runs only
# lowrank's own pool, never JAX
@pytest.mark.filterwarnings(r"ignore:os\.fork\(\) was called:RuntimeWarning")
def test_a_forked_child_gets_a_working_pool():
    import multiprocessing

    assert _sum_in_pool(8) == 8.0  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:  # would hang on the parent's thread-less executor
        assert pool.apply_async(_sum_in_pool, (8,)).get(timeout=30) == 8.0
