"""numba CPU defaults, set once (the sgkit ``accelerate.py`` pattern)."""

import functools

import numba

# cache=True: first-call compilation costs 0.1-1.6 s per kernel; nogil lets threads overlap.
# No parallel=True (numba's OpenMP layer): every kernel, compute-bound volumes included,
# runs its chunks on _threads.parallel_for, whose idle workers sleep instead of spinning
# on the cores that the following BLAS call needs (see there).
# No fastmath: results must be reproducible and IEEE-correct (NaN/Inf handling).
njit = functools.partial(numba.njit, cache=True, nogil=True)


class slp_vectorizer:  # used like a function: ``with slp_vectorizer():``
    """Compile with LLVM's SLP vectoriser on (numba's default is off).

    It packs the written-out lane chains of the volume kernels (``a0 … a7`` scalars, one
    per matrix) into SIMD registers, without reordering any floating-point operation.
    numba reads the flag when it optimises a module, i.e. at the first (compiling) call;
    cached machine code keeps it. A class rather than a generator: it wraps every call,
    and this costs a tenth as much.
    """

    def __enter__(self):
        self.old = getattr(numba.config, "SLP_VECTORIZE", None)
        if self.old is not None:
            numba.config.SLP_VECTORIZE = 1

    def __exit__(self, *exc):
        if self.old is not None:
            numba.config.SLP_VECTORIZE = self.old
