"""``lowrank demo --sections grad_sketch``: LoRA-GA's gradient SVD without the gradients."""

from __future__ import annotations

import math
from typing import Any

from . import DemoContext, timeit


def _setup(width: int, ffn: int) -> tuple[Any, list[Any], Any]:
    """A 3-layer stack, 4 batches with power-law input covariance, and its MSE loss."""  # numpydoc ignore=PR01,RT01
    import torch

    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(width, width, generator=g))[0]
    mix = basis / torch.arange(1, width + 1, dtype=torch.float32)[:, None] * 8
    proj = torch.randn(width, width, generator=g) / math.sqrt(width)
    data = []
    for _ in range(4):
        x = torch.randn(64, width, generator=g) @ mix
        data.append((x, torch.tanh(x @ proj)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(width, ffn), torch.nn.Tanh(),
                                  torch.nn.Linear(ffn, width))

    def loss(model: Any, batch: Any) -> Any:
        return torch.nn.functional.mse_loss(model(batch[0]), batch[1])

    return net, data, loss


def _step(G: Any, U: Any, Vh: Any, r: int) -> Any:
    """LoRA-GA's first-step direction ``B0 B0ᵀ G + G A0ᵀ A0`` for A0 = Vh[:r], B0 = U[:, r:2r]."""  # numpydoc ignore=PR01,RT01
    A, B, G = Vh[:r].double(), U[:, r : 2 * r].double(), G.double()
    return B @ (B.T @ G) + (G @ A.T) @ A


def run(ctx: DemoContext) -> None:
    """Sketch vs exact gradients: time, memory formula, [r, 2r) sine, first-step cosine."""  # numpydoc ignore=PR01
    try:
        import torch
    except ImportError:
        print("  (torch not installed: the gradient sketch needs lowrank.torch)")
        return
    import lowrank.torch as lt

    width, ffn, r = (256, 688, 8) if ctx.quick else (1024, 2752, 8)
    net, data, loss = _setup(width, ffn)
    reps = 1 if ctx.quick else 3
    t_exact, grads = timeit(lambda: lt.estimate_gradients(net, data, loss_fn=loss,
                                                          progress=False), reps)
    rows = [["exact gradients", 1, t_exact * 1e3, 1.0, sum(4 * g.numel() for g in grads.values())
             / 2**20, 0.0, 1.0]]
    exact = {n: torch.linalg.svd(g.double(), full_matrices=False) for n, g in grads.items()}
    for sweeps, block in ((3, 16), (4, 16), (4, 24)):
        t, svd = timeit(lambda s=sweeps, b=block: lt.estimate_gradient_svd(
            net, data, 2 * r, n_sweeps=s, block_size=b, loss_fn=loss, rng=0, progress=False),
            reps)
        state = sum(4 * (m + n) * (sweeps * block + 2 * block + 8) for m, n in
                    (tuple(g.shape) for g in grads.values()))
        sine, cos = 0.0, 1.0
        for name, (U0, _, Vh0) in exact.items():
            res, block_u = svd[name], U0[:, r : 2 * r]
            Q = torch.linalg.qr(res.U[:, r : 2 * r].double())[0]
            sine = max(sine, float(torch.linalg.matrix_norm(Q - block_u @ (block_u.T @ Q), 2)))
            a, b = _step(grads[name], U0, Vh0, r), _step(grads[name], res.U, res.Vh, r)
            cos = min(cos, float((a * b).sum() / (a.norm() * b.norm())))
        rows.append([f"sketch, ℓ={block}", sweeps, t * 1e3, t / t_exact, state / 2**20, sine, cos])
    print(f"  two layers {ffn}x{width} and {width}x{ffn}, 4 batches x 64 tokens, LoRA rank {r} "
          f"(top {2 * r} triplets); memory: the gradients (exact) or the sketch's basis,"
          " image and products")
    ctx.table(["method", "sweeps", "time ms", "x exact", "MiB held", "sin [r,2r)",
               "min cos 1st step"], rows)
