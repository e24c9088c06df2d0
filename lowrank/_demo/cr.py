"""Demo section ``cr``: CR-sampled products, error vs rank and time vs the exact product."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import cr_expected_error, cr_matmul
from . import timeit


def _data(n: int, inner: int, m: int, alpha: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """X with power-law column scales i^-alpha (shuffled), Y Gaussian."""  # numpydoc ignore=PR01,RT01
    rng = np.random.default_rng(seed)
    scale = rng.permutation(np.arange(1, inner + 1) ** -alpha)
    return rng.standard_normal((n, inner)) * scale, rng.standard_normal((inner, m))


def _prototype(X: np.ndarray, Y: np.ndarray, r: int, rng: Any) -> np.ndarray:
    """Plain NumPy importance sampling (the peer baseline)."""  # numpydoc ignore=PR01,RT01
    w = np.linalg.norm(X, axis=0) * np.linalg.norm(Y, axis=1)
    p = w / w.sum()
    idx = rng.choice(X.shape[1], size=r, p=p)
    s = 1.0 / np.sqrt(r * p[idx])
    return (X[:, idx] * s) @ (Y[idx] * s[:, None])


def _error_rows(X: np.ndarray, Y: np.ndarray, ranks: list[int], seeds: int) -> list[list[Any]]:
    """Relative Frobenius errors per rank: SVD optimum, top-k, optimal, uniform, theory."""  # numpydoc ignore=PR01,RT01
    M = X @ Y
    norm = np.linalg.norm(M)
    sigma = np.linalg.svd(M, compute_uv=False)
    tail = np.sqrt(np.cumsum((sigma**2)[::-1])[::-1])  # tail[r] = ‖M − M_r‖_F

    def sampled(r: int, **kw: Any) -> float:
        errs = [np.linalg.norm(cr_matmul(X, Y, r, rng=s, **kw) - M) ** 2 for s in range(seeds)]
        return float(np.sqrt(np.mean(errs)) / norm)

    rows = []
    for r in ranks:
        svd = float(tail[r] / norm) if r < len(tail) else 0.0
        top = float(np.linalg.norm(cr_matmul(X, Y, r, method="topk") - M) / norm)
        theory = float(np.sqrt(cr_expected_error(X, Y, r)) / norm)
        rows.append(
            [
                r,
                svd,
                top,
                sampled(r),
                theory,
                sampled(r, probabilities="uniform"),
                sampled(r, replace=False),
            ]
        )
    return rows


def _time_rows(X: np.ndarray, Y: np.ndarray, r: int, repeat: int) -> list[list[Any]]:
    """Median times of the exact product, the NumPy prototype and lowrank's variants."""  # numpydoc ignore=PR01,RT01
    exact, M = timeit(lambda: X @ Y, repeat)
    norm = np.linalg.norm(M)
    cases = [
        ("numpy exact X @ Y", lambda: M),
        ("numpy prototype (sampling)", lambda: _prototype(X, Y, r, np.random.default_rng(0))),
        ("lowrank cr_matmul optimal", lambda: cr_matmul(X, Y, r, rng=0)),
        ("lowrank cr_matmul topk", lambda: cr_matmul(X, Y, r, method="topk")),
        ("lowrank cr_matmul uniform", lambda: cr_matmul(X, Y, r, probabilities="uniform", rng=0)),
    ]
    rows = []
    for name, fn in cases:
        t, out = (exact, M) if name.startswith("numpy exact") else timeit(fn, repeat)
        rows.append(
            [name, f"{t * 1e3:.1f} ms", f"{exact / t:.1f}x", float(np.linalg.norm(out - M) / norm)]
        )
    return rows


def _plot(ctx: Any, rows: list[list[Any]], title: str) -> None:
    """Error-vs-rank figure, if matplotlib is installed."""  # numpydoc ignore=PR01
    plt = ctx.pyplot()
    if plt is None:
        print("  (matplotlib not installed: no plot)")
        return
    data = np.array([[float(c) for c in row] for row in rows])
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = [
        "SVD optimum",
        "top-k",
        "optimal sampling",
        "theory (optimal)",
        "uniform sampling",
        "optimal, no replacement",
    ]
    styles = ["k-", "C0o-", "C1s-", "C1:", "C2^-", "C3d-"]
    for k, (label, style) in enumerate(zip(labels, styles, strict=True)):
        ax.loglog(data[:, 0], np.maximum(data[:, k + 1], 1e-16), style, label=label)
    ax.set_xlabel("rank r (columns of X / rows of Y kept)")
    ax.set_ylabel("relative Frobenius error")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ctx.save(fig, "cr_error_vs_rank.png")
    plt.close(fig)


def run(ctx: Any) -> None:
    """Error vs rank (top-k, optimal, uniform vs the SVD optimum) and timings."""  # numpydoc ignore=PR01
    n, inner, m = (256, 1024, 256) if ctx.quick else (1024, 4096, 1024)
    ranks = [16, 32, 64, 128, 256] if ctx.quick else [32, 64, 128, 256, 512, 1024]
    X, Y = _data(n, inner, m, alpha=1.0)
    title = f"X {n}x{inner} (column scales i^-1) @ Y {inner}x{m}"
    print(f"  {title}; relative errors ‖approx − XY‖_F / ‖XY‖_F (sampling: rms over seeds)")
    rows = _error_rows(X, Y, ranks, seeds=2 if ctx.quick else 4)
    ctx.table(["rank", "SVD opt.", "topk", "optimal", "theory", "uniform", "no-repl."], rows)
    _plot(ctx, rows, title)
    r = inner // 16
    print(
        f"\n  time at rank {r} ({inner // r}x fewer flops), median of repeats; "
        "no maintained library offers CR products, so the peers are NumPy"
    )
    ctx.table(
        ["method", "time", "speed-up", "rel. error"],
        _time_rows(X, Y, r, repeat=3 if ctx.quick else 5),
    )
