"""Regenerate docs/theory/img/cr_error_vs_rank.png: python docs/theory/img/make_cr.py."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from lowrank import cr_expected_error, cr_matmul

HERE = Path(__file__).resolve().parent


def errors(X, Y, ranks, seeds=4):
    M = X @ Y
    norm = np.linalg.norm(M)
    sigma = np.linalg.svd(M, compute_uv=False)
    tail = np.sqrt(np.cumsum((sigma**2)[::-1])[::-1])
    out = {k: [] for k in ("svd", "topk", "optimal", "theory", "uniform", "noreplace", "diagonal")}

    def rms(r, **kw):
        e = [np.linalg.norm(cr_matmul(X, Y, r, rng=s, **kw) - M) ** 2 for s in range(seeds)]
        return np.sqrt(np.mean(e)) / norm

    for r in ranks:
        out["svd"].append(tail[r] / norm if r < len(tail) else np.nan)
        out["topk"].append(np.linalg.norm(cr_matmul(X, Y, r, method="topk") - M) / norm)
        out["optimal"].append(rms(r))
        out["theory"].append(np.sqrt(float(cr_expected_error(X, Y, r))) / norm)
        out["uniform"].append(rms(r, probabilities="uniform"))
        out["noreplace"].append(rms(r, replace=False))
        out["diagonal"].append(rms(r, rescale="diagonal"))
    return out


def main():
    rng = np.random.default_rng(0)
    n, inner, m = 512, 2048, 512
    ranks = [16, 32, 64, 128, 256, 384]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, alpha in zip(axes, (1.0, 0.5), strict=True):
        scale = rng.permutation(np.arange(1, inner + 1) ** -alpha)
        X, Y = rng.standard_normal((n, inner)) * scale, rng.standard_normal((inner, m))
        e = errors(X, Y, ranks)
        style = {
            "svd": ("k-", "SVD optimum (rank r)"),
            "topk": ("C0o-", "top-k"),
            "optimal": ("C1s-", "optimal p, i.i.d."),
            "theory": ("C1:", "theory (expected error formula)"),
            "uniform": ("C2^-", "uniform p, i.i.d."),
            "noreplace": ("C3d-", "optimal p, no replacement"),
            "diagonal": ("C4v--", "optimal p + diagonal rescale"),
        }
        for key, (fmt, label) in style.items():
            ax.loglog(ranks, e[key], fmt, label=label)
        ax.set_title(f"X {n}x{inner}, column scales i^-{alpha:g}; Y Gaussian {inner}x{m}")
        ax.set_xlabel("rank r")
        ax.set_xticks(ranks, [str(r) for r in ranks])
        ax.minorticks_off()
    axes[0].set_ylabel("relative Frobenius error of X @ Y")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "cr_error_vs_rank.png", dpi=110)


if __name__ == "__main__":
    main()
