"""The two-sided block Krylov sketch core against explicit matrices and np.linalg.svd."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import matrix_with_spectrum

from lowrank._agnostic._grad_sketch import LayerSketch, run_sweeps, sketch_svds
from lowrank._lib._random import Random

EPS64 = float(np.finfo(np.float64).eps)


def _oracle(mats, calls=None):
    def oracle(Xs, Ys):
        if calls is not None:
            calls.append(([x.shape for x in Xs], [y.shape for y in Ys]))
        return [G @ X for G, X in zip(mats, Xs)], [G.T @ Y for G, Y in zip(mats, Ys)]

    return oracle


def _sketch(mats, rank, n_sweeps=4, block=16, seed=0, **kw):
    shapes = [G.shape for G in mats]
    rand = Random(seed, np, None)
    return sketch_svds(
        _oracle(mats), shapes, rank, n_sweeps=n_sweeps, block=block, rand=rand,
        dtype=np.float64, xp=np, **kw,
    )


def _max_sine(A, B):
    """Largest principal-angle sine between the column spans of orthonormal A and B."""
    c = np.linalg.svd(A.T @ B, compute_uv=False).min()
    return math.sqrt(max(0.0, 1.0 - c * c))


def _spectrum(n, kind):
    i = np.arange(1, n + 1, dtype=float)
    return {"1/i": 1 / i, "geometric": 0.9**i, "gapped": np.where(i <= 12, 1.0, 0.3 / i)}[kind]


@pytest.mark.parametrize("kind", ["1/i", "geometric", "gapped"])
@pytest.mark.parametrize("shape", [(300, 200), (150, 260)])
def test_ritz_triplets_obey_interlacing_and_wedin(shape, kind):
    m, n = shape
    s = _spectrum(min(m, n), kind)
    G = matrix_with_spectrum(m, n, s, seed=1)
    k = 12
    res = _sketch([G], k)[0]
    U, S, Vh = res.U, res.S, res.Vh
    assert U.shape == (m, k) and S.shape == (k,) and Vh.shape == (k, n)
    tol = 50 * EPS64
    assert np.allclose(U.T @ U, np.eye(k), atol=tol) and np.allclose(Vh @ Vh.T, np.eye(k), atol=tol)
    assert np.all(np.diff(S) <= tol) and np.all(S >= 0)
    # Ritz values of G P (P an orthogonal projector) never exceed the singular values
    assert np.all(S <= s[:k] * (1 + tol))
    # Wedin: G Vᵀ = U S holds by construction, so the left residual alone bounds the
    # sines of both subspaces by ‖Gᵀ U - V S‖₂ / (S_k - σ_{k+1}).
    U0, _, Vh0 = np.linalg.svd(G)
    resid = np.linalg.norm(G @ Vh.T - U * S, 2)
    assert resid <= 100 * EPS64 * s[0]
    left = np.linalg.norm(G.T @ U - Vh.T * S, 2)
    delta = S[-1] - s[k]
    bound = (max(left, resid) + 100 * EPS64 * s[0]) / delta
    sines = max(_max_sine(U0[:, :k], U), _max_sine(Vh0[:k].T, Vh.T))
    assert sines <= bound
    if kind == "gapped":  # σ_13/σ_12 = 0.023: four sweeps reach degree 3 in G on the
        assert sines < 1e-4  # left side, so the sine is O(0.023**3) = 1e-5


def test_sines_shrink_with_sweeps():
    G = matrix_with_spectrum(400, 300, 0.95 ** np.arange(300), seed=2)
    U0 = np.linalg.svd(G)[0][:, :8]
    sines = [_max_sine(U0, _sketch([G], 8, n_sweeps=s, block=8)[0].U) for s in (2, 3, 4, 5, 6)]
    assert all(b < a for a, b in zip(sines, sines[1:]))
    assert sines[-1] < sines[0] / 100


def test_error_estimate_unbiased_and_never_below_the_krylov_tail():
    # Flat-ish residual: the hidden-probe estimate of ‖G - Â‖_F² is unbiased; over 40
    # seeds the mean of (estimate / true)² is 1 within 5 standard errors (each ratio²
    # has relative std <= sqrt(2/8) = 0.5 for 8 Gaussian probes).
    G = matrix_with_spectrum(200, 150, 1 / np.sqrt(np.arange(1, 151)), seed=3)
    ratios = []
    for seed in range(40):
        res = _sketch([G], 10, n_sweeps=2, block=12, seed=seed)[0]
        A = (res.U * res.S) @ res.Vh
        true = np.linalg.norm(G - A) / np.linalg.norm(G)
        ratios.append((res.error_estimate / true) ** 2)
        assert res.error_estimate >= 0 and 0 < res.energy_captured <= 1
        # one estimate of ‖G‖_F² = ‖S‖² + err² behind both numbers
        assert abs(res.error_estimate**2 + res.energy_captured - 1) <= 1e-12
    mean, se = np.mean(ratios), 0.5 / math.sqrt(len(ratios))
    assert abs(mean - 1) <= 5 * se + 0.05  # 0.05: the max with the Krylov tail biases up


def test_error_estimate_exact_for_low_rank_and_zero():
    G = matrix_with_spectrum(120, 90, [3.0, 2.0, 1.0, 0.5], seed=4)
    res = _sketch([G], 4, n_sweeps=2, block=8)[0]
    assert res.error_estimate <= 1e-12 and abs(res.energy_captured - 1) <= 1e-12
    assert math.isinf(res.gap) or math.isnan(res.gap)
    zero = _sketch([np.zeros((30, 20))], 3, n_sweeps=2, block=4)[0]
    assert np.all(zero.S == 0) and zero.error_estimate == 0 and zero.energy_captured == 1
    assert np.all(np.isfinite(zero.U)) and np.allclose(zero.U.T @ zero.U, np.eye(3))
    assert math.isnan(zero.gap)


def test_gap_is_the_ritz_ratio():
    s = _spectrum(200, "geometric")
    G = matrix_with_spectrum(220, 200, s, seed=5)
    res = _sketch([G], 6, n_sweeps=6, block=12)[0]
    assert abs(res.gap / (s[5] / s[6]) - 1) < 1e-6  # σ_7 converged too (σ_7/σ_72 = 2e3)
    full = _sketch([G[:, :10]], 10, n_sweeps=2, block=8)[0]
    assert math.isinf(full.gap)  # rank == min(m, n): nothing past it


def test_lock_step_sweeps_both_sides_from_the_first():
    mats = [matrix_with_spectrum(50, 40, 1 / np.arange(1, 41), seed=6),
            matrix_with_spectrum(30, 70, 1 / np.arange(1, 31), seed=7)]
    calls = []
    sketches = [LayerSketch(G.shape, 6, 3, 4, Random(0, np, None), np.float64, np) for G in mats]
    run_sweeps(_oracle(mats, calls), sketches, 3)
    assert len(calls) == 3  # one oracle call per sweep for all layers
    xs0, ys0 = calls[0]
    # both sides start; the 4 probes join the long side (Y of the tall 50 x 40 matrix)
    assert xs0 == [(40, 6), (70, 10)] and ys0 == [(50, 10), (30, 6)]
    assert calls[-1][1] == [(50, 0), (30, 0)]  # the last Gᵀ Y could not be used: not asked
    for s, G in zip(sketches, mats):
        res = s.result(5)
        assert res.n_sweeps == 3
        assert np.allclose(s.V.T @ s.V, np.eye(s.V.shape[1]), atol=1e-12)


def test_basis_stops_at_the_short_side_and_is_seeded():
    G = matrix_with_spectrum(80, 12, 1 / np.arange(1, 13), seed=8)
    res = _sketch([G], 12, n_sweeps=5, block=5)[0]
    assert np.allclose(res.S, np.linalg.svd(G, compute_uv=False), rtol=1e-10)
    a, b = _sketch([G], 6, seed=3)[0], _sketch([G], 6, seed=3)[0]
    assert np.array_equal(a.U, b.U) and np.array_equal(a.Vh, b.Vh)


def test_float32_torch_namespace():
    torch = pytest.importorskip("torch")
    from array_api_compat import torch as xpt

    G = matrix_with_spectrum(128, 96, 0.8 ** np.arange(96), seed=9)
    G = torch.as_tensor(G, dtype=torch.float32)
    rand = Random(0, xpt, torch.device("cpu"))
    res = sketch_svds(_oracle([G]), [G.shape], 8, n_sweeps=4, block=8, rand=rand,
                      dtype=torch.float32, xp=xpt)[0]
    assert res.U.dtype == torch.float32
    s0 = torch.linalg.svdvals(G.double())[:8]
    eps32 = float(torch.finfo(torch.float32).eps)
    assert torch.allclose(res.S.double(), s0, rtol=0, atol=100 * eps32 * float(s0[0]))
