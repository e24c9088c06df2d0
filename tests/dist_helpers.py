"""Run a test's torch.distributed ranks in fresh processes that fail instead of hanging."""

from __future__ import annotations

import socket
import time

import pytest


def free_port() -> int:
    """A TCP port on the loopback that was free a moment ago (for MASTER_PORT)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(worker, args, *, world: int = 2, timeout: float = 240.0) -> None:
    """Run ``worker(rank, *args)`` for every rank in spawned processes; join with a deadline.

    Spawned, not forked: by the time a distributed test runs, the test process holds
    threads (BLAS, numba, dask, JAX pools) whose locks a forked child inherits locked,
    and such a child can wait forever. A rank that raises fails the test with its
    traceback; ranks still running at the deadline are killed and the test fails.
    """
    import torch.multiprocessing as mp

    ctx = mp.start_processes(worker, args=args, nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=5.0):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail(f"distributed ranks still running after {timeout:.0f} s (killed)")
