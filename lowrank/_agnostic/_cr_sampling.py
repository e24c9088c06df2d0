"""Index draws of CR sampling: i.i.d. inverse-CDF and systematic πps.

Every function returns ``(indices, weights)``: int64 indices sorted ascending and the
per-pair weights λ_j with ``C R = Σ_j λ_j a[:, s_j] b[s_j, :]``. Probabilities are float64.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "iid_indices",
    "inclusion_probabilities",
    "systematic_indices",
    "topk_indices",
    "without_replacement",
]


def _last_positive(cdf: Any, xp: Any) -> Any:
    """Index of the last entry with positive mass, as a shape-(1,) array."""  # numpydoc ignore=PR01,RT01
    total = xp.reshape(cdf[-1], (1,))
    return xp.searchsorted(cdf, total, side="left")


def iid_indices(p: Any, rank: int, rand: Any, xp: Any) -> tuple[Any, Any]:
    """``rank`` i.i.d. inverse-CDF draws from ``p`` with λ_j = 1 / (rank p_{s_j})."""  # numpydoc ignore=PR01,RT01
    cdf = xp.cumulative_sum(p)
    u = rand.uniform((rank,), xp.float64) * cdf[-1]
    # side="right" returns the first i with cdf[i] > u, so a zero-mass index (cdf flat
    # there) is never chosen; the clamp only guards u rounding up to the total.
    idx = xp.minimum(xp.searchsorted(cdf, u, side="right"), _last_positive(cdf, xp))
    idx = xp.sort(xp.astype(idx, xp.int64))
    return idx, 1.0 / (rank * xp.take(p, idx))


def topk_indices(w: Any, rank: int, xp: Any) -> tuple[Any, Any]:
    """The ``rank`` largest ``w`` (ties: smaller index first), weights 1."""  # numpydoc ignore=PR01,RT01
    # ascending stable sort of -w keeps equal weights in index order
    order = xp.argsort(-w, stable=True)
    idx = xp.sort(xp.astype(order[: min(rank, w.shape[0])], xp.int64))
    return idx, xp.ones(idx.shape, dtype=xp.float64, device=_device(w))


def inclusion_probabilities(p: Any, rank: int, xp: Any) -> Any:
    """π_i = min(1, c p_i) with Σ π_i = rank; needs rank < #{p_i > 0}."""  # numpydoc ignore=PR01,RT01
    capped = p >= 1.0 / rank
    for _ in range(p.shape[0] + 1):  # capping only grows, so this ends in <= l rounds
        n_capped = int(xp.sum(xp.astype(capped, xp.int64)))
        rest = xp.sum(xp.where(capped, 0.0, p))
        pi = xp.where(capped, 1.0, p * ((rank - n_capped) / rest))
        now = capped | (pi >= 1.0)
        if bool(xp.all(now == capped)):
            break
        capped = now
    return pi


def systematic_indices(pi: Any, perm: Any, u: Any, n_draw: int, xp: Any) -> Any:
    """Systematic πps: units of ``perm`` whose interval [cum_{k-1}, cum_k) holds u + j."""  # numpydoc ignore=PR01,RT01
    cum = xp.cumulative_sum(xp.take(pi, perm))
    # rescale the points to the computed total so round-off cannot push one past the end
    points = (u + xp.arange(n_draw, dtype=xp.float64, device=_device(pi))) * (cum[-1] / n_draw)
    pos = xp.minimum(xp.searchsorted(cum, points, side="right"), _last_positive(cum, xp))
    return xp.take(perm, pos)


def without_replacement(p: Any, rank: int, rand: Any, xp: Any) -> tuple[Any, Any]:
    """Randomized systematic πps sample of size min(rank, l), Horvitz–Thompson weights 1/π."""  # numpydoc ignore=PR01,RT01
    size = min(rank, p.shape[0])
    positive = p > 0
    if size >= int(xp.sum(xp.astype(positive, xp.int64))):
        # every index with mass is certain (π = 1): the product is exact; zero-mass
        # indices (zero outer products) fill the remaining slots with weight 0
        order = xp.argsort(xp.astype(~positive, xp.int8), stable=True)
        idx = xp.sort(xp.astype(order[:size], xp.int64))
        return idx, xp.astype(xp.take(positive, idx), xp.float64)
    pi = inclusion_probabilities(p, size, xp)
    certain = pi >= 1.0
    n_certain = int(xp.sum(xp.astype(certain, xp.int64)))
    perm = rand.permutation(p.shape[0])
    u = rand.uniform((1,), xp.float64)
    drawn = systematic_indices(xp.where(certain, 0.0, pi), perm, u, size - n_certain, xp)
    fixed = xp.astype(xp.nonzero(certain)[0], xp.int64)
    idx = xp.sort(xp.concat((fixed, xp.astype(drawn, xp.int64))))
    return idx, 1.0 / xp.take(pi, idx)


def _device(x: Any) -> Any:
    from .._lib._compat import device

    return device(x)
