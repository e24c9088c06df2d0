"""What PyTorch's own ``svd_lowrank`` test demands, restated against lowrank.

PyTorch's wheel ships no ``test_linalg.py``, so its test of ``torch.svd_lowrank`` cannot be
run from here; these checks state the same requirements through the torch-signature
adapter ``svd_lowrank(A, q, niter, M)`` over ``lowrank.randomized_svd``:

- dense matrices of exact rank ``r`` (also stacked in batches) and random sparse matrices
  (torch COO, density 0.005 to 0.1), tall, wide and square, up to 1000 x 1000;
- with ``q = min(m, n)`` the factorisation is an SVD: it reconstructs ``A`` and its
  singular values are those of ``torch.linalg.svdvals``;
- with ``q = r`` on a rank-``r`` matrix the sketch already spans the range, so the
  reconstruction is exact too, and the leading ``r``-dimensional singular subspaces are
  those of the exact SVD (``|det(uᴴ U)| = 1``);
- ``M`` is subtracted first.

Tolerances: the computed factors are a backward-stable SVD of ``A`` up to
``c · max(m, n) · eps · ‖A‖₂`` (Householder QR and SVD, a few passes), so the
reconstruction and, by Weyl's inequality, the singular values carry that error; the
singular subspaces of the ``r`` nonzero singular values move by at most that error over
the gap ``σ_r`` (Wedin). ``c = 10`` covers the handful of orthogonalisations.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.peer_suites.adapters import torch_svd_lowrank

torch = pytest.importorskip("torch")

EPS = float(np.finfo(np.float64).eps)
SHAPES = [(17, 4), (4, 17), (17, 17), (100, 40), (40, 100)]
BATCHES = [(), (1,), (3,), (2, 3)]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _low_rank(rank: int, shape: tuple[int, int], batch: tuple[int, ...], seed: int):
    g = _generator(seed)
    m, n = shape
    left = torch.randn(*batch, m, rank, generator=g, dtype=torch.float64)
    right = torch.randn(*batch, rank, n, generator=g, dtype=torch.float64)
    return left @ right


def _sparse(shape: tuple[int, int], density: float, seed: int):
    """Random COO matrix with an entry in every row and a dominant diagonal (full rank)."""
    rng = np.random.default_rng(seed)
    m, n = shape
    nnz = max(min(m, n), int(m * n * density))
    rows = np.concatenate([np.arange(m), rng.integers(0, m, max(nnz - m, 0))])
    cols = np.concatenate([rng.permutation(np.arange(m) % n), rng.integers(0, n, max(nnz - m, 0))])
    values = rng.standard_normal(rows.size)
    diag = np.arange(min(m, n))  # keeps the smallest singular value away from 0
    rows, cols = np.concatenate([rows, diag]), np.concatenate([cols, diag])
    values = np.concatenate([values, 4 + rng.random(diag.size)])
    index = torch.from_numpy(np.vstack([rows, cols]))
    return torch.sparse_coo_tensor(index, torch.from_numpy(values), shape,
                                   check_invariants=True).coalesce()


class Exact:
    """The exact SVD of ``a`` (one LAPACK call per test) and the tolerance it implies."""

    def __init__(self, a) -> None:
        self.a = a
        self.U, self.S, self.Vh = torch.linalg.svd(a, full_matrices=False)
        m, n = a.shape[-2:]
        self.rel = 10 * max(m, n) * EPS  # backward error over ‖a‖₂
        self.tol = self.rel * float(self.S[..., 0].max())


def _assert_is_svd(exact: Exact, U, S, V) -> None:
    """Orthonormal factors, ``U diag(S) Vᴴ`` reconstructs ``a``, ``S`` are its singular values."""
    q = S.shape[-1]
    eye = torch.eye(q, dtype=S.dtype)
    assert float((U.mH @ U - eye).abs().max()) <= exact.rel
    assert float((V.mH @ V - eye).abs().max()) <= exact.rel
    residual = exact.a - (U * S[..., None, :]) @ V.mH
    assert float(torch.linalg.matrix_norm(residual, ord=2).max()) <= exact.tol
    assert float((S - exact.S[..., :q]).abs().max()) <= exact.tol


def _assert_same_subspaces(exact: Exact, U, V, rank: int) -> None:
    """Leading ``rank`` singular subspaces match the exact SVD's: ``|det(uᴴ U)| = 1``."""
    tol = exact.tol / float(exact.S[..., rank - 1].min())  # Wedin: error over the gap σ_r
    for mine, ref in ((U[..., :rank], exact.U[..., :rank]),
                      (V[..., :rank], exact.Vh.mH[..., :rank])):
        det = torch.linalg.det(mine.mH @ ref).abs()
        assert float((det - 1).abs().max()) <= rank * tol


# (rank, shape) of the dense cases, each also transposed
DENSE = [(2, (17, 4)), (4, (17, 4)), (4, (17, 17)), (10, (100, 40))]
DENSE = sorted({*DENSE, *((r, (n, m)) for r, (m, n) in DENSE)})
SPARSE = [(shape, d) for shape in SHAPES for d in (0.005, 0.1)] + [((1000, 1000), 0.005)]


@pytest.mark.parametrize("batch", BATCHES, ids=str)
@pytest.mark.parametrize(("rank", "shape"), DENSE, ids=str)
def test_full_width_dense_low_rank_is_an_svd(rank, shape, batch):
    a = _low_rank(rank, shape, batch, seed=1)
    U, S, V = torch_svd_lowrank(a, q=min(shape), rng=0)
    exact = Exact(a)
    _assert_is_svd(exact, U, S, V)
    _assert_same_subspaces(exact, U, V, rank)


@pytest.mark.parametrize(("rank", "shape"), [*DENSE, (7, (1000, 1000))], ids=str)
def test_exact_rank_sketch_recovers_low_rank(rank, shape):
    a = _low_rank(rank, shape, (), seed=2)
    U, S, V = torch_svd_lowrank(a, q=rank, niter=2, rng=0)
    exact = Exact(a)
    _assert_is_svd(exact, U, S, V)
    _assert_same_subspaces(exact, U, V, rank)


@pytest.mark.parametrize("layout", ["sparse", "dense"])
@pytest.mark.parametrize(("shape", "density"), SPARSE, ids=str)
def test_full_width_sparse_is_an_svd(shape, density, layout):
    a = _sparse(shape, density, seed=3)
    dense = a.to_dense()
    U, S, V = torch_svd_lowrank(a if layout == "sparse" else dense, q=min(shape), rng=0)
    _assert_is_svd(Exact(dense), U, S, V)


def test_M_is_subtracted_first():
    g = _generator(4)
    M = torch.randn(30, 20, generator=g, dtype=torch.float64)
    low = _low_rank(3, (30, 20), (), seed=5)
    U, S, V = torch_svd_lowrank(low + M, q=3, M=M, rng=0)
    _assert_is_svd(Exact(low), U, S, V)
