"""Input checks for the public layer. Messages name the parameter, the rule and the value."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from . import _compat
from ._traced import is_traced

__all__ = [
    "check_array",
    "check_bool",
    "check_finite",
    "check_int",
    "check_matrix",
    "check_option",
    "check_positive",
    "check_same_device",
    "namespace",
    "to_floating",
]

_DENSE = "a dense NumPy, CuPy, PyTorch or array-api-strict array"
_SPARSE_ROUTES = (
    "randomized_svd, randomized_range_finder and svd_approx also take scipy.sparse "
    "matrices and scipy LinearOperators"
)


_DASK_ROUTES = (
    "randomized_svd, randomized_range_finder, svd_approx, the CR functions and the Gram "
    "volumes take dask arrays"
)


def namespace(*arrays: Any, xp: Any = None, names: Sequence[str] | None = None) -> Any:
    """Common namespace of ``arrays`` (TypeError on a mix or a wrong ``xp``), one device.

    ``names`` are the parameter names of ``arrays`` for the messages (default: ``a``
    for a single array, else the position). ``None`` entries are skipped. The result
    is the array-api-compat namespace of the arrays, also when ``xp`` names the same
    library in another form (e.g. ``numpy`` for ``array_api_compat.numpy``).
    """  # numpydoc ignore=PR01,RT01
    if names is None:
        names = ["a"] if len(arrays) == 1 else [f"array argument {i + 1}" for i in range(len(arrays))]
    named = [(n, a) for n, a in zip(names, arrays, strict=True) if a is not None]
    spaces = [(n, check_array(a, n)) for n, a in named]
    first_name, own = spaces[0]
    for name, other in spaces[1:]:
        if other is not own:
            msg = (
                f"`{first_name}` ({_space_name(own)}) and `{name}` ({_space_name(other)}) "
                "must come from one array namespace; convert one of them"
            )
            raise TypeError(msg)
    if xp is not None:
        _check_xp(xp, own, first_name)
    check_same_device(*(a for _, a in named), names=[n for n, _ in named])
    if _compat.is_torch_namespace(own):
        for name, a in named:
            _refuse_meta(a, name)
    return own


def _space_name(xp: Any) -> str:
    """Readable name of a namespace for messages."""  # numpydoc ignore=PR01,RT01
    backend = _compat.backend_name(xp)
    return getattr(xp, "__name__", repr(xp)) if backend == "other" else backend


def _check_xp(xp: Any, own: Any, name: str) -> None:
    """Raise TypeError unless ``xp`` is the namespace of the arrays (in any spelling)."""  # numpydoc ignore=PR01
    backend = _compat.backend_name(xp)
    if xp is own or (backend != "other" and backend == _compat.backend_name(own)):
        return
    label = getattr(xp, "__name__", None) or type(xp).__name__
    msg = (
        f"`xp` ({label}) does not match the namespace of `{name}` ({_space_name(own)}); "
        f"omit `xp` or pass arrays from that namespace"
    )
    raise TypeError(msg)


def check_array(x: Any, name: str) -> Any:
    """Array-api-compat namespace of ``x``; TypeError/ValueError if lowrank cannot use it.

    Refused with the conversion to use: Python scalars and sequences, ``numpy.matrix``
    (its ``*`` and 2-D-only indexing break array-API code) and masked arrays (the mask
    would be silently ignored), pydata ``sparse`` and dask arrays, scipy.sparse input
    (where it reaches a dense-only function), torch sparse and complex32 tensors and
    NumPy's extended precision and non-numeric dtypes (no LAPACK or kernel support).
    ``namespace`` also refuses torch 'meta' tensors, after the one-device check.
    """  # numpydoc ignore=PR01,RT01
    _refuse_wrappers(x, name)
    try:
        xp = _compat.array_namespace(x)
    except TypeError:
        msg = f"`{name}` must be {_DENSE}; got {type(x).__name__} (convert with np.asarray)"
        raise TypeError(msg) from None
    if _compat.is_pydata_sparse_namespace(xp) or _compat.is_dask_namespace(xp):
        kind = "pydata sparse" if _compat.is_pydata_sparse_namespace(xp) else "dask"
        fix = ".todense()" if kind == "pydata sparse" else ".compute()"
        routes = _SPARSE_ROUTES if kind == "pydata sparse" else _DASK_ROUTES
        msg = (
            f"`{name}` is a {kind} array ({type(x).__name__}), which this function does not "
            f"support; pass {_DENSE} (e.g. `{name}{fix}`); {routes}"
        )
        raise TypeError(msg)
    if _compat.is_torch_namespace(xp):
        _check_torch_tensor(x, name)
    elif _compat.is_numpy_namespace(xp) or _compat.is_cupy_namespace(xp):
        _check_numpy_dtype(x.dtype, name)
    return xp


def _refuse_wrappers(x: Any, name: str) -> None:
    """TypeError for ndarray subclasses and sparse types with their own semantics."""  # numpydoc ignore=PR01
    if isinstance(x, np.matrix):
        msg = (f"`{name}` is a numpy.matrix, which lowrank does not accept (its `*` and "
               f"indexing are not array-API); pass np.asarray({name})")
        raise TypeError(msg)
    if isinstance(x, np.ma.MaskedArray):
        msg = (f"`{name}` is a masked array, whose mask lowrank would ignore; pass "
               f"{name}.filled(value) or np.asarray({name}) to say what masked entries are")
        raise TypeError(msg)
    if type(x).__module__.startswith(("scipy.sparse", "cupyx.scipy.sparse")):
        msg = (f"`{name}` is a sparse matrix ({type(x).__name__}), which this function does "
               f"not accept; pass {name}.toarray(), or note that {_SPARSE_ROUTES}")
        raise TypeError(msg)


def _check_torch_tensor(x: Any, name: str) -> None:
    """Refuse torch layouts, devices and dtypes without dense linear algebra."""  # numpydoc ignore=PR01
    import torch  # only reached for torch tensors, so torch is already imported

    if x.layout != torch.strided:
        msg = (f"`{name}` is a torch tensor with layout {x.layout}, which lowrank does not "
               f"support; pass a dense tensor ({name}.to_dense())")
        raise TypeError(msg)
    if x.dtype == torch.complex32:
        msg = (f"`{name}` has dtype torch.complex32, which has no linear algebra support; "
               f"cast it with {name}.to(torch.complex64)")
        raise TypeError(msg)


def _refuse_meta(x: Any, name: str) -> None:
    """ValueError for a tensor on torch's 'meta' device (shapes only, no values)."""  # numpydoc ignore=PR01
    if x.device.type == "meta":
        msg = (f"`{name}` is a torch tensor on the 'meta' device, which holds no values; "
               "materialise it on a real device first")
        raise ValueError(msg)


def _check_numpy_dtype(dtype: Any, name: str) -> None:
    """Refuse extended precision and non-numeric NumPy/CuPy dtypes."""  # numpydoc ignore=PR01
    dtype = np.dtype(dtype)
    if dtype.kind not in "biufc":
        msg = f"`{name}` must have a numeric dtype; got {dtype}"
        raise TypeError(msg)
    if (dtype.kind == "f" and dtype.itemsize > 8) or (dtype.kind == "c" and dtype.itemsize > 16):
        wide = "float64" if dtype.kind == "f" else "complex128"
        msg = (f"`{name}` has dtype {dtype} (extended precision), which has no LAPACK or "
               f"kernel support; cast it with {name}.astype(np.{wide})")
        raise TypeError(msg)


def check_same_device(*arrays: Any, names: Sequence[str] | None = None) -> None:
    """Raise ValueError unless every array lives on the same device."""  # numpydoc ignore=PR01
    # JAX tracers have no device (None); they follow the concrete arrays they meet
    devices = [_compat.device(a) for a in arrays if not is_traced(a)]
    if any(d != devices[0] for d in devices[1:]):
        names = names or [f"array argument {i + 1}" for i in range(len(arrays))]
        where = ", ".join(f"`{n}` on {_compat.device(a)}"
                          for n, a in zip(names, arrays, strict=True))
        msg = f"all array arguments must be on one device; got {where}"
        raise ValueError(msg)


def check_matrix(a: Any, name: str, *, min_ndim: int = 2, max_ndim: int | None = None) -> None:
    """Raise ValueError unless ``a`` has ``min_ndim <= a.ndim <= max_ndim``."""  # numpydoc ignore=PR01
    ndim = getattr(a, "ndim", None)
    if ndim is None:
        msg = f"`{name}` must be an array; got {type(a).__name__}"
        raise TypeError(msg)
    if ndim < min_ndim or (max_ndim is not None and ndim > max_ndim):
        want = f"{min_ndim}" if max_ndim == min_ndim else f">= {min_ndim}"
        if max_ndim is not None and max_ndim != min_ndim:
            want = f"between {min_ndim} and {max_ndim}"
        msg = f"`{name}` must have ndim {want}; got shape {tuple(a.shape)}"
        raise ValueError(msg)


def to_floating(a: Any, name: str, xp: Any) -> tuple[Any, Any]:
    """Return ``(work, out_dtype)``: bool/int -> float64; float16/bfloat16 computed in float32.

    ``work`` is ``a`` itself when no cast is needed (never mutated by callers), and
    ``out_dtype`` is the dtype results should be cast back to.
    """  # numpydoc ignore=PR01,RT01
    dtype = a.dtype
    if xp.isdtype(dtype, ("bool", "integral")):
        return xp.astype(a, xp.float64), xp.float64
    if not xp.isdtype(dtype, ("real floating", "complex floating")):
        msg = f"`{name}` must have a numeric dtype; got {dtype}"
        raise TypeError(msg)
    low = [getattr(xp, n, None) for n in ("float16", "bfloat16")]
    if any(dtype == d for d in low if d is not None):
        return xp.astype(a, xp.float32), dtype
    return a, dtype


def check_finite(a: Any, name: str, xp: Any) -> None:
    """Raise ValueError if ``a`` contains NaN or Inf (TypeError when ``a`` is traced)."""  # numpydoc ignore=PR01
    if is_traced(a):
        msg = (f"the NaN/Inf check of `{name}` depends on its values, which JAX tracing "
               "(jax.jit) does not give; pass check_finite=False under jit")
        raise TypeError(msg)
    if (a.ndim == 0 or _compat.size(a) != 0) and not bool(xp.all(xp.isfinite(a))):
        msg = (
            f"`{name}` contains NaN or Inf; clean the input or pass "
            "check_finite=False to skip this check"
        )
        raise ValueError(msg)


def check_int(
    value: Any, name: str, *, low: int | None = None, high: int | None = None, high_name: str = ""
) -> int:
    """Return ``value`` as int after checking ``low <= value <= high``."""  # numpydoc ignore=PR01,RT01
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        msg = f"`{name}` must be an integer; got {value!r}"
        raise TypeError(msg)
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "" if low is None else f"{low} <= "
        hi = "" if high is None else f" <= {high_name + ' = ' if high_name else ''}{high}"
        msg = f"`{name}` must satisfy {lo}{name}{hi}; got {value}"
        raise ValueError(msg)
    return value


def check_positive(value: Any, name: str, *, strict: bool = True) -> float:
    """Return ``value`` as float after checking it is finite and > 0 (>= 0 if not strict)."""  # numpydoc ignore=PR01,RT01
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        msg = f"`{name}` must be a real number; got {value!r}"
        raise TypeError(msg)
    value = float(value)
    ok = value > 0 if strict else value >= 0
    if not ok or value != value or value == float("inf"):
        rule = "> 0" if strict else ">= 0"
        msg = f"`{name}` must be finite and {rule}; got {value}"
        raise ValueError(msg)
    return value


def check_bool(value: Any, name: str) -> bool:
    """Return ``value`` after checking it is a bool (numpy bools included)."""  # numpydoc ignore=PR01,RT01
    if not isinstance(value, (bool, np.bool_)):
        msg = f"`{name}` must be a bool; got {value!r}"
        raise TypeError(msg)
    return bool(value)


def check_option(value: Any, name: str, allowed: Iterable[str]) -> str:
    """Return ``value`` after checking it is one of ``allowed``."""  # numpydoc ignore=PR01,RT01
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        msg = f"`{name}` must be one of {allowed}; got {value!r}"
        raise ValueError(msg)
    return value
