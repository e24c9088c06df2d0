"""Demo section ``volume``: Gram volumes (accuracy and speed vs the Gram route), selection."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from .. import config_context, gram_volume, log_gram_volume, nonsquare_det, select_columns
from . import timeit


def _with_kappa(batch: int, n: int, k: int, kappa: float, seed: int = 0) -> np.ndarray:
    """(batch, n, k) float64 matrices with singular values from 1 down to 1/kappa."""  # numpydoc ignore=PR01,RT01
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((batch, n, k)))
    V, _ = np.linalg.qr(rng.standard_normal((batch, k, k)))
    return (U * np.geomspace(1.0, 1.0 / kappa, k)) @ V


def _reference(a: np.ndarray) -> np.ndarray:
    """Exact log-volumes: mpmath at 50 digits when installed, else float64 QR."""  # numpydoc ignore=PR01,RT01
    try:
        import mpmath
    except ImportError:
        r = np.linalg.qr(a.astype(np.float64), mode="r")
        return np.sum(np.log(np.abs(np.diagonal(r, axis1=-2, axis2=-1))), axis=-1)
    with mpmath.workdps(50):
        logs = []
        for m in a.astype(np.float64):
            M = mpmath.matrix(m.tolist())
            logs.append(float(mpmath.log(mpmath.det(M.T * M)) / 2))
    return np.array(logs)


def _gram_logs(a: np.ndarray) -> dict[str, np.ndarray]:
    """The peers' route: slogdet of the Gram matrix (NumPy, and torch when installed)."""  # numpydoc ignore=PR01,RT01
    gram = np.swapaxes(a, -1, -2) @ a
    with np.errstate(all="ignore"):
        sign, logdet = np.linalg.slogdet(gram)
    out = {"numpy slogdet(aᵀa)": np.where(sign > 0, logdet / 2, np.nan)}
    try:
        import torch
    except ImportError:
        return out
    t = torch.from_numpy(a)
    sign_t, logdet_t = torch.linalg.slogdet(t.mT @ t)
    out["torch slogdet(aᵀa)"] = np.where(sign_t.numpy() > 0, logdet_t.numpy() / 2, np.nan)
    return out


def _accuracy(ctx: Any) -> list[tuple[float, float, float]]:
    """Table of max |Δ log vol| by κ and dtype; returns (κ, ours, numpy) for the plot."""  # numpydoc ignore=PR01,RT01
    rows, curve = [], []
    kappas = [1e4, 1e8] if ctx.quick else [1e2, 1e4, 1e6, 1e8, 1e12]
    for dtype, kappa in itertools.product(["float32", "float64"], kappas):
        if dtype == "float32" and kappa > 1e4:
            continue
        a = _with_kappa(3 if ctx.quick else 10, 20, 4, kappa).astype(dtype)
        ref = _reference(a)
        ours = float(np.max(np.abs(log_gram_volume(a).astype(np.float64) - ref)))
        peers = {k: float(np.max(np.abs(v - ref))) for k, v in _gram_logs(a).items()}
        rows.append([dtype, f"{kappa:.0e}", ours, *peers.values()])
        if dtype == "float64":
            curve.append((kappa, ours, peers["numpy slogdet(aᵀa)"]))
    ctx.table(["dtype", "κ", "lowrank", *_gram_logs(np.eye(2)[None])], rows)
    return curve


def _speed(ctx: Any) -> None:
    """ns per matrix: kernel, fallback, NumPy and torch slogdet(aᵀa)."""  # numpydoc ignore=PR01
    rows = []
    for batch, n, k in ((1_000_000, 3, 2), (100_000, 16, 4)):
        a = np.random.default_rng(1).standard_normal((batch // (50 if ctx.quick else 1), n, k))
        b, repeat = a.shape[0], 3 if ctx.quick else 7
        t_ours, _ = timeit(lambda a=a: gram_volume(a), repeat=repeat)
        with config_context(use_kernels=False):
            t_fallback, _ = timeit(lambda a=a: log_gram_volume(a), repeat=3)
        t_np, _ = timeit(lambda a=a: np.linalg.slogdet(np.swapaxes(a, -1, -2) @ a), repeat=repeat)
        row = [f"{b:,} × {n}×{k}", t_ours / b * 1e9, t_fallback / b * 1e9, t_np / b * 1e9]
        try:
            import torch

            t = torch.from_numpy(a)
            t_torch, _ = timeit(lambda t=t: torch.linalg.slogdet(t.mT @ t), repeat=3)
            row.append(t_torch / b * 1e9)
        except ImportError:
            row.append("n/a")
        rows.append([*row, f"{t_np / t_ours:.1f}×"])
    ctx.table(["batch", "lowrank kernel ns", "lowrank fallback ns", "numpy slogdet ns",
               "torch slogdet ns", "speed-up vs numpy"], rows)


def _selection(ctx: Any) -> None:
    """Volumes reached by the three selectors vs the best subset (brute force)."""  # numpydoc ignore=PR01
    rows = []
    for seed in range(1 if ctx.quick else 4):
        rng = np.random.default_rng(seed)
        a = rng.standard_normal((6, 14)) * rng.uniform(0.2, 3.0, 14)
        k = 4
        best = max(float(gram_volume(a[:, list(c)])) for c in itertools.combinations(range(14), k))
        vol = {m: float(gram_volume(a[:, select_columns(a, k, method=m, rng=0)]))
               for m in ("pivoted_qr", "maxvol")}
        draws = [float(gram_volume(a[:, select_columns(a, k, method="volume_sampling", rng=s)]))
                 for s in range(5 if ctx.quick else 20)]
        rows.append([seed, best, vol["pivoted_qr"] / best, vol["maxvol"] / best,
                     float(np.mean(draws)) / best, 1 / math.factorial(k)])
    ctx.table(["matrix", "best volume", "pivoted_qr / best", "maxvol / best",
               "volume sampling mean / best", "greedy bound 1/k!"], rows)


def run(ctx: Any) -> None:
    """Run the section."""  # numpydoc ignore=PR01
    b = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    print(f"  worked example: gram_volume(B) = {float(gram_volume(b)):.6f} (√3), "
          f"gram_volume(Bᵀ) = {float(gram_volume(b.T))}, nonsquare_det(Bᵀ) = "
          f"{float(nonsquare_det(b.T)):.6f}")
    tiny = np.eye(200) * 1e-3
    print(f"  200 columns of norm 1e-3: gram_volume = {float(gram_volume(tiny))} (underflow), "
          f"log_gram_volume = {float(log_gram_volume(tiny)):.4f}")
    print("\n  max |Δ log volume| vs exact (20×4 matrices with condition number κ):")
    curve = _accuracy(ctx)
    print("\n  speed, float64, ns per matrix (median):")
    _speed(ctx)
    print("\n  column selection, 6×14 matrices, k = 4 (volumes relative to the best subset):")
    _selection(ctx)
    plt = ctx.pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        kap = [c[0] for c in curve]
        ax.loglog(kap, [max(c[1], 1e-17) for c in curve], "o-", label="lowrank (QR)")
        ax.loglog(kap, [c[2] if np.isfinite(c[2]) else 1e3 for c in curve], "s--",
                  label="slogdet(aᵀa)")
        ax.set(xlabel="κ(a)", ylabel="max |Δ log volume|", title="float64, 20×4")
        ax.legend()
        ctx.save(fig, "volume_accuracy.png")
        plt.close(fig)
