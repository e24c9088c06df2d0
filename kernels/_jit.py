"""numba CPU defaults, set once (the sgkit ``accelerate.py`` pattern)."""

import functools

import numba

# cache=True: first-call compilation costs 0.1-1.6 s per kernel; nogil lets threads overlap
# (parallel loops run on _threads.parallel_for, not numba's parallel=True: see there).
# No fastmath: results must be reproducible and IEEE-correct (NaN/Inf handling).
njit = functools.partial(numba.njit, cache=True, nogil=True)
