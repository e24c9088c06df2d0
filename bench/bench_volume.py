"""asv benchmarks for Gram volumes and column selection: time, memory, accuracy."""

from __future__ import annotations

import numpy as np

import lowrank

from .common import SkipNotImplemented, XPBenchmark, to_backend

# (batch, n, k): the two speed targets (3×2 and 16×4), and one LAPACK-sized case
SHAPES = [(1_000_000, 3, 2), (100_000, 16, 4), (200, 256, 64)]


def batch_with_kappa(batch, n, k, kappa, seed=0):
    """Host float64 (batch, n, k) matrices with singular values from 1 down to 1/kappa."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((batch, n, k)))
    V, _ = np.linalg.qr(rng.standard_normal((batch, k, k)))
    return (U * np.geomspace(1.0, 1.0 / kappa, k)) @ V


class GramVolume(XPBenchmark):
    """``gram_volume`` / ``log_gram_volume`` against NumPy's ``slogdet(aᵀa)``."""

    params = (*XPBenchmark.params, ["float64", "float32"], [True, False], SHAPES)
    param_names = (*XPBenchmark.param_names, "dtype", "use_kernels", "shape")
    timeout = 300

    def setup(self, backend, dtype, use_kernels, shape):
        self.setup_backend(backend)
        if backend == "array_api_strict" and shape[0] > 100_000:
            msg = "array-api-strict: smaller batches only"
            raise SkipNotImplemented(msg)
        if not use_kernels and backend not in ("numpy", "cupy"):
            msg = "kernels exist only for numpy and cupy: the kernel-off run is the same"
            raise SkipNotImplemented(msg)
        a = np.random.default_rng(0).standard_normal(shape)
        self.a = self.xp.astype(to_backend(a, self.xp, self.device), getattr(self.xp, dtype))
        self.ctx = lowrank.config_context(use_kernels=use_kernels)
        self.ctx.__enter__()
        lowrank.log_gram_volume(self.a)  # JIT warm-up outside the timings
        self.sync()

    def teardown(self, *args):
        self.ctx.__exit__(None, None, None)

    def time_gram_volume(self, *args):
        lowrank.gram_volume(self.a)
        self.sync()

    def time_log_gram_volume(self, *args):
        lowrank.log_gram_volume(self.a)
        self.sync()

    def time_slogdet_gram_baseline(self, *args):
        xp = self.xp
        xp.linalg.slogdet(xp.matrix_transpose(self.a) @ self.a)
        self.sync()

    def peakmem_log_gram_volume(self, *args):
        lowrank.log_gram_volume(self.a)


class GramVolumeAccuracy:
    """Largest |Δ log vol| against float64 QR of the float64 data, by condition number."""

    params = (["float64", "float32"], [1e2, 1e4, 1e8], [True, False])
    param_names = ("dtype", "kappa", "use_kernels")

    def setup(self, dtype, kappa, use_kernels):
        if dtype == "float32" and kappa > 1e5:
            msg = "beyond float32's accuracy target 1/(100·n·eps)"
            raise SkipNotImplemented(msg)
        a64 = batch_with_kappa(500, 20, 4, kappa)
        self.a = a64.astype(dtype)
        exact = self.a.astype(np.float64)
        r = np.linalg.qr(exact, mode="r")
        self.ref = np.sum(np.log(np.abs(np.diagonal(r, axis1=-2, axis2=-1))), axis=-1)
        self.use_kernels = use_kernels

    def track_log_volume_abs_error(self, *args):
        with lowrank.config_context(use_kernels=self.use_kernels):
            got = lowrank.log_gram_volume(self.a).astype(np.float64)
        return float(np.max(np.abs(got - self.ref)))

    def track_slogdet_gram_abs_error(self, *args):
        got = np.linalg.slogdet(np.swapaxes(self.a, -1, -2) @ self.a)[1].astype(np.float64) / 2
        return float(np.max(np.abs(got - self.ref)))


class SelectColumns(XPBenchmark):
    """``select_columns`` on a 200×1000 matrix, k = 20."""

    params = (*XPBenchmark.params, ["maxvol", "pivoted_qr", "volume_sampling"])
    param_names = (*XPBenchmark.param_names, "method")
    timeout = 300

    def setup(self, backend, method):
        self.setup_backend(backend)
        a = np.random.default_rng(0).standard_normal((200, 1000)) * np.geomspace(1, 1e-3, 1000)
        self.a = to_backend(a, self.xp, self.device)
        self.method = method

    def time_select_columns(self, *args):
        lowrank.select_columns(self.a, 20, method=self.method, rng=0)
        self.sync()

    def track_log_volume(self, *args):
        cols = lowrank.select_columns(self.a, 20, method=self.method, rng=0)
        return float(lowrank.log_gram_volume(self.xp.take(self.a, cols, axis=1)))
