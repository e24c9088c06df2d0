"""Power-of-two scaling for the CR routines: compute on data of norm ~1, unscale once.

Multiplying by 2**e is exact (barring under/overflow of the product itself), so a CR
computation done on ``a * 2**-ea`` and ``b * 2**-eb`` gives the same selection and weights
as on ``a`` and ``b``, and its squared errors scale back by ``2**(2 (ea + eb))``. Squares,
Gram entries and products of norms then stay far from the dtype's overflow and underflow
thresholds over its whole finite range.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["exponent_of", "needs_rescan", "normalized", "scale_pow2", "unscale_squared"]

_STEP = 1000  # one multiplication by 2**±1000 stays finite in float64


def exponent_of(value: float) -> int:
    """Exponent e with ``value * 2**-e`` in [0.5, 1); 0 for 0 and non-finite values."""  # numpydoc ignore=PR01,RT01
    if value == 0.0 or not math.isfinite(value):
        return 0
    return math.frexp(value)[1]


def scale_pow2(x: Any, e: int, xp: Any) -> Any:
    """``x * 2**-e`` (exact), in two steps so that each factor is finite in x's dtype."""  # numpydoc ignore=PR01,RT01
    if e == 0:
        return x
    half = -e // 2
    return (x * (2.0**half)) * (2.0 ** (-e - half))


def needs_rescan(norm_max: float, dtype: Any, xp: Any) -> bool:
    """Whether a norm pass in ``dtype`` may have over- or underflowed its squares.

    True when the largest norm is not finite, or so small that the squares of the
    entries of its column may be subnormal (below ``sqrt(tiny) / eps``), or 0 (all
    squares may have underflowed).
    """  # numpydoc ignore=PR01,RT01
    info = xp.finfo(dtype)
    low = math.sqrt(float(info.smallest_normal)) / float(info.eps)
    return not (math.isfinite(norm_max) and norm_max >= low)


def unscale_squared(err: Any, e: int, xp: Any) -> Any:
    """``err * 2**(2 e)`` for a float64 array: saturates to 0 / inf without warnings."""  # numpydoc ignore=PR01,RT01
    total = 2 * e
    with np.errstate(over="ignore", under="ignore"):
        while total != 0:
            step = max(-_STEP, min(_STEP, total))
            err = err * (2.0**step)
            total -= step
    return err


def normalized(x: Any, xp: Any) -> Any:
    """``x * 2**-e`` with its largest magnitude in [0.5, 1) (x itself if all 0 or empty)."""  # numpydoc ignore=PR01,RT01
    if not x.shape or 0 in x.shape:
        return x
    return scale_pow2(x, exponent_of(float(xp.max(xp.abs(x)))), xp)
