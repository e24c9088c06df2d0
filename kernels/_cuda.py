"""numba-cuda launch utilities: GPU probe, simulator check, CuPy stream, launch config."""

from numba import cuda

from ._probe import gpu_available, simulator_enabled

__all__ = ["current_stream", "gpu_available", "launch_config", "simulator_enabled"]


def current_stream():
    """CuPy's current stream wrapped for numba, or the default stream (simulator/no CuPy)."""
    if simulator_enabled():
        return 0  # the simulator has no stream objects; 0 is the default stream
    try:
        import cupy
    except ImportError:
        return 0
    return cuda.external_stream(cupy.cuda.get_current_stream().ptr)


def launch_config(n_items, threads_per_block=None, max_blocks=65535):
    """(blocks, threads) for a grid-stride loop over ``n_items``."""
    threads = threads_per_block or (32 if simulator_enabled() else 256)
    blocks = max(1, min(max_blocks, (n_items + threads - 1) // threads))
    if simulator_enabled():  # the simulator runs one Python thread per GPU thread
        blocks = min(blocks, 2)
    return blocks, threads
