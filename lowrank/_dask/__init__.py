"""Dask-native paths of the randomized SVD family, CR products and Gram volumes.

Selected by the input type at each public entry point; the basis stays distributed
(chunked like the rows of the input) and only small quantities come to the client.
Importing this package imports no dask: :func:`is_dask_array` looks in ``sys.modules``.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["is_dask_array"]


def is_dask_array(a: Any) -> bool:
    """Whether ``a`` is a ``dask.array.Array`` (never imports dask)."""  # numpydoc ignore=PR01,RT01
    mod = sys.modules.get("dask.array")
    return mod is not None and isinstance(a, mod.Array)
