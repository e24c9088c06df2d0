"""The numba Gram-volume kernel against its array-API twin (also run with NUMBA_DISABLE_JIT=1)."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("numba")

from lowrank.kernels import volume_numba
from ref_volume import mp_log_volume

from lowrank._agnostic import _volume as agnostic

SHAPES = [(3, 2), (5, 2), (2, 2), (3, 1), (16, 4), (6, 6), (33, 32), (9, 3)]


def run(a, take_log):
    out = np.empty(a.shape[0], dtype=a.dtype)
    volume_numba.log_gram_volume(a, out, take_log)
    return out


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_agnostic_twin(shape, dtype):
    # 37 matrices: two full 16-matrix lane blocks and a partial block (scalar path)
    a = np.random.default_rng(sum(shape)).standard_normal((37, *shape)).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for take_log, twin in ((True, agnostic.log_gram_volume), (False, agnostic.gram_volume)):
        got = run(a, take_log)
        assert got.dtype == dtype
        expected = twin(a.astype(np.float64), np)
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol if take_log else 0)


def test_float32_is_computed_in_float64():
    # κ ≈ 1e3 in float32: float64 arithmetic on the float32 values is far below eps32·κ.
    a = np.array([[1.0, 1.0], [0.0, 1e-3], [0.0, 0.0]], dtype=np.float32)[None]
    ref = mp_log_volume(a[0].astype(np.float64))
    assert abs(float(run(a, True)[0]) - ref) <= 4 * np.finfo(np.float32).eps


def test_any_strides():
    base = np.random.default_rng(1).standard_normal((7, 5, 9))
    for view in (np.swapaxes(base, 1, 2)[:, :5, :2], base[::2, :, 3:6], base[:, ::-1, :3]):
        expected = run(np.ascontiguousarray(view), True)
        np.testing.assert_allclose(run(view, True), expected, rtol=1e-14)


@pytest.mark.parametrize("shape", [(3, 2), (7, 2), (8, 5)])
@pytest.mark.parametrize("scale", [1e-300, 1e-170, 1e160, 1e300])
def test_scaled_path_keeps_log_finite(shape, scale):
    q, _ = np.linalg.qr(np.random.default_rng(2).standard_normal(shape))
    a = np.stack([q * scale, q])
    got = run(a, True)
    expected = shape[1] * math.log(scale)
    assert got[0] == pytest.approx(expected, rel=1e-13)
    assert got[1] == pytest.approx(0.0, abs=1e-13)
    vol = run(a, False)[0]
    assert vol == (0.0 if expected < -745 else math.inf if expected > 709.8 else vol)


def test_mixed_scales_inside_one_matrix():
    # partial products leave the safe range although the volume does not
    a = np.zeros((1, 6, 3))
    a[0, 0, 0], a[0, 1, 1], a[0, 2, 2] = 1e200, 1e200, 1e-250
    assert run(a, False)[0] == pytest.approx(1e150, rel=1e-13)
    assert run(a, True)[0] == pytest.approx(150 * math.log(10), rel=1e-14)


@pytest.mark.parametrize("shape", [(3, 2), (4, 2), (5, 3)])
def test_zero_column_and_nonfinite_entries(shape):
    a = np.random.default_rng(3).standard_normal((4, *shape))
    a[0, :, 0] = 0.0
    a[1, :, -1] = 0.0
    a[2, -1, 0] = np.nan
    a[3, 0, -1] = np.inf
    logs, vols = run(a, True), run(a, False)
    assert logs[0] == -math.inf
    assert logs[1] == -math.inf
    assert vols[0] == 0.0
    assert vols[1] == 0.0
    assert np.isnan(logs[2:]).all()
    assert np.isnan(vols[2:]).all()
    b = np.zeros((1, *shape))
    b[0, :, 0] = 0.0
    b[0, 0, -1] = np.nan  # NaN in a column after a zero one: still NaN, not -inf
    assert np.isnan(run(b, True)[0])


def test_empty_batch():
    out = np.empty(0)
    volume_numba.log_gram_volume(np.empty((0, 3, 2)), out, True)
    assert out.shape == (0,)


@pytest.mark.parametrize("shape", [(3, 2), (16, 4), (5, 3)])
def test_parallel_path_matches_serial(monkeypatch, shape):
    # 70 matrices: full lane blocks, a partial block and several chunks
    a = np.random.default_rng(4).standard_normal((70, *shape))
    a[5] *= 1e200  # a matrix that needs the scaled path inside a lane block
    serial = run(a, True)
    monkeypatch.setattr(volume_numba, "_SERIAL_FLOPS", 0)
    np.testing.assert_array_equal(run(a, True), serial)
    np.testing.assert_allclose(serial, agnostic.log_gram_volume(a, np), rtol=1e-12)


@pytest.mark.parametrize("shape", [(3, 2), (16, 4)])
def test_thread_pool_path_matches_serial(monkeypatch, shape):
    # one chunk per lane block: the most interleaving the pool can produce
    a = np.random.default_rng(5).standard_normal((70, *shape))
    serial = run(a, True)
    monkeypatch.setattr(volume_numba, "_SERIAL_FLOPS", 0)
    monkeypatch.setattr(volume_numba, "n_workers", lambda: 64)
    np.testing.assert_array_equal(run(a, True), serial)


def _child_volumes(a):
    return run(a, True)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
# JAX, when an earlier test imported it, warns at every fork; the child here runs only
# lowrank's own pool, never JAX
@pytest.mark.filterwarnings(r"ignore:os\.fork\(\) was called:RuntimeWarning")
def test_forked_child_of_a_threaded_parent_still_computes():
    import multiprocessing

    a = np.random.default_rng(6).standard_normal((20000, 16, 4))  # parallel path
    parent = run(a, True)  # starts the kernel thread pool here
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply_async(_child_volumes, (a,)).get(timeout=60)
    np.testing.assert_array_equal(child, parent)
