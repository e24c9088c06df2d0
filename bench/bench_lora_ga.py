"""asv benchmarks for LoRA-GA: init time and accuracy of the [r, 2r) block; estimation.

Speed goals live here and in ``compare_lora_ga.py``, never in unit tests.
"""

from __future__ import annotations

import numpy as np

from lowrank._demo.lora_ga import _gradient_stack as _stack

from .common import SkipNotImplemented, XPBenchmark, to_backend


class LoraGAInit(XPBenchmark):
    """``lora_ga_init`` on a stack of 4 gradients (one batched call)."""

    params = (*XPBenchmark.params, [(1024, 1024), (1024, 2752)], [8, 32])
    param_names = ("backend", "shape", "rank")

    def setup(self, backend, shape, rank):
        self.setup_backend(backend)
        host, self.U = _stack(*shape, 4)
        self.grad = to_backend(host, self.xp, self.device)
        self.rank = rank

    def _run(self):
        import lowrank

        out = lowrank.lora_ga_init(self.grad, self.rank, scaling=2.0, rng=0)
        self.sync()
        return out

    def time_lora_ga_init(self, backend, shape, rank):
        self._run()

    def peakmem_lora_ga_init(self, backend, shape, rank):
        self._run()

    def track_block_sine(self, backend, shape, rank):
        """Worst layer's sine of the largest principal angle of B0 vs U[:, r:2r]."""
        B = self._run().B
        B = B.get() if backend == "cupy" else B.cpu() if backend.startswith("torch") else B
        B = np.asarray(np.from_dlpack(B), dtype=np.float64)
        r = self.rank
        worst = 0.0
        for i, U in enumerate(self.U):
            Q = np.linalg.qr(B[i])[0]
            Ub = U[:, r : 2 * r]
            worst = max(worst, float(np.linalg.norm(Q - Ub @ (Ub.T @ Q), 2)))
        return worst


class EstimateGradients:
    """``lowrank.torch.estimate_gradients`` on an MLP (torch CPU only)."""

    params = ([512, 1024],)
    param_names = ("width",)

    def setup(self, width):
        try:
            import torch
        except ImportError as exc:
            msg = "torch missing"
            raise SkipNotImplemented(msg) from exc
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(4)])
        self.batches = [torch.randn(16, width) for _ in range(8)]

    def _run(self):
        from lowrank.torch import estimate_gradients

        return estimate_gradients(
            self.model, self.batches, loss_fn=lambda m, x: m(x).square().mean(), progress=False
        )

    def time_estimate_gradients(self, width):
        self._run()

    def peakmem_estimate_gradients(self, width):
        self._run()
