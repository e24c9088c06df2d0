"""NumPy's floating-point error state set to "ignore" around one call, at a tenth of the cost.

``with np.errstate(all="ignore")`` builds its error-state object on every entry (about
1.3 µs here, as much as the Cholesky of a few small Gram matrices). NumPy 2 keeps that
state in a context variable; setting a prebuilt "ignore" object there is what
``errstate`` does, without the rebuild. Where NumPy lacks these internals (1.x) the
public ``np.errstate`` is used instead.

Usage::

    token = ignore_fp_errors()
    try:
        ...
    finally:
        restore_fp_errors(token)
"""

import numpy as np

try:
    from numpy._core._ufunc_config import _extobj_contextvar, _make_extobj

    _IGNORE = _make_extobj(all="ignore")
except (ImportError, AttributeError, TypeError):  # NumPy 1.x: another mechanism
    _extobj_contextvar = None


def ignore_fp_errors():
    """Ignore floating-point errors in this thread/context until `restore_fp_errors`."""
    if _extobj_contextvar is not None:
        return _extobj_contextvar.set(_IGNORE)
    state = np.errstate(all="ignore")
    state.__enter__()
    return state


def restore_fp_errors(token):
    """Restore the error state that `ignore_fp_errors` replaced."""
    if _extobj_contextvar is not None:
        _extobj_contextvar.reset(token)
    else:
        token.__exit__(None, None, None)
