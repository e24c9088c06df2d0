"""Test oracles for LoRA-GA: pure NumPy float64 ports with an exact SVD (official, PEFT 0.21).

``official_init`` follows ``Outsider565/LoRA-GA`` ``peft/src/peft/tuners/lora/layer.py``
``lora_ga_init`` (L171-299 at 89af7de) line by line, with ``torch.svd_lowrank`` replaced
by an exact SVD and Python's ``random.sample`` by explicit index lists. ``peft_init``
follows PEFT 0.21's ``LoraLayer.lora_ga_init`` the same way.
"""

from __future__ import annotations

import numpy as np


def exact_svd(g):
    """Thin float64 SVD ``g = U diag(S) Vh``."""
    return np.linalg.svd(np.asarray(g, dtype=np.float64), full_matrices=False)


def _official_indices(direction, r, random_indices):
    if direction == "ArBr":
        return list(range(1, 2 * r, 2)), list(range(0, 2 * r, 2))
    if direction == "A2rBr":
        return list(range(r, 2 * r)), list(range(r))
    if direction == "ArB2r":
        return list(range(r)), list(range(r, 2 * r))
    perm = list(random_indices)  # official: random.sample(range(2r), 2r)
    return perm[:r], perm[r : 2 * r]


def official_init(
    grad,
    weight,
    r,
    s,
    direction="ArB2r",
    scale="stable",
    gamma=16.0,
    random_indices=None,
    norm_clip=False,
):
    """Official LoRA-GA init; returns (A0, B0, W_res) in float64."""
    grad = np.asarray(grad, dtype=np.float64)
    weight = np.array(weight, dtype=np.float64)
    U, _, V = exact_svd(grad)  # the official code's V = V.T is our Vh
    idx_A, idx_B = _official_indices(direction, r, random_indices)
    B = U[:, idx_B]
    A = V[idx_A, :]
    if scale == "gd":
        A, B = A / s, B / s
    elif scale == "stable":
        m = grad.shape[0]
        B = B * m**0.25 / gamma**0.5
        A = A * m**0.25 / gamma**0.5
    elif scale == "weightS":
        S = np.linalg.svd(weight, compute_uv=False) / s
        avg_s = np.sqrt(S[:r]).mean()
        B, A = B * avg_s, A * avg_s
    offset = (B @ A) * s
    if norm_clip:
        ratio = np.max(np.abs(weight)) / np.max(np.abs(offset))
        if ratio < 1:
            offset, A, B = offset * ratio, A * ratio**0.5, B * ratio**0.5
    return A, B, weight - offset


def peft_init(
    grad, weight, r, s, direction="ArB2r", scale="stable", gamma=16.0, random_indices=None
):
    """PEFT 0.21 ``lora_ga_init`` formulas; returns (A0, B0, W_res) in float64."""
    grad = np.asarray(grad, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    U, S, Vh = exact_svd(grad)
    if direction == "random":
        idx_A = idx_B = list(random_indices)[:r]  # PEFT shares one index set
    else:
        idx_A, idx_B = _official_indices(direction, r, None)
    A = Vh[idx_A, :]
    S_B = S[idx_B]
    B = U[:, idx_B] * S_B
    if scale == "stable":
        B = B * weight.shape[0] ** 0.25 / gamma**0.5
    elif scale == "weight_svd":
        if S_B[0] > 0:
            B = B * np.linalg.svd(weight, compute_uv=False)[0] / S_B[0]
    elif scale == "gd_scale":
        A, B = A / s, B / s
    return A, B, weight - s * (B @ A)


def best_rank(g, k):
    """Best rank-k approximation of g (float64)."""
    U, S, Vh = exact_svd(g)
    return (U[:, :k] * S[:k]) @ Vh[:k]


def lora_ga_objective(g, A, B):
    """``‖B Bᵀ G + G Aᵀ A − G‖_F²`` (the LoRA-GA objective, PEFT layout)."""
    g = np.asarray(g, dtype=np.float64)
    return float(np.linalg.norm(B @ (B.T @ g) + (g @ A.T) @ A - g) ** 2)


def sine_largest_angle(Q1, Q2):
    """Sine of the largest principal angle between the column spans of orthonormal Q1, Q2."""
    Q1 = np.asarray(Q1, dtype=np.float64)
    Q2 = np.asarray(Q2, dtype=np.float64)
    return float(np.linalg.norm(Q1 - Q2 @ (Q2.T @ Q1), 2))
