"""GPU presence probes that import neither numba nor (at module level) cupy."""

import os


def simulator_enabled():
    """Whether numba's CUDA simulator is on (read by numba at import time)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


def gpu_available():
    """Whether a real CUDA device is usable, probed through CuPy (never numba).

    ``numba.cuda.is_available()`` returns True under the simulator, so it cannot tell.
    ImportError (no CuPy, or no CUDA libraries) and CUDARuntimeError (no driver) both
    mean "no GPU backend".
    """
    try:
        import cupy
        from cupy.cuda.runtime import CUDARuntimeError
    except ImportError:
        return False
    try:
        return bool(cupy.cuda.is_available())
    except CUDARuntimeError:
        return False
