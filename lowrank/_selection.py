"""Volume-based column selection (docs/theory/volume.md); re-exported by ``lowrank._volume``."""

from __future__ import annotations

from typing import Any

from ._agnostic import _select
from ._lib import _compat
from ._lib._random import check_rng
from ._lib._typing import Array, ArrayNamespace
from ._lib._validation import check_finite as _check_finite
from ._lib._traced import refuse_traced
from ._lib._validation import check_int, check_matrix, check_option, namespace, to_floating

__all__ = ["select_columns"]


_SELECT_METHODS = ("maxvol", "pivoted_qr", "volume_sampling")


def select_columns(
    a: Array,
    /,
    k: int,
    *,
    method: str = "maxvol",
    rng: Any = None,
    xp: ArrayNamespace | None = None,
) -> Array:
    r"""Choose k columns of ``a`` that span a large volume.

    Three selectors of k column indices S of an n×m matrix, judged by the Gram volume
    ``vol(a[:, S])``:

    - ``"pivoted_qr"``: greedy maximum volume, i.e. column-pivoted QR (each step takes
      the column with the largest residual after projecting out the chosen ones);
      ``vol(best) / vol(greedy) <= k!``;
    - ``"maxvol"`` (default): starts from ``"pivoted_qr"`` and swaps one chosen column
      for an unchosen one while that increases the volume (rectangular maxvol); the
      volume never decreases;
    - ``"volume_sampling"``: a random S with probability proportional to
      ``det(a_Sᴴ a_S)``, drawn exactly.

    Parameters
    ----------
    a : array of shape (n, m)
        The matrix whose columns are chosen.
    k : int
        Number of columns, ``0 <= k <= min(n, m)``.
    method : {"maxvol", "pivoted_qr", "volume_sampling"}, default "maxvol"
        The selector (see above).
    rng : None, int, numpy.random.Generator, torch.Generator or cupy Generator
        Randomness for ``"volume_sampling"`` (ignored by the deterministic methods).
        The same seed gives the same columns.
    xp : array_namespace, optional
        The standard-compatible namespace for `a`. Default: infer.

    Returns
    -------
    array of shape (k,)
        Distinct int64 column indices on `a`'s device: in pivot order for
        ``"pivoted_qr"``, in slot order for ``"maxvol"``, ascending for
        ``"volume_sampling"``.

    Raises
    ------
    TypeError
        If `a` is not an array, has a non-numeric dtype, or `k` is not an integer.
    ValueError
        If `a` is not 2-D, contains NaN/Inf, `k` is out of range, `method` is unknown,
        or ``rank(a) < k`` for ``"volume_sampling"`` (no subset has volume > 0).

    See Also
    --------
    gram_volume : The volume being maximised or sampled from.

    Notes
    -----
    *maxvol*: with ``C = a[:, S] = QR``, replacing slot i by column j multiplies
    ``vol²`` by :math:`|B_{ij}|^2 + \|r_j\|^2 (G^{-1})_{ii}`, where
    :math:`B = C^+ a`, :math:`r_j = (I - QQ^H) a_j` and :math:`G = C^H C` (matrix
    determinant lemma). The best swap is taken while this factor exceeds
    :math:`1 + \sqrt{\varepsilon}`, and a swap is kept only if the recomputed volume
    grew, so the volume never decreases and the loop ends.

    *volume sampling* is the k-DPP with kernel :math:`a^H a` (Deshpande–Rademacher;
    Kulesza–Taskar, Alg. 8): from the SVD :math:`a = U \Sigma V^H`, first choose k
    right singular vectors J with probability :math:`\propto \prod_{i\in J}\sigma_i^2`
    (elementary symmetric polynomials), then draw k columns from the projection DPP
    :math:`V_J V_J^H`, one at a time with probability proportional to the squared
    norm of the row of :math:`V_J` after projecting out the rows already chosen. This
    is exact (up to rounding); cost one SVD plus O(k² m).

    References
    ----------
    .. [1] A. Deshpande, L. Rademacher, "Efficient volume sampling for row/column
       subset selection", FOCS 2010, arXiv:1004.4057.
    .. [2] A. Kulesza, B. Taskar, "Determinantal point processes for machine
       learning", 2012, arXiv:1207.6083.
    .. [3] A. Mikhalev, I. Oseledets, "Rectangular maximum-volume submatrices and
       their applications", 2018, arXiv:1502.07838.

    Examples
    --------
    >>> import numpy as np
    >>> import lowrank
    >>> a = np.random.default_rng(0).standard_normal((4, 9))
    >>> s = lowrank.select_columns(a, 3)
    >>> s.shape, s.dtype
    ((3,), dtype('int64'))
    >>> greedy = lowrank.select_columns(a, 3, method="pivoted_qr")
    >>> bool(lowrank.gram_volume(a[:, s]) >= lowrank.gram_volume(a[:, greedy]))
    True
    >>> lowrank.select_columns(a, 3, method="volume_sampling", rng=1).shape
    (3,)
    """
    refuse_traced("select_columns", "the search for the columns (indices chosen from the "
                  "values)", a)
    xp = namespace(a, xp=xp)
    check_matrix(a, "a", max_ndim=2)
    n, m = a.shape
    k = check_int(k, "k", low=0, high=min(n, m), high_name="min(n, m)")
    method = check_option(method, "method", _SELECT_METHODS)
    check_rng(rng)
    work, _ = to_floating(a, "a", xp)
    _check_finite(work, "a", xp)
    if k == 0:
        cols: list[int] | None = []
    elif method == "volume_sampling":
        cols = _select.volume_sampling_columns(work, k, rng, xp)
        if cols is None:
            msg = f"volume sampling needs rank(a) >= k = {k}; no {k} columns have volume > 0"
            raise ValueError(msg)
    elif method == "pivoted_qr":
        cols = _select.pivoted_qr_columns(work, k, xp)
    else:
        cols = _select.maxvol_columns(work, k, xp)
    return xp.asarray(cols, dtype=xp.int64, device=_compat.device(a))
