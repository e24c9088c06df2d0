"""Type aliases used across lowrank (kept loose on purpose, as SciPy and opt_einsum do)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

__all__ = ["Array", "ArrayNamespace", "Device", "RNGLike"]

Array = Any
ArrayNamespace = ModuleType
Device = Any
RNGLike = Any  # None | int | numpy/cupy/torch Generator
