"""Bad inputs at the public entry points: a clear error that names the parameter and value.

Each case is an input a user can plausibly pass; the test asserts the exception type and
that the message names the offending argument (and, where there is one, its value), so a
message that blames the wrong argument fails too.
"""

from __future__ import annotations

import numpy as np
import pytest

import lowrank

RNG = np.random.default_rng(0)
A = RNG.standard_normal((30, 10))
B = RNG.standard_normal((10, 12))


def _lora():
    A_ = np.ones((2, 5)) + np.eye(2, 5)
    B_ = np.ones((6, 2)) + np.eye(6, 2)
    return A_, B_, np.ones((2, 5)), np.ones((6, 2))


ARRAY_CALLS = {
    "randomized_svd": lambda a: lowrank.randomized_svd(a, 3, rng=0),
    "svd_approx": lambda a: lowrank.svd_approx(a, rank=3, rng=0),
    "truncated_svd": lambda a: lowrank.truncated_svd(a, 3),
    "pinv": lambda a: lowrank.pinv(a),
    "gram_volume": lambda a: lowrank.gram_volume(a),
    "select_columns": lambda a: lowrank.select_columns(a, 3, rng=0),
}


def _masked():
    return np.ma.masked_array(A, mask=np.zeros_like(A, dtype=bool))


def _matrix():
    with pytest.warns(PendingDeprecationWarning):
        return np.matrix(A)


BAD_ARRAYS = {
    "masked array": (_masked, TypeError, ["`a`", "masked", "filled"]),
    "np.matrix": (_matrix, TypeError, ["`a`", "matrix", "np.asarray"]),
    "python list": (lambda: A.tolist(), TypeError, ["`a`", "list"]),
    "longdouble": (lambda: A.astype(np.longdouble), TypeError, ["`a`", "float64"]),
    "NaN entry": (lambda: np.where(np.arange(A.size).reshape(A.shape) == 7, np.nan, A),
                  ValueError, ["`a`", "NaN"]),
}


@pytest.mark.parametrize("func", sorted(ARRAY_CALLS))
@pytest.mark.parametrize("case", sorted(BAD_ARRAYS))
def test_bad_array_is_refused_by_name(func, case):
    make, exc, words = BAD_ARRAYS[case]
    a = make()
    with pytest.raises(exc) as info:
        ARRAY_CALLS[func](a)
    msg = str(info.value)
    for w in words:
        assert w.lower() in msg.lower(), (func, case, msg)


def test_masked_and_matrix_refused_the_same_with_and_without_kernels():
    for use in (True, False):
        with lowrank.config_context(use_kernels=use):
            with pytest.raises(TypeError, match="masked"):
                lowrank.gram_volume(_masked())
            with pytest.raises(TypeError, match="matrix"):
                lowrank.gram_volume(_matrix())


@pytest.mark.parametrize(("rng", "exc", "words"), [
    (-1, ValueError, ["`rng`", "-1"]),
    (True, TypeError, ["`rng`", "True"]),
    (np.True_, TypeError, ["`rng`", "True"]),
    (1.5, TypeError, ["`rng`", "1.5"]),
    ("seed", TypeError, ["`rng`", "seed"]),
])
def test_bad_seeds_name_rng_and_value(rng, exc, words):
    with pytest.raises(exc) as info:
        lowrank.randomized_svd(A, 3, rng=rng)
    for w in words:
        assert w in str(info.value), str(info.value)


def test_big_seeds_are_accepted_and_reproducible():
    big = 2**70
    one = lowrank.randomized_svd(A, 3, rng=big)
    two = lowrank.randomized_svd(A, 3, rng=big)
    other = lowrank.randomized_svd(A, 3, rng=big + 1, n_power_iter=0, method="subspace")
    np.testing.assert_array_equal(one.U, two.U)
    assert one.U.shape == other.U.shape == (30, 3)


def test_torch_generator_with_numpy_input_is_refused_clearly():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"`rng`.*torch.*numpy"):
        lowrank.randomized_svd(A, 3, rng=torch.Generator())


def test_mismatched_xp_is_refused_clearly():
    strict = pytest.importorskip("array_api_strict")
    with pytest.raises(TypeError, match=r"`xp`.*array_api_strict"):
        lowrank.randomized_svd(A, 3, xp=strict)


def test_numpy_bools_are_bools():
    ref = lowrank.svd_approx(A, rank=3, rng=0, check_finite=True)
    got = lowrank.svd_approx(A, rank=3, rng=0, check_finite=np.True_)
    np.testing.assert_array_equal(ref.S, got.S)
    with pytest.raises(TypeError, match="check_finite"):
        lowrank.svd_approx(A, rank=3, rng=0, check_finite=1)


@pytest.mark.parametrize("make", ["meta", "sparse", "complex32"])
def test_unsupported_torch_tensors_are_refused_by_name(make):
    torch = pytest.importorskip("torch")
    if make == "meta":
        t = torch.empty(4, 3, device="meta")
    elif make == "sparse":
        t = torch.eye(5).to_sparse()
    else:
        with pytest.warns(UserWarning, match="ComplexHalf"):
            t = torch.zeros(4, 3, dtype=torch.complex32)
    for call in (lambda: lowrank.gram_volume(t), lambda: lowrank.randomized_svd(t, 2, rng=0)):
        with pytest.raises((TypeError, ValueError)) as info:
            call()
        assert "`a`" in str(info.value), str(info.value)


@pytest.mark.parametrize("lib", ["sparse", "dask.array"])
def test_unsupported_array_libraries_name_the_supported_routes(lib):
    mod = pytest.importorskip(lib)
    a = mod.COO.from_numpy(A) if lib == "sparse" else mod.from_array(A)
    calls = (lambda: lowrank.randomized_svd(a, 3, rng=0),
             lambda: lowrank.cr_matmul(a, B, rank=4, rng=0))
    if lib == "dask.array":  # dask has its own paths there; dense-only functions refuse it
        calls = (lambda: lowrank.truncated_svd(a, 3), lambda: lowrank.pinv(a))
    for call in calls:
        with pytest.raises(TypeError) as info:
            call()
        msg = str(info.value)
        assert "`a`" in msg and "NumPy" in msg, msg


@pytest.mark.parametrize("scaling", [1e-300, 1e300, 0.0, -1.0, float("nan")])
def test_lora_pro_scaling_out_of_safe_range_is_refused(scaling):
    with pytest.raises(ValueError, match="`scaling`"):
        lowrank.lora_pro_adjust(*_lora(), scaling=scaling)


def test_lora_pro_tiny_but_safe_scaling_is_scale_consistent():
    """g̃ = s(B g_A' + g_B' A) depends on G only: the same G at two scalings, same g̃."""
    A_, B_, _, _ = _lora()
    G = np.random.default_rng(1).standard_normal((6, 5))
    outs = []
    for s in (1.0, 1e-150):
        gA, gB = s * B_.T @ G, s * G @ A_.T
        adj = lowrank.lora_pro_adjust(A_, B_, gA, gB, scaling=s)
        outs.append(s * (B_ @ adj[0] + adj[1] @ A_))
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-10, atol=1e-12 * np.abs(outs[0]).max())


@pytest.mark.parametrize("call", [
    lambda v: lowrank.truncated_svd(A, 3, check_finite=v),
    lambda v: lowrank.pinv(A, check_finite=v),
    lambda v: lowrank.gram_volume(A, check_finite=v),
    lambda v: lowrank.log_gram_volume(A, check_finite=v),
    lambda v: lowrank.cr_matmul(A.T, A, rank=4, rng=0, check_finite=v),
    lambda v: lowrank.randomized_svd(A, 3, rng=0, check_finite=v),
], ids=["truncated_svd", "pinv", "gram_volume", "log_gram_volume", "cr_matmul",
        "randomized_svd"])
def test_check_finite_must_be_a_bool(call):
    call(np.True_)  # NumPy bools are bools
    with pytest.raises(TypeError, match=r"`check_finite` must be a bool; got 'yes'"):
        call("yes")


def test_numpy_bool_is_not_a_positive_number():
    with pytest.raises(TypeError, match=r"`rtol` must be a real number"):
        lowrank.svd_approx(A, rtol=np.True_)


@pytest.mark.parametrize("rng", ["bogus", -1, 2.5])
def test_cr_expected_error_validates_rng_even_when_unused(rng):
    with pytest.raises((TypeError, ValueError), match="`rng`"):
        lowrank.cr_expected_error(A.T, A, 4, rng=rng)
