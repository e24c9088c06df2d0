"""The NumPy fast path of the volumes: error state, configuration and per-shape plans."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import lowrank
from lowrank import _config
from lowrank import _volume as volume

pytest.importorskip("numba")

from lowrank.kernels import _fpe  # noqa: E402


def test_ignored_fp_errors_restore_the_callers_state():
    with np.errstate(over="raise", invalid="warn"):
        token = _fpe.ignore_fp_errors()
        try:
            assert np.geterr()["over"] == "ignore"
            np.float64(1e300) * 1e300  # no error while ignored
        finally:
            _fpe.restore_fp_errors(token)
        assert np.geterr()["over"] == "raise"
        with pytest.raises(FloatingPointError):
            np.float64(1e300) * 1e300


@pytest.mark.parametrize("shape", [(3, 512, 8), (520, 8), (6, 2048, 16)])  # BLAS products
def test_overflowing_products_neither_warn_nor_change_the_error_state(shape):
    a = np.random.default_rng(0).standard_normal(shape) * 1e200  # aᵀa overflows
    with warnings.catch_warnings(), np.errstate(over="raise"):
        warnings.simplefilter("error")
        got = lowrank.log_gram_volume(a)
        assert np.geterr()["over"] == "raise"
    ref = np.linalg.slogdet(np.swapaxes(a / 1e200, -1, -2) @ (a / 1e200))[1] / 2
    np.testing.assert_allclose(got, ref + shape[-1] * np.log(1e200), rtol=1e-12)


def test_kernels_enabled_follows_the_environment_and_the_context(monkeypatch):
    monkeypatch.delenv("LOWRANK_USE_KERNELS", raising=False)
    assert _config.kernels_enabled() is True
    monkeypatch.setenv("LOWRANK_USE_KERNELS", "off")
    assert _config.kernels_enabled() is False
    assert lowrank.get_config()["use_kernels"] is False
    with lowrank.config_context(use_kernels=True):
        assert _config.kernels_enabled() is True
    monkeypatch.setenv("LOWRANK_USE_KERNELS", "1")
    assert _config.kernels_enabled() is True
    with lowrank.config_context(use_kernels=False):
        assert _config.kernels_enabled() is False


def test_kernels_off_takes_the_qr_path_with_the_same_results(monkeypatch):
    a = np.random.default_rng(1).standard_normal((5, 512, 8))
    on = lowrank.log_gram_volume(a)
    monkeypatch.setenv("LOWRANK_USE_KERNELS", "0")
    called = []
    monkeypatch.setattr(volume, "_numpy_plan", lambda *args: called.append(args))
    off = lowrank.log_gram_volume(a)
    assert not called  # the plans are not even looked up
    np.testing.assert_allclose(off, on, rtol=1e-12)


def test_plans_are_per_shape_and_bounded(monkeypatch):
    monkeypatch.setattr(volume, "_PLANS", {})
    monkeypatch.setattr(volume, "_PLANS_MAX", 4)
    rng = np.random.default_rng(2)
    for batch in range(1, 11):
        a = rng.standard_normal((batch, 64, 8))
        np.testing.assert_allclose(lowrank.log_gram_volume(a),
                                   np.linalg.slogdet(np.swapaxes(a, -1, -2) @ a)[1] / 2,
                                   rtol=1e-12)
        assert len(volume._PLANS) <= 4
    key = ((10, 64, 8), np.dtype(np.float64), True)
    assert key in volume._PLANS
    # a plan serves any strides of its shape, and 4-d batches
    view = np.swapaxes(rng.standard_normal((10, 8, 128)), 1, 2)[:, ::2]
    np.testing.assert_allclose(lowrank.log_gram_volume(view),
                               lowrank.log_gram_volume(np.ascontiguousarray(view)), rtol=1e-13)
    four = rng.standard_normal((2, 5, 64, 8))
    np.testing.assert_allclose(lowrank.log_gram_volume(four),
                               lowrank.log_gram_volume(four.reshape(10, 64, 8)).reshape(2, 5),
                               rtol=1e-13)
