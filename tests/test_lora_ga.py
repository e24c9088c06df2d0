"""lora_ga_init: invariants of the derivation, the official and PEFT oracles, errors."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import backend_name, eps, matrix_with_spectrum, same_namespace, to_numpy
from ref_lora_ga import (
    best_rank,
    exact_svd,
    lora_ga_objective,
    official_init,
    peft_init,
    sine_largest_angle,
)

import lowrank

OUT, IN, R, S_SCALE = 40, 30, 4, 2.0
DIRECTIONS = ["ArB2r", "A2rBr", "ArBr", "random"]


def _gradient(out=OUT, inn=IN, seed=0, decay=0.8):
    """Gradient with a well-separated geometric spectrum (every gap 1/decay)."""
    k = min(out, inn)
    return matrix_with_spectrum(out, inn, decay ** np.arange(k), seed=seed)


def _paper(g, rank, **kwargs):
    """lora_ga_init with the official code's semantics (the derivation's invariants)."""
    return lowrank.lora_ga_init(g, rank, compat="paper", **kwargs)


def _tol(dtype, scale=1.0):
    return 200 * eps(dtype) * scale


def _align(X, ref, axis):
    """Flip the signs of X's vectors (columns if axis=0, rows if axis=1) to match ref."""
    signs = np.sign(np.sum(X * ref, axis=axis, keepdims=True))
    return X * np.where(signs == 0, 1.0, signs)


def _indices(A, B, g):
    """Singular indices used by A's rows and B's columns (recovered from exact vectors)."""
    U, _, Vh = exact_svd(g)
    idx_A = np.argmax(np.abs(Vh @ A.T), axis=0)
    idx_B = np.argmax(np.abs(U.T @ B), axis=0)
    return [int(i) for i in idx_A], [int(i) for i in idx_B]


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_paper_invariants(xp, dtype, asarray, direction):
    """A Aᵀ = Bᵀ B = ζ² I; first step = s² ζ² G_2r; equals the official code."""
    g = _gradient()
    A, B = _paper(asarray(g, dtype), R, scaling=S_SCALE, direction=direction, rng=3)
    assert same_namespace(xp, A)
    assert (A.dtype, B.dtype) == (dtype, dtype)
    assert (A.shape, B.shape) == ((R, IN), (OUT, R))
    tol = _tol(to_numpy(A).dtype)
    A, B = to_numpy(A).astype(float), to_numpy(B).astype(float)
    zeta2 = OUT**0.5 / 16.0
    np.testing.assert_allclose(A @ A.T, zeta2 * np.eye(R), atol=tol)
    np.testing.assert_allclose(B.T @ B, zeta2 * np.eye(R), atol=tol)
    step = S_SCALE**2 * (B @ (B.T @ g) + (g @ A.T) @ A)
    np.testing.assert_allclose(step, S_SCALE**2 * zeta2 * best_rank(g, 2 * R), atol=tol * 10)
    idx_A, idx_B = _indices(A, B, g)
    assert sorted(idx_A + idx_B) == list(range(2 * R))  # disjoint halves of the top 2r
    A_ref, B_ref, _ = official_init(
        g, np.zeros_like(g), R, S_SCALE, direction, random_indices=idx_A + idx_B
    )
    np.testing.assert_allclose(_align(A, A_ref, 1), A_ref, atol=tol * 10)
    np.testing.assert_allclose(_align(B, B_ref, 0), B_ref, atol=tol * 10)


def test_worked_example_diag():
    """Worked example: G = diag(4,3,2,1), r = 1, residual 5 for both assignments."""
    g = np.diag([4.0, 3.0, 2.0, 1.0])
    for direction in ("ArB2r", "A2rBr"):
        A, B = _paper(
            g, 1, scaling=1.0, scale="unit", direction=direction, svd="exact"
        )
        step = B @ (B.T @ g) + (g @ A.T) @ A
        np.testing.assert_allclose(step, np.diag([4.0, 3.0, 0.0, 0.0]), atol=1e-12)
        assert lora_ga_objective(g, A, B) == pytest.approx(5.0, rel=1e-12)


@pytest.mark.parametrize("direction", ["ArB2r", "A2rBr", "ArBr"])
def test_objective_is_rank_2r_tail(direction):
    """The LoRA-GA objective equals Σ_{i>=2r} σ_i², and random orthonormal pairs do worse."""
    g = _gradient(seed=1)
    A, B = _paper(g, R, scaling=1.0, scale="unit", direction=direction, rng=0)
    s = np.linalg.svd(g, compute_uv=False)
    tail = float(np.sum(s[2 * R :] ** 2))
    assert lora_ga_objective(g, A, B) == pytest.approx(tail, rel=1e-10)
    rng = np.random.default_rng(0)
    for _ in range(5):
        Qa = np.linalg.qr(rng.standard_normal((IN, R)))[0].T
        Qb = np.linalg.qr(rng.standard_normal((OUT, R)))[0]
        assert lora_ga_objective(g, Qa, Qb) > tail


def test_gd_scale_first_step_is_g2r(xp, asarray):
    """scale="gd_scale": s²(B Bᵀ G + G Aᵀ A) = G_2r."""
    g = _gradient(seed=2)
    A, B = _paper(asarray(g), R, scaling=S_SCALE, scale="gd", rng=0)
    A, B = to_numpy(A), to_numpy(B)
    step = S_SCALE**2 * (B @ (B.T @ g) + (g @ A.T) @ A)
    np.testing.assert_allclose(step, best_rank(g, 2 * R), atol=1e-10)


@pytest.mark.parametrize("compat", ["paper", "peft"])
def test_weight_svd_matches_oracle(compat):
    g = _gradient(seed=4)
    w = matrix_with_spectrum(OUT, IN, np.linspace(3.0, 0.5, IN), seed=5)
    A, B = lowrank.lora_ga_init(
        g, R, scaling=S_SCALE, scale="weightS", weight=w, compat=compat, svd="exact"
    )
    oracle = official_init if compat == "paper" else peft_init
    scale = "weightS" if compat == "paper" else "weight_svd"
    A_ref, B_ref, _ = oracle(g, w, R, S_SCALE, "ArB2r", scale)
    np.testing.assert_allclose(_align(A, A_ref, 1), A_ref, atol=1e-10)
    np.testing.assert_allclose(_align(B, B_ref, 0), B_ref, atol=1e-10)


@pytest.mark.parametrize("weight_scale", [1e-3, 10.0])  # the clip fires / stays idle
@pytest.mark.parametrize("scale", ["stable", "gd"])
def test_norm_clip_matches_official_oracle(xp, asarray, weight_scale, scale):
    g = _gradient(seed=6)
    w = weight_scale * matrix_with_spectrum(OUT, IN, np.linspace(2.0, 0.5, IN), seed=7)
    A, B = _paper(
        asarray(g), R, scaling=S_SCALE, scale=scale, weight=asarray(w), norm_clip=True,
        svd="exact",
    )
    A, B = to_numpy(A), to_numpy(B)
    A_ref, B_ref, W_res = official_init(g, w, R, S_SCALE, "ArB2r", scale, norm_clip=True)
    np.testing.assert_allclose(_align(A, A_ref, 1), A_ref, atol=1e-10)
    np.testing.assert_allclose(_align(B, B_ref, 0), B_ref, atol=1e-10)
    offset = S_SCALE * B @ A
    np.testing.assert_allclose(w - offset, W_res, atol=1e-10)
    if weight_scale < 1:  # clipped: the offset's largest entry is the weight's
        assert np.max(np.abs(offset)) == pytest.approx(np.max(np.abs(w)), rel=1e-10)
    else:
        plain = _paper(g, R, scaling=S_SCALE, scale=scale, svd="exact")
        np.testing.assert_allclose(np.abs(B), np.abs(to_numpy(plain.B)), atol=1e-12)


def test_norm_clip_is_per_matrix_in_a_batch():
    g = np.stack([_gradient(seed=1), _gradient(seed=2)])
    w = np.stack([np.full((OUT, IN), 1e-4), np.full((OUT, IN), 1e3)])
    A, B = lowrank.lora_ga_init(g, R, scaling=S_SCALE, weight=w, norm_clip=True, rng=0)
    top = np.max(np.abs(S_SCALE * B @ A), axis=(-2, -1))
    assert top[0] == pytest.approx(1e-4, rel=1e-9)  # clipped
    plain = lowrank.lora_ga_init(g[1], R, scaling=S_SCALE, rng=0)
    np.testing.assert_allclose(np.abs(B[1]), np.abs(plain.B), atol=1e-6)  # untouched


def test_default_is_peft_semantics():
    """No options: PEFT's LoRA-GA (B0 carries the singular values, stable on B0 only)."""
    g = _gradient(seed=6)
    A, B = lowrank.lora_ga_init(g, R, scaling=S_SCALE, svd="exact")
    A_ref, B_ref, _ = peft_init(g, np.ones_like(g), R, S_SCALE, "ArB2r", "stable")
    np.testing.assert_allclose(_align(A, A_ref, 1), A_ref, atol=1e-10)
    np.testing.assert_allclose(_align(B, B_ref, 0), B_ref, atol=1e-10)


@pytest.mark.parametrize("scale", ["stable", "gd_scale", "unit"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_peft_compat_matches_oracle(direction, scale):
    """compat="peft": B0 = U[:, J_B] diag(S[J_B]), stable on B0 only, random shares indices."""
    g = _gradient(seed=6)
    w = np.ones_like(g)
    A, B = lowrank.lora_ga_init(
        g, R, scaling=S_SCALE, direction=direction, scale=scale, compat="peft", rng=7
    )
    idx_A, idx_B = _indices(A, B, g)
    if direction == "random":
        assert idx_A == idx_B
        assert sorted(set(idx_A)) == sorted(idx_A)
        assert max(idx_A) < 2 * R
    A_ref, B_ref, _ = peft_init(g, w, R, S_SCALE, direction, scale, random_indices=idx_A)
    np.testing.assert_allclose(_align(A, A_ref, 1), A_ref, atol=1e-10)
    np.testing.assert_allclose(_align(B, B_ref, 0), B_ref, atol=1e-10)


def test_batched_matches_per_matrix(xp, asarray):
    """A (L, out, in) stack gives, per layer, the factors of the single call (projectors)."""
    gs = np.stack([_gradient(seed=s) for s in range(3)])
    A, B = lowrank.lora_ga_init(asarray(gs), R, scaling=1.0, scale="unit", rng=0)
    assert (A.shape, B.shape) == ((3, R, IN), (3, OUT, R))
    A, B = to_numpy(A), to_numpy(B)
    for i, g in enumerate(gs):
        A1, B1 = lowrank.lora_ga_init(g, R, scaling=1.0, scale="unit", svd="exact")
        np.testing.assert_allclose(A[i].T @ A[i], A1.T @ A1, atol=1e-8)
        np.testing.assert_allclose(B[i] @ B[i].T, B1 @ B1.T, atol=1e-8)


def test_batched_random_draws_per_matrix():
    gs = np.stack([_gradient(seed=0)] * 6)
    A, B = lowrank.lora_ga_init(gs, R, scaling=1.0, direction="random", rng=11)
    sets = {tuple(sorted(_indices(A[i], B[i], gs[i])[0])) for i in range(6)}
    assert len(sets) > 1  # independent permutations, not one shared across the stack


def test_seeded_reproducible_and_input_untouched(xp, asarray):
    g = asarray(_gradient(80, 70, seed=8, decay=0.95))
    before = to_numpy(g).copy()
    kw = {"scaling": 1.0, "direction": "random", "rng": 5}
    A1, B1 = lowrank.lora_ga_init(g, 5, **kw)
    A2, B2 = lowrank.lora_ga_init(g, 5, **kw)
    np.testing.assert_array_equal(to_numpy(A1), to_numpy(A2))
    np.testing.assert_array_equal(to_numpy(B1), to_numpy(B2))
    np.testing.assert_array_equal(to_numpy(g), before)


def test_randomized_block_accuracy(xp, asarray):
    """Default randomized SVD: the [r, 2r) block (B's columns) is accurate on a 1/i spectrum."""
    m, n, r = 600, 520, 8  # large enough for the randomized path (Krylov dim 144)
    g = matrix_with_spectrum(m, n, 1.0 / np.arange(1, n + 1), seed=9)
    A, B = lowrank.lora_ga_init(asarray(g), r, scaling=1.0, scale="unit", rng=0)
    U, _, Vh = exact_svd(g)
    assert sine_largest_angle(to_numpy(B), U[:, r : 2 * r]) < 1e-3
    assert sine_largest_angle(to_numpy(A).T, Vh[:r].T) < 1e-4


def test_info_reports_gaps(xp, asarray):
    g = _gradient(seed=10, decay=0.5)
    _, info = lowrank.lora_ga_init(asarray(g), R, scaling=1.0, return_info=True, rng=0)
    s = np.linalg.svd(g, compute_uv=False)
    assert info.S.shape == (2 * R + 1,)
    np.testing.assert_allclose(to_numpy(info.S), s[: 2 * R + 1], rtol=1e-6)
    assert float(info.gap_r) == pytest.approx(s[R - 1] / s[R], rel=1e-6)
    assert float(info.gap_2r) == pytest.approx(s[2 * R - 1] / s[2 * R], rel=1e-6)
    _, info = lowrank.lora_ga_init(
        np.eye(6)[:, :4] * 0 + _gradient(6, 4), 2, scaling=1.0, return_info=True
    )
    assert float(info.gap_2r) == np.inf  # 2r == min(out, in): nothing after the block


def test_low_precision_and_integer_inputs():
    g = _gradient()
    A, B = lowrank.lora_ga_init(g.astype(np.float16), R, scaling=1.0, rng=0)
    assert (A.dtype, B.dtype) == (np.float16, np.float16)
    A, B = lowrank.lora_ga_init(np.round(g * 100).astype(np.int64), R, scaling=1.0, rng=0)
    assert A.dtype == np.float64


def test_zero_gradient_warns_and_gives_orthonormal_factors(xp, asarray):
    g = asarray(np.zeros((OUT, IN)))
    with pytest.warns(UserWarning, match="exactly zero"):
        A, B = _paper(g, R, scaling=1.0, scale="unit", rng=0)
    A, B = to_numpy(A), to_numpy(B)
    np.testing.assert_allclose(A @ A.T, np.eye(R), atol=1e-12)
    np.testing.assert_allclose(B.T @ B, np.eye(R), atol=1e-12)
    with pytest.warns(UserWarning, match="exactly zero"):
        A, B = _paper(np.zeros((400, 300)), R, scaling=1.0, scale="unit", rng=0)
    np.testing.assert_allclose(A @ A.T, np.eye(R), atol=1e-12)
    np.testing.assert_allclose(B.T @ B, np.eye(R), atol=1e-12)


def test_flat_spectrum_warns():
    g = matrix_with_spectrum(OUT, IN, np.ones(IN), seed=12)
    with pytest.warns(UserWarning, match="flat gradient spectrum"):
        _, info = lowrank.lora_ga_init(g, R, scaling=1.0, return_info=True, svd="exact")
    assert float(info.gap_2r) == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"rank": 16}, ValueError, r"rank.*min\(out, in\) // 2 = 15"),
        ({"rank": 0}, ValueError, "rank"),
        ({"rank": 2.0}, TypeError, "rank"),
        ({"direction": "AB"}, ValueError, "direction"),
        ({"scale": "big"}, ValueError, "scale"),
        ({"compat": "hf"}, ValueError, "compat"),
        ({"svd": "lanczos"}, ValueError, "svd"),
        ({"scaling": -1.0}, ValueError, "scaling"),
        ({"stable_gamma": 0.0}, ValueError, "stable_gamma"),
        ({"n_power_iter": -1}, ValueError, "n_power_iter"),
        ({"scale": "weight_svd"}, ValueError, "weight="),
        ({"weight": np.ones((OUT, IN))}, ValueError, "only with scale='weight_svd'"),
        ({"scale": "weight_svd", "weight": np.ones((3, 3))}, ValueError, "shape"),
        ({"norm_clip": True}, ValueError, "norm_clip=True needs the base weight"),
        ({"norm_clip": "yes"}, TypeError, "norm_clip"),
        ({"norm_clip": True, "weight": np.ones((3, 3))}, ValueError, "shape"),
        ({"rng": "seed"}, TypeError, "rng"),
    ],
)
def test_bad_options(kwargs, exc, match):
    args = {"rank": R, "scaling": 1.0, **kwargs}
    rank = args.pop("rank")
    with pytest.raises(exc, match=match):
        lowrank.lora_ga_init(_gradient(), rank, **args)


def test_bad_arrays(xp, asarray):
    with pytest.raises(ValueError, match="ndim"):
        lowrank.lora_ga_init(asarray(np.ones(10)), 1, scaling=1.0)
    g = _gradient()
    g[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        lowrank.lora_ga_init(asarray(g), R, scaling=1.0)
    if backend_name(xp) == "numpy":
        with pytest.raises(TypeError, match="real"):
            lowrank.lora_ga_init(_gradient() + 1j, R, scaling=1.0)


def test_rank_deficient_gradient_gives_orthonormal_factors(xp, asarray):
    """rank(G) < 2r (few tokens): the trailing vectors are arbitrary but orthonormal."""
    rng = np.random.default_rng(0)
    g = rng.standard_normal((400, 3)) @ rng.standard_normal((3, 300))
    A, B = _paper(asarray(g), 4, scaling=1.0, scale="unit", rng=0)
    A, B = to_numpy(A), to_numpy(B)
    np.testing.assert_allclose(A @ A.T, np.eye(4), atol=1e-10)
    np.testing.assert_allclose(B.T @ B, np.eye(4), atol=1e-10)
    step = B @ (B.T @ g) + (g @ A.T) @ A
    np.testing.assert_allclose(step, g, atol=1e-8)  # G_2r = G when rank(G) <= 2r
