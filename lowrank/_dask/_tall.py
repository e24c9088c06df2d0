"""A dask matrix seen as its tall side, chunked by rows, and the passes made over it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _kernels as k
from ._exec import Runner, wrap_blocks
from ._graph import at, pinned, task, tree_max, tree_sum

__all__ = ["Tall"]


def _work_dtype(dtype: Any) -> tuple[Any, Any]:
    """``(work, out)`` dtypes: bool/int in float64, float16 in float32."""  # numpydoc ignore=PR01,RT01
    dtype = np.dtype(dtype)
    if dtype.kind in "biu":
        return np.dtype(np.float64), np.dtype(np.float64)
    if dtype.kind not in "fc" or dtype.itemsize > 16 or (dtype.kind == "f" and dtype.itemsize > 8):
        msg = f"`a` must have a real or complex dtype up to float64/complex128; got {dtype}"
        raise TypeError(msg)
    return (np.dtype(np.float32) if dtype == np.float16 else dtype), dtype


class Tall:
    """``a`` (or ``aᴴ`` when wide) as a list of row-chunk Delayeds with one column chunk.

    ``c`` is the exact power-of-two scale applied to every product once the first
    sketch has shown the magnitude of ``a`` (so Krylov blocks neither over- nor
    underflow); ``runner`` counts the graph executions.
    """  # numpydoc ignore=PR01

    def __init__(self, a: Any, *, transpose: bool = True) -> None:
        if a.ndim != 2:
            msg = f"`a` must be a 2-D dask array here; got shape {a.shape}"
            raise ValueError(msg)
        self.dtype, self.out_dtype = _work_dtype(a.dtype)
        self.runner = Runner()
        if any(math.isnan(s) for s in a.shape):
            a = self._known_chunks(a)
        self.transposed = transpose and a.shape[0] < a.shape[1]
        t = (a.conj().T if np.iscomplexobj(a) else a.T) if self.transposed else a
        if len(t.chunks[1]) > 1:  # a row chunk must hold whole rows
            t = t.rechunk({1: -1})
        self.array = t
        self.m, self.n = int(t.shape[0]), int(t.shape[1])
        self.rows = tuple(int(r) for r in t.chunks[0])
        self.blocks = list(t.to_delayed()[:, 0])
        self.wide = self.dtype in (np.float32, np.complex64)  # small Grams in double
        self.c = 1.0
        self.pins = self._pins() if self.runner.client is not None else None
        self.runner.fuse = self.pins is None  # fusion would drop the pins' annotations

    def _known_chunks(self, a: Any) -> Any:
        """``a`` with its chunk sizes, read in one pass (counted), ``a`` left unchanged.

        Unknown sizes (after boolean indexing, say) are learnt from the chunks
        themselves: each task returns the shape of its chunk, which is then dropped.
        """  # numpydoc ignore=PR01,RT01
        import dask.array as da

        blocks = a.to_delayed()
        shapes = task(list)([task(np.shape)(b) for b in blocks.ravel()])
        (shapes,), _ = self.run([shapes])
        grid = np.array(shapes, dtype=np.int64).reshape((*blocks.shape, 2))
        chunks = (tuple(int(r) for r in grid[:, 0, 0]), tuple(int(c) for c in grid[0, :, 1]))
        if not (np.all(grid[..., 0] == grid[:, :1, 0]) and np.all(grid[..., 1] == grid[:1, :, 1])):
            msg = f"`a`'s chunks do not form a grid; their shapes are {grid.tolist()}"
            raise ValueError(msg)
        return da.Array(a.dask, a.name, chunks, meta=a._meta)

    def _pins(self) -> list[str] | None:
        """Worker of each row chunk of a persisted input under ``distributed`` (where the
        chunk is), else None."""  # numpydoc ignore=RT01
        from distributed import Future, wait

        client = self.runner.client
        workers = sorted(client.scheduler_info()["workers"])
        if not workers:
            return None
        graph = self.array.__dask_graph__()
        held = [graph.get(b.key) for b in self.blocks]
        if held and all(isinstance(f, Future) for f in held):
            wait(held)
            who = client.who_has(held)
            found = [who.get(f.key) for f in held]
            if all(found):
                return [sorted(w)[0] for w in found]
        # A lazy input is made (or loaded) inside the task that reads it (see Runner):
        # with nothing to move, such tasks run where their kept basis chunks are.
        return None

    @property
    def passes(self) -> int:
        """Reads of ``a`` so far."""  # numpydoc ignore=RT01
        return self.runner.reads

    def real_dtype(self) -> Any:
        """Real dtype of the working precision."""  # numpydoc ignore=RT01
        return np.dtype(np.float32) if self.wide else np.dtype(np.float64)

    def sketch(self, x: Any, *, norm: bool = False) -> tuple[list[Any], Any, Any]:
        """Tasks of ``Y = a x`` (unscaled), its (max, finite) stats and, with ``norm``,
        the per-chunk ``(max|a_i|, scaled ‖a_i‖²)`` for ``‖a‖_F``."""  # numpydoc ignore=PR01,RT01
        if norm:
            parts = [at(i, k.forward_norm, nout=3)(b, x, self.dtype)
                     for i, b in enumerate(self.blocks)]
            ys = [p[0] for p in parts]
            norms = task(list)([task(tuple)([p[1], p[2]]) for p in parts])
        else:
            ys, norms = self._forward(x, 1.0), None
        stats = tree_stats([at(i, k.stats)(y) for i, y in enumerate(ys)])
        return ys, stats, norms

    def forward(self, x: Any) -> list[Any]:
        """Tasks of ``c · a x`` per row chunk."""  # numpydoc ignore=PR01,RT01
        return self._forward(x, self.c)

    def _forward(self, x: Any, c: float) -> list[Any]:
        return [at(i, k.forward)(b, x, c, self.dtype) for i, b in enumerate(self.blocks)]

    def adjoint(self, qs: list[Any]) -> Any:
        """Task of ``c · aᴴ Q`` (n × width), reduced over the chunks."""  # numpydoc ignore=PR01,RT01
        return tree_sum([at(i, k.adjoint)(b, q, self.c, self.dtype)
                         for i, (b, q) in enumerate(zip(self.blocks, qs, strict=True))])

    def check_first(self, stats: tuple[float, bool], check_finite: bool) -> None:
        """NaN/Inf check on the first sketch, then the scale of later products."""  # numpydoc ignore=PR01
        if check_finite and not stats[1]:
            msg = ("`a` contains NaN or Inf; clean the input or pass check_finite=False to "
                   "skip this check")
            raise ValueError(msg)
        self.c = k.pow2_factor(stats[0], self.dtype, 8)

    def run(self, small: list[Any], tall: list[list[Any]] | None = None, *,
            reads: bool = True) -> tuple[list[Any], list[list[Any]]]:
        """One graph execution (see :class:`Runner`)."""  # numpydoc ignore=PR01,RT01
        return self.runner.run(small, tall or [], reads_a=reads)

    def wrap(self, blocks: list[Any], ncols: int, dtype: Any) -> Any:
        """Dask array over per-chunk Delayeds/kept chunks, chunked like the rows of ``a``."""  # numpydoc ignore=PR01,RT01
        return wrap_blocks(blocks, self.rows, ncols, dtype)


def tree_stats(parts: list[Any]) -> Any:
    """Tree merge of per-chunk (max, finite) stats."""  # numpydoc ignore=PR01,RT01
    from ._exec import tree

    return tree(k.merge_stats, parts)


def frobenius(norms: list[tuple[float, float]]) -> float:
    """``‖a‖_F`` from per-chunk ``(max|a_i|, ‖a_i / 2^e_i‖²)`` without over/underflow."""  # numpydoc ignore=PR01,RT01
    if any(not math.isfinite(big) for big, _ in norms):
        return math.nan
    exps = [round(math.log2(big)) for big, _ in norms if big > 0]
    if not exps:
        return 0.0
    top = max(exps)
    total = sum(s * 4.0 ** (round(math.log2(big)) - top) for big, s in norms if big > 0)
    return math.sqrt(total) * 2.0 ** top


__all__ += ["frobenius", "tree_max", "tree_stats"]
