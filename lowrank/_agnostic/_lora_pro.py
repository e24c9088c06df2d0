"""LoRA-Pro adjusted gradients in the PEFT layout (SPEC D4, §8): pure array API, no validation.

Shapes: ``A`` (..., r, in), ``B`` (..., out, r), gradients alike. Everything that touches
an ``out`` or ``in`` axis is a product with an r-sized inner or outer dimension, so the cost
is O((in + out) r² + r³) per layer and no (out, out) or (in, in) array ever exists. The
r×r work (Gram eigendecompositions, inverses, the Sylvester solve) runs in float64.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = [
    "AUTO_RATIO",
    "equivalent_gradient",
    "gram_spectra",
    "lora_pro_adjust",
    "solve_sylvester_spd",
]

#: ``damping="auto"``: an eigen-direction of S_B is treated as null when
#: σ_i(B) < AUTO_RATIO · rms σ(A) (and symmetrically for A), i.e. when
#: λ_i(S_B) <= AUTO_RATIO² · tr(S_A) / r.
AUTO_RATIO = 1e-3


class GramSpectra(NamedTuple):
    """Eigendecompositions of S_B = BᵀB and S_A = AAᵀ (float64) and their damped inverses."""

    lam: Any  # (..., r) eigenvalues of S_B, clamped at 0
    QB: Any  # (..., r, r)
    mu: Any  # (..., r) eigenvalues of S_A, clamped at 0
    QA: Any
    SB_inv: Any  # (..., r, r) damped pseudo-inverse of S_B, in the input dtype
    SA_inv: Any


def _matT(a: Any, xp: Any) -> Any:
    """Transpose of the last two axes."""  # numpydoc ignore=PR01,RT01
    return xp.matrix_transpose(a)


def _input_eps(dtype: Any, xp: Any) -> float:
    """Machine epsilon of the dtype the Gram matrices were formed in."""  # numpydoc ignore=PR01,RT01
    return float(xp.finfo(dtype).eps)


def _inverse_weights(lam: Any, other_trace: Any, damping: Any, eps: float, xp: Any) -> Any:
    """Per-eigenvalue weights f(λ) of the damped pseudo-inverse (SPEC §8.8, D7).

    ``"auto"``: null when λ <= max(r·eps·λ_max, AUTO_RATIO²·tr(S_other)/r), else
    1/(λ + eps·tr(S)/r + floor). A float δ > 0: 1/(λ + δ). ``0``: exact
    pseudo-inverse with a rounding-level cut-off r·eps·λ_max.
    """  # numpydoc ignore=PR01,RT01
    r = lam.shape[-1]
    lam_max = xp.max(lam, axis=-1, keepdims=True)
    cut = r * eps * lam_max
    if damping == "auto":
        cut = xp.maximum(cut, (AUTO_RATIO**2 / r) * other_trace)
        floor = r * float(xp.finfo(xp.float64).smallest_normal)
        ridge = eps * xp.sum(lam, axis=-1, keepdims=True) / r + floor
    elif damping > 0:
        return 1.0 / (lam + damping)
    else:
        ridge = xp.zeros_like(lam_max)
    keep = lam > cut
    safe = xp.where(keep, lam + ridge, xp.ones_like(lam))
    return xp.where(keep, 1.0 / safe, xp.zeros_like(lam))


def gram_spectra(A: Any, B: Any, damping: Any, xp: Any) -> GramSpectra:
    """One batched ``eigh`` of [S_B, S_A]; damped inverses cast back to the input dtype."""  # numpydoc ignore=PR01,RT01
    dtype = A.dtype
    SB = _matT(B, xp) @ B
    SA = A @ _matT(A, xp)
    S = xp.astype(xp.stack([SB, SA], axis=0), xp.float64)
    S = 0.5 * (S + _matT(S, xp))  # exact symmetry for eigh
    evals, Q = xp.linalg.eigh(S)
    evals = xp.maximum(evals, xp.zeros_like(evals))  # PSD: negatives are rounding
    lam, mu, QB, QA = evals[0, ...], evals[1, ...], Q[0, ...], Q[1, ...]
    eps = _input_eps(dtype, xp)
    tr_B = xp.sum(lam, axis=-1, keepdims=True)
    tr_A = xp.sum(mu, axis=-1, keepdims=True)
    fB = _inverse_weights(lam, tr_A, damping, eps, xp)
    fA = _inverse_weights(mu, tr_B, damping, eps, xp)
    SB_inv = xp.astype((QB * fB[..., None, :]) @ _matT(QB, xp), dtype)
    SA_inv = xp.astype((QA * fA[..., None, :]) @ _matT(QA, xp), dtype)
    return GramSpectra(lam, QB, mu, QA, SB_inv, SA_inv)


def solve_sylvester_spd(lam: Any, QB: Any, mu: Any, QA: Any, K: Any, xp: Any) -> Any:
    """Solve S_B X + X S_A = K from S_B = QB diag(lam) QBᵀ, S_A = QA diag(mu) QAᵀ (SPEC D4).

    X = QB [(QBᵀ K QA)_ij / (lam_i + mu_j)] QAᵀ: two real symmetric eigendecompositions,
    no complex ``eig`` and no r²×r² system. Quotients with lam_i + mu_j at rounding
    level (both factors null in that direction) are set to zero, which is the
    minimum-norm least-squares solution of the singular system (SPEC §8.8). Batched;
    float64 in, float64 out.
    """  # numpydoc ignore=PR01,RT01
    denom = lam[..., :, None] + mu[..., None, :]
    scale = xp.max(lam, axis=-1)[..., None, None] + xp.max(mu, axis=-1)[..., None, None]
    tol = 8 * lam.shape[-1] * float(xp.finfo(xp.float64).eps) * scale
    keep = denom > tol
    inv = xp.where(keep, 1.0 / xp.where(keep, denom, xp.ones_like(denom)), xp.zeros_like(denom))
    core = (_matT(QB, xp) @ K @ QA) * inv
    return QB @ core @ _matT(QA, xp)


def _base_solution(A: Any, B: Any, gA: Any, gB: Any, spec: GramSpectra, inv_s2: Any, xp: Any):
    """Official-code base member (X = 0, projector on g_B'), plus Bᵀg_B (SPEC D4)."""  # numpydoc ignore=PR01,RT01
    a0 = inv_s2 * (spec.SB_inv @ gA)
    BtgB = _matT(B, xp) @ gB
    b0 = inv_s2 * ((gB - B @ (spec.SB_inv @ BtgB)) @ spec.SA_inv)
    return a0, b0, BtgB


def _gauge(A, B, gA, gB, a0, b0, BtgB, spec, inv_s2, gauge, xp):  # noqa: PLR0913
    """The r×r gauge matrix X for ``gauge`` (float64 for "sylvester")."""  # numpydoc ignore=PR01,RT01
    if gauge == "symmetric":
        return -0.5 * inv_s2 * (spec.SB_inv @ BtgB @ spec.SA_inv)
    # Sylvester gauge: X minimises ||a0 + XA - gA||² + ||b0 - BX - gB||² exactly, so
    # S_B X + X S_A = (gA - a0)Aᵀ + Bᵀ(b0 - gB). Without damping this is D4's
    # K = -(1/s²) S_B⁻¹ g_A Aᵀ; with damping it stays the exact minimiser.
    K = (gA - a0) @ _matT(A, xp) + _matT(B, xp) @ (b0 - gB)
    K = xp.astype(K, xp.float64)
    return xp.astype(solve_sylvester_spd(spec.lam, spec.QB, spec.mu, spec.QA, K, xp), A.dtype)


def lora_pro_adjust(A, B, gA, gB, *, inv_s2, gauge, damping, xp):  # noqa: PLR0913
    """See docstring in `lowrank._lora_pro`."""  # numpydoc ignore=PR01,RT01
    spec = gram_spectra(A, B, damping, xp)
    a0, b0, BtgB = _base_solution(A, B, gA, gB, spec, inv_s2, xp)
    if gauge == "zero":
        return a0, b0
    X = _gauge(A, B, gA, gB, a0, b0, BtgB, spec, inv_s2, gauge, xp)
    return a0 + X @ A, b0 - B @ X


def equivalent_gradient(A, B, gA, gB, *, scale, damping, xp):  # noqa: PLR0913
    """See docstring in `lowrank._lora_pro`."""  # numpydoc ignore=PR01,RT01
    spec = gram_spectra(A, B, damping, xp)
    a0, b0, _ = _base_solution(A, B, gA, gB, spec, 1.0 / (scale * scale), xp)
    # g~ = s (B a0 + b0 A), as ONE product with inner dimension 2r.
    left = xp.concat([B, b0], axis=-1)
    right = xp.concat([a0, A], axis=-2)
    return scale * (left @ right)
