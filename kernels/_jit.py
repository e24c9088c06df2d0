"""numba CPU defaults, set once (the sgkit ``accelerate.py`` pattern)."""

import functools

import numba

# cache=True: first-call compilation costs 0.1-1.6 s per kernel; nogil lets threads overlap.
# pjit (numba's OpenMP layer) suits compute-bound kernels (volumes); the memory-bound CR
# kernels, which always precede a GEMM, run on _threads.parallel_for instead (see there).
# No fastmath: results must be reproducible and IEEE-correct (NaN/Inf handling).
njit = functools.partial(numba.njit, cache=True, nogil=True)
pjit = functools.partial(numba.njit, cache=True, nogil=True, parallel=True)
