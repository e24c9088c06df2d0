"""asv benchmarks for CR-sampled products: time, memory and accuracy."""

from __future__ import annotations

import numpy as np

import lowrank
from lowrank import cr_expected_error, cr_factors, cr_matmul, cr_norms

from .common import SkipNotImplemented, XPBenchmark, to_backend

SHAPES = [(1024, 4096, 1024, 256), (2048, 8192, 2048, 512)]


def power_law(n, inner, m, alpha=1.0, seed=0):
    """Host float64 X (n×l) with column scales i^-alpha, shuffled; Y (l×m) Gaussian."""
    rng = np.random.default_rng(seed)
    scale = rng.permutation(np.arange(1, inner + 1) ** -alpha)
    return rng.standard_normal((n, inner)) * scale, rng.standard_normal((inner, m))


class CRMatmul(XPBenchmark):
    """End-to-end ``cr_matmul`` against the exact product, kernels on and off."""

    params = (*XPBenchmark.params, ["float64", "float32"], [True, False], SHAPES)
    param_names = (*XPBenchmark.param_names, "dtype", "use_kernels", "shape")
    timeout = 300

    def setup(self, backend, dtype, use_kernels, shape):
        self.setup_backend(backend)
        if backend == "array_api_strict" and shape != SHAPES[0]:
            msg = "array-api-strict: small shape only"
            raise SkipNotImplemented(msg)
        n, inner, m, self.rank = shape
        X, Y = power_law(n, inner, m)
        dt = getattr(self.xp, dtype)
        self.X = self.xp.astype(to_backend(X, self.xp, self.device), dt)
        self.Y = self.xp.astype(to_backend(Y, self.xp, self.device), dt)
        self.ctx = lowrank.config_context(use_kernels=use_kernels)
        self.ctx.__enter__()
        self.norms = cr_norms(self.X, self.Y)
        cr_matmul(self.X, self.Y, self.rank, rng=0)  # JIT warm-up outside the timings
        self.sync()

    def teardown(self, *args):
        self.ctx.__exit__(None, None, None)

    def time_exact_product(self, *args):
        self.X @ self.Y
        self.sync()

    def time_cr_matmul(self, *args):
        cr_matmul(self.X, self.Y, self.rank, rng=0)
        self.sync()

    def time_cr_matmul_norms_given(self, *args):
        cr_matmul(self.X, self.Y, self.rank, norms=self.norms, rng=0)
        self.sync()

    def time_cr_norms(self, *args):
        cr_norms(self.X, self.Y)
        self.sync()

    def peakmem_cr_matmul(self, *args):
        cr_matmul(self.X, self.Y, self.rank, rng=0)

    def track_error_over_expected(self, *args):
        """Mean squared error over 5 seeds / cr_expected_error (1 is exact theory)."""
        exact = self.X @ self.Y
        errs = [
            float(self.xp.sum((cr_matmul(self.X, self.Y, self.rank, rng=s) - exact) ** 2))
            for s in range(5)
        ]
        return float(np.mean(errs)) / float(cr_expected_error(self.X, self.Y, self.rank))


class CRFactorsMethods(XPBenchmark):
    """Selection variants on one moderate size (NumPy-like backends)."""

    params = (*XPBenchmark.params, ["optimal", "uniform", "topk", "no-replace", "diagonal"])
    param_names = (*XPBenchmark.param_names, "variant")

    def setup(self, backend, variant):
        self.setup_backend(backend)
        X, Y = power_law(512, 4096, 512, alpha=0.5)
        self.X, self.Y = (to_backend(v, self.xp, self.device) for v in (X, Y))
        self.kw = {
            "optimal": {},
            "uniform": {"probabilities": "uniform"},
            "topk": {"method": "topk"},
            "no-replace": {"replace": False},
            "diagonal": {"rescale": "diagonal"},
        }[variant]
        cr_factors(self.X, self.Y, 128, rng=0, **self.kw)

    def time_cr_factors(self, *args):
        cr_factors(self.X, self.Y, 128, rng=0, **self.kw)
        self.sync()

    def track_relative_error(self, *args):
        f = cr_factors(self.X, self.Y, 128, rng=0, **self.kw)
        exact = self.X @ self.Y
        diff = f.C @ f.R - exact
        return float(self.xp.linalg.matrix_norm(diff) / self.xp.linalg.matrix_norm(exact))
