"""The only module that imports array_api_compat; backend predicates never import torch/cupy."""

from __future__ import annotations

from typing import Any

import array_api_compat as _aac
from array_api_compat import (
    array_namespace,
    device,
    is_array_api_strict_namespace,
    is_cupy_namespace,
    is_dask_namespace,
    is_numpy_namespace,
    is_pydata_sparse_namespace,
    is_torch_namespace,
    size,
    to_device,
)

__all__ = [
    "array_namespace",
    "backend_name",
    "device",
    "is_array_api_strict_namespace",
    "is_cupy_namespace",
    "is_dask_namespace",
    "is_numpy_namespace",
    "is_pydata_sparse_namespace",
    "is_torch_namespace",
    "is_writeable_array",
    "size",
    "to_device",
]


def backend_name(xp: Any) -> str:
    """Short name of the namespace: numpy, cupy, torch, array_api_strict or other."""  # numpydoc ignore=PR01,RT01
    if is_numpy_namespace(xp):
        return "numpy"
    if is_cupy_namespace(xp):
        return "cupy"
    if is_torch_namespace(xp):
        return "torch"
    if is_array_api_strict_namespace(xp):
        return "array_api_strict"
    return "other"


def is_writeable_array(x: Any) -> bool:
    """Whether ``x`` supports in-place item assignment."""  # numpydoc ignore=PR01,RT01
    return bool(_aac.is_writeable_array(x))
