"""Input checks for the public layer. Messages name the parameter, the rule and the value."""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

from . import _compat

__all__ = [
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


def namespace(*arrays: Any, xp: Any = None) -> Any:
    """Common namespace of ``arrays`` (TypeError on a mix) on one device (ValueError)."""  # numpydoc ignore=PR01,RT01
    arrays = tuple(a for a in arrays if a is not None)
    if xp is None:
        try:
            xp = _compat.array_namespace(*arrays)
        except TypeError as exc:
            msg = f"all array arguments must come from one array namespace: {exc}"
            raise TypeError(msg) from None
    check_same_device(*arrays)
    return xp


def check_same_device(*arrays: Any) -> None:
    """Raise ValueError unless every array lives on the same device."""  # numpydoc ignore=PR01
    devices = [_compat.device(a) for a in arrays]
    if any(d != devices[0] for d in devices[1:]):
        msg = f"all array arguments must be on one device; got {devices}"
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
    """Raise ValueError if ``a`` contains NaN or Inf."""  # numpydoc ignore=PR01
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
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
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
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
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
