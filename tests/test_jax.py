"""JAX arrays: eager results against NumPy, and every public function under ``jax.jit``.

Traceable functions must give the eager result under jit with ``check_finite=False``
(and refuse ``check_finite=True`` by name: the check is data-dependent); the others must
refuse traced input with a TypeError naming the step that needs concrete values.
"""

from __future__ import annotations

import numpy as np
import pytest

import lowrank

jax = pytest.importorskip("jax")

RNG = np.random.default_rng(0)
A = RNG.standard_normal((40, 12))
L_A, L_B = RNG.standard_normal((2, 12)), RNG.standard_normal((16, 2))
L_GA, L_GB = RNG.standard_normal((2, 12)), RNG.standard_normal((16, 2))


def _np(x):
    return np.asarray(x)


# traceable with check_finite=False: (call on a, uses check_finite)
TRACEABLE = {
    "truncated_svd": lambda a, cf: lowrank.truncated_svd(a, 3, check_finite=cf),
    "pinv": lambda a, cf: lowrank.pinv(a, check_finite=cf),
    "optimal_factor": lambda a, cf: lowrank.optimal_factor(a, a[:, :3], check_finite=cf),
    "gram_volume": lambda a, cf: lowrank.gram_volume(a, check_finite=cf),
    "log_gram_volume": lambda a, cf: lowrank.log_gram_volume(a, check_finite=cf),
    "nonsquare_det": lambda a, cf: lowrank.nonsquare_det(a.T, check_finite=cf),
    "log_nonsquare_det": lambda a, cf: lowrank.log_nonsquare_det(a.T, check_finite=cf),
    "lora_pro_adjust": lambda a, cf: lowrank.lora_pro_adjust(
        a[:2], a[:16, :2] + 1.0, a[2:4] * 0.5, a[16:32, 2:4], scaling=1.0, check_finite=cf),
    "equivalent_gradient": lambda a, cf: lowrank.equivalent_gradient(
        a[:2], a[:16, :2] + 1.0, a[2:4] * 0.5, a[16:32, 2:4], scaling=1.0, check_finite=cf),
}

# refused under tracing: (call, words of the data-dependent step in the message)
REFUSED = {
    "randomized_svd": (lambda a: lowrank.randomized_svd(a, 3, rng=0, check_finite=False),
                       "CholeskyQR"),
    "randomized_range_finder": (lambda a: lowrank.randomized_range_finder(a, 3, rng=0),
                                "rescaling"),
    "svd_approx": (lambda a: lowrank.svd_approx(a, rank=3, rng=0, check_finite=False),
                   "‖a‖_F"),
    "cr_factors": (lambda a: lowrank.cr_factors(a.T, a, 5, rng=0, check_finite=False),
                   "selection of the indices"),
    "cr_matmul": (lambda a: lowrank.cr_matmul(a.T, a, 5, rng=0, check_finite=False),
                  "selection of the indices"),
    "cr_expected_error": (lambda a: lowrank.cr_expected_error(a.T, a, 5), "scaling"),
    "select_columns": (lambda a: lowrank.select_columns(a, 3), "search for the columns"),
    "lora_ga_init": (lambda a: lowrank.lora_ga_init(a, 2, scaling=1.0, check_finite=False),
                     "gradient SVD"),
}


def _leaves(out):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tuple(out) if isinstance(
        out, tuple) else out)]


def test_the_tables_name_public_functions():
    assert set(TRACEABLE) | set(REFUSED) <= set(lowrank.__all__)
    assert not set(TRACEABLE) & set(REFUSED)


@pytest.mark.parametrize("name", sorted(TRACEABLE))
def test_traceable_functions_match_eager_under_jit(jax_xp, name):
    a = jax_xp.asarray(A)
    call = TRACEABLE[name]
    eager = _leaves(call(a, True))
    traced = _leaves(jax.jit(lambda x: call(x, False))(a))
    numpy_ref = _leaves(call(A, True))
    for e, t, n in zip(eager, traced, numpy_ref, strict=True):
        np.testing.assert_allclose(t, e, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(e).max()))
        # singular vectors may differ in sign between LAPACKs: compare magnitudes
        np.testing.assert_allclose(np.abs(e), np.abs(n), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", sorted(TRACEABLE))
def test_finite_check_under_jit_is_refused_by_name(jax_xp, name):
    a = jax_xp.asarray(A)
    with pytest.raises(TypeError, match="check_finite=False"):
        jax.jit(lambda x: TRACEABLE[name](x, True))(a)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_data_dependent_functions_refuse_tracing_naming_the_step(jax_xp, name):
    call, step = REFUSED[name]
    a = jax_xp.asarray(A)
    call(a)  # eager JAX works
    with pytest.raises(TypeError, match="cannot run under JAX tracing") as info:
        jax.jit(call)(a)
    assert step in str(info.value) and name in str(info.value)


def test_cr_norms_trace():
    a = jax.numpy.asarray(A.astype(np.float32))
    out = jax.jit(lambda x: lowrank.cr_norms(x.T, x))(a)
    np.testing.assert_allclose(_np(out.columns), np.linalg.norm(A, axis=1), rtol=1e-5)


def test_traced_and_concrete_arrays_mix(jax_xp):
    """Concrete arrays closed over by the traced function: no device mismatch."""
    A_, B_ = jax_xp.asarray(L_A), jax_xp.asarray(L_B)
    f = jax.jit(lambda ga, gb: lowrank.lora_pro_adjust(A_, B_, ga, gb, scaling=2.0,
                                                        check_finite=False))
    got = f(jax_xp.asarray(L_GA), jax_xp.asarray(L_GB))
    ref = lowrank.lora_pro_adjust(L_A, L_B, L_GA, L_GB, scaling=2.0)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(_np(g), r, rtol=1e-10, atol=1e-12)


def test_eager_randomized_svd_on_jax_is_near_optimal(jax_xp):
    rng = np.random.default_rng(1)
    u, _ = np.linalg.qr(rng.standard_normal((300, 60)))
    v, _ = np.linalg.qr(rng.standard_normal((60, 60)))
    s = 1.0 / np.arange(1, 61)
    a = (u * s) @ v.T
    res = lowrank.randomized_svd(jax_xp.asarray(a), 8, rng=0)
    U, S, Vh = (_np(x) for x in res)
    assert np.abs(U.T @ U - np.eye(8)).max() <= 1e-12
    err = np.linalg.norm(a - (U * S) @ Vh)
    opt = np.sqrt(np.sum(s[8:] ** 2))
    assert opt * (1 - 1e-12) <= err <= opt * (1 + 1e-6)
