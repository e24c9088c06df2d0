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
        The draws (``standard_normal(shape, dtype)``).
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
        self.xp, self.n_sweeps, self.sweep = xp, n_sweeps, 0
        self.block = min(block, self.n)
        omega = rand.standard_normal((self.n, self.block), dtype)
        # the basis and its image are filled block by block into buffers of their final
        # width: growing them by concatenation would hold two copies at each sweep
        full, device = min(self.n, self.block * n_sweeps), _compat.device(omega)
        self._V = xp.zeros((self.n, full), dtype=dtype, device=device)
        self._GV = xp.zeros((self.m, full), dtype=dtype, device=device)
        self.width = 0
        self.probes = rand.standard_normal((self.n, n_test), dtype) if n_test else None
        psi = rand.standard_normal((self.m, min(block, self.m)), dtype)
        self.X = xp.linalg.qr(omega)[0]
        self.Y = xp.linalg.qr(psi)[0] if n_sweeps > 1 else psi[:, :0]
        self.G_probes: Any = None

    @property
    def V(self) -> Any:
        """Orthonormal basis of the right Krylov space so far (n x width)."""  # numpydoc ignore=RT01
        return self._V[:, : self.width]

    @property
    def GV(self) -> Any:
        """``G @ V`` (m x width)."""  # numpydoc ignore=RT01
        return self._GV[:, : self.width]

    def inputs(self) -> tuple[Any, Any]:
        """``(X, Y)`` for this sweep: basis block plus probes (first sweep), and Y."""  # numpydoc ignore=RT01
        if self.sweep == 0 and self.probes is not None:
            return self.xp.concat([self.X, self.probes], axis=1), self.Y
        return self.X, self.Y

    def absorb(self, GX: Any, GtY: Any) -> None:
        """Take this sweep's products; prepare the next sweep's inputs.

        Parameters
        ----------
        GX : array of shape (m, width of X)
            ``G @ X`` for the ``X`` of `inputs`.
        GtY : array of shape (n, width of Y)
            ``Gᵀ @ Y``.
        """
        xp, w = self.xp, self.X.shape[1]
        if self.sweep == 0 and self.probes is not None:
            GX, self.G_probes = GX[:, :w], GX[:, w:]
        self._V[:, self.width : self.width + w] = self.X
        self._GV[:, self.width : self.width + w] = GX
        self.width += w
        self.sweep += 1
        if self.sweep >= self.n_sweeps:
            self.X = self.Y = None
            return
        room = min(self.block, self.n - self.V.shape[1], GtY.shape[1])
        self.X = _orthonormal_against(GtY, self.V, xp)[:, :room] if room > 0 else self.V[:, :0]
        last = self.sweep + 1 >= self.n_sweeps
        self.Y = GX[:, :0] if last or w == 0 else xp.linalg.qr(GX)[0]

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
        """``‖(G - U S Vh) ω‖² / p`` over the hidden probes (0 without probes)."""  # numpydoc ignore=RT01,PR01
        if self.probes is None or self.probes.shape[1] == 0:
            return 0.0
        xp = self.xp
        R = self.G_probes - U @ (S[:, None] * (Vh @ self.probes))
        return float(xp.sum(R * R)) / self.probes.shape[1]

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
        ``oracle(Xs, Ys) -> (GXs, GtYs)``, lists in the order of `sketches`.
    sketches : sequence of LayerSketch
        One per matrix.
    n_sweeps : int
        Number of sweeps.
    """
    for _ in range(n_sweeps):
        Xs, Ys = zip(*(s.inputs() for s in sketches), strict=True)
        GXs, GtYs = oracle(list(Xs), list(Ys))
        for s, gx, gty in zip(sketches, GXs, GtYs, strict=True):
            s.absorb(gx, gty)


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
