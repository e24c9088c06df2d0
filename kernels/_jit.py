"""numba CPU defaults, set once (the sgkit ``accelerate.py`` pattern)."""

import functools

import numba

# cache=True: first-call compilation costs 0.1-1.6 s per kernel; nogil lets threads overlap.
# No parallel=True (numba's OpenMP layer): every kernel, compute-bound volumes included,
# runs its chunks on _threads.parallel_for, whose idle workers sleep instead of spinning
# on the cores that the following BLAS call needs (see there).
# No fastmath: results must be reproducible and IEEE-correct (NaN/Inf handling).
njit = functools.partial(numba.njit, cache=True, nogil=True)
