"""Shared fixtures: one ``xp`` fixture over every backend, ``dtype`` and ``use_kernels``."""

from __future__ import annotations

import enum
import importlib
import os

import numpy as np
import pytest
from hypothesis import settings
from lowrank.kernels._probe import gpu_available

import lowrank

settings.register_profile("deterministic", derandomize=True, deadline=None, max_examples=40)
settings.load_profile("deterministic")


class Backend(enum.Enum):
    """Array backends the suite runs on."""

    NUMPY = "numpy"
    ARRAY_API_STRICT = "array_api_strict"
    TORCH = "torch"
    TORCH_CUDA = "torch:cuda"
    CUPY = "cupy"

    @property
    def module_name(self) -> str:
        return self.value.split(":")[0]


def torch_cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.fixture(params=[pytest.param(b, id=b.value) for b in Backend])
def xp(request):
    """The array namespace under test (array-api-compat wrapped)."""
    backend: Backend = request.param
    marker = request.node.get_closest_marker("skip_xp_backend")
    for m in request.node.iter_markers("skip_xp_backend"):
        if m.args and m.args[0] == backend:
            pytest.skip(m.kwargs.get("reason", f"not supported on {backend.value}"))
    del marker
    if backend is Backend.CUPY and not gpu_available():
        pytest.skip("no CUDA GPU (CuPy probe)")
    if backend is Backend.TORCH_CUDA and not torch_cuda_available():
        pytest.skip("no CUDA GPU for torch")
    mod = pytest.importorskip(backend.module_name)
    if backend is Backend.ARRAY_API_STRICT:
        mod.set_array_api_strict_flags(api_version="2024.12")
    from array_api_compat import array_namespace

    if backend is Backend.TORCH_CUDA:
        ns = array_namespace(mod.empty(0, device="cuda"))
        ns_device = "cuda"
    else:
        ns = array_namespace(mod.empty(0))
        ns_device = None
    request.node.xp_device = ns_device
    return ns


@pytest.fixture
def device(xp, request):
    """Device to create test arrays on (None = the backend default)."""
    return getattr(request.node, "xp_device", None)


@pytest.fixture(params=["float32", "float64"])
def dtype(xp, request):
    return getattr(xp, request.param)


@pytest.fixture(params=[True, False], ids=["kernels", "agnostic"])
def use_kernels(request):
    with lowrank.config_context(use_kernels=request.param):
        yield request.param


@pytest.fixture
def asarray(xp, device):
    """Convert a host NumPy array to the backend under test, on its device."""

    def convert(x, dtype=None):
        x = np.asarray(x)
        if dtype is None:
            dtype = xp.float64 if x.dtype.kind == "f" else None
        return xp.asarray(x, dtype=dtype, device=device) if device else xp.asarray(x, dtype=dtype)

    return convert


def pytest_report_header(config):
    out = []
    for name in ("numpy", "scipy", "torch", "array_api_strict", "numba", "cupy"):
        try:
            mod = importlib.import_module(name)
            out.append(f"{name} {getattr(mod, '__version__', '?')}")
        except ImportError:
            out.append(f"{name} missing")
    sim = os.environ.get("NUMBA_ENABLE_CUDASIM", "0")
    return ["lowrank backends: " + ", ".join(out) + f"; NUMBA_ENABLE_CUDASIM={sim}"]


@pytest.fixture
def jax_xp():
    """JAX's array namespace with 64-bit types enabled for the test (jax tests only).

    JAX is not in the ``xp`` fixture: its arrays are immutable and it is tested on its
    own (eager results against NumPy, and every public function under ``jax.jit``).
    """
    jax = pytest.importorskip("jax")
    with jax.enable_x64(True):
        yield pytest.importorskip("jax.numpy")
