"""The memory floor of the comparisons: one parallel streaming read of an array.

Runs on the same thread pool as lowrank's kernels (``lowrank.kernels._threads``), not
numba's ``parallel=True``: an OpenMP region leaves spinning threads behind that slow
down whatever is timed next on a small machine (the kernels' docstring has the numbers).
"""

from __future__ import annotations

import numpy as np


def stream_read():
    """A function ``read(x)`` summing every element of ``x`` in one parallel pass."""
    import numba
    from lowrank.kernels._threads import parallel_for

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

    def read(x):
        flat = np.ravel(x)  # a view for contiguous input
        parts = np.zeros(64)
        parallel_for(chunk_sum, 64, flat, parts, 64)
        return parts.sum()

    return read
