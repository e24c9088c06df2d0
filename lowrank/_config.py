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


def kernels_enabled() -> bool:
    """``get_config()["use_kernels"]`` without the copy, for per-call hot paths.

    The environment is read on every call, as by `get_config`, but only its raw entry
    (a dict lookup); the value is parsed only when the variable is set.
    """  # numpydoc ignore=RT01
    cfg = _CONFIG.get()
    if cfg is not None:
        return cfg["use_kernels"]
    return _ENVIRON.get(_ENV_KEY) is None or _env_default()["use_kernels"]


# os.environ.get encodes the key on every call (a microsecond, as much as a whole small
# volume); the encoded mapping behind it is read directly where the platform has one
_ENVIRON: Any = getattr(os.environ, "_data", None)
_ENV_KEY: Any = os.environ.encodekey("LOWRANK_USE_KERNELS") if _ENVIRON is not None else None
if _ENVIRON is None or not isinstance(_ENVIRON, dict):
    _ENVIRON, _ENV_KEY = os.environ, "LOWRANK_USE_KERNELS"


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
