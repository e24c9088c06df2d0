"""Reference computations for LoRA-Pro, written from the formulas of the paper's official code.

These are faithful ports of what the official code computes, not of its text: the
DeepSpeed/``peta`` adjustment with ``pinv(S + 1e-8 I)``, the explicit out×out projector
``I − B (BᵀB)⁺ Bᵀ``, the complex-``eig`` Sylvester solve (A X + X B = C) and the step-0
special case; plus brute-force and explicit-projector oracles on NumPy float64. They
serve as test oracles and as the speed baseline in ``bench/peers/compare_lora_pro.py``.
"""

from __future__ import annotations

import numpy as np


def ref_solve_sylvester(S1, S2, C):
    """Solve S1 X + X S2 = C via complex eigendecompositions (official code's solver)."""
    import torch

    R, U = torch.linalg.eig(S1)
    S, V = torch.linalg.eig(-S2)
    F = torch.linalg.solve(U, (C + 0j) @ V)
    W = R[..., :, None] - S[..., None, :]
    Y = F / W
    return (U @ Y @ torch.linalg.inv(V)).real


def ref_lora_pro_adjust(A, B, gA, gB, scaling, *, x_mode="sylvester", delta=1e-8, step0=False):
    """Official LoRA-Pro adjustment (torch, PEFT layout; ``x_mode`` zero|sylvester|symmetry)."""
    import torch

    s2 = 1.0 / scaling**2
    r = A.shape[0]
    eye_r = torch.eye(r, dtype=A.dtype, device=A.device)
    AAt = A @ A.T
    BtB = B.T @ B
    AAt_inv = torch.linalg.pinv(AAt + delta * eye_r)
    if step0:  # the reference's special case for the B = 0 initialisation
        return gA, s2 * (gB @ AAt_inv)
    BtB_inv = torch.linalg.pinv(BtB + delta * eye_r)
    if x_mode == "sylvester":
        X = ref_solve_sylvester(BtB, AAt, -s2 * BtB_inv @ gA @ A.T)
    elif x_mode == "symmetry":  # the official formula: AAᵀ where the derivation has its inverse
        X = -0.5 * s2 * BtB_inv @ B.T @ gB @ AAt
    else:
        X = torch.zeros((r, r), dtype=A.dtype, device=A.device)
    X = X.to(A.dtype)
    eye_out = torch.eye(B.shape[0], dtype=B.dtype, device=B.device)
    new_gA = s2 * BtB_inv @ gA + X @ A
    new_gB = s2 * ((eye_out - B @ BtB_inv @ B.T) @ gB @ AAt_inv) - B @ X
    return new_gA, new_gB


def ref_full_adam_step(A, B, gA, gB, state, *, scaling, lr, betas, eps, weight_decay):
    """One "full"-mode LoRA-Pro AdamW step: Adam on g~, projected back.

    ``state`` is a dict with ``step`` (int), ``m`` and ``v`` (out×in); updated in place.
    Returns new (A, B). ε placement sqrt(v̂) + ε (the code's).
    """
    b1, b2 = betas
    nA, nB = ref_lora_pro_adjust(A, B, gA, gB, scaling)
    g_eq = scaling * (B @ nA + nB @ A)
    state["step"] += 1
    t = state["step"]
    state["m"] = b1 * state["m"] + (1 - b1) * g_eq
    state["v"] = b2 * state["v"] + (1 - b2) * g_eq * g_eq
    U = (state["m"] / (1 - b1**t)) / ((state["v"] / (1 - b2**t)).sqrt() + eps)
    uA, uB = ref_lora_pro_adjust(A, B, scaling * B.T @ U, scaling * U @ A.T, scaling)
    A_new = A * (1 - lr * weight_decay) - lr * uA
    B_new = B * (1 - lr * weight_decay) - lr * uB
    return A_new, B_new


def projector(M):
    """Orthogonal projector onto the column space of M (explicit; tests only)."""
    return M @ np.linalg.pinv(M)


def projected_gradient(A, B, G):
    """P_B G + G P_A − P_B G P_A with explicit projectors (NumPy float64)."""
    PB = projector(B)
    PA = projector(A.T)
    return PB @ G + G @ PA - PB @ G @ PA


def brute_force_min_residual(A, B, G, scaling):
    """min over (Y, Z) of ||s (B Y + Z A) − G||_F² by vectorised least squares."""
    out = B.shape[0]
    n_in = A.shape[1]
    # vec(B Y) = (I_in ⊗ B) vec(Y), vec(Z A) = (Aᵀ ⊗ I_out) vec(Z) (column-major vec)
    M = scaling * np.hstack([np.kron(np.eye(n_in), B), np.kron(A.T, np.eye(out))])
    g = G.reshape(-1, order="F")
    sol, *_ = np.linalg.lstsq(M, g, rcond=None)
    res = M @ sol - g
    return float(res @ res), M


def sylvester_objective(A, B, gA, gB, newA, newB):
    """||g_A' − g_A||² + ||g_B' − g_B||² (what the Sylvester gauge minimises)."""
    return float(np.sum((newA - gA) ** 2) + np.sum((newB - gB) ** 2))
