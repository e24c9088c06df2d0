"""LoRA-GA initialisation bodies (SPEC §7, D2, D3): gradient SVD, index sets, scales.

Pure array API with explicit ``xp``. Performs no input validation.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ._linalg import svd_flip

__all__ = [
    "FactorPlan",
    "lora_ga_factors",
    "spectral_gaps",
    "subspace_svd",
    "svd_defaults",
    "top_triplets",
    "weight_scale",
]


class FactorPlan(NamedTuple):
    """Validated options of one ``lora_ga_init`` call."""  # numpydoc ignore=PR01

    rank: int
    scaling: float
    direction: str
    scale: str
    stable_gamma: float
    compat: str


def svd_defaults(rank: int, n_oversamples: int | None, n_power_iter: int | None) -> tuple[int, int]:
    """LoRA-GA's randomized-SVD defaults: the [r, 2r) block must be accurate (SPEC D3.1).

    Subspace iteration resolves singular vector j to roughly
    ``(σ_{q+1}/σ_j)^(2p+1)``; j = 2r is the hardest index LoRA-GA uses. With
    q = 2r + 1 + max(2r, 16) sample columns and p = 4 power iterations the block
    [r, 2r) of a 4096 x 4096 float32 matrix with a 1/i spectrum comes out with a
    largest principal-angle sine below 1e-3 at r = 8 (measured in
    ``bench/compare_lora_ga.py``; PEFT's q = 4r, p = 4 gives ~1.5e-3).
    """  # numpydoc ignore=PR01,RT01
    p = 4 if n_power_iter is None else n_power_iter
    over = max(2 * rank, 16) if n_oversamples is None else n_oversamples
    return over, p


def subspace_svd(g: Any, k: int, n_power_iter: int, omega: Any, xp: Any) -> tuple[Any, Any, Any]:
    """Randomized SVD by QR-normalised subspace iteration (HMT 2011, Alg. 4.4 + 5.1).

    ``omega`` is the (..., n, q) test matrix. Returns the leading ``k`` triplets with
    sklearn signs. Performs no input validation.
    """  # numpydoc ignore=PR01,RT01
    gt = xp.matrix_transpose(g)
    Q, _ = xp.linalg.qr(g @ omega)
    for _ in range(n_power_iter):
        Z, _ = xp.linalg.qr(gt @ Q)
        Q, _ = xp.linalg.qr(g @ Z)
    small = xp.matrix_transpose(Q) @ g  # (..., q, n): the final read of g
    Ub, S, Vh = xp.linalg.svd(small, full_matrices=False)
    U = Q @ Ub[..., :, :k]
    U, Vh = svd_flip(U, Vh[..., :k, :], xp)
    return U, S[..., :k], Vh


def block_krylov_svd(g: Any, k: int, depth: int, omega: Any, xp: Any) -> tuple[Any, Any, Any]:
    """Randomized block Krylov SVD (Musco & Musco 2015, Alg. 2) with Rayleigh-Ritz.

    Builds ``[gΩ, (g gᵀ) gΩ, ..., (g gᵀ)^depth gΩ]`` block by block, each block
    orthonormalised against the previous ones, then takes the SVD of ``Qᵀ g``: 2 depth
    + 2 reads of ``g``. Returns the leading ``k`` triplets with sklearn signs.
    Performs no input validation.
    """  # numpydoc ignore=PR01,RT01
    gt = xp.matrix_transpose(g)
    Y, _ = xp.linalg.qr(g @ omega)
    blocks = [Y]
    for _ in range(depth):
        Y = g @ (gt @ Y)
        for prev in blocks:  # block Gram-Schmidt keeps the Krylov basis well conditioned
            Y = Y - prev @ (xp.matrix_transpose(prev) @ Y)
        Y, _ = xp.linalg.qr(Y)
        blocks.append(Y)
    Q, _ = xp.linalg.qr(xp.concat(blocks, axis=-1))
    Ub, S, Vh = xp.linalg.svd(xp.matrix_transpose(Q) @ g, full_matrices=False)
    U, Vh = svd_flip(Q @ Ub[..., :, :k], Vh[..., :k, :], xp)
    return U, S[..., :k], Vh


def top_triplets(
    g: Any, k: int, *, svd: str, n_oversamples: int, n_power_iter: int, rand: Any, xp: Any
) -> tuple[Any, Any, Any]:
    """Leading ``k`` singular triplets of ``g`` (..., m, n), exact or randomized.

    Small problems (q >= min(m, n) / 2) use the exact SVD: it is cheaper there and
    has no sampling error. Performs no input validation.
    """  # numpydoc ignore=PR01,RT01
    *batch, m, n = g.shape
    q = min(k + n_oversamples, m, n)
    if svd == "exact" or 2 * q >= min(m, n):
        from .._svd import truncated_svd  # noqa: PLC0415  (late: _svd imports _agnostic)

        return tuple(truncated_svd(g, k, check_finite=False, xp=xp))  # type: ignore[return-value]
    omega = rand.standard_normal((*batch, n, q), g.dtype)
    return subspace_svd(g, k, n_power_iter, omega, xp)


def spectral_gaps(S: Any, rank: int, xp: Any) -> tuple[Any, Any]:
    """``(σ_r/σ_{r+1}, σ_2r/σ_{2r+1})`` (1-based) per matrix; inf past the last σ."""  # numpydoc ignore=PR01,RT01
    def ratio(i: int) -> Any:
        top = S[..., i - 1]
        if S.shape[-1] <= i:
            return xp.full_like(top, math.inf)
        den = S[..., i]
        quotient = top / xp.where(den > 0, den, xp.ones_like(den))
        undefined = xp.where(top > 0, xp.full_like(top, math.inf), xp.full_like(top, math.nan))
        return xp.where(den > 0, quotient, undefined)  # 0/0 (zero gradient): nan

    return ratio(rank), ratio(2 * rank)


def _index_sets(plan: FactorPlan, perm: Any) -> tuple[Any, Any]:
    """Index sets (J_A, J_B) as slices, or index arrays for "random" (SPEC D3.2)."""  # numpydoc ignore=PR01,RT01
    r = plan.rank
    if plan.direction == "ArB2r":
        return slice(0, r), slice(r, 2 * r)
    if plan.direction == "A2rBr":
        return slice(r, 2 * r), slice(0, r)
    if plan.direction == "ArBr":
        return slice(1, 2 * r, 2), slice(0, 2 * r, 2)
    if plan.compat == "peft":  # PEFT shares one index set between A and B
        return perm[..., :r], perm[..., :r]
    return perm[..., :r], perm[..., r : 2 * r]


def _take_rows(x: Any, idx: Any, xp: Any) -> Any:
    """``x[..., idx, :]`` for a slice or a per-matrix (..., r) index array."""  # numpydoc ignore=PR01,RT01
    if isinstance(idx, slice):
        return x[..., idx, :]
    full = xp.broadcast_to(idx[..., :, None], (*idx.shape, x.shape[-1]))
    return xp.take_along_axis(x, full, axis=-2)


def _take_values(s: Any, idx: Any, xp: Any) -> Any:
    """``s[..., idx]`` for a slice or a per-matrix index array."""  # numpydoc ignore=PR01,RT01
    return s[..., idx] if isinstance(idx, slice) else xp.take_along_axis(s, idx, axis=-1)


def lora_ga_factors(
    U: Any, S: Any, Vh: Any, plan: FactorPlan, perm: Any, wscale: Any, xp: Any
) -> tuple[Any, Any]:
    """``(A0, B0)`` from the gradient's top-2r triplets (SPEC D3 steps 2-3).

    ``perm`` is a (..., 2r) permutation for ``direction="random"`` (else None) and
    ``wscale`` the per-matrix weight-SVD factor for ``scale="weight_svd"``.
    Performs no input validation.
    """  # numpydoc ignore=PR01,RT01
    JA, JB = _index_sets(plan, perm)
    A = _take_rows(Vh, JA, xp)
    B = xp.matrix_transpose(_take_rows(xp.matrix_transpose(U), JB, xp))
    S_B = _take_values(S, JB, xp)
    if plan.compat == "peft":
        B = B * S_B[..., None, :]  # PEFT: B0 carries the singular values
    zeta = U.shape[-2] ** 0.25 / math.sqrt(plan.stable_gamma)
    if plan.scale == "stable":
        return (A, B * zeta) if plan.compat == "peft" else (A * zeta, B * zeta)
    if plan.scale == "gd_scale":
        return A / plan.scaling, B / plan.scaling
    if plan.scale == "weight_svd":
        if plan.compat == "peft":  # B0 * sigma_1(W) / S_B[0], skipped where S_B[0] == 0
            lead = S_B[..., :1]
            safe = xp.where(lead > 0, lead, xp.ones_like(lead))
            factor = xp.where(lead > 0, wscale[..., None] / safe, xp.ones_like(lead))
            return A, B * factor[..., None, :]
        return A * wscale[..., None, None], B * wscale[..., None, None]
    return A, B


def weight_scale(sw: Any, plan: FactorPlan, xp: Any) -> Any:
    """Per-matrix weight-SVD factor from the top singular values ``sw`` (..., r) of W.

    Official code: mean over i < r of sqrt(σ_i(W) / s); PEFT: σ_1(W).
    Performs no input validation.
    """  # numpydoc ignore=PR01,RT01
    if plan.compat == "peft":
        return sw[..., 0]
    return xp.mean(xp.sqrt(sw[..., : plan.rank] / plan.scaling), axis=-1)
