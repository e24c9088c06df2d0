"""LoRA-Pro adjusted gradients, PEFT layout (docs/theory/lora_pro.md): array API, no validation.

Shapes: ``A`` (..., r, in), ``B`` (..., out, r), gradients alike. Everything that touches
an ``out`` or ``in`` axis is a product with an r-sized inner or outer dimension, so the cost
is O((in + out) r² + r³) per layer and no (out, out) or (in, in) array ever exists. The
r×r work (Gram eigendecompositions, inverses, the Sylvester solve) runs in float64.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = [
    "AUTO_RATIO",
    "coefficients",
    "equivalent_gradient",
    "gram_spectra",
    "lora_pro_adjust",
    "solve_sylvester_spd",
    "spectra_of_grams",
]

#: ``damping="auto"``: an eigen-direction of S_B is treated as null when
#: σ_i(B) < AUTO_RATIO · rms σ(A) (and symmetrically for A), i.e. when
#: λ_i(S_B) <= AUTO_RATIO² · tr(S_A) / r.
AUTO_RATIO = 1e-3


class GramSpectra(NamedTuple):
    """Eigendecompositions of S_B = BᵀB and S_A = AAᵀ and damped inverses, all float64."""

    lam: Any  # (..., r) eigenvalues of S_B, clamped at 0
    QB: Any  # (..., r, r)
    mu: Any  # (..., r) eigenvalues of S_A, clamped at 0
    QA: Any
    SB: Any  # (..., r, r) the Gram matrices themselves
    SB_inv: Any  # (..., r, r) damped pseudo-inverse of S_B
    SA_inv: Any


def _matT(a: Any, xp: Any) -> Any:
    """Transpose of the last two axes."""  # numpydoc ignore=PR01,RT01
    return xp.matrix_transpose(a)


def _f64(a: Any, xp: Any) -> Any:
    """Arrays to float64 (Python scalars pass through)."""  # numpydoc ignore=PR01,RT01
    return xp.astype(a, xp.float64) if hasattr(a, "shape") else a


def _inverse_weights(lam: Any, other_trace: Any, damping: Any, eps: float, xp: Any) -> Any:
    """Per-eigenvalue weights f(λ) of the damped pseudo-inverse (docs/theory/lora_pro.md, Damping).

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
    """One batched ``eigh`` of [S_B, S_A] in float64."""  # numpydoc ignore=PR01,RT01
    S = xp.stack([_matT(B, xp) @ B, A @ _matT(A, xp)], axis=0)
    # The Grams carry the input dtype's rounding: its eps sets the damping and cut-offs.
    return spectra_of_grams(S, float(xp.finfo(A.dtype).eps), damping, xp)


def spectra_of_grams(S: Any, eps: float, damping: Any, xp: Any) -> GramSpectra:
    """GramSpectra of stacked Grams ``S = [S_B, S_A]`` (2, ..., r, r) formed at rounding ``eps``.

    Split from `gram_spectra` so that callers holding the Grams of many layers (formed
    by batched products of their own) share one ``eigh`` call.
    """  # numpydoc ignore=PR01,RT01
    S = xp.astype(S, xp.float64)
    S = 0.5 * (S + _matT(S, xp))  # exact symmetry for eigh
    evals, Q = xp.linalg.eigh(S)
    evals = xp.maximum(evals, xp.zeros_like(evals))  # PSD: negatives are rounding
    traces = xp.sum(evals, axis=-1, keepdims=True)  # [tr S_B, tr S_A]
    # Both damped inverses in one pass over the stack: each is cut against the other trace.
    f = _inverse_weights(evals, xp.flip(traces, axis=0), damping, eps, xp)
    S_inv = (Q * f[..., None, :]) @ _matT(Q, xp)
    lam, mu, QB, QA = evals[0, ...], evals[1, ...], Q[0, ...], Q[1, ...]
    return GramSpectra(lam, QB, mu, QA, S[0, ...], S_inv[0, ...], S_inv[1, ...])


def solve_sylvester_spd(lam: Any, QB: Any, mu: Any, QA: Any, K: Any, xp: Any) -> Any:
    """Solve S_B X + X S_A = K from S_B = QB diag(lam) QBᵀ, S_A = QA diag(mu) QAᵀ.

    X = QB [(QBᵀ K QA)_ij / (lam_i + mu_j)] QAᵀ: two real symmetric eigendecompositions,
    no complex ``eig`` and no r²×r² system. Quotients with lam_i + mu_j at rounding
    level (both factors null in that direction) are set to zero, which is the
    minimum-norm least-squares solution of the singular system. Batched.
    """  # numpydoc ignore=PR01,RT01
    denom = lam[..., :, None] + mu[..., None, :]
    scale = xp.max(lam, axis=-1)[..., None, None] + xp.max(mu, axis=-1)[..., None, None]
    tol = 8 * lam.shape[-1] * float(xp.finfo(lam.dtype).eps) * scale
    keep = denom > tol
    inv = xp.where(keep, 1.0 / xp.where(keep, denom, xp.ones_like(denom)), xp.zeros_like(denom))
    core = (_matT(QB, xp) @ K @ QA) * inv
    return QB @ core @ _matT(QA, xp)


def _coefficients(A, B, gA, gB, spec, inv_s2, gauge, xp):
    """Coefficients (see `coefficients`) from the factors and their gradients."""  # numpydoc ignore=PR01,RT01
    BtgB = _matT(B, xp) @ gB
    gAAt = gA @ _matT(A, xp) if gauge == "sylvester" else None
    return coefficients(BtgB, gAAt, spec, inv_s2, gauge, xp)


def coefficients(BtgB, gAAt, spec, inv_s2, gauge, xp):
    """r×r matrices (float64) with g_A' = CA gA + X A and g_B' = gB CB − B (MB + X).

    Inputs: the r×r products ``Bᵀg_B`` and ``g_A Aᵀ`` (the latter used only by the
    Sylvester gauge). The base member (official code, X = 0) is a0 = CA gA,
    b0 = gB CB − B MB with CA = S_B⁻¹/s², CB = S_A⁻¹/s², MB = S_B⁻¹ Bᵀg_B S_A⁻¹/s².
    """  # numpydoc ignore=PR01,RT01
    s2 = _f64(inv_s2, xp)
    BtgB = _f64(BtgB, xp)
    CA, CB = s2 * spec.SB_inv, s2 * spec.SA_inv
    MB = CA @ BtgB @ spec.SA_inv
    if gauge == "zero":
        return CA, CB, MB, None
    if gauge == "symmetric":
        return CA, CB, MB, -0.5 * MB
    # Sylvester gauge: X minimises ||a0 + XA − gA||² + ||b0 − BX − gB||² exactly:
    # S_B X + X S_A = (gA − a0)Aᵀ + Bᵀ(b0 − gB), evaluated with r×r products only.
    # Without damping this is the textbook K = −S_B⁻¹ g_A Aᵀ / s²; with damping it stays exact.
    gAAt = _f64(gAAt, xp)
    Bt_b0 = BtgB @ CB - spec.SB @ MB
    K = gAAt - CA @ gAAt + Bt_b0 - BtgB
    return CA, CB, MB, solve_sylvester_spd(spec.lam, spec.QB, spec.mu, spec.QA, K, xp)


def lora_pro_adjust(A, B, gA, gB, *, inv_s2, gauge, damping, xp):
    """See docstring in `lowrank._lora_pro`."""  # numpydoc ignore=PR01,RT01
    spec = gram_spectra(A, B, damping, xp)
    CA, CB, MB, X = _coefficients(A, B, gA, gB, spec, inv_s2, gauge, xp)
    dt = A.dtype
    new_A = xp.astype(CA, dt) @ gA
    if X is not None:
        new_A = new_A + xp.astype(X, dt) @ A
        MB = MB + X
    new_B = gB @ xp.astype(CB, dt) - B @ xp.astype(MB, dt)
    return new_A, new_B


def equivalent_gradient(A, B, gA, gB, *, scale, damping, xp):
    """See docstring in `lowrank._lora_pro`."""  # numpydoc ignore=PR01,RT01
    spec = gram_spectra(A, B, damping, xp)
    CA, CB, MB, _ = _coefficients(A, B, gA, gB, spec, 1.0 / (scale * scale), "zero", xp)
    s, dt = _f64(scale, xp), A.dtype
    # g~ = s(B a0 + b0 A) = B (s CA gA − s MB A) + (s gB CB) A: ONE product, inner dim 2r.
    right_top = xp.astype(s * CA, dt) @ gA - xp.astype(s * MB, dt) @ A
    left = xp.concat([B, gB @ xp.astype(s * CB, dt)], axis=-1)
    return left @ xp.concat([right_top, A], axis=-2)
