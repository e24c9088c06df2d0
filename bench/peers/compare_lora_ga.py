"""LoRA-GA side by side: init stage vs PEFT 0.21 and the official code; estimation memory.

``python bench/compare.py lora_ga [--quick] [--small] [--ranks 8,16] [--layers L] [--repeat N]``

1. Init stage (SVD + factor construction) on a stack of L float32 gradients per shape
   (4096 x 4096 and 4096 x 11008, singular values 1/i, r = 8 and 32), torch CPU:
   lowrank (one batched call) vs PEFT's ``lora_ga_init`` (per layer,
   ``torch.svd_lowrank(q=min(4r, ...), niter=4)`` then its factor lines) vs the official
   code (same SVD, its factor lines). Accuracy: sine of the largest principal angle of
   B0's columns (the singular block r..2r-1) against the exact block (known by
   construction), worst layer.
2. Estimation memory (``--memory-only``: an MLP; ``--minilm``: all-MiniLM-L6-v2), lowrank
   ``estimate_gradients`` vs PEFT ``preprocess_loraga``: allocator peak and resident-set
   growth, each run in a fresh process, medians of ``--repeat`` (see ``lora_ga_memory``).
3. ``--evidence``: why the 2x target is out of reach at r = 8: the CPU time of one product
   with a 4096 x 4096 float32 gradient per block width, and the accuracy and time of block
   Krylov settings (block width b, depth d: 2d + 2 reads) against PEFT's.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from lora_ga_memory import minilm_memory, mlp_memory


# all-MiniLM-L6-v2 all-linear: 24 attention matrices 384 x 384, 6 of 1536 x 384 and 6 of
# 384 x 1536 per model; the squares stand for the widths between MiniLM and 4096.
SMALL_LAYERS = {(384, 384): 24, (1536, 384): 6, (384, 1536): 6, (768, 768): 8, (1536, 1536): 4}


def _spectrum_stack(m, n, layers, seed=0):
    """L float32 (m, n) matrices with singular values 1/i and their exact U (float64)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    k = min(m, n)
    U = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64))[0]
    base = (U / torch.arange(1, k + 1, dtype=torch.float64)) @ V.T
    perms = [torch.randperm(m, generator=g) for _ in range(layers)]  # distinct layers
    stack = torch.stack([base[p] for p in perms]).float()
    return stack, [U[p] for p in perms]


def peft_factors(grad, r, gamma=16.0):
    """PEFT 0.21 ``LoraLayer.lora_ga_init`` SVD + factor lines (ArB2r, stable)."""
    import torch

    grad = grad.to(torch.float32)
    U, S, V = torch.svd_lowrank(grad, q=min(4 * r, min(grad.shape)), niter=4)
    Vh = V.t()
    U, S, Vh = U[:, : 2 * r], S[: 2 * r], Vh[: 2 * r, :]
    A = Vh[:r, :]
    B = U[:, r : 2 * r] @ torch.diag(S[r : 2 * r])
    B = B * (grad.shape[0] ** 0.25) / (gamma**0.5)
    return A.contiguous(), B.contiguous()


def official_factors(grad, r, gamma=16.0):
    """Official LoRA-GA ``lora_ga_init`` SVD + factor lines (ArB2r, stable)."""
    import torch

    U, _, V = torch.svd_lowrank(grad.float(), q=min(4 * r, min(grad.shape)), niter=4)
    V = V.T
    B, A = U[:, r : 2 * r], V[:r, :]
    m = grad.shape[0]
    return (A * m**0.25 / gamma**0.5).contiguous(), (B * m**0.25 / gamma**0.5).contiguous()


def _median_time(fn, repeat):
    """Median (wall, CPU) seconds after one warm-up; CPU time is robust on a shared box."""
    fn()
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return (float(np.median(wall)), float(np.median(cpu))), out


def _sine(B, U_block):
    """Largest principal-angle sine between span(B) and the exact block."""
    import torch

    Q = torch.linalg.qr(B.double())[0]
    return float(torch.linalg.matrix_norm(Q - U_block @ (U_block.T @ Q), 2))


def init_stage(shapes, ranks, layers, repeat):
    """``layers``: one count for every shape, or a dict shape -> count."""
    import torch

    import lowrank

    rows = []
    for m, n in shapes:
        count = layers[m, n] if isinstance(layers, dict) else layers
        stack, Us = _spectrum_stack(m, n, count)
        for r in ranks:
            blocks = [U[:, r : 2 * r] for U in Us]
            runs = {
                "lowrank": lambda s=stack, r=r: lowrank.lora_ga_init(
                    s, r, scaling=2.0, rng=0, compat="paper").B,
                "PEFT": lambda s=stack, r=r: [peft_factors(g, r)[1] for g in s],
                "official": lambda s=stack, r=r: [official_factors(g, r)[1] for g in s],
            }
            res = {}
            for name, fn in runs.items():
                torch.manual_seed(0)
                t, Bs = _median_time(fn, repeat)
                sine = max(_sine(Bs[i], blocks[i]) for i in range(count))
                res[name] = (t, sine)
            for name, ((wall, cpu), sine) in res.items():
                ratio = cpu / res["lowrank"][0][1]
                rows.append((f"{m}x{n}", r, name, wall, cpu, ratio, sine))
            print(*(_row(row) for row in rows[-len(runs) :]), sep="\n", flush=True)
    return rows


def read_costs(m, n, widths, repeat):
    """CPU ms of one product with an (m, n) float32 gradient: ``G @ X`` and ``(Yᵀ G)ᵀ``."""
    import torch

    g = torch.randn(m, n)
    print(f"  one product with a {m}x{n} float32 gradient, CPU ms (median of {repeat}):")
    print("    columns " + " ".join(f"{w:6d}" for w in widths))

    def forward(w):
        x = torch.randn(n, w)
        return lambda: g @ x

    def adjoint(w):
        y = torch.randn(m, w)
        return lambda: (y.T @ g).T

    for name, make in (("G @ X   ", forward), ("(YᵀG)ᵀ  ", adjoint)):
        costs = [_median_time(make(w), repeat)[0][1] * 1e3 for w in widths]
        print(f"    {name}" + " ".join(f"{c:6.1f}" for c in costs), flush=True)


def krylov_sweep(m, n, r, configs, seeds, repeat):
    """Worst sine over ``seeds`` and CPU time of block Krylov (b, d) settings vs PEFT."""
    import torch

    from lowrank._agnostic._lora_ga import top_triplets
    from lowrank._lib._random import Random
    from lowrank._lib._validation import namespace

    stack, Us = _spectrum_stack(m, n, 1)
    g, block = stack[0], Us[0][:, r : 2 * r]
    xp = namespace(g)

    def peft(seed):
        torch.manual_seed(seed)
        return peft_factors(g, r)[1]

    (_, t_peft), _ = _median_time(lambda: peft(0), repeat)
    s_peft = max(_sine(peft(s), block) for s in seeds)
    print(f"  {m}x{n}, r = {r}, worst sine over {len(seeds)} seeds; PEFT (q = 4r, niter = 4, "
          f"10 reads of {4 * r} columns): {t_peft * 1e3:.0f} ms, sine {s_peft:.1e}")
    for b, d in configs:
        def ours(seed, b=b, d=d):
            rand = Random(seed, xp, g.device)
            return top_triplets(g, 2 * r + 1, svd="randomized", block=b, depth=d, rand=rand,
                                xp=xp)[0][:, r : 2 * r]

        (_, t), _ = _median_time(lambda: ours(0), repeat)
        sine = max(_sine(ours(s), block) for s in seeds)
        print(f"    b = {b:3d}, d = {d} ({2 * d + 2:2d} reads): {t * 1e3:5.0f} ms "
              f"(PEFT / this {t_peft / t:4.2f}x), sine {sine:.1e}", flush=True)


def _row(row):
    shape, r, name, wall, cpu, ratio, sine = row
    return (
        f"  {shape:>10} r={r:<3} {name:>9}: wall {wall * 1e3:8.1f} ms  CPU {cpu * 1e3:8.1f} ms"
        f"  x{ratio:5.2f}  sine[r:2r] {sine:.1e}"
    )


def main(argv):
    parser = argparse.ArgumentParser(prog="compare.py lora_ga")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--minilm", action="store_true",
                        help="only the estimation memory on all-MiniLM-L6-v2 (installed wheel)")
    parser.add_argument("--small", action="store_true",
                        help="init stage at MiniLM's shapes (as many layers of each as the "
                             "model has) and 768/1536-wide squares instead")
    parser.add_argument("--ranks", default="8,32", help="comma-separated LoRA ranks")
    parser.add_argument("--evidence", action="store_true",
                        help="only the read-cost and Krylov-setting tables (r = 8)")
    args = parser.parse_args(argv)
    import warnings

    import peft
    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Full backward hook")  # PEFT's own hooks
    print(f"peft {peft.__version__}, torch threads {torch.get_num_threads()}")
    shapes = [(1024, 1024), (1024, 2752)] if args.quick else [(4096, 4096), (4096, 11008)]
    layers = args.layers
    if args.small:
        layers = dict(SMALL_LAYERS)
        shapes = list(layers)
    if args.minilm:
        minilm_memory(args.repeat)
        return 0
    if args.evidence:
        read_costs(*shapes[0], [1, 4, 8, 16, 24, 32, 64, 128], args.repeat)
        configs = [(16, 3), (20, 3), (24, 3), (32, 2), (12, 4), (16, 4), (8, 6), (10, 5)]
        krylov_sweep(*shapes[0], 8, configs, range(3), args.repeat)
        return 0
    print(
        "init stage (SVD + factors), median of",
        args.repeat,
        "after warm-up;",
        "ratio = CPU time / lowrank CPU time:",
    )
    if not args.memory_only:
        init_stage(shapes, [int(r) for r in args.ranks.split(",")], layers, args.repeat)
    print("estimation memory:")
    mlp_memory([512] * 4 if args.quick else [2048] * 5, args.repeat)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
