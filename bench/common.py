"""Shared asv machinery: backend parameters, device sync, seeded data (SciPy's XPBenchmark)."""

from __future__ import annotations

import importlib

import numpy as np
from lowrank.kernels._probe import gpu_available

try:
    from asv_runner.benchmarks.mark import SkipNotImplemented
except ImportError:  # running a bench_*.py file by hand without asv
    class SkipNotImplemented(NotImplementedError):
        """Raised in setup() when a parameter combination cannot run."""


BACKENDS = ["numpy", "array_api_strict", "torch:cpu", "torch:cuda", "cupy"]


def namespace(backend):
    """(xp, device) for a backend string, or raise SkipNotImplemented."""
    mod_name, _, dev = backend.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        msg = f"{mod_name} not installed"
        raise SkipNotImplemented(msg) from exc
    if backend == "torch:cuda" and not mod.cuda.is_available():
        msg = "no CUDA for torch"
        raise SkipNotImplemented(msg)
    if backend == "cupy" and not gpu_available():
        msg = "no CUDA for cupy"
        raise SkipNotImplemented(msg)
    from array_api_compat import array_namespace

    xp = array_namespace(mod.empty(0))
    return xp, (dev or None)


def synchronize(backend):
    """Wait for queued GPU work so timings are honest."""
    if backend == "torch:cuda":
        import torch

        torch.cuda.synchronize()
    elif backend == "cupy":
        import cupy

        cupy.cuda.get_current_stream().synchronize()


def to_backend(x, xp, device):
    return xp.asarray(x, device=device) if device else xp.asarray(x)


def matrix_with_spectrum(m, n, s, seed=0, dtype=np.float64):
    """m x n matrix with singular values s, as host NumPy (filled, not np.empty)."""
    rng = np.random.default_rng(seed)
    k = len(s)
    U, _ = np.linalg.qr(rng.standard_normal((m, k)))
    V, _ = np.linalg.qr(rng.standard_normal((n, k)))
    return ((U * s) @ V.T).astype(dtype)


class XPBenchmark:
    """Base class: one ``backend`` parameter; subclasses extend ``params``."""

    params = (BACKENDS,)
    param_names = ("backend",)

    def setup_backend(self, backend):
        self.backend = backend
        self.xp, self.device = namespace(backend)

    def sync(self):
        synchronize(self.backend)
