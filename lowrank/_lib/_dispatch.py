"""Kernel lookup: (op, backend) -> callable or None (use the array-API fallback)."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

from .._config import get_config
from . import _compat

__all__ = ["get_kernel", "kernel_backend"]


def kernel_backend(xp: Any) -> str | None:
    """Kernel family for namespace ``xp``: "numba", "cuda" or None."""  # numpydoc ignore=PR01,RT01
    if not get_config()["use_kernels"]:
        return None
    if _compat.is_numpy_namespace(xp):
        return "numba"
    if _compat.is_cupy_namespace(xp):
        return "cuda"
    # torch (CPU or CUDA) and array-api-strict take the pure array-API path, which keeps
    # autograd intact and never copies between devices.
    return None


@functools.cache
def _load(target: str) -> Callable[..., Any] | None:
    modname, _, attr = target.partition(":")
    try:
        module = importlib.import_module(modname)
    except ImportError:  # numba / numba-cuda missing: fall back to array-API code
        return None
    return getattr(module, attr)  # AttributeError is a bug in the table: let it raise


def get_kernel(op: str, xp: Any) -> Callable[..., Any] | None:
    """Compiled kernel for ``op`` on namespace ``xp``, or None."""  # numpydoc ignore=PR01,RT01
    from ..kernels import KERNELS  # plain data; importing it imports nothing heavy

    backend = kernel_backend(xp)
    target = None if backend is None else KERNELS.get(op, {}).get(backend)
    return None if target is None else _load(target)
