"""Peak memory of estimate_gradient_svd per layer is O((m + n) ℓ), not O(m n).

Each method runs in a fresh process (glibc's mmap threshold pinned) on 4096 x 4096 and
11008 x 4096 float32 layers; the peak is the process's maximum resident set minus its
resident set once the model and batches exist. Blocks of this size are mmap-backed, so
freed memory leaves the process and the maximum is the true peak of what the estimation
held. The peak of a plain frozen forward and backward over the same batches (autograd's
own working set, which every estimation has) is subtracted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

SHAPES = [(4096, 4096), (11008, 4096)]  # (out, in)
TOKENS, BLOCK, SWEEPS, PROBES = 32, 16, 3, 8

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    import lowrank.torch as lt

    torch.set_num_threads(1)
    method, tokens, block, sweeps = sys.argv[1], *map(int, sys.argv[2:5])
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4096, 4096, bias=False), torch.nn.Tanh(),
                              torch.nn.Linear(4096, 11008, bias=False))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.02, generator=g)
    data = [torch.randn(tokens, 4096, generator=g) for _ in range(2)]
    loss = lambda m, x: m(x).square().mean()
    lt.estimate_gradient_svd(net[:1], data, 2, n_sweeps=1, block_size=2, loss_fn=loss,
                             progress=False)  # warm up the code paths on a small problem

    def vm(key):
        with open("/proc/self/status") as f:
            return int(next(x for x in f if x.startswith(key + ":")).split()[1]) * 1024

    with open("/proc/self/clear_refs", "w") as f:  # peak RSS := current RSS (Linux >= 4.0)
        f.write("5")
    base = vm("VmRSS")
    if method == "plain":  # a frozen forward and backward: what every estimation needs
        net.requires_grad_(False)
        for x in data:
            loss(net, x.detach().requires_grad_(True)).backward()
    elif method == "exact":
        lt.estimate_gradients(net, data, loss_fn=loss, targets=["0", "2"], progress=False)
    else:
        lt.estimate_gradient_svd(net, data, 16, n_sweeps=sweeps, block_size=block,
                                 loss_fn=loss, targets=["0", "2"], progress=False)
    print(json.dumps({"extra": vm("VmHWM") - base}))
    """
)


def _peak(method, sweeps=SWEEPS):
    # glibc raises its mmap threshold after freeing a mapped block; pinned, every block of
    # 128 KiB or more is mapped and unmapped, so the maximum RSS is the allocations' peak
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, method, str(TOKENS), str(BLOCK),
                          str(sweeps)], capture_output=True, text=True, check=True, timeout=600,
                         env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])["extra"]


def _state(sweeps):
    """Bytes the sketch keeps per the docs' formula: basis, image, short-side probe images."""
    return 4 * sum((m + n) * sweeps * BLOCK + min(m, n) * PROBES for m, n in SHAPES)


@pytest.mark.slow
def test_peak_memory_is_linear_in_the_sides():
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak resident set")
    plain = _peak("plain")
    held = _peak("exact")
    sketch, exact = _peak("sketch") - plain, held - plain
    gradients = 4 * sum(m * n for m, n in SHAPES)
    # basis, image and probes (K = sweeps * block + probes) plus two product blocks,
    # per layer; the layers' inputs (tokens x in) and outputs (tokens x out) per batch
    state = 4 * sum((m + n) * (SWEEPS * BLOCK + PROBES + 2 * BLOCK) for m, n in SHAPES)
    activations = 4 * TOKENS * sum(m + n for m, n in SHAPES) * 4
    # the exact path holds every gradient (its working set beside them can be smaller
    # than a plain backward's: it folds each weight gradient in place)
    assert held >= gradients
    assert sketch <= 2 * state + activations, (sketch, state, activations)
    assert exact >= 20 * sketch, (exact, sketch)
    # nothing beyond the basis, its image and the probes' images: no product copies, no Y
    assert sketch <= _state(SWEEPS) + activations / 4, (sketch, _state(SWEEPS))


@pytest.mark.slow
def test_peak_memory_grows_by_m_plus_n_per_basis_column():
    # Two more sweeps add 2 * BLOCK basis columns, each (m + n) numbers per layer; a copy
    # of a product or an m x n buffer per sweep would add more, a basis not kept less.
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak resident set")
    growth = _peak("sketch", SWEEPS + 2) - _peak("sketch", SWEEPS)
    expected = _state(SWEEPS + 2) - _state(SWEEPS)
    assert 0.75 * expected <= growth <= 1.25 * expected, (growth, expected)
