"""asv benchmarks for LoRA-Pro: the adjustment, the equivalent gradient and the optimizer step."""

from __future__ import annotations

import time

import numpy as np

try:
    from .common import SkipNotImplemented, XPBenchmark, to_backend
except ImportError:  # run by hand from bench/
    from common import SkipNotImplemented, XPBenchmark, to_backend

import lowrank


def _layer(out, n_in, r, seed=0):
    """Host float64 factors and LoRA gradients of a random full gradient (seeded)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((r, n_in)) / np.sqrt(n_in)
    B = rng.standard_normal((out, r)) / np.sqrt(r)
    G = 1e-3 * rng.standard_normal((out, n_in))
    return A, B, 2.0 * B.T @ G, 2.0 * G @ A.T


def _host(x):
    """float64 NumPy copy of a backend array (for error tracking only)."""
    if hasattr(x, "get"):  # cupy
        x = x.get()
    elif hasattr(x, "detach"):  # torch, any device
        x = x.detach().cpu()
    return np.from_dlpack(x).astype(np.float64)


class LoraProAdjust(XPBenchmark):
    """Per-layer adjustment, float32 (4096², r = 16/64 included)."""

    params = (*XPBenchmark.params, [1024, 4096], [16, 64], ["sylvester", "zero"])
    param_names = (*XPBenchmark.param_names, "n", "rank", "gauge")

    def setup(self, backend, n, rank, gauge):
        self.setup_backend(backend)
        host = _layer(n, n, rank)
        self.exact = lowrank.lora_pro_adjust(*host, scaling=2.0, gauge=gauge, damping=None)
        self.args = [to_backend(x.astype(np.float32), self.xp, self.device) for x in host]

    def time_lora_pro_adjust(self, backend, n, rank, gauge):
        lowrank.lora_pro_adjust(*self.args, scaling=2.0, gauge=gauge)
        self.sync()

    def peakmem_lora_pro_adjust(self, backend, n, rank, gauge):
        lowrank.lora_pro_adjust(*self.args, scaling=2.0, gauge=gauge)

    def track_relative_error(self, backend, n, rank, gauge):
        res = lowrank.lora_pro_adjust(*self.args, scaling=2.0, gauge=gauge)
        errs = []
        for got, want in zip(res, self.exact, strict=True):
            errs.append(np.linalg.norm(_host(got) - want) / np.linalg.norm(want))
        return max(errs)


class EquivalentGradient(XPBenchmark):
    """The full-size projected gradient (one product of inner dimension 2r)."""

    params = (*XPBenchmark.params, [1024, 4096], [16])
    param_names = (*XPBenchmark.param_names, "n", "rank")

    def setup(self, backend, n, rank):
        self.setup_backend(backend)
        host = _layer(n, n, rank)
        self.args = [to_backend(x.astype(np.float32), self.xp, self.device) for x in host]

    def time_equivalent_gradient(self, backend, n, rank):
        lowrank.equivalent_gradient(*self.args, scaling=2.0)
        self.sync()


class LoRAProAdamWStep:
    """One optimizer step for a stack of equal layers (torch CPU), vs torch.optim.AdamW."""

    params = ([8, 32], [1024, 4096], ["efficient"])
    param_names = ("layers", "n", "mode")

    def setup(self, layers, n, mode):
        try:
            import torch
        except ImportError as exc:
            msg = "torch not installed"
            raise SkipNotImplemented(msg) from exc
        from lowrank.torch import LoRAProAdamW

        params, pairs = [], []
        for i in range(layers):
            A, B, gA, gB = (
                torch.from_numpy(x.astype(np.float32)) for x in _layer(n, n, 16, seed=i)
            )
            A, B = torch.nn.Parameter(A), torch.nn.Parameter(B)
            A.grad, B.grad = gA, gB
            params += [A, B]
            pairs.append((A, B, 2.0))
        self.ours = LoRAProAdamW(params, lr=1e-6, mode=mode, pairs=pairs)
        self.plain = torch.optim.AdamW(params, lr=1e-6)
        self.ours.step()  # states allocated outside the timing
        self.plain.step()

    def time_lora_pro_adamw_step(self, layers, n, mode):
        self.ours.step()

    def time_adamw_step(self, layers, n, mode):
        self.plain.step()

    def track_step_time_relative_to_adamw(self, layers, n, mode):
        def median(fn):
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return float(np.median(times))

        return median(self.ours.step) / median(self.plain.step)
