"""Running passes over a row-chunked dask array: one graph execution per pass.

A pass builds, with ``dask.delayed``, one task per row chunk of ``a`` (a product with a
small NumPy matrix) followed by tree reductions and small tasks; its tall outputs (the
new basis block) are kept where they were computed -- on the workers under
``distributed``, in this process under the local schedulers -- and only small arrays come
back. Everything of one pass is submitted in a single scheduler call, so graph
executions and passes are the same number.
"""

from __future__ import annotations

import sys
import uuid
from contextlib import nullcontext
from typing import Any

import numpy as np

__all__ = ["Runner", "tree", "wrap_blocks"]


def _client() -> Any:
    """The distributed Client that ``dask.compute`` would use now, else None."""  # numpydoc ignore=RT01
    import dask

    scheduler = dask.base.get_scheduler()
    owner = getattr(scheduler, "__self__", None)
    if "distributed" in sys.modules and owner is not None:
        from distributed import Client

        if isinstance(owner, Client):
            return owner
    return None


class Runner:
    """Submits passes and counts them: ``executions`` graph executions, ``reads`` of ``a``."""  # numpydoc ignore=PR01

    def __init__(self) -> None:
        self.client = _client()
        self.executions = 0
        self.reads = 0
        self.fuse = True

    def run(self, small: list[Any], tall: list[list[Any]], *, reads_a: bool = True) -> tuple[
            list[Any], list[list[Any]]]:
        """Compute ``small`` (Delayed -> NumPy) and keep ``tall`` (lists of chunk Delayeds).

        Returns the small values and handles to the kept chunks (NumPy arrays under a
        local scheduler, Futures under distributed), from one scheduler call.
        """  # numpydoc ignore=PR01,RT01
        import dask

        self.executions += 1
        self.reads += int(reads_a)
        flat = [t for group in tall for t in group]
        # Linear fusion puts the making (or loading) of each chunk of a lazy input in the
        # task that consumes it, so the chunk is never stored as a result of its own:
        # otherwise queued input tasks keep about one chunk more per worker in memory.
        with dask.config.set(delayed_optimize=_fused) if self.fuse else nullcontext():
            if self.client is None:
                values, kept = dask.compute(small, flat)
            else:
                futures = self.client.compute([*small, *flat])
                values = self.client.gather(futures[:len(small)])
                kept = futures[len(small):]
        out, start = [], 0
        for group in tall:
            out.append(list(kept[start:start + len(group)]))
            start += len(group)
        return list(values), out


def _fused(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """dask's Delayed optimisation with linear fusion, given the keys as a flat list.

    ``optimization.fuse.delayed`` passes the nested key lists of several collections
    to the fusion step unflattened (a TypeError in dask 2026.8), hence this wrapper.
    """  # numpydoc ignore=PR01,RT01
    from dask._task_spec import fuse_linear_task_spec
    from dask.core import flatten
    from dask.utils import ensure_dict

    flat = list(flatten(keys if isinstance(keys, list) else [keys]))
    from dask.highlevelgraph import HighLevelGraph

    graph = fuse_linear_task_spec(ensure_dict(dsk), flat)
    return HighLevelGraph.from_collections(id(graph), graph, dependencies=()).cull(set(flat))


def tree(func: Any, parts: list[Any]) -> Any:
    """Pairwise (tree) combination of Delayed ``parts`` with ``func(x, y)``."""  # numpydoc ignore=PR01,RT01
    from dask import delayed

    combine = delayed(func, pure=True)
    while len(parts) > 1:
        nxt = [combine(parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]
        if len(parts) % 2:
            nxt.append(parts[-1])
        parts = nxt
    return parts[0]


def wrap_blocks(blocks: list[Any], rows: tuple[int, ...], ncols: int, dtype: Any) -> Any:
    """A dask array (chunked by ``rows``) over kept chunks, Delayeds or Futures."""  # numpydoc ignore=PR01,RT01
    import dask.array as da

    parts = []
    for block, r in zip(blocks, rows, strict=True):
        if isinstance(block, np.ndarray):
            parts.append(da.from_array(block, chunks=block.shape, name=f"lowrank-{uuid.uuid4().hex}"))
        else:
            parts.append(da.from_delayed(block, shape=(r, ncols), dtype=dtype,
                                         meta=np.empty((0, 0), dtype=dtype)))
    if not parts:
        return da.zeros((0, ncols), dtype=dtype)
    return parts[0] if len(parts) == 1 else da.concatenate(parts, axis=0)
