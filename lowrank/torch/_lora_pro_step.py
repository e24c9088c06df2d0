"""LoRAProAdamW steps on stacked storage: Adam states are views into per-shape stacks.

Each parameter's state entries (``exp_avg``, ``exp_avg_sq``, ``initial``, or the
weight-space ``weight_exp_avg``/``weight_exp_avg_sq``) are views of one stack per
bucket, so ``state_dict``/``load_state_dict`` still see one tensor per parameter while
a step touches a few large tensors instead of many small ones. The stacks are rebuilt
(adopting the current per-parameter values) whenever the set of pairs with gradients
changes, or a state entry or a parameter's whole state dict was replaced or deleted
(``load_state_dict``, user code).
"""

from __future__ import annotations

from operator import is_
from typing import Any

import torch

from ._lora_pro_adam import adamw_lists_, clip_factor, foreach_adamw_
from ._lora_pro_stack import Bucket, Layout, adjusted, coefficients, equivalent, split

__all__ = ["step_efficient", "step_full"]

#: Full mode: elements of g~ (and of the Adam direction) formed at once. Small enough
#: for both to stay in cache between the product that forms g~, the fused Adam kernel
#: and the products that project the direction back (measured faster than 2**26).
CHUNK_ELEMENTS = 1 << 20


class _Cache:
    """A built layout and what must still hold for its views to be the state."""

    __slots__ = ("dicts", "key", "layout", "links", "params", "snapshot", "state")

    def __init__(self, key: tuple, layout: Layout, links: list, opt: Any) -> None:
        self.key, self.layout, self.links, self.state = key, layout, links, opt.state
        self.params = layout.params
        self.dicts = [opt.state[t] for t in self.params]  # the dicts the links live in
        self.snapshot = tuple(opt.state.values())

    def holds(self, opt: Any, key: tuple) -> bool:
        """Whether the views are still the state of ``key``'s pairs (see `_layout_for`)."""  # numpydoc ignore=PR01,RT01
        if self.key != key or self.state is not opt.state or not _links_hold(self.links):
            return False
        state = opt.state
        # Fast path: no per-parameter dict of the state was replaced, added or deleted
        # (identity of the values, C-level, no tensor hashing).
        if len(state) == len(self.snapshot) and all(map(is_, state.values(), self.snapshot)):
            return True
        # Something changed (often only a plain parameter's first state): check ours.
        if not all(map(is_, map(state.get, self.params), self.dicts)):
            return False
        self.snapshot = tuple(state.values())
        return True


def _layout_for(opt: Any, pairs: list) -> Layout:
    """The cached layout of ``pairs`` (those with gradients), rebuilt when stale."""  # numpydoc ignore=PR01,RT01
    key = tuple(id(p.A) for p in pairs)
    cached = opt._stacked
    # Valid while every parameter's state dict is the one the views were placed in and
    # still holds them: user code may replace an entry, the whole dict
    # (``opt.state[p] = {...}``) or delete it, as with any torch optimizer.
    if cached is not None and cached.holds(opt, key):
        return cached.layout
    group_index = {id(t): i for i, g in enumerate(opt.param_groups) for t in g["params"]}

    def key_of(p: Any) -> tuple:
        anchored = ("initial" in opt.state[p.A], "initial" in opt.state[p.B])
        return (group_index[id(p.A)], group_index[id(p.B)], *anchored)

    layout = Layout(pairs, key=key_of)
    links = _adopt(opt, layout)
    if cached is not None:  # pairs left out keep their values, not the old stacks
        kept = {id(d) for d, _, _ in links}
        for d, name, view in cached.links:
            if id(d) not in kept and d.get(name) is view:
                d[name] = view.clone()
    opt._stacked = _Cache(key, layout, links, opt)
    return layout


def _links_hold(links: list[tuple]) -> bool:
    """Whether every (state dict, name, view) still holds that view."""  # numpydoc ignore=PR01,RT01
    for d, name, view in links:
        if d.get(name) is not view:
            return False
    return True


def _slab_names(opt: Any, bucket: Bucket, side: str) -> list[tuple[str, tuple]]:
    """State entries stacked for one side ("A" or "B") of a bucket, with their shapes."""  # numpydoc ignore=PR01,RT01
    like = tuple((bucket.A if side == "A" else bucket.Bt).shape)
    anchored = bucket.key[6] if side == "A" else bucket.key[7]
    names = [("initial", like)] if anchored else []
    if opt.mode == "efficient":
        return [*names, ("exp_avg", like), ("exp_avg_sq", like)]
    if side == "A":  # weight-space states, kept with A
        full = (len(bucket.pairs), bucket.Bt.shape[2], bucket.A.shape[2])
        return [*names, ("weight_exp_avg", full), ("weight_exp_avg_sq", full)]
    return names


def _adopt(opt: Any, layout: Layout) -> list[tuple]:
    """Stack the current state entries of the layout's parameters; state keeps views.

    B-side stacks hold Bᵀ-shaped blocks (see `Bucket`): the state entry is the block's
    transpose, of B's shape. Per-layer blocks are cached in ``bucket.blocks`` for the
    fused kernels, which take lists of contiguous tensors.
    """  # numpydoc ignore=PR01,RT01
    links = []
    for b in layout.buckets:
        for side, stack in (("A", b.A), ("B", b.Bt)):
            params = [getattr(p, side) for p in b.pairs]
            states = b.blocks[side, "state"] = [opt.state[t] for t in params]
            if opt.mode == "efficient" or side == "A":
                moments = ("exp_avg", "exp_avg_sq")
                if opt.mode == "full":
                    moments = ("weight_exp_avg", "weight_exp_avg_sq")
                for d in states:
                    # no moments of this mode (a fresh, replaced or other-mode state):
                    # Adam starts afresh, bias correction included
                    if any(m not in d for m in moments):
                        d["step"] = 0
                    else:
                        d.setdefault("step", 0)
            b.blocks[side, "param"] = list(stack)
            b.blocks[side, "grad"] = list(b.new[0] if side == "A" else b.new[1])
            for name, shape in _slab_names(opt, b, side):
                slab = torch.zeros(shape, dtype=b.AgA.dtype, device=b.AgA.device)
                b.blocks[side, name] = list(slab)
                for d, block in zip(states, b.blocks[side, name], strict=True):
                    view = block.mT if side == "B" and not name.startswith("weight_") else block
                    old = d.get(name)
                    if old is not None:
                        view.copy_(old)
                    d[name] = view
                    links.append((d, name, view))
                b.slabs[f"{side}.{name}"] = slab
    return links


def _steps(states: list[dict]) -> list[int]:
    """Increment and return the step counts in ``states``."""  # numpydoc ignore=PR01,RT01
    out = []
    for d in states:
        d["step"] += 1
        out.append(d["step"])
    return out


def _runs(steps: list[int]) -> list[tuple[int, list[int] | None]]:
    """(step, layers) runs; layers None means the whole stack (all steps equal)."""  # numpydoc ignore=PR01,RT01
    if all(t == steps[0] for t in steps):
        return [(steps[0], None)]
    by_step: dict[int, list[int]] = {}
    for k, t in enumerate(steps):
        by_step.setdefault(t, []).append(k)
    return list(by_step.items())


def _adam_stacks(opt: Any, layout: Layout) -> None:
    """Efficient mode: AdamW on the stacked factors, one fused call per (group, step) set."""  # numpydoc ignore=PR01
    sets: dict[tuple, tuple[list, ...]] = {}
    for b in layout.buckets:
        for side, gi in (("A", b.key[4]), ("B", b.key[5])):
            blocks = [b.blocks[side, n] for n in ("param", "grad", "exp_avg", "exp_avg_sq")]
            anchors = b.blocks.get((side, "initial"))
            for t, layers in _runs(_steps(b.blocks[side, "state"])):
                entry = sets.setdefault((gi, t, anchors is not None), ([], [], [], [], [], []))
                pick = (lambda x: x) if layers is None else (lambda x: [x[k] for k in layers])
                for dest, src in zip(entry, blocks, strict=False):
                    dest.extend(pick(src))
                if anchors is not None and layers is None:  # decay on whole stacks
                    entry[4].append(b.A if side == "A" else b.Bt)
                    entry[5].append(b.slabs[f"{side}.initial"])
                elif anchors is not None:
                    entry[4].extend(pick(blocks[0]))
                    entry[5].extend(pick(anchors))
    for (gi, t, anchored), (ps, gs, ms, vs, decayed, p0s) in sets.items():
        group = opt.param_groups[gi]
        lr, wd = group["lr"], group["weight_decay"]
        if anchored and wd:  # decoupled decay of (p - p0): p <- p - lr·wd·(p - p0)
            torch._foreach_lerp_(decayed, p0s, lr * wd)
        adamw_lists_(ps, gs, ms, vs, t, group, weight_decay=0.0 if anchored else wd)


def step_efficient(opt: Any, pairs: list, others: list, plain: list) -> None:
    """One efficient-mode step: adjusted factor gradients, then AdamW on the stacks."""  # numpydoc ignore=PR01
    layout = _layout_for(opt, pairs) if pairs else None
    grads: list[torch.Tensor] = []
    if layout is not None:
        layout.load()
        for buckets in layout.ranks:
            coefs, _ = coefficients(buckets, gauge=opt.gauge, damping=opt.damping)
            adjusted(buckets, coefs)  # into each b.new, the blocks the Adam step reads
        grads = [g for b in layout.buckets for g in b.new]
    factor = clip_factor(grads + plain, opt.max_grad_norm)
    if factor is not None:
        if grads:
            torch._foreach_mul_(grads, factor)  # ours: in place; plain ones may be `.grad`
        plain = [g * factor.to(g.dtype) for g in plain]
    if layout is not None:
        _adam_stacks(opt, layout)
        layout.store()
    foreach_adamw_(others, plain, opt)


def _chunks(bucket: Bucket) -> list[tuple[int, int]]:
    """Layer ranges whose g~ has at most CHUNK_ELEMENTS elements (at least one layer)."""  # numpydoc ignore=PR01,RT01
    per_layer = bucket.Bt.shape[2] * bucket.A.shape[2]
    size = max(1, CHUNK_ELEMENTS // max(1, per_layer))
    n = len(bucket.pairs)
    return [(lo, min(n, lo + size)) for lo in range(0, n, size)]


def _full_clip_factor(opt: Any, zero: dict, layout: Layout | None, plain: list) -> Any:
    """Full mode: the global clipping factor of g~ and the plain gradients (None if off)."""  # numpydoc ignore=PR01,RT01
    if opt.max_grad_norm is None:
        return None
    parts = list(plain)
    for b in [] if layout is None else layout.buckets:  # a pass of its own: g~ is not kept
        for lo, hi in _chunks(b):
            parts.append(torch.linalg.vector_norm(equivalent(b, zero[id(b)], lo, hi)))
    return clip_factor(parts, opt.max_grad_norm)


def _scratch(b: Bucket, size: int) -> torch.Tensor:
    """Two reused (size, out, in) buffers of the bucket: g~ and the Adam direction."""  # numpydoc ignore=PR01,RT01
    shape = (2, size, b.Bt.shape[2], b.A.shape[2])
    if b.scratch is None or tuple(b.scratch.shape) != shape:
        b.scratch = torch.empty(shape, dtype=b.AgA.dtype, device=b.AgA.device)
    return b.scratch


def _weight_adam(opt: Any, b: Bucket, zero: tuple, factor: Any) -> None:
    """Adam in weight space on g~ (fused kernel), the direction projected into the gradient slots."""  # numpydoc ignore=PR01
    group = opt.param_groups[b.key[4]]  # betas/eps of A's group
    m_all, v_all = b.blocks["A", "weight_exp_avg"], b.blocks["A", "weight_exp_avg_sq"]
    steps = _steps(b.blocks["A", "state"])
    chunks = _chunks(b)
    work = _scratch(b, chunks[0][1] - chunks[0][0])
    for lo, hi in chunks:
        g = equivalent(b, zero, lo, hi, out=work[0, : hi - lo])
        if factor is not None:
            g.mul_(factor.to(g.dtype))
        neg_dir = work[1, : hi - lo].zero_()  # becomes −m̂/(sqrt(v̂) + eps): lr 1, no decay
        for t, layers in _runs(steps[lo:hi]):
            ks = range(hi - lo) if layers is None else layers
            adamw_lists_(
                [neg_dir[k] for k in ks],
                [g[k] for k in ks],
                [m_all[lo + k] for k in ks],
                [v_all[lo + k] for k in ks],
                t,
                group,
                weight_decay=0.0,
                lr=1.0,
            )
        s = -b.scaling[lo:hi].to(neg_dir.dtype)  # factor gradients of the direction
        b.gA[lo:hi] = s * (b.Bt[lo:hi] @ neg_dir)
        b.gBt[lo:hi] = s * (b.A[lo:hi] @ neg_dir.mT)  # (U Aᵀ)ᵀ; 1.6x faster than U @ Aᵀ


def _apply(opt: Any, b: Bucket, directions: tuple) -> None:
    """Decoupled decay (toward the anchors when kept) and the step along ``directions``."""  # numpydoc ignore=PR01
    for side, d, gi in (("A", directions[0], b.key[4]), ("B", directions[1], b.key[5])):
        group = opt.param_groups[gi]
        lr, wd = group["lr"], group["weight_decay"]
        p = b.A if side == "A" else b.Bt
        anchor = b.slabs.get(f"{side}.initial")
        if wd and anchor is not None:
            p.lerp_(anchor, lr * wd)
        elif wd:
            p.mul_(1 - lr * wd)
        p.add_(d, alpha=-lr)


def step_full(opt: Any, pairs: list, others: list, plain: list) -> None:
    """One full-mode step: Adam on g~ in weight space, the update projected onto the factors."""  # numpydoc ignore=PR01
    layout = _layout_for(opt, pairs) if pairs else None
    zero: dict[int, tuple] = {}
    specs = []
    if layout is not None:
        layout.load()
        for buckets in layout.ranks:  # g~ does not depend on the gauge: the "zero" one
            coefs, spec = coefficients(buckets, gauge="zero", damping=opt.damping)
            specs.append(spec)
            zero.update(zip(map(id, buckets), split(coefs, buckets), strict=True))
    factor = _full_clip_factor(opt, zero, layout, plain)
    if layout is not None:
        for b in layout.buckets:
            _weight_adam(opt, b, zero[id(b)], factor)
        for buckets, spec in zip(layout.ranks, specs, strict=True):
            coefs, _ = coefficients(buckets, gauge=opt.gauge, damping=opt.damping, spec=spec)
            for b, directions in zip(buckets, adjusted(buckets, coefs), strict=True):
                _apply(opt, b, directions)
        layout.store()
    if factor is not None:
        plain = [g * factor.to(g.dtype) for g in plain]
    foreach_adamw_(others, plain, opt)
