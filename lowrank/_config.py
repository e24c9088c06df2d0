"""Library-wide configuration (kernel use), thread- and task-safe through a ContextVar."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from ._lib._validation import check_bool

__all__ = ["config_context", "get_config"]


def _env_default() -> dict[str, Any]:
    flag = os.environ.get("LOWRANK_USE_KERNELS", "1").strip().lower()
    return {"use_kernels": flag not in {"0", "false", "no", "off"}}


_CONFIG: ContextVar[dict[str, Any] | None] = ContextVar("lowrank_config", default=None)


def get_config() -> dict[str, Any]:
    """Return the current lowrank configuration.

    Returns
    -------
    dict
        A copy of the active settings. ``use_kernels`` (bool) says whether compiled
        kernels (numba on CPU, numba-cuda on CuPy arrays) may be used.

    See Also
    --------
    config_context : Change settings temporarily.

    Examples
    --------
    >>> import lowrank
    >>> sorted(lowrank.get_config())
    ['use_kernels']
    """
    cfg = _CONFIG.get()
    return dict(_env_default() if cfg is None else cfg)


@contextlib.contextmanager
def config_context(*, use_kernels: bool | None = None) -> Iterator[dict[str, Any]]:
    """Temporarily change lowrank settings inside a ``with`` block.

    Parameters
    ----------
    use_kernels : bool, optional
        Allow (True) or forbid (False) compiled kernels (NumPy bools are accepted). The environment variable
        ``LOWRANK_USE_KERNELS=0`` sets the default to False. ``None`` keeps the
        current value.

    Yields
    ------
    dict
        The settings in force inside the block.

    Raises
    ------
    TypeError
        If ``use_kernels`` is not a bool.

    See Also
    --------
    get_config : Read the current settings.

    Examples
    --------
    >>> import lowrank
    >>> with lowrank.config_context(use_kernels=False):
    ...     print(lowrank.get_config()["use_kernels"])
    False
    """
    new = get_config()
    if use_kernels is not None:
        new["use_kernels"] = check_bool(use_kernels, "use_kernels")
    token = _CONFIG.set(new)
    try:
        yield dict(new)
    finally:
        _CONFIG.reset(token)
