"""Demo section ``svd``: exact and randomized truncated SVD beside the installed peers.

A matrix with a known spectrum (σ_i = 1/i) makes the Eckart–Young optimum exact, so each
method's excess error ``err / err_opt − 1`` is measured, not estimated.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

import lowrank

from . import timeit

Factors = tuple[Any, Any, Any]


def _matrix(m: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """m×n float64 matrix with σ_i = 1/i, and σ."""  # numpydoc ignore=PR01,RT01
    rng = np.random.default_rng(seed)
    k = min(m, n)
    s = 1.0 / np.arange(1, k + 1)
    U, _ = np.linalg.qr(rng.standard_normal((m, k)))
    V, _ = np.linalg.qr(rng.standard_normal((n, k)))
    return (U * s) @ V.T, s


def _error(a: np.ndarray, factors: Factors) -> float:
    """Relative Frobenius error of ``U diag(S) Vh``."""  # numpydoc ignore=PR01,RT01
    U, S, Vh = (np.asarray(f, dtype=np.float64) for f in factors)
    return float(np.linalg.norm(a - (U * S) @ Vh) / np.linalg.norm(a))


def _optimum(s: np.ndarray, rank: int) -> float:
    """Eckart–Young optimal relative error."""  # numpydoc ignore=PR01,RT01
    return float(np.sqrt(np.sum(s[rank:] ** 2) / np.sum(s**2)))


def _ours(a: np.ndarray, rank: int) -> dict[str, Callable[[], Factors]]:
    """lowrank's methods present in this build."""  # numpydoc ignore=PR01,RT01
    methods: dict[str, Callable[[], Factors]] = {
        "lowrank truncated_svd": lambda: lowrank.truncated_svd(a, rank),
    }
    if hasattr(lowrank, "randomized_svd"):
        methods["lowrank randomized_svd (default)"] = lambda: lowrank.randomized_svd(a, rank, rng=0)
        methods["lowrank randomized_svd n_power_iter=6"] = lambda: lowrank.randomized_svd(
            a, rank, n_power_iter=6, rng=0
        )
        if _installed("torch"):
            methods["lowrank randomized_svd (default, torch)"] = _torch_ours(a, rank)
    return methods


def _peers(a: np.ndarray, rank: int) -> dict[str, Callable[[], Factors]]:
    """Installed peers: scipy, scikit-learn, torch."""  # numpydoc ignore=PR01,RT01
    import scipy.linalg
    from scipy.sparse.linalg import svds

    def full() -> Factors:
        U, S, Vh = scipy.linalg.svd(a, full_matrices=False)
        return U[:, :rank], S[:rank], Vh[:rank]

    methods: dict[str, Callable[[], Factors]] = {
        "scipy svds PROPACK": lambda: svds(a, rank, solver="propack", rng=np.random.default_rng(0)),
        "scipy linalg.svd (full)": full,
    }
    if _installed("sklearn"):
        from sklearn.utils.extmath import randomized_svd

        methods["sklearn randomized_svd n_iter=2"] = lambda: randomized_svd(
            a, rank, n_iter=2, random_state=0
        )
        methods["sklearn randomized_svd n_iter=auto"] = lambda: randomized_svd(
            a, rank, random_state=0
        )
    if _installed("torch"):
        methods["torch svd_lowrank q=rank+10 niter=2"] = _torch_lowrank(a, rank)
    return methods


def _torch_lowrank(a: np.ndarray, rank: int) -> Callable[[], Factors]:
    """torch.svd_lowrank, seeded inside fork_rng."""  # numpydoc ignore=PR01,RT01
    import torch

    t = torch.from_numpy(a)

    def run() -> Factors:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            U, S, V = torch.svd_lowrank(t, q=rank + 10, niter=2)
        return U[:, :rank].numpy(), S[:rank].numpy(), V[:, :rank].T.numpy()

    return run


def _torch_ours(a: np.ndarray, rank: int) -> Callable[[], Factors]:
    """Ours on a CPU tensor."""  # numpydoc ignore=PR01,RT01
    import torch

    t = torch.from_numpy(a)

    def run() -> Factors:
        U, S, Vh = lowrank.randomized_svd(t, rank, rng=0)
        return U.numpy(), S.numpy(), Vh.numpy()

    return run


def _installed(name: str) -> bool:
    """Whether an optional peer can be imported."""  # numpydoc ignore=PR01,RT01
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def _table_rows(a: np.ndarray, s: np.ndarray, rank: int, repeat: int) -> list[list[Any]]:
    """Time, error and excess of every method."""  # numpydoc ignore=PR01,RT01
    best = _optimum(s, rank)
    rows = []
    for name, fn in {**_ours(a, rank), **_peers(a, rank)}.items():
        seconds, factors = timeit(fn, 1 if "full" in name else repeat)
        err = _error(a, factors)
        rows.append([name, seconds, err, err / best - 1.0])
    if hasattr(lowrank, "svd_approx"):
        target = 1.05 * best
        seconds, res = timeit(lambda: lowrank.svd_approx(a, rtol=target, rng=0), repeat)
        err = _error(a, res[:3])
        rows.append(
            [
                f"lowrank svd_approx rtol={target:.3g} (rank {res.rank})",
                seconds,
                err,
                err / _optimum(s, res.rank) - 1.0,
            ]
        )
    return rows


def _plot(ctx: Any, a: np.ndarray, s: np.ndarray, ranks: list[int]) -> None:
    """Error and excess over the optimum vs rank: ours and the peers."""  # numpydoc ignore=PR01
    plt = ctx.pyplot()
    if plt is None:
        print("  (matplotlib not installed: no plot)")
        return
    optimum = [_optimum(s, r) for r in ranks]
    curves: dict[str, list[float]] = {}
    for rank in ranks:
        methods = {**_ours(a, rank), **_peers(a, rank)}
        for name in list(methods):
            if "full" not in name:  # the full SVD is exact and slow: truncated_svd stands in
                curves.setdefault(name, []).append(_error(a, methods[name]()))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(ranks, optimum, "k-", lw=3, alpha=0.35, label="optimum (Eckart–Young)")
    for name, errs in curves.items():
        style = "o--" if name.startswith("lowrank") else "x:"
        left.plot(ranks, errs, style, label=name)
        excess = [max(e / o - 1.0, 1e-16) for e, o in zip(errs, optimum, strict=True)]
        right.plot(ranks, excess, style, label=name)
    left.set(
        xlabel="rank",
        ylabel="relative Frobenius error",
        xscale="log",
        yscale="log",
        title=f"{a.shape[0]}×{a.shape[1]}, σ_i = 1/i",
    )
    right.set(
        xlabel="rank",
        ylabel="excess = err / err_opt − 1 (floored at 1e-16)",
        xscale="log",
        yscale="log",
        title="distance from the optimum",
    )
    right.legend(fontsize=7)
    fig.tight_layout()
    ctx.save(fig, "svd_error_vs_rank.png")
    plt.close(fig)


def run(ctx: Any) -> None:
    """Print the SVD comparison table and save the error-vs-rank plot."""  # numpydoc ignore=PR01
    m, n, rank = (400, 300, 10) if ctx.quick else (1536, 768, 32)
    a, s = _matrix(m, n)
    print(
        f"  {m}×{n} float64, σ_i = 1/i, rank {rank}; optimal relative error "
        f"{_optimum(s, rank):.4g}; excess = err/err_opt − 1"
    )
    if not hasattr(lowrank, "randomized_svd"):
        print("  (randomized_svd / svd_approx not in this build: rows skipped)")
    rows = _table_rows(a, s, rank, repeat=1 if ctx.quick else 3)
    ctx.table(["method", "time [s]", "rel. error", "excess"], rows)
    ranks = [3, 10] if ctx.quick else [4, 8, 16, 32]
    _plot(ctx, a, s, ranks)
