"""The kernel dispatch layer: lookup table, lazy loading, fallback, config switch."""

from __future__ import annotations

import os
import subprocess
import sys

import array_api_compat.numpy as np_xp
import numpy as np
import pytest
from lowrank.kernels import KERNELS

import lowrank
from lowrank._lib import _dispatch


def test_table_is_plain_data():
    for op, entries in KERNELS.items():
        assert set(entries) <= {"numba", "cuda"}, op
        for target in entries.values():
            mod, _, attr = target.partition(":")
            assert mod.startswith("lowrank.kernels."), target
            assert attr, target


def test_numpy_gets_numba_kernel_and_it_matches_fallback():
    kernel = _dispatch.get_kernel("axpy", np_xp)
    assert kernel is not None
    x = np.arange(5.0)
    y = np.ones(5)
    out = np.empty(5)
    kernel(2.0, x, y, out)
    np.testing.assert_array_equal(out, 2.0 * x + y)


def test_config_context_disables_kernels():
    with lowrank.config_context(use_kernels=False):
        assert _dispatch.get_kernel("axpy", np_xp) is None
        assert lowrank.get_config()["use_kernels"] is False
    assert lowrank.get_config()["use_kernels"] is True


def test_config_context_rejects_non_bool():
    with pytest.raises(TypeError, match="use_kernels"), lowrank.config_context(use_kernels=1):
        pass


def test_unknown_op_and_non_kernel_backends_fall_back():
    assert _dispatch.get_kernel("no_such_op", np_xp) is None
    strict = pytest.importorskip("array_api_strict")
    assert _dispatch.get_kernel("axpy", strict) is None
    torch = pytest.importorskip("torch")
    from array_api_compat import array_namespace

    assert _dispatch.get_kernel("axpy", array_namespace(torch.empty(0))) is None


def test_missing_module_gives_none(monkeypatch):
    monkeypatch.setitem(KERNELS, "ghost", {"numba": "lowrank.kernels.does_not_exist:f"})
    _dispatch._load.cache_clear()
    assert _dispatch.get_kernel("ghost", np_xp) is None


def test_env_switch_disables_kernels():
    code = (
        "import array_api_compat.numpy as xp, lowrank;"
        "from lowrank._lib._dispatch import get_kernel;"
        "print(get_kernel('axpy', xp) is None, lowrank.get_config()['use_kernels'])"
    )
    env = dict(os.environ, LOWRANK_USE_KERNELS="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False"]
