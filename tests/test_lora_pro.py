"""LoRA-Pro math core: projection identities, gauges, damping regimes, parity."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.linalg
from helpers import backend_name, to_numpy
from hypothesis import given, settings
from hypothesis import strategies as st
from ref_lora_pro import (
    brute_force_min_residual,
    projected_gradient,
    projector,
    ref_lora_pro_adjust,
    sylvester_objective,
)

import lowrank
from lowrank._agnostic._lora_pro import AUTO_RATIO, solve_sylvester_spd

GAUGES = ["sylvester", "zero", "symmetric"]


def problem(out=9, n_in=7, r=3, *, seed=0, batch=()):
    """Random full-rank factors, a full gradient G and the LoRA gradients (host float64)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((*batch, r, n_in))
    B = rng.standard_normal((*batch, out, r))
    G = rng.standard_normal((*batch, out, n_in))
    return A, B, G


def lora_grads(A, B, G, s):
    return s * np.swapaxes(B, -1, -2) @ G, s * G @ np.swapaxes(A, -1, -2)


def rtol_for(xp, dtype):
    return 1e-10 if float(xp.finfo(dtype).eps) < 1e-10 else 3e-4


@pytest.mark.parametrize("gauge", GAUGES)
def test_equivalent_gradient_is_the_projection(xp, dtype, asarray, gauge):
    A, B, G = problem(seed=1)
    s = 2.0
    gA, gB = lora_grads(A, B, G, s)
    args = [asarray(x, dtype=dtype) for x in (A, B, gA, gB)]
    res = lowrank.lora_pro_adjust(*args, scaling=s, gauge=gauge)
    assert isinstance(res, lowrank.LoraGrads)
    assert res.grad_A.dtype == dtype
    assert res.grad_B.dtype == dtype
    assert tuple(res.grad_A.shape) == A.shape
    assert tuple(res.grad_B.shape) == B.shape
    newA, newB = to_numpy(res.grad_A), to_numpy(res.grad_B)
    g_eq = s * (B @ newA + newB @ A)
    expected = projected_gradient(A, B, G)
    tol = rtol_for(xp, dtype) * np.linalg.norm(G)
    assert np.linalg.norm(g_eq - expected) <= tol
    resid = G - g_eq
    assert np.linalg.norm(B.T @ resid) <= tol * np.linalg.norm(B)
    assert np.linalg.norm(resid @ A.T) <= tol * np.linalg.norm(A)
    assert abs(np.sum(g_eq * G) - np.sum(g_eq * g_eq)) <= tol * np.linalg.norm(G)


def test_equivalent_gradient_function(xp, dtype, asarray):
    A, B, G = problem(out=8, n_in=10, r=2, seed=2)
    s = 0.5
    gA, gB = lora_grads(A, B, G, s)
    g = lowrank.equivalent_gradient(*[asarray(x, dtype=dtype) for x in (A, B, gA, gB)], scaling=s)
    assert g.dtype == dtype
    assert tuple(g.shape) == G.shape
    expected = projected_gradient(A, B, G)
    assert np.linalg.norm(to_numpy(g) - expected) <= rtol_for(xp, dtype) * np.linalg.norm(G)


def test_gauge_independence_and_minimal_residual():
    """Every gauge and any extra X reach the vectorised LS optimum."""
    A, B, G = problem(out=6, n_in=5, r=2, seed=3)
    s = 1.5
    gA, gB = lora_grads(A, B, G, s)
    best, _ = brute_force_min_residual(A, B, G, s)
    PB, PA = projector(B), projector(A.T)
    closed = np.linalg.norm((np.eye(6) - PB) @ G @ (np.eye(5) - PA)) ** 2
    assert np.isclose(best, closed, rtol=1e-10)
    X = np.random.default_rng(0).standard_normal((2, 2))
    for gauge in GAUGES:
        newA, newB = lowrank.lora_pro_adjust(A, B, gA, gB, scaling=s, gauge=gauge)
        for a, b in ((newA, newB), (newA + X @ A, newB - B @ X)):
            value = np.linalg.norm(s * (B @ a + b @ A) - G) ** 2
            assert np.isclose(value, best, rtol=1e-10)


def _gauge_matrix(A, B, gA, gB, s, gauge):
    """Recover X from (g_A' − g_A'|zero) = X A."""
    a, _ = lowrank.lora_pro_adjust(A, B, gA, gB, scaling=s, gauge=gauge)
    a0, _ = lowrank.lora_pro_adjust(A, B, gA, gB, scaling=s, gauge="zero")
    return (a - a0) @ np.linalg.pinv(A)


def test_sylvester_gauge_matches_scipy_and_is_optimal():
    A, B, G = problem(out=12, n_in=11, r=4, seed=4)
    s = 16 / 8
    gA, gB = lora_grads(A, B, G, s)
    SB, SA = B.T @ B, A @ A.T
    K = -(1 / s**2) * np.linalg.solve(SB, gA @ A.T)
    X_ref = scipy.linalg.solve_sylvester(SB, SA, K)
    X = _gauge_matrix(A, B, gA, gB, s, "sylvester")
    assert np.allclose(X, X_ref, rtol=1e-9, atol=1e-12 * np.abs(X_ref).max())
    assert np.linalg.norm(SB @ X + X @ SA - K) <= 1e-12 * np.linalg.norm(K) * 100
    newA, newB = lowrank.lora_pro_adjust(A, B, gA, gB, scaling=s)
    base = sylvester_objective(A, B, gA, gB, newA, newB)
    rng = np.random.default_rng(5)
    for _ in range(5):
        D = 1e-3 * rng.standard_normal((4, 4))
        assert sylvester_objective(A, B, gA, gB, newA + D @ A, newB - B @ D) > base


def test_solve_sylvester_spd_clustered_spectra():
    """Two-eigh solver against Bartels-Stewart, including S_A = c I (clustered)."""
    import array_api_compat.numpy as xnp

    rng = np.random.default_rng(6)
    M = rng.standard_normal((5, 5))
    SB = M @ M.T + 0.1 * np.eye(5)
    for SA in (3.0 * np.eye(5), SB.copy(), np.diag([1, 1, 1, 2, 2.0])):
        K = rng.standard_normal((5, 5))
        lam, QB = np.linalg.eigh(SB)
        mu, QA = np.linalg.eigh(SA)
        X = solve_sylvester_spd(lam, QB, mu, QA, K, xnp)
        assert np.allclose(X, scipy.linalg.solve_sylvester(SB, SA, K), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("s", [0.25, 2.0, 16 / np.sqrt(8)])
@pytest.mark.parametrize(("gauge", "x_mode"), [("sylvester", "sylvester"), ("zero", "zero")])
def test_parity_with_reference_port(s, gauge, x_mode):
    torch = pytest.importorskip("torch")
    A, B, G = problem(out=15, n_in=13, r=4, seed=7)
    gA, gB = lora_grads(A, B, G, s)
    ref = ref_lora_pro_adjust(*[torch.from_numpy(x) for x in (A, B, gA, gB)], s, x_mode=x_mode)
    ours = lowrank.lora_pro_adjust(A, B, gA, gB, scaling=s, gauge=gauge)
    for r_, o in zip(ref, ours, strict=True):
        assert np.allclose(o, r_.numpy(), rtol=1e-7, atol=1e-9 * np.abs(r_.numpy()).max())


def test_symmetric_gauge_closed_forms_and_official_symmetry_mode():
    torch = pytest.importorskip("torch")
    A, B, G = problem(out=10, n_in=9, r=3, seed=8)
    s = 2.0
    gA, gB = lora_grads(A, B, G, s)
    newA, newB = lowrank.lora_pro_adjust(A, B, gA, gB, scaling=s, gauge="symmetric")
    SBi, SAi = np.linalg.inv(B.T @ B), np.linalg.inv(A @ A.T)
    PA, PB = projector(A.T), projector(B)
    assert np.allclose(newA, SBi @ gA @ (np.eye(9) - 0.5 * PA) / s**2, rtol=1e-10)
    assert np.allclose(newB, (np.eye(10) - 0.5 * PB) @ gB @ SAi / s**2, rtol=1e-10)

    # X_sym minimises ||s B g_A' − s g_B' A||² (Su's split): perturbations only increase it.
    def balance(D):
        return np.linalg.norm(s * B @ (newA + D @ A) - s * (newB - B @ D) @ A) ** 2

    rng = np.random.default_rng(9)
    assert all(balance(1e-3 * rng.standard_normal((3, 3))) > balance(0 * SBi) for _ in range(5))
    # The official "symmetry" mode uses S_A instead of S_A⁻¹: equal only when S_A = I.
    T = [torch.from_numpy(x) for x in (A, B, gA, gB)]
    off_A, _ = ref_lora_pro_adjust(*T, s, x_mode="symmetry")
    assert not np.allclose(off_A.numpy(), newA, rtol=1e-3)
    Q, _ = np.linalg.qr(A.T)
    A1 = Q.T  # orthonormal rows: S_A = I
    gA1, gB1 = lora_grads(A1, B, G, s)
    off_A, off_B = ref_lora_pro_adjust(
        *[torch.from_numpy(x) for x in (A1, B, gA1, gB1)], s, x_mode="symmetry"
    )
    ours = lowrank.lora_pro_adjust(A1, B, gA1, gB1, scaling=s, gauge="symmetric")
    assert np.allclose(ours.grad_A, off_A.numpy(), rtol=1e-7)
    assert np.allclose(ours.grad_B, off_B.numpy(), rtol=1e-7)


def test_toy_example_one_by_one_factors(xp, asarray):
    B = asarray(np.array([[1.0], [0.0], [0.0]]))
    A = asarray(np.array([[1.0, 0.0, 0.0]]))
    G = np.arange(1.0, 10.0).reshape(3, 3)
    gA, gB = asarray(G[:1, :]), asarray(G[:, :1])
    want = {
        "zero": ([[1, 2, 3]], [[0], [4], [7]]),
        "sylvester": ([[0.5, 2, 3]], [[0.5], [4], [7]]),
        "symmetric": ([[0.5, 2, 3]], [[0.5], [4], [7]]),
    }
    g_tilde = np.array([[1.0, 2, 3], [4, 0, 0], [7, 0, 0]])
    for gauge, (wa, wb) in want.items():
        res = lowrank.lora_pro_adjust(A, B, gA, gB, scaling=1.0, gauge=gauge, damping=None)
        assert np.allclose(to_numpy(res.grad_A), wa, atol=1e-12)
        assert np.allclose(to_numpy(res.grad_B), wb, atol=1e-12)
        g = to_numpy(B) @ to_numpy(res.grad_A) + to_numpy(res.grad_B) @ to_numpy(A)
        assert np.allclose(g, g_tilde, atol=1e-12)
    g = lowrank.equivalent_gradient(A, B, gA, gB, scaling=1.0)
    assert np.allclose(to_numpy(g), g_tilde, atol=1e-12)


def test_batched_matches_per_layer_with_per_layer_scaling(xp, asarray):
    A, B, G = problem(out=8, n_in=6, r=2, seed=10, batch=(3,))
    s = np.array([0.5, 1.0, 4.0])
    gA, gB = lora_grads(A, B, G, s[:, None, None])
    res = lowrank.lora_pro_adjust(*[asarray(x) for x in (A, B, gA, gB)], scaling=asarray(s))
    g = lowrank.equivalent_gradient(*[asarray(x) for x in (A, B, gA, gB)], scaling=asarray(s))
    for i in range(3):
        one = lowrank.lora_pro_adjust(A[i], B[i], gA[i], gB[i], scaling=float(s[i]))
        assert np.allclose(to_numpy(res.grad_A)[i], one.grad_A, rtol=1e-10)
        assert np.allclose(to_numpy(res.grad_B)[i], one.grad_B, rtol=1e-10)
        assert np.allclose(to_numpy(g)[i], projected_gradient(A[i], B[i], G[i]), rtol=1e-9)


def test_one_batched_eigh_per_call(monkeypatch):
    import array_api_compat.numpy as xnp

    calls = []
    real = xnp.linalg.eigh
    monkeypatch.setattr(xnp.linalg, "eigh", lambda x: calls.append(x.shape) or real(x))
    A, B, G = problem(out=8, n_in=6, r=2, seed=11, batch=(5,))
    lowrank.lora_pro_adjust(*(A, B, *lora_grads(A, B, G, 1.0)), scaling=1.0, xp=xnp)
    assert calls == [(2, 5, 2, 2)]


def test_no_out_by_out_or_in_by_in_arrays_recorded():
    """Record every tensor torch creates; only r-sized or factor-shaped ones may exist."""
    torch = pytest.importorskip("torch")
    from torch.utils._python_dispatch import TorchDispatchMode

    class Shapes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.shapes = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    self.shapes.append(tuple(t.shape))
            return out

    out, n_in, r = 300, 200, 4
    A, B, G = (torch.from_numpy(x) for x in problem(out=out, n_in=n_in, r=r, seed=12))
    gA, gB = 2 * B.T @ G, 2 * G @ A.T
    for gauge in GAUGES:
        with Shapes() as mode:
            lowrank.lora_pro_adjust(A, B, gA, gB, scaling=2.0, gauge=gauge)
        assert len(mode.shapes) > 10  # the probe does see the computation
        assert not [sh for sh in mode.shapes if len(sh) >= 2 and min(sh[-2:]) > r]
    with Shapes() as mode:
        lowrank.equivalent_gradient(A, B, gA, gB, scaling=2.0)
    big = [sh for sh in mode.shapes if len(sh) >= 2 and min(sh[-2:]) > 2 * r]
    assert big
    assert all(sh == (out, n_in) for sh in big)


def test_huge_layer_runs_in_small_memory():
    """out = in = 100_000, r = 4: an out×out float64 matrix would need 80 GB."""
    rng = np.random.default_rng(13)
    n, r = 100_000, 4
    A, B = rng.standard_normal((r, n)), rng.standard_normal((n, r))
    gA, gB = rng.standard_normal((r, n)), rng.standard_normal((n, r))
    tracemalloc.start()
    try:
        res = lowrank.lora_pro_adjust(A, B, gA, gB, scaling=2.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.grad_A.shape == (r, n)
    assert peak < 20 * A.nbytes  # a handful of factor-sized temporaries (3.2 MB each)


# --- damping and the B ≈ 0 regime -------------------------------------


def test_b_zero_gives_reference_step0_rule(xp, asarray):
    """Standard init B = 0: no special case needed, the reference's step-0 rule comes out."""
    A, _, G = problem(out=7, n_in=9, r=3, seed=20)
    B = np.zeros((7, 3))
    s = 2.0
    gA, gB = lora_grads(A, B, G, s)
    for gauge in GAUGES:
        res = lowrank.lora_pro_adjust(*[asarray(x) for x in (A, B, gA, gB)], scaling=s, gauge=gauge)
        assert np.all(to_numpy(res.grad_A) == 0)
        assert np.allclose(to_numpy(res.grad_B), gB @ np.linalg.inv(A @ A.T) / s**2, rtol=1e-10)
    g = lowrank.equivalent_gradient(*[asarray(x) for x in (A, B, gA, gB)], scaling=s)
    assert np.allclose(to_numpy(g), G @ projector(A.T), rtol=1e-10)


@pytest.mark.parametrize("tiny", [1e-6, 1e-9, 1e-14])
def test_near_zero_b_has_no_blow_up(tiny):
    """σ(B) below AUTO_RATIO · rms σ(A): the B-directions are dropped, g~ = G P_A."""
    torch = pytest.importorskip("torch")
    A, B, G = problem(out=20, n_in=16, r=4, seed=21)
    B = tiny * B
    s = 2.0
    gA, gB = lora_grads(A, B, G, s)
    res = lowrank.lora_pro_adjust(A, B, gA, gB, scaling=s)
    g_eq = s * (B @ res.grad_A + res.grad_B @ A)
    assert np.linalg.norm(g_eq - G @ projector(A.T)) <= 1e-8 * np.linalg.norm(G)
    assert np.linalg.norm(res.grad_A) <= 10 * np.linalg.norm(G)  # no 1/σ_min(B) factor
    # the reference's absolute 1e-8 ridge blows up (or silently changes the projection)
    ref_A, _ = ref_lora_pro_adjust(*[torch.from_numpy(x) for x in (A, B, gA, gB)], s)
    if tiny >= 1e-6:
        assert np.linalg.norm(ref_A.numpy()) > 50 * np.linalg.norm(G)


def test_partially_degenerate_b_projects_onto_the_kept_tangent_space():
    rng = np.random.default_rng(22)
    out, n_in, r = 12, 10, 3
    U, _ = np.linalg.qr(rng.standard_normal((out, r)))
    V, _ = np.linalg.qr(rng.standard_normal((r, r)))
    B = U @ np.diag([1.0, 0.5, 1e-10]) @ V
    A, G = rng.standard_normal((r, n_in)), rng.standard_normal((out, n_in))
    gA, gB = lora_grads(A, B, G, 1.0)
    PB = projector(U[:, :2])  # the non-degenerate part of col(B)
    PA = projector(A.T)
    want = PB @ G + G @ PA - PB @ G @ PA
    for gauge in GAUGES:
        res = lowrank.lora_pro_adjust(A, B, gA, gB, scaling=1.0, gauge=gauge)
        g_eq = B @ res.grad_A + res.grad_B @ A
        assert np.linalg.norm(g_eq - want) <= 1e-8 * np.linalg.norm(G)
        assert np.linalg.norm(res.grad_A) <= 1e3 * np.linalg.norm(G)


def test_threshold_is_relative_to_the_scale_of_a():
    """Rescaling (A, B) -> (A/c, cB) keeps W_eff; the regime switches at σ(B)/rms σ(A) = 1e-3."""
    A, B, G = problem(out=10, n_in=8, r=2, seed=23)
    Q, _ = np.linalg.qr(B)
    A = A / np.sqrt(np.mean(np.linalg.svd(A, compute_uv=False) ** 2))  # rms σ(A) = 1
    for ratio, kept in ((3 * AUTO_RATIO, True), (AUTO_RATIO / 3, False)):
        Bs = ratio * Q
        gA, gB = lora_grads(A, Bs, G, 1.0)
        g = lowrank.equivalent_gradient(A, Bs, gA, gB, scaling=1.0)
        full = projected_gradient(A, Bs, G)
        assert np.allclose(g, full if kept else G @ projector(A.T), rtol=1e-6, atol=1e-9)


def test_damping_options(xp, asarray):
    torch = pytest.importorskip("torch")
    A, B, G = problem(out=9, n_in=8, r=3, seed=24)
    s = 2.0
    gA, gB = lora_grads(A, B, G, s)
    args = [asarray(x) for x in (A, B, gA, gB)]
    exact = lowrank.lora_pro_adjust(*args, scaling=s, damping=None)
    auto = lowrank.lora_pro_adjust(*args, scaling=s)
    zero = lowrank.lora_pro_adjust(*args, scaling=s, damping=0)
    for a, b in zip(exact, auto, strict=True):
        assert np.allclose(to_numpy(a), to_numpy(b), rtol=1e-12)
    for a, b in zip(exact, zero, strict=True):
        assert np.allclose(to_numpy(a), to_numpy(b), rtol=0, atol=0)
    # an absolute ridge δ reproduces the reference's pinv(S + δ I) for the base solution
    ridge = lowrank.lora_pro_adjust(*args, scaling=s, gauge="zero", damping=0.5)
    ref = ref_lora_pro_adjust(
        *[torch.from_numpy(x) for x in (A, B, gA, gB)], s, x_mode="zero", delta=0.5
    )
    for a, b in zip(ridge, ref, strict=True):
        assert np.allclose(to_numpy(a), b.numpy(), rtol=1e-10)


# --- API contract ---------------------------------------------------------------------


def test_float32_and_low_precision_and_no_mutation(xp, asarray):
    A, B, G = problem(seed=30)
    gA, gB = lora_grads(A, B, G, 1.0)
    args = [asarray(x, dtype=xp.float32) for x in (A, B, gA, gB)]
    before = [to_numpy(a).copy() for a in args]
    res = lowrank.lora_pro_adjust(*args, scaling=1.0)
    for a, b in zip(args, before, strict=True):
        assert np.array_equal(to_numpy(a), b)
    assert res.grad_A.dtype == xp.float32
    if backend_name(xp) == "torch":
        low = [a.to(xp.bfloat16) for a in args]
        out = lowrank.lora_pro_adjust(*low, scaling=1.0)
        assert out.grad_B.dtype == xp.bfloat16
        assert np.allclose(to_numpy(out.grad_B.float()), to_numpy(res.grad_B), rtol=0.05, atol=0.05)


def test_rank_zero_and_empty(xp, asarray):
    A, B = asarray(np.zeros((0, 5))), asarray(np.zeros((4, 0)))
    res = lowrank.lora_pro_adjust(A, B, A, B, scaling=1.0)
    assert tuple(res.grad_A.shape) == (0, 5)
    assert tuple(res.grad_B.shape) == (4, 0)
    g = lowrank.equivalent_gradient(A, B, A, B, scaling=1.0)
    assert tuple(g.shape) == (4, 5)
    assert np.all(to_numpy(g) == 0)


def test_bad_input(xp, asarray):
    A, B, G = problem(seed=31)
    gA, gB = lora_grads(A, B, G, 1.0)
    A_, B_, gA_, gB_ = (asarray(x) for x in (A, B, gA, gB))
    with pytest.raises(ValueError, match=r"`B` must have shape \(\.\.\., out, r\)"):
        lowrank.lora_pro_adjust(A_, asarray(B[:, :2]), gA_, asarray(gB[:, :2]), scaling=1.0)
    with pytest.raises(ValueError, match="`grad_A` must have the shape of `A`"):
        lowrank.lora_pro_adjust(A_, B_, asarray(gA[:, :3]), gB_, scaling=1.0)
    with pytest.raises(ValueError, match="batch shape"):
        lowrank.lora_pro_adjust(asarray(A[None]), B_, asarray(gA[None]), gB_, scaling=1.0)
    with pytest.raises(ValueError, match="ndim"):
        lowrank.lora_pro_adjust(asarray(A[0]), B_, gA_, gB_, scaling=1.0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="`scaling` must be finite and > 0"):
            lowrank.lora_pro_adjust(A_, B_, gA_, gB_, scaling=bad)
    with pytest.raises(TypeError, match="`scaling`"):
        lowrank.equivalent_gradient(A_, B_, gA_, gB_, scaling="2")
    with pytest.raises(ValueError, match="`gauge` must be one of"):
        lowrank.lora_pro_adjust(A_, B_, gA_, gB_, scaling=1.0, gauge="symmetry")
    with pytest.raises(ValueError, match="`damping`"):
        lowrank.lora_pro_adjust(A_, B_, gA_, gB_, scaling=1.0, damping=-1e-3)
    with pytest.raises(ValueError, match="`damping`"):
        lowrank.lora_pro_adjust(A_, B_, gA_, gB_, scaling=1.0, damping="exact")
    bad_g = gA.copy()
    bad_g[0, 0] = np.nan
    with pytest.raises(ValueError, match="`grad_A` contains NaN or Inf"):
        lowrank.lora_pro_adjust(A_, B_, asarray(bad_g), gB_, scaling=1.0)
    with pytest.raises(ValueError, match="`scaling` must be finite and > 0 for every layer"):
        lowrank.lora_pro_adjust(
            *[asarray(x[None]) for x in (A, B, gA, gB)], scaling=asarray(np.array([-1.0]))
        )
    with pytest.raises(ValueError, match="`scaling` must be a float or have the batch shape"):
        lowrank.lora_pro_adjust(A_, B_, gA_, gB_, scaling=asarray(np.ones(3)))


def test_complex_and_mixed_namespaces_raise():
    torch = pytest.importorskip("torch")
    A, B, G = problem(seed=32)
    gA, gB = lora_grads(A, B, G, 1.0)
    with pytest.raises(TypeError, match="`A` must be real"):
        lowrank.lora_pro_adjust(A + 0j, B, gA, gB, scaling=1.0)
    with pytest.raises(TypeError, match="one array namespace"):
        lowrank.lora_pro_adjust(torch.from_numpy(A), B, gA, gB, scaling=1.0)


@given(
    out=st.integers(1, 12),
    n_in=st.integers(1, 12),
    r=st.integers(1, 5),
    s=st.floats(0.1, 10.0),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=25)
def test_projection_identities_property(out, n_in, r, s, seed):
    """Any shape (also r > min(out, in), i.e. rank-deficient factors): g~ is the projection."""
    A, B, G = problem(out=out, n_in=n_in, r=r, seed=seed)
    gA, gB = lora_grads(A, B, G, s)
    for gauge in GAUGES:
        res = lowrank.lora_pro_adjust(A, B, gA, gB, scaling=s, gauge=gauge)
        g_eq = s * (B @ res.grad_A + res.grad_B @ A)
        assert np.allclose(g_eq, projected_gradient(A, B, G), atol=1e-8 * (1 + np.abs(G).max()))
