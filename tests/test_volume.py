"""Gram volumes: accuracy vs mpmath, properties, shapes, dtypes, errors."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from helpers import backend_name, eps, matrix_with_spectrum, same_namespace, to_numpy
from hypothesis import given
from hypothesis import strategies as st
from ref_volume import (
    cauchy_binet_volume,
    det_volume,
    mp_log_volume,
    random_orthonormal,
)

import lowrank

FUNCS = [lowrank.gram_volume, lowrank.log_gram_volume]


def dname(xp, dtype) -> str:
    return "float32" if dtype == xp.float32 else "float64"


def log_of(volume_fn, a):
    """Host float64 log-volume from either public function."""
    out = to_numpy(volume_fn(a)).astype(np.float64)
    return out if volume_fn is lowrank.log_gram_volume else np.log(out)


# --- accuracy against the high-precision reference ------------------------------------


@functools.cache
def conditioned_batch(dtype_name: str, n: int, k: int):
    """Matrices with κ from 1 to 1/(100·n·eps) (host, cast), their κ and mpmath logs."""
    top = 1.0 / (100 * n * eps(dtype_name))
    kappas = np.geomspace(1.0, top, 7)
    mats = [
        matrix_with_spectrum(n, k, np.geomspace(1.0, 1.0 / kap, k), seed=i).astype(dtype_name)
        for i, kap in enumerate(kappas)
    ]
    ref = np.array([mp_log_volume(m.astype(np.float64)) for m in mats])
    # three copies: the kernel's 16-matrix lane blocks and its scalar path both run
    batch = np.concatenate([np.stack(mats)] * 3)
    s = np.linalg.svd(batch.astype(np.float64), compute_uv=False)
    return batch, s[:, 0] / s[:, -1], np.concatenate([ref] * 3)


@pytest.mark.parametrize(("n", "k"), [(3, 2), (12, 5), (8, 8)])
@pytest.mark.parametrize("fn", FUNCS, ids=["volume", "log"])
def test_accuracy_within_10_n_eps_kappa(xp, dtype, use_kernels, asarray, n, k, fn):
    name = dname(xp, dtype)
    batch, kappa, ref = conditioned_batch(name, n, k)
    got = log_of(fn, asarray(batch, dtype=dtype))
    bound = 10 * n * eps(name) * kappa
    # |Δ log vol| ≈ relative error of the volume
    assert np.all(np.abs(got - ref) <= bound), (np.abs(got - ref) / bound).max()


def test_gram_route_fails_where_qr_does_not():
    # float64, κ = 1e8: the Gram route's error ~ eps·κ² is noise; QR's ~ eps·κ.
    a = matrix_with_spectrum(20, 4, [1.0, 1e-3, 1e-6, 1e-8], seed=3)
    ref = mp_log_volume(a)
    ours = abs(float(lowrank.log_gram_volume(a)) - ref)
    gram = abs(math.log(det_volume(a)) - ref)
    assert ours <= 10 * 20 * eps("float64") * 1e8 < gram


def test_complex_matches_mpmath(xp, asarray):
    a = matrix_with_spectrum(6, 3, [2.0, 1.0, 0.01], seed=5, complex_=True)
    got = float(to_numpy(lowrank.log_gram_volume(asarray(a, dtype=xp.complex128))))
    assert abs(got - mp_log_volume(a)) <= 10 * 6 * eps("float64") * 200


# --- properties ---------------------------------------------------------------


def test_product_of_singular_values_and_cauchy_binet(xp, dtype, use_kernels, asarray):
    a = np.random.default_rng(1).standard_normal((5, 3))
    vol = float(to_numpy(lowrank.gram_volume(asarray(a, dtype=dtype))))
    tol = 50 * eps(dname(xp, dtype))
    assert vol == pytest.approx(np.prod(np.linalg.svd(a, compute_uv=False)), rel=tol)
    assert vol == pytest.approx(cauchy_binet_volume(a), rel=tol)


def test_orthogonal_left_invariance(xp, use_kernels, asarray):
    a = np.random.default_rng(2).standard_normal((4, 3))
    Q = random_orthonormal(7, 4, seed=4)  # orthonormal columns: QᵀQ = I
    square = random_orthonormal(4, 4, seed=5)
    v = float(to_numpy(lowrank.gram_volume(asarray(a))))
    assert float(to_numpy(lowrank.gram_volume(asarray(Q @ a)))) == pytest.approx(v, rel=1e-13)
    assert float(to_numpy(lowrank.gram_volume(asarray(square @ a)))) == pytest.approx(v, rel=1e-13)


def test_right_multiplication_scales_by_abs_det(xp, use_kernels, asarray):
    rng = np.random.default_rng(3)
    a, K = rng.standard_normal((6, 3)), rng.standard_normal((3, 3))
    scale = np.diag([2.0, -0.5, 3.0])
    shear = np.eye(3) + 4.0 * np.eye(3, k=1)
    perm = np.eye(3)[[2, 0, 1]]
    v = float(to_numpy(lowrank.gram_volume(asarray(a))))
    for M in (K, scale, shear, perm):
        got = float(to_numpy(lowrank.gram_volume(asarray(a @ M))))
        assert got == pytest.approx(v * abs(np.linalg.det(M)), rel=1e-12)


def test_hadamard_inequality_and_equality(xp, use_kernels, asarray):
    a = np.random.default_rng(4).standard_normal((6, 4))
    norms = np.prod(np.linalg.norm(a, axis=0))
    assert float(to_numpy(lowrank.gram_volume(asarray(a)))) < norms
    Q = random_orthonormal(6, 4, seed=6) * np.array([1.0, 2.0, 3.0, 0.5])
    got = float(to_numpy(lowrank.gram_volume(asarray(Q))))
    assert got == pytest.approx(np.prod(np.linalg.norm(Q, axis=0)), rel=1e-13)


def test_no_product_rule_counterexample(xp, asarray):
    B1, C1 = np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[1.0], [1.0]])
    v = lambda m: float(to_numpy(lowrank.gram_volume(asarray(m))))  # noqa: E731
    assert v(B1 @ C1) == pytest.approx(math.sqrt(5), rel=1e-14)
    assert v(B1) * v(C1) == pytest.approx(2 * math.sqrt(2), rel=1e-14)


def test_worked_example(xp, use_kernels, asarray):
    B = asarray(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    assert float(to_numpy(lowrank.gram_volume(B))) == pytest.approx(math.sqrt(3), rel=1e-15)
    Bt = xp.matrix_transpose(B)
    assert float(to_numpy(lowrank.gram_volume(Bt))) == 0.0
    assert float(to_numpy(lowrank.log_gram_volume(Bt))) == -math.inf
    assert float(to_numpy(lowrank.nonsquare_det(Bt))) == pytest.approx(math.sqrt(3), rel=1e-15)
    assert float(to_numpy(lowrank.log_nonsquare_det(Bt))) == pytest.approx(
        0.5 * math.log(3), rel=1e-14
    )


@pytest.mark.parametrize(
    ("shape", "vol", "nsd"), [((4, 0), 1.0, 1.0), ((0, 0), 1.0, 1.0), ((0, 2), 0.0, 1.0),
                             ((2, 3), 0.0, None), ((1, 1), None, None)]
)
def test_shape_rules(xp, use_kernels, asarray, shape, vol, nsd):
    a = np.full(shape, -2.5)
    x = asarray(a)
    vol = 2.5 if vol is None else vol
    assert float(to_numpy(lowrank.gram_volume(x))) == vol
    assert float(to_numpy(lowrank.log_gram_volume(x))) == (math.log(vol) if vol else -math.inf)
    expected = np.prod(np.linalg.svd(a, compute_uv=False)) if nsd is None else nsd
    assert float(to_numpy(lowrank.nonsquare_det(x))) == pytest.approx(expected, rel=1e-14)


def test_nonsquare_det_is_transpose_symmetric(xp, use_kernels, asarray):
    a = np.random.default_rng(5).standard_normal((3, 5, 2))
    x = asarray(a)
    d = to_numpy(lowrank.nonsquare_det(x))
    dt = to_numpy(lowrank.nonsquare_det(xp.matrix_transpose(x)))
    np.testing.assert_allclose(dt, d, rtol=1e-13)
    np.testing.assert_allclose(d, np.prod(np.linalg.svd(a, compute_uv=False), axis=-1), rtol=1e-13)


def test_exact_rank_deficiency(xp, dtype, use_kernels, asarray):
    a = np.random.default_rng(6).standard_normal((4, 5, 3))
    a[1, :, 1] = 0.0  # a zero column
    a[3] = 0.0
    x = asarray(a, dtype=dtype)
    vol, logvol = to_numpy(lowrank.gram_volume(x)), to_numpy(lowrank.log_gram_volume(x))
    assert vol[1] == 0.0
    assert vol[3] == 0.0
    assert np.all(vol[[0, 2]] > 0)
    assert logvol[1] == -np.inf
    assert logvol[3] == -np.inf
    assert np.all(np.isfinite(logvol[[0, 2]]))


@pytest.mark.parametrize(("scale", "n", "k"), [(1e-3, 200, 200), (1e-170, 3, 2), (1e200, 3, 2),
                                               (1e-170, 9, 4), (1e200, 9, 4), (1e-200, 5, 2)])
def test_log_volume_finite_where_volume_under_or_overflows(xp, use_kernels, asarray, scale, n, k):
    Q = random_orthonormal(n, k, seed=7)
    x = asarray(Q * scale)
    expected = k * math.log(scale)
    got = float(to_numpy(lowrank.log_gram_volume(x)))
    assert got == pytest.approx(expected, rel=1e-13)
    vol = float(to_numpy(lowrank.gram_volume(x)))
    assert vol == (0.0 if expected < -745 else math.inf if expected > 709.8 else vol)
    if -700 < expected < 700:
        assert vol == pytest.approx(math.exp(expected), rel=1e-12)


# --- shapes, dtypes, namespaces, inputs ------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (0, 4, 2), (3, 3, 2), (1, 7, 1)])
def test_batched_shapes_dtype_namespace(xp, dtype, use_kernels, asarray, shape):
    a = np.random.default_rng(8).standard_normal(shape)
    x = asarray(a, dtype=dtype)
    for fn in [*FUNCS, lowrank.nonsquare_det, lowrank.log_nonsquare_det]:
        out = fn(x)
        assert out.shape == shape[:-2]
        assert out.dtype == dtype
        assert same_namespace(xp, out)
    expected = np.log(det_volume(a)) if a.size else np.zeros(shape[:-2])
    rtol = 1e-4 if dtype == xp.float32 else 1e-12
    np.testing.assert_allclose(to_numpy(lowrank.log_gram_volume(x)), expected, rtol=rtol, atol=rtol)


def test_complex_gives_real_dtype(xp, asarray):
    a = matrix_with_spectrum(4, 2, [1.0, 0.5], seed=9, complex_=True)
    for cdt, rdt in ((xp.complex64, xp.float32), (xp.complex128, xp.float64)):
        out = lowrank.gram_volume(asarray(a, dtype=cdt))
        assert out.dtype == rdt
        assert float(to_numpy(out)) == pytest.approx(0.5, rel=1e-5)


def test_integer_bool_and_half_inputs():
    assert lowrank.gram_volume(np.array([[3, 0], [0, 2], [0, 0]])).dtype == np.float64
    assert float(lowrank.gram_volume(np.eye(3, 2, dtype=bool))) == 1.0
    half = lowrank.log_gram_volume(np.eye(4, 2, dtype=np.float16) * 2)
    assert half.dtype == np.float16
    assert float(half) == pytest.approx(2 * math.log(2), rel=1e-3)


def test_any_strides_and_no_mutation(use_kernels):
    base = np.random.default_rng(10).standard_normal((6, 4, 5))
    keep = base.copy()
    views = [base[:, :3, :2], np.swapaxes(base, -1, -2), base[::2, ::-1, 1:4], base[0].T]
    for v in views:
        expected = lowrank.log_gram_volume(np.ascontiguousarray(v))
        np.testing.assert_allclose(lowrank.log_gram_volume(v), expected, rtol=1e-13)
    np.testing.assert_array_equal(base, keep)


def test_nan_and_inf_are_caught(xp, use_kernels, asarray):
    a = np.random.default_rng(11).standard_normal((3, 4, 2))
    for bad in (np.nan, np.inf):
        b = a.copy()
        b[2, 3, 1] = bad
        for fn in FUNCS:
            with pytest.raises(ValueError, match="`a` contains NaN or Inf"):
                fn(asarray(b))
        out = to_numpy(lowrank.log_gram_volume(asarray(b), check_finite=False))
        assert np.all(np.isfinite(out[:2]))
        if backend_name(xp) == "numpy" and use_kernels:
            assert np.isnan(out[2])


def test_bad_inputs():
    with pytest.raises(ValueError, match="`a` must have ndim >= 2"):
        lowrank.gram_volume(np.ones(3))
    with pytest.raises(TypeError, match="array"):
        lowrank.gram_volume([[1.0, 2.0]])
    with pytest.raises(TypeError, match="`a` must be a dense NumPy, CuPy, PyTorch"):
        lowrank.gram_volume(object())


def test_torch_autograd_gives_pinv_transpose():
    torch = pytest.importorskip("torch")
    a_np = np.random.default_rng(12).standard_normal((7, 3))
    a = torch.tensor(a_np, requires_grad=True)
    lowrank.log_gram_volume(a).backward()
    expected = a_np @ np.linalg.inv(a_np.T @ a_np)  # = pinv(a)ᵀ for full column rank
    np.testing.assert_allclose(a.grad.numpy(), expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(expected, np.linalg.pinv(a_np).T, rtol=1e-12, atol=1e-14)
    b = torch.tensor(a_np[:3], requires_grad=True)  # square: d log|det| = a⁻ᵀ
    lowrank.gram_volume(b).backward()
    vol = abs(np.linalg.det(a_np[:3]))
    np.testing.assert_allclose(b.grad.numpy(), vol * np.linalg.inv(a_np[:3]).T, rtol=1e-11)


@given(
    batch=st.integers(0, 3),
    n=st.integers(0, 7),
    k=st.integers(0, 7),
    seed=st.integers(0, 2**16),
)
def test_matches_singular_values_for_any_shape(batch, n, k, seed):
    a = np.random.default_rng(seed).standard_normal((batch, n, k))
    if n >= k:
        s = np.linalg.svd(a, compute_uv=False) if k else np.ones((batch, 0))
        expected = np.sum(np.log(s), axis=-1)
        kappa = s[..., 0] / s[..., -1] if k else np.ones(batch)
    else:
        expected, kappa = np.full(batch, -np.inf), np.ones(batch)
    for use in (True, False):
        with lowrank.config_context(use_kernels=use):
            got = lowrank.log_gram_volume(a)
        assert got.shape == (batch,)
        finite = np.isfinite(expected)
        assert np.array_equal(np.isfinite(got), finite)
        err = np.abs(got[finite] - expected[finite])
        np.testing.assert_array_less(err, 100 * max(n, 1) * eps("float64") * kappa[finite])
