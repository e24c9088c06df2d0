"""Regenerate ``svd.png`` for docs/theory/svd.md: ``python docs/theory/img/make_svd.py``.

Left: the Eckart–Young optimum sqrt(sum_{i>r} σ_i²)/‖A‖_F against the measured error of
``lowrank.truncated_svd`` for a fast (1/i) and a slow (i^-1/2) spectrum. Right: the ridge
limit ‖(AᵀA + εI)⁻¹Aᵀ − pinv(A)‖ against ε for a rank-deficient A (docs/theory/svd.md).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import lowrank


def matrix(m, n, s, seed=0):
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((m, len(s))))
    V, _ = np.linalg.qr(rng.standard_normal((n, len(s))))
    return (U * s) @ V.T


def main():
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    ranks = np.arange(0, 121, 8)
    i = np.arange(1, 201)
    for label, s in [("σ_i = 1/i", 1.0 / i), ("σ_i = i^(-1/2)", i**-0.5)]:
        a = matrix(300, 200, s)
        norm = np.linalg.norm(a)
        optimum = [np.sqrt(np.sum(s[r:] ** 2)) / norm for r in ranks]
        measured = []
        for r in ranks:
            U, S, Vh = lowrank.truncated_svd(a, int(r))
            measured.append(np.linalg.norm(a - (U * S) @ Vh) / norm)
        left.plot(ranks, optimum, "-", lw=3, alpha=0.4, label=f"optimum, {label}")
        left.plot(ranks, measured, "k.", ms=5)
    left.plot([], [], "k.", label="truncated_svd (measured)")
    left.set(
        xlabel="rank r",
        ylabel="‖A − A_r‖_F / ‖A‖_F",
        yscale="log",
        title="Eckart–Young: error = tail of the spectrum",
    )
    left.legend(fontsize=8)

    rng = np.random.default_rng(1)
    a = rng.standard_normal((6, 2)) @ rng.standard_normal((2, 3))  # 6×3, rank 2
    p = lowrank.pinv(a)
    eps = np.logspace(-9, 0, 19)
    gaps = [np.abs(np.linalg.solve(a.T @ a + e * np.eye(3), a.T) - p).max() for e in eps]
    right.loglog(eps, gaps, "o-", label="max |ridge − pinv|")
    right.loglog(eps, eps * gaps[len(eps) // 2] / eps[len(eps) // 2], "k:", label="∝ ε")
    right.set(xlabel="ε", ylabel="error", title="Ridge limit, 6×3 rank 2")
    right.legend(fontsize=8)
    fig.tight_layout()
    out = Path(__file__).with_name("svd.png")
    fig.savefig(out, dpi=100)
    print(out)


if __name__ == "__main__":
    main()
