"""Test helpers shared across modules (imported as ``helpers``; tests/ is on sys.path)."""

from __future__ import annotations

import numpy as np


def to_numpy(x):
    """Host float64/complex NumPy copy of any backend's array (tests only)."""
    if isinstance(x, np.ndarray):
        return x
    mod = type(x).__module__.split(".")[0]
    if mod == "torch":
        return x.detach().cpu().resolve_conj().numpy()
    if mod == "cupy":
        return x.get()
    if hasattr(x, "_array"):  # array-api-strict
        return np.asarray(x._array)
    return np.asarray(x)


def eps(dtype_name_or_dtype) -> float:
    """Machine epsilon of a dtype given by name or by a backend dtype object."""
    try:  # names and NumPy dtypes / scalar types
        return float(np.finfo(np.dtype(dtype_name_or_dtype)).eps)
    except TypeError:  # torch.float32 and friends: parse the name
        name = str(dtype_name_or_dtype).split(".")[-1]
        return float(np.finfo(np.dtype(name)).eps)


def matrix_with_spectrum(m, n, s, *, seed=0, complex_=False):
    """m x n float64 (or complex128) matrix with singular values ``s`` (descending)."""
    rng = np.random.default_rng(seed)
    k = len(s)

    def orth(rows):
        g = rng.standard_normal((rows, k))
        if complex_:
            g = g + 1j * rng.standard_normal((rows, k))
        q, _ = np.linalg.qr(g)
        return q

    U, V = orth(m), orth(n)
    return (U * np.asarray(s, dtype=float)) @ V.conj().T


def backend_name(xp) -> str:
    """numpy / torch / array_api_strict / cupy for a (wrapped) namespace."""
    name = xp.__name__
    for key in ("numpy", "torch", "array_api_strict", "cupy"):
        if key in name:
            return key
    return name


def same_namespace(xp, x) -> bool:
    from array_api_compat import array_namespace

    return array_namespace(x).__name__ == xp.__name__


def peak_columns(f, rows):
    """Peak of the memory allocated while ``f`` runs (tracemalloc, NumPy's allocations),
    in columns of ``rows`` float64 values."""
    import tracemalloc

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        f()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak / (rows * 8)
