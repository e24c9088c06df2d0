"""The memory floor of the comparisons: one parallel streaming read of an array.

Two implementations, and the faster one counts: numba's ``parallel=True`` (OpenMP
workers, which answer at once but keep spinning afterwards) and the thread pool of
lowrank's CR kernels (``lowrank.kernels._threads``, whose sleeping workers can wait for
cores held by other libraries' spinning threads). Taking the minimum keeps the floor
from being inflated by either effect.
"""

from __future__ import annotations

import numpy as np


def _kernels():
    import numba

    @numba.njit(nogil=True, cache=True)
    def chunk_sum(lo, hi, flat, out, n_chunks):
        size = flat.shape[0]
        for c in range(lo, hi):
            acc = np.zeros(8, dtype=flat.dtype)  # eight lanes: the loads pipeline
            start, stop = c * size // n_chunks, (c + 1) * size // n_chunks
            body = start + (stop - start) // 8 * 8
            for i in range(start, body, 8):
                for k in range(8):
                    acc[k] += flat[i + k]
            for i in range(body, stop):
                acc[0] += flat[i]
            out[c] = acc.sum()

    @numba.njit(nogil=True, cache=True, parallel=True)
    def omp_sum(flat, out, n_chunks):
        for c in numba.prange(n_chunks):
            chunk_sum(c, c + 1, flat, out, n_chunks)

    return chunk_sum, omp_sum


def stream_readers():
    """Two ``read(x)`` functions (thread pool, OpenMP) summing ``x`` in one parallel pass.

    Time both and take the smaller median as the floor.
    """
    from lowrank.kernels._threads import parallel_for

    chunk_sum, omp_sum = _kernels()
    parts = np.zeros(64)

    def pool(x):
        parallel_for(chunk_sum, 64, np.ravel(x), parts, 64)
        return parts.sum()

    def omp(x):
        omp_sum(np.ravel(x), parts, 64)
        return parts.sum()

    return pool, omp
