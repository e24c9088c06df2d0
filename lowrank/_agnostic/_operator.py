"""A matrix seen only through products: dense arrays (batched), SciPy sparse, LinearOperator.

The randomized algorithms touch ``a`` only through ``a @ X`` and ``aᴴ @ Y``; this module
wraps every accepted input kind behind that interface, and counts the full reads of ``a``
("passes") so that results can report them honestly.
"""

from __future__ import annotations

import contextlib
import math
import sys
from typing import Any

__all__ = ["Operator", "as_operator", "is_scipy_operator"]


def is_scipy_operator(a: Any) -> bool:
    """Whether ``a`` is a SciPy sparse matrix/array or a ``LinearOperator``."""  # numpydoc ignore=PR01,RT01
    # Recognised by type, not by module name, so that users' own LinearOperator subclasses
    # are accepted; such objects exist only once SciPy is imported, so nothing is imported.
    sparse, splinalg = sys.modules.get("scipy.sparse"), sys.modules.get("scipy.sparse.linalg")
    if sparse is not None and sparse.issparse(a):
        return True
    return splinalg is not None and isinstance(a, splinalg.LinearOperator)


class Operator:
    """``a`` (or its conjugate transpose) seen through ``matmat``/``rmatmat``, counting passes."""  # numpydoc ignore=PR01

    def __init__(self, a: Any, xp: Any, *, dtype: Any, dense: bool, transposed: bool = False,
                 counter: list[int] | None = None, scale: tuple[float, float] = (1.0, 1.0)):
        self.a, self.xp, self.dtype, self.dense = a, xp, dtype, dense
        # products are (a @ (pre·x))·post: c = pre·post split in two powers of two so that
        # neither the scaled x nor the product leave the range, whatever the size of a
        self._pre, self._post = scale
        # [passes so far, 1 while the next product must be checked for NaN/Inf]
        self._counter = [0, 0] if counter is None else counter
        self.transposed = transposed
        self.complex = xp.isdtype(dtype, "complex floating")
        m, n = a.shape[-2], a.shape[-1]
        self.batch = tuple(a.shape[:-2])
        # torch's CPU GEMM (MKL): (xᵀ aᵀ)ᵀ beats a @ x in double. In single precision it
        # wins 1.2-4x unless x has a multiple of 16 columns, where plain a @ x is 0-10%
        # faster (4096², 8192 × 2048, 100000 × 512 at 4-64 columns, AMD EPYC)
        single = dtype in (xp.float32, xp.complex64)
        torch_dense = dense and _is_torch(xp)
        self.row_panels = torch_dense and not single
        self.row_panels_unless_16 = torch_dense and single and not self.complex
        self.m, self.n = (n, m) if transposed else (m, n)

    @property
    def passes(self) -> int:
        """Full reads of ``a`` so far (shared with the transposed view)."""  # numpydoc ignore=RT01
        return self._counter[0]

    def check_first_product(self) -> None:
        """Raise ValueError if the next product is not finite (see ``_checked``)."""
        self._counter[1] = 1

    def pending_check(self) -> bool:
        """Whether ``a`` still has to be checked for NaN/Inf (``check_first_product``)."""  # numpydoc ignore=RT01
        return bool(self._counter[1])

    def _checked(self, y: Any) -> Any:
        """NaN/Inf check of ``a`` for free: a product of ``a`` with a Gaussian matrix is
        non-finite (with probability one) iff ``a`` has a NaN or Inf (or overflows)."""  # numpydoc ignore=PR01,RT01
        if self._counter[1]:
            self.check_norm(0.0 if bool(self.xp.all(self.xp.isfinite(y))) else math.inf)
        return y

    def check_norm(self, value: float) -> None:
        """Pending NaN/Inf check from a norm (or sum) of ``a`` or of its first product."""  # numpydoc ignore=PR01
        if self._counter[1]:
            self._counter[1] = 0
            if not math.isfinite(value):
                msg = ("`a` contains NaN or Inf; clean the input or pass check_finite=False "
                       "to skip this check")
                raise ValueError(msg)

    def count_pass(self) -> None:
        """Record one full read of ``a`` made outside ``matmat``/``rmatmat``."""
        self._counter[0] += 1

    @property
    def T(self) -> Operator:
        """The conjugate transpose (same data, same pass counter)."""  # numpydoc ignore=RT01
        return Operator(self.a, self.xp, dtype=self.dtype, dense=self.dense,
                        transposed=not self.transposed, counter=self._counter,
                        scale=(self._pre, self._post))

    @property
    def scale_factor(self) -> float:
        """The power of two ``c`` of ``op = c · a`` (1.0 unless made by ``scaled``)."""  # numpydoc ignore=RT01
        return self._pre * self._post

    def scaled(self, exponent: int) -> Operator:
        """``2^exponent · op`` (exact; same data and pass counter)."""  # numpydoc ignore=PR01,RT01
        half = exponent // 2
        return Operator(self.a, self.xp, dtype=self.dtype, dense=self.dense,
                        transposed=self.transposed, counter=self._counter,
                        scale=(2.0**half, 2.0 ** (exponent - half)))

    def _product(self, x: Any, adjoint: bool) -> Any:
        if self._pre != 1.0:
            x = x * self._pre
        y = self._adjoint(x) if adjoint else self._forward(x)
        return y if self._post == 1.0 else y * self._post

    def _forward(self, x: Any) -> Any:
        if not self.dense:
            return self.xp.asarray(self.a @ x, dtype=self.dtype)
        if self.row_panels or (self.row_panels_unless_16 and x.shape[-1] % 16):
            mT = self.xp.matrix_transpose
            return mT(mT(x) @ mT(self.a))
        return self.a @ x

    def _adjoint(self, y: Any) -> Any:
        """``aᴴ y`` computed as ``(yᴴ a)ᴴ`` so dense ``a`` is never transposed or conjugated."""  # numpydoc ignore=PR01,RT01
        xp = self.xp
        if not self.dense:
            out = self.a.rmatmat(y) if hasattr(self.a, "rmatmat") else self.a.conj().T @ y
            return xp.asarray(out, dtype=self.dtype)
        # (yᵀ a)ᵀ: 1.3-2x faster than aᵀ @ y on OpenBLAS and MKL, torch float32 included:
        # 1.1-1.65x over 5 shapes x 3 widths on an AMD EPYC (MKL 2024.2), 8-24% on whole
        # randomized SVDs; an earlier measurement (CPU unrecorded) had found the reverse
        if not self.complex:
            return xp.matrix_transpose(xp.matrix_transpose(y) @ self.a)
        return xp.conj(xp.matrix_transpose(xp.conj(xp.matrix_transpose(y)) @ self.a))

    def gram_matmat(self, x: Any, factor: Any = None) -> Any:
        """``(f·op)ᴴ ((f·op) @ x)``; dense ``a`` is read once, row chunk by row chunk.

        Each chunk ``A_c`` of rows of ``op`` gives ``A_cᴴ (A_c x)`` while it is still in
        cache, so one read of ``a`` applies ``AᴴA`` and no ``m``-row temporary is made.
        ``factor`` (None, or a power of two per matrix, shape ``(..., 1, 1)``) scales the
        operator between the two products, so that neither over- nor underflows. Counts
        one pass for dense ``a`` (two, through ``matmat`` and ``rmatmat``, otherwise or
        while the NaN/Inf check is pending).
        """  # numpydoc ignore=PR01,RT01
        if not self.dense or self._counter[1]:
            y = self.matmat(x)
            y = y if factor is None else y * factor
            z = self.rmatmat(y)
            return z if factor is None else z * factor
        self._counter[0] += 1
        # (A_c (pre·x))·(pre·post·f) is pre·(c·f·A_c x): near 1 in magnitude once the
        # caller has scaled the operator, so the second product neither over- nor underflows
        mid = self._pre * self._post
        out = None
        for ac, y in self._row_chunks(x, mid if factor is None else factor * mid):
            z = ac @ y if self.transposed else _adjoint_product(ac, y, self.xp, self.complex)
            out = z if out is None else out + z
        if self._post != 1.0:
            out = out * self._post
        return out if factor is None else out * factor

    def row_chunk_matmat(self, x: Any, factor: Any = None) -> Any:
        """``(f·op) @ x`` row chunk by row chunk (dense ``a``; one pass): a generator.

        Lets a caller reduce ``op @ x`` (a TSQR, say) without an ``m``-row temporary.
        """  # numpydoc ignore=PR01,RT01
        self._counter[0] += 1
        post = self._post if factor is None else factor * self._post
        for _, y in self._row_chunks(x, post):
            yield y

    def _row_chunks(self, x: Any, mid: Any) -> Any:
        """``(A_c, (A_c (pre·x))·mid)`` over chunks ``A_c`` of rows of ``op`` (dense ``a``)."""  # numpydoc ignore=PR01,RT01
        xp, a = self.xp, self.a
        rows = max(1, _GRAM_CHUNK // max(1, self.n))
        xs = x if self._pre == 1.0 else x * self._pre
        scaled = not (isinstance(mid, float) and mid == 1.0)
        for i in range(0, self.m, rows):
            j = min(i + rows, self.m)
            if self.transposed:  # rows i:j of op = aᴴ are the columns i:j of a
                ac = a[..., :, i:j]
                y = _adjoint_product(ac, xs, xp, self.complex)
            else:
                ac = a[..., i:j, :]
                y = ac @ xs
            yield ac, (y * mid if scaled else y)

    def matmat(self, x: Any) -> Any:
        """``op @ x`` (one pass over ``a``)."""  # numpydoc ignore=PR01,RT01
        self._counter[0] += 1
        with _quiet(self._counter[1]):
            return self._checked(self._product(x, adjoint=self.transposed))

    def rmatmat(self, y: Any) -> Any:
        """``opᴴ @ y`` (one pass over ``a``)."""  # numpydoc ignore=PR01,RT01
        self._counter[0] += 1
        with _quiet(self._counter[1]):
            return self._checked(self._product(y, adjoint=not self.transposed))


# Elements of ``a`` per chunk of ``gram_matmat`` (4 MiB of float64): small enough to stay
# in cache between the chunk's two products, large enough for GEMM speed.
_GRAM_CHUNK = 1 << 19


def _adjoint_product(ac: Any, y: Any, xp: Any, is_complex: bool) -> Any:
    """``acᴴ y`` as ``(yᴴ ac)ᴴ``: dense ``ac`` is never transposed or conjugated."""  # numpydoc ignore=PR01,RT01
    mT = xp.matrix_transpose
    if not is_complex:
        return mT(mT(y) @ ac)
    return xp.conj(mT(xp.conj(mT(y)) @ ac))


def _quiet(active: int) -> Any:
    """Silence NumPy's invalid-value warnings while a product is being checked for NaN/Inf."""  # numpydoc ignore=PR01,RT01
    import numpy as np

    return np.errstate(invalid="ignore", over="ignore") if active else contextlib.nullcontext()


def _is_torch(xp: Any) -> bool:
    from .._lib._compat import is_torch_namespace

    return bool(is_torch_namespace(xp))


def as_operator(a: Any, xp: Any, dtype: Any) -> Operator:
    """Wrap a dense array (already of floating ``dtype``) or a SciPy sparse/LinearOperator."""  # numpydoc ignore=PR01,RT01
    if is_scipy_operator(a):
        from scipy.sparse import issparse
        from scipy.sparse.linalg import aslinearoperator

        a = _SparseOperator(canonical_sparse(a, dtype)) if issparse(a) else aslinearoperator(a)
        return Operator(a, xp, dtype=dtype, dense=False)
    return Operator(a, xp, dtype=dtype, dense=True)


def canonical_sparse(a: Any, dtype: Any) -> Any:
    """``a`` as CSR/CSC in ``dtype`` without duplicate entries (copied if it needs changes).

    Only then is ``.data`` the list of the matrix's nonzeros: COO, DOK and LIL store
    values differently (LIL as Python lists), DIA pads, and duplicate CSR entries add up.
    """  # numpydoc ignore=PR01,RT01
    a = a if a.format in ("csr", "csc") else a.tocsr()
    if a.dtype != dtype:
        a = a.astype(dtype)
    if not a.has_canonical_format:
        a = a.copy()  # sum_duplicates works in place: keep the caller's matrix intact
        a.sum_duplicates()
    return a


class _SparseOperator:
    """Sparse matrix with ``@`` and ``rmatmat`` (adjoint precomputed once, no densifying)."""  # numpydoc ignore=PR01

    def __init__(self, a: Any) -> None:
        self.shape, self._a = a.shape, a
        self.data = a.data  # the nonzeros, each once (canonical format)
        self._ah = a.conj().T if a.dtype.kind == "c" else a.T

    def __matmul__(self, x: Any) -> Any:
        return self._a @ x

    def rmatmat(self, y: Any) -> Any:
        """``aᴴ @ y``."""  # numpydoc ignore=PR01,RT01
        return self._ah @ y
