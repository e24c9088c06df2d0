"""The peers' solver signatures, implemented with lowrank.

Each adapter translates a peer's parameters to lowrank's, calls lowrank, and translates
the result back to the peer's conventions (output order, ``None`` factors). Nothing is
computed here that lowrank does not compute itself: a peer option lowrank has no
counterpart for is ignored or refused, as stated per adapter; the README of this folder
lists the peer tests that depend on such options and are therefore not run.

Every call is counted in :data:`CALLS`, so the plugin can fail a peer test that never
reached lowrank (a test that cannot exercise lowrank must not pass as if it did).
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

import lowrank

CALLS: collections.Counter[str] = collections.Counter()

# lowrank.randomized_svd's ``method`` for every adapter (the plugin's ``--lowrank-method``)
OPTIONS = {"method": "auto"}

# the svds ``solver`` values that route to lowrank; every other value reaches SciPy
SVDS_SOLVERS = ("lowrank_exact", "lowrank_randomized")


def _seed(random_state: Any) -> Any:  # numpydoc ignore=PR01,RT01
    """sklearn's ``random_state`` (None, int or RandomState) as a lowrank ``rng``."""
    if random_state is None or isinstance(random_state, (int, np.integer)):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        # one draw from the caller's stream, so repeated calls see fresh seeds as in sklearn
        return int(random_state.randint(np.iinfo(np.int32).max))
    return random_state  # a Generator: lowrank takes it as is


def _matrix(M: Any) -> Any:  # numpydoc ignore=PR01,RT01
    """Array-likes as NumPy arrays (the peers accept lists); arrays untouched."""
    if isinstance(M, (list, tuple)):
        return np.asarray(M)
    return M


def sklearn_randomized_svd(M: Any, n_components: int, *, n_oversamples: int = 10,
                           n_iter: Any = "auto", power_iteration_normalizer: str = "auto",
                           transpose: Any = "auto", flip_sign: bool = True,
                           random_state: Any = None,
                           svd_lapack_driver: str = "gesdd") -> tuple[Any, Any, Any]:
    """``sklearn.utils.extmath.randomized_svd`` computed by ``lowrank.randomized_svd``.

    Parameters
    ----------
    M : array or scipy.sparse matrix of shape (m, n)
        Input; any namespace lowrank accepts (NumPy, torch, array-api-strict, SciPy sparse).
    n_components : int
        ``rank``.
    n_oversamples : int, default 10
        ``n_oversamples``.
    n_iter : int or "auto", default "auto"
        ``n_power_iter`` (an int: the same ``2 n_iter + 2`` passes as sklearn); "auto"
        maps to lowrank's own automatic choice (None).
    power_iteration_normalizer : str, default "auto"
        Ignored: lowrank orthonormalises every block (CholeskyQR2 with a Householder
        fallback), so no choice (and no unstable "none") exists.
    transpose : bool or "auto", default "auto"
        Ignored: lowrank factorises wide inputs through their transpose itself.
    flip_sign : bool, default True
        No action: lowrank's documented sign rule is sklearn's ``svd_flip`` (largest
        magnitude entry of each column of ``U`` positive), so the peer's sign tests check
        lowrank's own rule. ``flip_sign=False`` promises no sign, which this satisfies.
    random_state : None, int or numpy.random.RandomState
        ``rng`` (a RandomState gives one seed drawn from its stream).
    svd_lapack_driver : str, default "gesdd"
        Ignored: lowrank's small SVD is its namespace's ``linalg.svd``.

    Returns
    -------
    U, s, Vt : arrays
        As sklearn: shapes (m, k), (k,), (k, n); in ``M``'s namespace and dtype.
    """
    del power_iteration_normalizer, transpose, flip_sign, svd_lapack_driver
    CALLS["randomized_svd"] += 1
    n_power_iter = None if isinstance(n_iter, str) and n_iter == "auto" else n_iter
    U, S, Vh = lowrank.randomized_svd(
        _matrix(M), n_components, n_oversamples=n_oversamples, n_power_iter=n_power_iter,
        method=OPTIONS["method"], rng=_seed(random_state))
    return U, S, Vh


def sklearn_randomized_range_finder(A: Any, *, size: int, n_iter: int,
                                    power_iteration_normalizer: str = "auto",
                                    random_state: Any = None) -> Any:
    """``sklearn.utils.extmath.randomized_range_finder`` by ``lowrank.randomized_range_finder``.

    Parameters
    ----------
    A : array or scipy.sparse matrix of shape (m, n)
        Input.
    size : int
        ``size``.
    n_iter : int
        ``n_power_iter``.
    power_iteration_normalizer : str, default "auto"
        Ignored (lowrank always orthonormalises).
    random_state : None, int or numpy.random.RandomState
        ``rng``.

    Returns
    -------
    array of shape (m, size)
        Orthonormal basis ``Q``.
    """
    del power_iteration_normalizer
    CALLS["randomized_range_finder"] += 1
    return lowrank.randomized_range_finder(_matrix(A), size, n_power_iter=n_iter,
                                           rng=_seed(random_state))


def scipy_svds(A: Any, k: int = 6, ncv: Any = None, tol: float = 0, which: str = "LM",
               v0: Any = None, maxiter: Any = None, return_singular_vectors: Any = True,
               solver: str = "lowrank_exact", rng: Any = None, options: Any = None) -> Any:
    """``scipy.sparse.linalg.svds`` computed by lowrank.

    Parameters
    ----------
    A : array, scipy.sparse matrix or LinearOperator of shape (m, n)
        Input. "lowrank_exact" (``truncated_svd``) takes dense arrays only;
        "lowrank_randomized" (``randomized_svd``) also sparse matrices and operators.
    k : int, default 6
        ``rank``.
    ncv, tol, v0, maxiter, options : optional
        Ignored: Lanczos/ARPACK controls without a lowrank counterpart.
    which : {"LM"}, default "LM"
        Only the largest singular values; "SM" raises ValueError.
    return_singular_vectors : {True, False, "u", "vh"}, default True
        As SciPy: False returns ``s`` alone, "u"/"vh" put None in place of the other
        factor.
    solver : {"lowrank_exact", "lowrank_randomized"}
        Which lowrank function computes the triplets.
    rng : None, int or numpy.random.Generator
        ``rng`` of ``randomized_svd`` (``truncated_svd`` draws nothing).

    Returns
    -------
    u, s, vh : arrays or None
        SciPy's convention: singular values in *ascending* order, vectors to match.
    """
    del ncv, tol, v0, maxiter, options
    CALLS["svds"] += 1
    if which != "LM":
        msg = f"lowrank computes the largest singular values only (which='LM'); got {which!r}"
        raise ValueError(msg)
    if solver == "lowrank_exact":
        U, S, Vh = lowrank.truncated_svd(_matrix(A), k)
    else:
        U, S, Vh = lowrank.randomized_svd(_matrix(A), k, method=OPTIONS["method"], rng=rng)
    U, S, Vh = U[:, ::-1], S[::-1], Vh[::-1, :]
    if return_singular_vectors is False:
        return S
    if return_singular_vectors == "u":
        return U, S, None
    if return_singular_vectors == "vh":
        return None, S, Vh
    return U, S, Vh


def routed_svds(scipy_own: Any) -> Any:
    """``svds`` that sends the lowrank solver values to :func:`scipy_svds`, others to SciPy.

    Parameters
    ----------
    scipy_own : callable
        SciPy's ``svds``.

    Returns
    -------
    callable
        Drop-in ``svds``.
    """

    def svds(A: Any, k: int = 6, *args: Any, solver: str = "arpack", **kwargs: Any) -> Any:
        if solver in SVDS_SOLVERS:
            return scipy_svds(A, k, *args, solver=solver, **kwargs)
        return scipy_own(A, k, *args, solver=solver, **kwargs)

    svds.__wrapped__ = scipy_own
    return svds


def torch_svd_lowrank(A: Any, q: int = 6, niter: int = 2, M: Any = None,
                      rng: Any = None) -> tuple[Any, Any, Any]:
    """``torch.svd_lowrank(A, q, niter, M)`` computed by ``lowrank.randomized_svd``.

    Parameters
    ----------
    A : torch.Tensor of shape (..., m, n), dense or sparse
        Input. Sparse (COO, CPU) input reaches lowrank as the same matrix in SciPy's
        sparse format, the sparse type lowrank accepts; dense tensors as they are.
    q : int, default 6
        Number of triplets returned; torch sketches exactly ``q`` columns, so
        ``n_oversamples=0``.
    niter : int, default 2
        ``n_power_iter`` (torch's subspace iterations).
    M : torch.Tensor, optional
        Subtracted from ``A`` first, as torch does.
    rng : None, int or torch.Generator
        ``rng`` (torch's function draws from the global generator; lowrank never does).

    Returns
    -------
    U, S, V : torch.Tensor
        torch's convention: ``A - M ≈ U diag(S) Vᴴ`` (``V``, not ``Vh``).
    """
    CALLS["svd_lowrank"] += 1
    a = A if M is None else A - M
    if a.layout != torch_layout_strided():
        return _svd_lowrank_sparse(a, q, niter, rng)
    U, S, Vh = lowrank.randomized_svd(a, q, n_oversamples=0, n_power_iter=niter,
                                      method=OPTIONS["method"], rng=rng)
    return U, S, Vh.mH


def torch_layout_strided() -> Any:  # numpydoc ignore=RT01
    """``torch.strided`` (torch imported only when a torch adapter runs)."""
    import torch

    return torch.strided


def _svd_lowrank_sparse(a: Any, q: int, niter: int, rng: Any) -> tuple[Any, Any, Any]:  # numpydoc ignore=PR01,RT01
    """Sparse torch input: lowrank takes sparse matrices as SciPy sparse (CPU, 2-D)."""
    import scipy.sparse as sp
    import torch

    coo = a.coalesce()
    rows, cols = coo.indices().numpy()
    matrix = sp.coo_array((coo.values().numpy(), (rows, cols)), shape=tuple(a.shape)).tocsr()
    seed = rng if rng is None or isinstance(rng, int) else int(torch.randint(2**62, (1,), generator=rng))
    U, S, Vh = lowrank.randomized_svd(matrix, q, n_oversamples=0, n_power_iter=niter,
                                      method=OPTIONS["method"], rng=seed)
    return tuple(torch.from_numpy(x) for x in (U, S, Vh.conj().T))
