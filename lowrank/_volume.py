"""Gram volumes of non-square matrices (docs/theory/volume.md) and volume-based column selection."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from . import _config
from ._agnostic import _volume as _ag
from ._agnostic._linalg import conj_transpose as _conj_transpose
from ._dask import is_dask_array
from ._lib import _compat
from ._lib._dispatch import get_kernel, kernel_backend
from ._lib._typing import Array, ArrayNamespace
from ._lib._validation import check_bool, check_matrix, namespace, to_floating
from ._lib._validation import (
    check_finite as _check_finite,
)
from ._selection import select_columns

__all__ = [
    "gram_volume",
    "log_gram_volume",
    "log_nonsquare_det",
    "nonsquare_det",
    "select_columns",
]

# Largest matrices the compiled kernels take; bigger ones go to LAPACK/cuSOLVER QR,
# whose blocked (BLAS-3) code wins there and whose per-call overhead no longer matters.
_KERNEL_MAX_K = {"numba": 32, "cuda": 16}
_KERNEL_MAX_NK = {"numba": 4096, "cuda": 256}  # GPU: one thread, local-memory copy
# The guarded Gram route (NumPy): BLAS aᵀa plus a checked Cholesky, QR for the matrices
# it rejects. Taken where ``python -m bench.bench_volume`` measured it faster than the
# Householder kernel (which wins up to n·k = 256, e.g. 16×4 and 32×8) and than LAPACK QR
# (everywhere up to 512×64); below n = 3k random matrices mostly fail its test anyway.
_GRAM_K = (2, 64)
_GRAM_MIN_NK = 257
_GRAM_MIN_RATIO = 3
# dtypes of the fast path for plain ndarrays (no cast, no namespace needed); native byte
# order only (a dtype compares unequal to its byte-swapped twin)
_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_F32_MAX = float(np.finfo(np.float32).max)


def _result_dtype(work: Any, out_dtype: Any, xp: Any) -> Any:
    """Real dtype of a volume: the input's, or its real part's for complex input."""  # numpydoc ignore=PR01,RT01
    if xp.isdtype(out_dtype, "real floating"):
        return out_dtype
    return _ag.real_dtype(work.dtype, xp)


def _use_kernel(a: Any, xp: Any, family: str | None) -> Any:
    """The compiled QR kernel for ``a``, or None (fallback: array-API QR)."""  # numpydoc ignore=PR01,RT01
    n, k = a.shape[-2], a.shape[-1]
    if family is None or a.dtype not in (xp.float32, xp.float64):
        return None
    if not (1 <= k <= _KERNEL_MAX_K[family] and n >= k and n * k <= _KERNEL_MAX_NK[family]):
        return None
    return get_kernel("log_gram_volume", xp)


def _use_gram(a: Any, family: str | None) -> Any:
    """The guarded Gram-route kernel for ``a`` (NumPy float32/float64), or None."""  # numpydoc ignore=PR01,RT01
    n, k = a.shape[-2], a.shape[-1]
    if family != "numba" or a.dtype not in (np.float32, np.float64):
        return None
    if not (_GRAM_K[0] <= k <= _GRAM_K[1] and n >= _GRAM_MIN_RATIO * k
            and n * k >= _GRAM_MIN_NK):
        return None
    return _numba_kernel("gram_log_volume")


@functools.cache
def _numba_kernel(op: str) -> Any:
    """get_kernel(op) for NumPy once kernels are on (the lookup costs as much as a 64×8 volume)."""  # numpydoc ignore=PR01,RT01
    return get_kernel(op, np)


def _run_gram(a: Any, log: bool, check_finite: bool) -> Any:
    """Gram route on a NumPy (..., n, k) array; QR (kernel or LAPACK) for what it rejects.

    None when the kernels cannot be loaded (no numba).
    """  # numpydoc ignore=PR01,RT01
    plan = _cached_plan(a.shape, a.dtype, log)
    return None if plan is None else plan(a, check_finite)


def _gram_plan(shape: tuple[int, ...], dtype: Any, log: bool) -> Any:
    """``plan(a, check_finite)`` of the Gram route for arrays of this shape (ndim >= 3)."""  # numpydoc ignore=PR01,RT01
    make = _numba_kernel("gram_log_volume_plan")
    if make is None:
        return None
    lead, (n, k) = shape[:-2], shape[-2:]
    batch, plain = math.prod(lead), len(shape) == 3
    run = make((batch, n, k), dtype, log)

    def gram_batch(a: Any, check_finite: bool) -> Any:
        flat = a if plain else a.reshape(batch, n, k)  # NumPy only: plain methods
        out = np.empty(batch, dtype=dtype)
        ok = np.empty(batch, dtype=bool)
        if run(flat, out, ok):  # the number of matrices it rejected
            out[~ok] = _redo_by_qr(flat[~ok], log, check_finite, a)
        return out if plain else out.reshape(lead)

    return gram_batch


def _redo_by_qr(sub: Any, log: bool, check_finite: bool, a: Any) -> Any:
    """QR results (kernel or LAPACK) for the (m, n, k) matrices the Gram route rejected."""  # numpydoc ignore=PR01,RT01
    kernel = _use_kernel(sub, np, "numba")
    if kernel is not None:
        part = np.empty(sub.shape[0], dtype=sub.dtype)
        kernel(sub, part, log)
    else:
        part = _ag.log_gram_volume(sub, np) if log else _ag.gram_volume(sub, np)
    # an accepted Gram result is never NaN; rejected NaN/Inf matrices come back NaN
    # from QR (see _run_kernel)
    if check_finite and np.isnan(part).any():
        _check_finite(a, "a", np)
    return part


# Routing plans of the NumPy fast path, keyed by (shape, dtype, log): taking its
# decisions per call would cost as much as a few small volumes. Cleared when full.
_PLANS: dict[Any, Any] = {}
_PLANS_MAX = 1024
_MISSING = object()


def _numpy_volume(a: Any, log: bool, check_finite: bool) -> Any:
    """Kernel routes for a plain float32/float64 ndarray (ndim >= 2), or None (general path).

    Such an array needs none of the generic checks (namespace, device, dtype cast): on
    a single small matrix they cost several times the volume itself. The routing is
    that of the general path, decided once per shape (`_numpy_plan`). Kept short: after
    a large BLAS call every further Python step runs on cold caches (measured 4-7 µs
    for a few calls on one 512×64 matrix, against 1.5 µs on one 64×8).
    """  # numpydoc ignore=PR01,RT01
    if not _config.kernels_enabled():
        return None
    plan = _cached_plan(a.shape, a.dtype, log)
    return None if plan is None else plan(a, check_finite)


def _cached_plan(shape: tuple[int, ...], dtype: Any, log: bool) -> Any:
    """`_numpy_plan`, built once per (shape, dtype, log)."""  # numpydoc ignore=PR01,RT01
    key = (shape, dtype, log)
    plan = _PLANS.get(key, _MISSING)
    if plan is _MISSING:
        plan = _numpy_plan(shape, dtype, log)
        if len(_PLANS) >= _PLANS_MAX:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def _numpy_plan(shape: tuple[int, ...], dtype: Any, log: bool) -> Any:
    """``plan(a, check_finite)`` for NumPy arrays of this shape and dtype, or None (general path)."""  # numpydoc ignore=PR01,RT01
    n, k = shape[-2], shape[-1]
    if _GRAM_K[0] <= k <= _GRAM_K[1] and n >= _GRAM_MIN_RATIO * k and n * k >= _GRAM_MIN_NK:
        if len(shape) > 2:
            return _gram_plan(shape, dtype, log)
        one = _numba_kernel("gram_log_volume_one")
        if one is None:
            return None
        narrow = dtype == np.float32

        def gram_one(a: Any, check_finite: bool) -> Any:
            value = one(a, log)
            if value != value:  # rejected (NaN is never an accepted result)
                return _redo_by_qr(a[None], log, check_finite, a).reshape(())
            if narrow and abs(value) > _F32_MAX:  # saturate as the array kernels do
                value = math.copysign(math.inf, value)  # (a cast would warn)
            return np.array(value, dtype=dtype)

        return gram_one
    if 1 <= k <= _KERNEL_MAX_K["numba"] and n >= k and n * k <= _KERNEL_MAX_NK["numba"]:
        kernel = _numba_kernel("log_gram_volume")
        if kernel is None:
            return None
        batch, lead = math.prod(shape[:-2]), shape[:-2]

        def qr_batch(a: Any, check_finite: bool) -> Any:
            out = np.empty(batch, dtype=dtype)
            kernel(a.reshape(batch, n, k), out, log)
            if check_finite and np.isnan(out).any():  # NaN/Inf entries give NaN (_run_kernel)
                _check_finite(a, "a", np)
            return out.reshape(lead)

        return qr_batch
    return None


def _run_kernel(kernel: Any, a: Any, log: bool, check_finite: bool, xp: Any) -> Any:
    """Launch the batched kernel on a (batch, n, k) view (copies only if needed)."""  # numpydoc ignore=PR01,RT01
    batch, (n, k) = a.shape[:-2], a.shape[-2:]
    out = xp.empty((math.prod(batch),), dtype=a.dtype, device=_compat.device(a))
    kernel(xp.reshape(a, (-1, n, k)), out, log)
    # The kernels turn any NaN/Inf entry into a NaN result: checking the (much smaller)
    # output replaces a full extra pass over the input.
    if check_finite and bool(xp.any(xp.isnan(out))):
        _check_finite(a, "a", xp)
    return xp.reshape(out, batch)


def _volume(a: Any, xp: Any, *, log: bool, check_finite: bool) -> Any:
    """Validate ``a``, then run the kernel or the array-API QR path."""  # numpydoc ignore=PR01,RT01
    if (type(a) is np.ndarray and xp is None and type(check_finite) is bool
            and a.ndim >= 2 and a.dtype in _FAST_DTYPES):
        result = _numpy_volume(a, log, check_finite)
        if result is not None:
            return result
    if is_dask_array(a):
        return _dask_volume(a, xp, log=log, check_finite=check_finite, longer=False)
    xp = namespace(a, xp=xp)
    check_matrix(a, "a")
    check_finite = check_bool(check_finite, "check_finite")
    work, out_dtype = to_floating(a, "a", xp)
    family = kernel_backend(xp)
    result = None if _use_gram(work, family) is None else _run_gram(work, log, check_finite)
    kernel = None if result is not None else _use_kernel(work, xp, family)
    if kernel is not None:
        result = _run_kernel(kernel, work, log, check_finite, xp)
    elif result is None:
        if check_finite:
            _check_finite(work, "a", xp)
        result = _ag.log_gram_volume(work, xp) if log else _ag.gram_volume(work, xp)
    dtype = _result_dtype(work, out_dtype, xp)
    return result if result.dtype == dtype else _narrow(result, dtype, xp)


def _dask_volume(a: Any, xp: Any, *, log: bool, check_finite: bool, longer: bool) -> Any:
    """Lazy volumes of a dask array, chunk by chunk (``lowrank._dask._volume``)."""  # numpydoc ignore=PR01,RT01
    from ._dask._volume import volume

    check_finite = check_bool(check_finite, "check_finite")
    return volume(a, lambda x: _volume(x, None, log=log, check_finite=check_finite),
                  xp=xp, longer=longer)


def _narrow(result: Any, dtype: Any, xp: Any) -> Any:
    """Cast to a narrower output dtype (float16 input): beyond its range the volume is inf.

    Saturating before the cast keeps NumPy's "overflow encountered in cast" warning out:
    a volume larger than the dtype can hold *is* inf in that dtype.
    """  # numpydoc ignore=PR01,RT01
    big = float(xp.finfo(dtype).max)
    result = xp.where(xp.abs(result) > big, xp.copysign(xp.full_like(result, math.inf), result),
                      result)
    return xp.astype(result, dtype)


def gram_volume(
    a: Array, /, *, check_finite: bool = True, xp: ArrayNamespace | None = None
) -> Array:
    r"""Compute the volume spanned by the columns of ``a``, ``sqrt(det(aᴴ a))``, batched.

    The k-dimensional volume of the parallelotope spanned by the k columns of an n×k
    matrix: the product of its singular values, and ``|det a|`` when n = k. It
    is 0 when n < k (returned without computing anything) or when rank(a) < k, and 1
    when k = 0, for every n. It is computed as ``prod |diag(R)|`` of a QR
    factorisation, never through ``det(aᴴa)``.

    Parameters
    ----------
    a : array of shape (..., n, k)
        Real or complex matrices (bool/int are promoted to float64).
    check_finite : bool, default True
        Raise on NaN or Inf entries. With False they propagate as NaN results.
    xp : array_namespace, optional
        The standard-compatible namespace for `a`. Default: infer.

    Returns
    -------
    array of shape (...)
        The volumes, with the real dtype of `a` (float32 for float32/complex64),
        on `a`'s device.

    Raises
    ------
    TypeError
        If `a` is not an array or has a non-numeric dtype.
    ValueError
        If `a` has fewer than 2 dimensions or contains NaN/Inf (``check_finite``).

    See Also
    --------
    log_gram_volume : The natural logarithm, finite where this under- or overflows.
    nonsquare_det : Su's longer-side convention (product of min(n, k) singular values).

    Notes
    -----
    With :math:`a = QR` (Q with orthonormal columns), :math:`\mathrm{vol}(a) =
    \sqrt{\det(a^H a)} = \prod_i |R_{ii}|` (Cauchy–Binet / QR). Householder QR is backward
    stable, so the relative error is :math:`O(n\,\varepsilon\,\kappa(a))`; the Gram
    route :math:`\det(a^H a)` squares the condition number. Real NumPy inputs with
    2 <= k <= 64, n >= 3k and n·k > 256 first take a guarded Gram route: ``aᵀa`` by BLAS
    in the input's precision (small matrices: accumulated in float64 in the kernel), a
    float64 Cholesky ``aᵀa = RᵀR``, and a per-matrix test
    that keeps the result only when its first-order error bound
    :math:`\tfrac12(\gamma_n + \gamma_{k+1}) s^2` is no larger than Householder QR's
    :math:`\gamma_{nk} s`, where :math:`s = \sum_j \sqrt{G_{jj} (G^{-1})_{jj}}`
    measures how far the columns are from orthogonal (:math:`s = k` for orthogonal
    columns; accepted iff :math:`s \le 2nk/(n+k+1)`); every other matrix (ill-conditioned,
    rank-deficient, non-finite, or with squares out of range) is redone by QR. That
    route runs at about the speed of ``slogdet(aᵀa)`` or faster, single matrices
    included (measured with ``python -m bench.bench_volume --grid``), whose accuracy it
    does not share. Other NumPy
    inputs with k <= 32 and n·k <= 4096 use a compiled batched kernel (the cross product
    for 3×2, Householder QR otherwise), computing in float64; real CuPy inputs with
    n·k <= 256 a numba-cuda kernel; all other inputs the array API's ``linalg.qr``,
    through which torch autograd works. The volume itself can underflow to 0 or
    overflow to inf (e.g. 200 columns of norm 1e-3); :func:`log_gram_volume` cannot.

    References
    ----------
    .. [1] J. Su, "再谈非方阵的行列式" (non-square determinants),
       https://kexue.fm/archives/6096

    Examples
    --------
    >>> import numpy as np
    >>> import lowrank
    >>> b = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> print(round(float(lowrank.gram_volume(b)) ** 2, 12))
    3.0
    >>> print(float(lowrank.gram_volume(b.T)))
    0.0
    >>> lowrank.gram_volume(np.ones((10, 5, 3))).shape
    (10,)
    """
    return _volume(a, xp, log=False, check_finite=check_finite)


def log_gram_volume(
    a: Array, /, *, check_finite: bool = True, xp: ArrayNamespace | None = None
) -> Array:
    r"""Compute the natural log of the column volume ``sqrt(det(aᴴ a))``, batched.

    ``sum(log |R_ii|)`` of a QR factorisation ``a = QR``: finite and accurate where the
    volume itself under- or overflows, and ``-inf`` when the volume is 0 (n < k or
    rank(a) < k). k = 0 gives 0 (volume 1).

    Parameters
    ----------
    a : array of shape (..., n, k)
        Real or complex matrices (bool/int are promoted to float64).
    check_finite : bool, default True
        Raise on NaN or Inf entries. With False they propagate as NaN results.
    xp : array_namespace, optional
        The standard-compatible namespace for `a`. Default: infer.

    Returns
    -------
    array of shape (...)
        The log-volumes, with the real dtype of `a`, on `a`'s device.

    Raises
    ------
    TypeError
        If `a` is not an array or has a non-numeric dtype.
    ValueError
        If `a` has fewer than 2 dimensions or contains NaN/Inf (``check_finite``).

    See Also
    --------
    gram_volume : The volume itself.
    log_nonsquare_det : The logarithm of Su's longer-side convention.

    Notes
    -----
    The gradient with respect to a real full-column-rank `a` is
    :math:`\mathrm{pinv}(a)^T = a (a^T a)^{-1}`; it flows through ``linalg.qr`` on
    torch. Accuracy and algorithms are those of :func:`gram_volume`.

    Examples
    --------
    >>> import numpy as np
    >>> import lowrank
    >>> a = np.full((200, 200), 0.0)
    >>> a[np.arange(200), np.arange(200)] = 1e-3    # 200 columns of norm 1e-3
    >>> print(float(lowrank.gram_volume(a)))          # 1e-600 underflows
    0.0
    >>> print(round(float(lowrank.log_gram_volume(a)), 4))
    -1381.5511
    """
    return _volume(a, xp, log=True, check_finite=check_finite)


def _longer_side(a: Any, xp: Any, *, log: bool, check_finite: bool) -> Any:
    """Volume of the columns of a tall ``a``, of the rows of a wide one."""  # numpydoc ignore=PR01,RT01
    if is_dask_array(a):
        return _dask_volume(a, xp, log=log, check_finite=check_finite, longer=True)
    xp = namespace(a, xp=xp)
    check_matrix(a, "a")
    if a.shape[-2] < a.shape[-1]:  # aᴴ has the same nonzero singular values
        a = _conj_transpose(a, xp)
    return _volume(a, xp, log=log, check_finite=check_finite)


def nonsquare_det(
    a: Array, /, *, check_finite: bool = True, xp: ArrayNamespace | None = None
) -> Array:
    r"""Compute Su's non-square determinant, the product of the min(n, k) singular values.

    Post 6096's convention takes the volume along the longer side:
    ``sqrt(det(aᴴa))`` if n >= k and ``sqrt(det(a aᴴ))`` if n < k (Su's longer-side convention).
    So ``nonsquare_det(a) == nonsquare_det(aᴴ)``, it equals :func:`gram_volume` for
    n >= k, and min(n, k) = 0 gives the empty product 1.

    Parameters
    ----------
    a : array of shape (..., n, k)
        Real or complex matrices (bool/int are promoted to float64).
    check_finite : bool, default True
        Raise on NaN or Inf entries. With False they propagate as NaN results.
    xp : array_namespace, optional
        The standard-compatible namespace for `a`. Default: infer.

    Returns
    -------
    array of shape (...)
        The determinants (>= 0), with the real dtype of `a`, on `a`'s device.

    Raises
    ------
    TypeError
        If `a` is not an array or has a non-numeric dtype.
    ValueError
        If `a` has fewer than 2 dimensions or contains NaN/Inf (``check_finite``).

    See Also
    --------
    gram_volume : The column volume (0 for wide matrices).
    log_nonsquare_det : Its logarithm.

    Notes
    -----
    Computed as :func:`gram_volume` of `a` or of its conjugate transpose, so it shares
    that function's QR-based algorithm and accuracy (never ``det(a aᴴ)``).

    References
    ----------
    .. [1] J. Su, "再谈非方阵的行列式" (non-square determinants),
       https://kexue.fm/archives/6096

    Examples
    --------
    >>> import numpy as np
    >>> import lowrank
    >>> b = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> bool(np.isclose(lowrank.nonsquare_det(b.T), np.sqrt(3.0)))
    True
    >>> print(float(lowrank.nonsquare_det(np.ones((0, 2)))))
    1.0
    """
    return _longer_side(a, xp, log=False, check_finite=check_finite)


def log_nonsquare_det(
    a: Array, /, *, check_finite: bool = True, xp: ArrayNamespace | None = None
) -> Array:
    """Compute the natural log of :func:`nonsquare_det`, finite where it under/overflows.

    Parameters
    ----------
    a : array of shape (..., n, k)
        Real or complex matrices (bool/int are promoted to float64).
    check_finite : bool, default True
        Raise on NaN or Inf entries. With False they propagate as NaN results.
    xp : array_namespace, optional
        The standard-compatible namespace for `a`. Default: infer.

    Returns
    -------
    array of shape (...)
        ``sum(log σ_i)`` over the min(n, k) singular values; ``-inf`` where one is 0.

    Raises
    ------
    TypeError
        If `a` is not an array or has a non-numeric dtype.
    ValueError
        If `a` has fewer than 2 dimensions or contains NaN/Inf (``check_finite``).

    See Also
    --------
    nonsquare_det : The value itself.
    log_gram_volume : The column-volume convention.

    Examples
    --------
    >>> import numpy as np
    >>> import lowrank
    >>> b = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    >>> bool(np.isclose(lowrank.log_nonsquare_det(b), 0.5 * np.log(3.0)))
    True
    """
    return _longer_side(a, xp, log=True, check_finite=check_finite)

