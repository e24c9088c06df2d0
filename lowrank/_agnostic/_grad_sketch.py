"""Two-sided block Krylov SVD of matrices known only through streamed products (array API).

The matrix ``G`` (m x n) of each layer is never formed. A *products oracle* takes, per
sweep, one input block ``X`` (n x b) and one ``Y`` (m x b) for every layer and returns
``G X`` and ``Gᵀ Y`` for all of them at once (for a gradient ``G = Σ_t δ_t x_tᵀ`` one
sweep over the data gives both). Both sides start in the first sweep, so every sweep
extends two Krylov chains, one from ``Ω`` and one from ``Ψ``:

    X_0 = Ω,  X_{j+1} = Gᵀ Y_j        Y_0 = Ψ,  Y_{j+1} = G X_j

and the right space ``span(X_0 .. X_{s-1})`` after ``s`` sweeps is the block Krylov
space of ``GᵀG`` started from ``[Ω, GᵀΨ]`` (block 2b, degree about s/2). Each ``X_j`` is
orthonormalised against the earlier ones (block Gram-Schmidt twice), so the stored
basis ``V`` and its image ``G V`` (both returned by the oracle) give the Rayleigh-Ritz
approximation ``G V Vᵀ`` from the SVD of ``G V`` alone. ``Y_j`` only feeds the next
product: its span is what matters, so it is normalised by a QR and not stored.

Error estimate: ``p`` Gaussian probes ``ω`` join ``X_0`` but not the basis, so the
result is independent of them and ``‖(G - Â) ω‖² / p`` is an unbiased estimate of
``‖G - Â‖_F²`` (relative standard deviation at most ``sqrt(2 / p)``, much less when the
residual's spectrum is flat). It is raised to the Krylov space's own tail
``‖G V‖_F² - ‖S‖²`` when that is larger (a certain lower bound of the error).
Performs no input validation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .._lib import _compat
from .._lib._random import Random
from ._linalg import svd_flip

__all__ = ["LayerSketch", "SketchResult", "run_sweeps", "sketch_svds"]

N_TEST = 8  # hidden probes: relative std of the squared-error estimate <= sqrt(2/8) = 0.5

Oracle = Callable[[Sequence[Any], Sequence[Any]], tuple[Sequence[Any], Sequence[Any]]]


class SketchResult(NamedTuple):
    """Top-k triplets and diagnostics of one sketched matrix."""  # numpydoc ignore=PR01

    U: Any
    S: Any
    Vh: Any
    error_estimate: float
    energy_captured: float
    gap: float
    n_sweeps: int


def _orthonormal_against(Z: Any, Q: Any, xp: Any) -> Any:
    """Orthonormal block spanning ``Z``'s directions outside ``Q`` (CGS twice, then QR)."""  # numpydoc ignore=PR01,RT01
    mT = xp.matrix_transpose
    if Q is None:
        return xp.linalg.qr(Z)[0]
    for _ in range(2):
        Z = xp.linalg.qr(Z - Q @ (mT(Q) @ Z))[0]
    return Z


class LayerSketch:
    """State of one matrix's two-sided Krylov sketch: the basis, its image, the probes.

    What a sweep holds is the peak memory of the whole estimation, so nothing is kept
    beyond two buffers of their final width, stored transposed (a block of columns of
    ``V`` is a contiguous range of rows): ``Vᵀ`` (K x n) and ``(G V)ᵀ`` (K x m), one of
    them led by ``p`` rows for the probes' images. Each sweep's input ``X`` is a view of
    the first; an oracle can accumulate ``G X`` straight into the second and ``Gᵀ Y``
    into the rows the next ``X`` will occupy (`outputs`); ``Y`` borrows image rows that a
    later sweep fills. The probes lie on the long side (``ω`` on the right, or ``ψ`` on
    the left of a tall matrix) so that their images ``G ω`` or ``Gᵀ ψ`` are short, and
    are drawn again from their own seed when the error is estimated.

    Parameters
    ----------
    shape : tuple of int
        ``(m, n)`` of the matrix.
    block : int
        Columns per product ``b`` (capped by the matrix's sides).
    n_sweeps : int
        Sweeps that will run; the last one asks for no ``Gᵀ Y`` (it could not be used).
    n_test : int
        Hidden Gaussian probes ``p`` for the error estimate (0: none).
    rand : lowrank._lib._random.Random
        The draws (``standard_normal(shape, dtype)``, ``uniform(shape, dtype)``).
    dtype : dtype
        Work dtype of the blocks.
    xp : namespace
        Array namespace.
    """

    def __init__(
        self, shape: tuple[int, int], block: int, n_sweeps: int, n_test: int,
        rand: Any, dtype: Any, xp: Any,
    ) -> None:
        self.m, self.n = shape
        self.xp, self.n_sweeps, self.sweep, self.p = xp, n_sweeps, 0, n_test
        self.left = self.m > self.n and n_test > 0  # probes ψ on the left, Gᵀ ψ kept
        # leading probe-image rows of the basis buffer (left) or of the image buffer
        self._pv, self._pg = (n_test, 0) if self.left else (0, n_test)
        self.block = min(block, self.n)
        omega = rand.standard_normal((self.n, self.block), dtype)
        # the probes' own seed (48 bits from two float32 draws): they are drawn again,
        # not stored, when the error is estimated
        u = [float(v) for v in rand.uniform((2,), xp.float32)] if n_test else [0.0, 0.0]
        self._probe_seed = int(u[0] * 2**24) * 2**24 + int(u[1] * 2**24)
        psi = rand.standard_normal((self.m, min(block, self.m)), dtype)
        full, self._device = min(self.n, self.block * n_sweeps), _compat.device(omega)
        # every row is written before it is read: rows of a large buffer that no sweep
        # has reached yet take no memory
        self._Vt = xp.empty((self._pv + full, self.n), dtype=dtype, device=self._device)
        self._GVt = xp.empty((self._pg + full, self.m), dtype=dtype, device=self._device)
        mT = xp.matrix_transpose
        self.width, self.w = 0, self.block  # basis columns so far; columns of this X
        X0 = xp.linalg.qr(omega)[0]
        Y0 = xp.linalg.qr(psi)[0] if n_sweeps > 1 else psi[:, :0]
        # the first sweep's inputs: X_0 and Y_0, the probes joining one of them
        self._first: Any = None
        if self.p and not self.left:
            self._first = xp.concat([self.probes, X0], axis=1)
        else:
            self._Vt[self._pv : self._pv + self.block, :] = mT(X0)
        if self.left:
            self.Y = xp.concat([self.probes, Y0], axis=1)
        else:
            self.Y = Y0
            if n_sweeps > 1:
                self._set_Y(Y0, self._pg + self.block)
        self._out: tuple[Any, Any] | None = None

    @property
    def V(self) -> Any:
        """Orthonormal basis of the right Krylov space so far (n x width)."""  # numpydoc ignore=RT01
        return self.xp.matrix_transpose(self._Vt[self._pv : self._pv + self.width, :])

    @property
    def GV(self) -> Any:
        """``G @ V`` (m x width)."""  # numpydoc ignore=RT01
        return self.xp.matrix_transpose(self._GVt[self._pg : self._pg + self.width, :])

    @property
    def probes(self) -> Any:
        """The hidden probes (``ψ``, m x p, if `left`, else ``ω``, n x p), or None."""  # numpydoc ignore=RT01
        if not self.p:
            return None
        rand = Random(self._probe_seed, self.xp, self._device)
        return rand.standard_normal((self.m if self.left else self.n, self.p), self._Vt.dtype)

    @property
    def G_probes(self) -> Any:
        """``Gᵀ ψ`` (n x p) if `left`, else ``G ω`` (m x p), once absorbed; or None."""  # numpydoc ignore=RT01
        if not self.p:
            return None
        rows = self._Vt[: self.p, :] if self.left else self._GVt[: self.p, :]
        return self.xp.matrix_transpose(rows)

    def _set_Y(self, Y: Any, row: int) -> None:
        """Keep ``Y`` in the image rows from `row` on when they exist (else as it is).

        ``Y`` only feeds the next sweep; the rows it borrows belong to the block after
        that sweep's, written no earlier than the sweep after it.
        """  # numpydoc ignore=PR01
        end = row + Y.shape[1]
        if end <= self._GVt.shape[0]:
            self._GVt[row:end, :] = self.xp.matrix_transpose(Y)
            Y = self.xp.matrix_transpose(self._GVt[row:end, :])
        self.Y = Y

    def _image_rows(self) -> tuple[int, int]:
        """Image-buffer rows of this sweep's ``G X`` (with ``G ω`` in the first)."""  # numpydoc ignore=RT01
        hi = self._pg + self.width + self.w
        return (0 if self.sweep == 0 else self._pg + self.width), hi

    def inputs(self) -> tuple[Any, Any]:
        """``(X, Y)`` for this sweep (the first one's with the probes), Y may be empty."""  # numpydoc ignore=RT01
        if self._first is not None:
            return self._first, self.Y
        a = self._pv + self.width
        return self.xp.matrix_transpose(self._Vt[a : a + self.w, :]), self.Y

    def outputs(self) -> tuple[Any, Any]:
        """Zeroed ``(G X, Gᵀ Y)`` destinations an oracle may accumulate into and return.

        ``G X`` is a view of the image buffer; ``Gᵀ Y`` a view of the basis rows the next
        block will occupy when they exist (else a new array). Returning these very
        arrays from the oracle saves `absorb` a copy.

        Returns
        -------
        tuple of arrays
            ``(m, width of X)`` and ``(n, width of Y)``, zero-filled.
        """
        xp, mT = self.xp, self.xp.matrix_transpose
        lo, hi = self._image_rows()
        self._GVt[lo:hi, :] = 0
        a = self._pv + self.width + self.w
        b = a + self.Y.shape[1]
        if b <= self._Vt.shape[0] and not (self.left and self.sweep == 0):
            self._Vt[a:b, :] = 0
            gty = mT(self._Vt[a:b, :])
        else:  # also the first sweep's [Gᵀ ψ, Gᵀ Y_0], split when absorbed
            gty = xp.zeros((self.n, b - a), dtype=self._Vt.dtype, device=self._device)
        self._out = (mT(self._GVt[lo:hi, :]), gty)
        return self._out

    def absorb(self, GX: Any, GtY: Any) -> None:
        """Take this sweep's products; prepare the next sweep's inputs.

        Parameters
        ----------
        GX : array of shape (m, width of X)
            ``G @ X`` for the ``X`` of `inputs`.
        GtY : array of shape (n, width of Y)
            ``Gᵀ @ Y``.
        """
        xp, mT = self.xp, self.xp.matrix_transpose
        lo, hi = self._image_rows()
        if self._out is None or GX is not self._out[0]:
            self._GVt[lo:hi, :] = mT(GX)
        if self._first is not None:
            self._Vt[: self.w, :] = mT(self._first[:, self.p :])
        if self.left and self.sweep == 0:
            self._Vt[: self.p, :] = mT(GtY[:, : self.p])
            GtY = GtY[:, self.p :]
        self._out = self._first = None
        w, self.width, self.sweep = self.w, self.width + self.w, self.sweep + 1
        if self.sweep >= self.n_sweeps:
            self.Y, self.w = None, 0
            return
        room = min(self.block, self.n - self.width, GtY.shape[1])
        self.w = max(room, 0)
        if room > 0:  # GtY may alias these rows: the new block is computed before the write
            X = _orthonormal_against(GtY, self.V, xp)[:, :room]
            a = self._pv + self.width
            self._Vt[a : a + room, :] = mT(X)
        image = mT(self._GVt[hi - w : hi, :])
        if self.sweep + 1 >= self.n_sweeps or w == 0:
            self.Y = image[:, :0]
        else:
            self._set_Y(xp.linalg.qr(image)[0], hi + self.w)

    def result(self, k: int) -> SketchResult:
        """Top-``k`` Ritz triplets with the error estimate and the gap.

        Parameters
        ----------
        k : int
            Number of triplets (at most the basis width).

        Returns
        -------
        SketchResult
            ``U`` (m, k), ``S`` (k,), ``Vh`` (k, n) and the diagnostics.
        """
        xp = self.xp
        Ub, Sb, Wh = xp.linalg.svd(self.GV, full_matrices=False)
        U, S = Ub[:, :k], Sb[:k]
        Vh = Wh[:k, :] @ xp.matrix_transpose(self.V)
        U, Vh = svd_flip(U, Vh, xp)
        top = float(xp.sum(S * S))
        tail = max(float(xp.sum(Sb * Sb)) - top, 0.0)
        err2 = max(tail, self._probe_error(U, S, Vh))
        total = top + err2
        error = math.sqrt(err2 / total) if total > 0 else 0.0
        energy = top / total if total > 0 else 1.0
        return SketchResult(U, S, Vh, error, energy, self._gap(Sb, k), self.sweep)

    def _probe_error(self, U: Any, S: Any, Vh: Any) -> float:
        """``‖(G - U S Vh) ω‖² / p`` (or ``‖(G - U S Vh)ᵀ ψ‖² / p``); 0 without probes."""  # numpydoc ignore=RT01,PR01
        if not self.p:
            return 0.0
        xp, mT = self.xp, self.xp.matrix_transpose
        probes = self.probes
        if self.left:
            R = self.G_probes - mT(Vh) @ (S[:, None] * (mT(U) @ probes))
        else:
            R = self.G_probes - U @ (S[:, None] * (Vh @ probes))
        return float(xp.sum(R * R)) / self.p

    def _gap(self, Sb: Any, k: int) -> float:
        """Ritz ratio ``σ_k / σ_{k+1}``: inf past the matrix's rank, nan for 0/0."""  # numpydoc ignore=RT01,PR01
        if k >= min(self.m, self.n):
            return math.inf
        if Sb.shape[0] <= k:
            return math.nan
        rtol = max(self.m, self.n) * float(self.xp.finfo(Sb.dtype).eps) * float(Sb[0])
        hi, lo = float(Sb[k - 1]), float(Sb[k])
        hi, lo = (hi if hi > rtol else 0.0), (lo if lo > rtol else 0.0)
        if lo > 0:
            return hi / lo
        return math.inf if hi > 0 else math.nan


def run_sweeps(oracle: Oracle, sketches: Sequence[LayerSketch], n_sweeps: int) -> None:
    """Run ``n_sweeps`` oracle calls, all sketches in lock-step.

    Parameters
    ----------
    oracle : callable
        ``oracle(Xs, Ys) -> (GXs, GtYs)``, lists in the order of `sketches`. It may
        accumulate into each sketch's `LayerSketch.outputs` and return those arrays
        (no copy is then made).
    sketches : sequence of LayerSketch
        One per matrix.
    n_sweeps : int
        Number of sweeps.
    """
    for _ in range(n_sweeps):
        Xs, Ys = zip(*(s.inputs() for s in sketches), strict=True)
        # no reference to this sweep's blocks may outlive their absorption: a product
        # held into the next sweep would add to that sweep's peak
        products = oracle(list(Xs), list(Ys))
        del Xs, Ys
        gx = gty = None
        for s, gx, gty in zip(sketches, *products, strict=True):
            s.absorb(gx, gty)
        del products, gx, gty


def sketch_svds(
    oracle: Oracle, shapes: Sequence[tuple[int, int]], rank: int, *, n_sweeps: int,
    block: int, rand: Any, dtype: Any, xp: Any, n_test: int = N_TEST,
) -> list[SketchResult]:
    """Top-`rank` triplets of every matrix behind `oracle`, from `n_sweeps` lock-step sweeps.

    Parameters
    ----------
    oracle : callable
        ``oracle(Xs, Ys) -> (GXs, GtYs)``, one entry per matrix of `shapes`.
    shapes : sequence of (m, n)
        The matrices' shapes.
    rank : int
        Triplets wanted (``rank <= min(m, n)`` and ``rank <= n_sweeps * block``).
    n_sweeps, block : int
        Sweeps and columns per product.
    rand : lowrank._lib._random.Random
        The draws.
    dtype, xp : dtype and namespace
        Work dtype and array namespace.
    n_test : int, default: N_TEST
        Hidden probes for the error estimate.

    Returns
    -------
    list of SketchResult
        In the order of `shapes`.
    """
    sketches = [
        LayerSketch(shape, block, n_sweeps, min(n_test, shape[1]), rand, dtype, xp)
        for shape in shapes
    ]
    run_sweeps(oracle, sketches, n_sweeps)
    return [s.result(rank) for s in sketches]
