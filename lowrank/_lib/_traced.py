"""JAX tracing (``jax.jit``, ``vmap``, ``grad``): detect traced arrays, refuse by name.

Functions whose control flow depends on values (a pivot search, a stopping rule, a
CholeskyQR-or-Householder choice, a host-side draw of indices) cannot be traced: they
refuse traced input up front with the step that needs concrete values, instead of a
bare JAX concretization error from deep inside. NaN/Inf checks (``check_finite=True``)
are data-dependent too; with ``check_finite=False`` the traceable functions trace.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["is_traced", "refuse_traced"]


def is_traced(x: Any) -> bool:
    """Whether ``x`` is a JAX tracer (never imports jax)."""  # numpydoc ignore=PR01,RT01
    core = getattr(sys.modules.get("jax"), "core", None)
    tracer = getattr(core, "Tracer", None)
    return tracer is not None and isinstance(x, tracer)


def refuse_traced(func: str, step: str, *arrays: Any) -> None:
    """TypeError if any of ``arrays`` is traced: ``func`` needs concrete values for ``step``."""  # numpydoc ignore=PR01
    if any(is_traced(a) for a in arrays):
        msg = (f"{func} cannot run under JAX tracing (jax.jit, vmap, grad): {step} depends "
               "on the values of the input; call it on concrete arrays, outside the "
               "traced function")
        raise TypeError(msg)
