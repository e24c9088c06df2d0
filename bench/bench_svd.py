"""asv benchmarks for randomized SVD and fixed-accuracy approximation.

Time, peak memory and accuracy (excess error over the Eckart–Young optimum) of
``randomized_svd`` per backend, dtype and method, and of ``svd_approx`` with ``rtol``.
The peer comparison at fixed target sizes lives in ``compare_svd.py``.
"""

from __future__ import annotations

import math

import numpy as np

import lowrank

from .common import SkipNotImplemented, XPBenchmark, matrix_with_spectrum, to_backend

# (m, n, rank): a square and a tall case, small enough for a quick asv run
SHAPES = [(2048, 2048, 32), (20000, 256, 16)]
SPECTRA = {"easy": lambda k: 1.0 / np.arange(1, k + 1),
           "hard": lambda k: np.arange(1, k + 1) ** -0.5}


def _host(x):
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "cpu"):
        return x.cpu().numpy()
    if hasattr(x, "get"):
        return x.get()
    return np.asarray(x._array) if hasattr(x, "_array") else np.asarray(x)


class RandomizedSVD(XPBenchmark):
    """``randomized_svd`` at default settings (block Krylov) and with subspace iteration."""

    params = (*XPBenchmark.params, ["float64", "float32"], ["block_krylov", "subspace"],
              SHAPES, list(SPECTRA))
    param_names = (*XPBenchmark.param_names, "dtype", "method", "shape", "spectrum")
    timeout = 300

    def setup(self, backend, dtype, method, shape, spectrum):
        self.setup_backend(backend)
        m, n, self.rank = shape
        if backend == "array_api_strict" and m * n > 2048 * 2048:
            msg = "array-api-strict: square case only"
            raise SkipNotImplemented(msg)
        s = SPECTRA[spectrum](min(m, n))
        self.host = matrix_with_spectrum(m, n, s, seed=0)
        self.opt = math.sqrt(float(np.sum(s[self.rank:] ** 2)))
        self.a = self.xp.astype(to_backend(self.host, self.xp, self.device),
                                getattr(self.xp, dtype))
        self.method = method
        self.sync()

    def _run(self):
        out = lowrank.randomized_svd(self.a, self.rank, method=self.method, rng=0)
        self.sync()
        return out

    def time_randomized_svd(self, *args):
        self._run()

    def peakmem_randomized_svd(self, *args):
        self._run()

    def track_randomized_svd_excess_error(self, *args):
        U, S, Vh = (_host(x).astype(np.float64) for x in self._run())
        return float(np.linalg.norm(self.host - (U * S) @ Vh) / self.opt - 1.0)

    track_randomized_svd_excess_error.unit = "relative"


class SVDApprox(XPBenchmark):
    """``svd_approx(rtol=...)``: time, rank reached, passes and estimate honesty."""

    params = (*XPBenchmark.params, [1e-1, 1e-3])
    param_names = (*XPBenchmark.param_names, "rtol")
    timeout = 300

    def setup(self, backend, rtol):
        self.setup_backend(backend)
        s = 0.97 ** np.arange(1024)
        self.host = matrix_with_spectrum(2048, 1024, s, seed=1)
        self.a = to_backend(self.host, self.xp, self.device)
        self.rtol = rtol
        self.sync()

    def _run(self):
        res = lowrank.svd_approx(self.a, rtol=self.rtol, rng=0)
        self.sync()
        return res

    def time_svd_approx(self, *args):
        self._run()

    def track_svd_approx_rank(self, *args):
        return self._run().rank

    def track_svd_approx_passes(self, *args):
        return self._run().passes

    def track_svd_approx_estimate_over_true(self, *args):
        res = self._run()
        U, S, Vh = (_host(x) for x in (res.U, res.S, res.Vh))
        true = np.linalg.norm(self.host - (U * S) @ Vh) / np.linalg.norm(self.host)
        return float(res.error_estimate / true)
