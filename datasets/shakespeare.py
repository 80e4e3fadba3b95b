"""The bundled datasets: Shakespeare models trained here, and the Q/K data built from them.

``train(name)`` reproduces a bundled model (weights, config, model card) under
``datasets/bundled/<name>/``; ``build(name, out)`` runs the bundled model over sequences of its
training and held-out plays and writes the dataset directory.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from sparsebench.methods import real_tokens

from .models import EntmaxTransformer, ModelConfig
from .qkdata import DatasetError, QKData
from .text import EVAL_PLAYS, SDIST_SHA256, TEXT_LICENSE, TEXT_SOURCE
from .tokenizer import Tokenizer
from .train import TrainConfig, evaluate_model, token_streams, train_model, unigram_loss

__all__ = ["BUNDLED", "MODELS", "build", "bundled_dir", "load_model", "load_tokenizer", "train"]

BUNDLED = Path(__file__).resolve().parent / "bundled"
VOCAB_SIZE = 1024
#: Masking of the encoder's evaluation (the standard 15%, whatever the training rate).
EVAL_MASK_PROB = 0.15

#: Bundled model name -> (model config, training recipe, sequences per split for the dataset).
MODELS: dict[str, tuple[ModelConfig, TrainConfig, dict[str, int]]] = {
    "shakespeare-lm": (
        ModelConfig(vocab_size=VOCAB_SIZE, causal=True),
        TrainConfig(),
        {"train": 48, "eval": 32},
    ),
    "shakespeare-mlm": (
        ModelConfig(vocab_size=VOCAB_SIZE, causal=False),
        # Masked-LM gets 15% of the signal of next-token prediction per token: train on a
        # higher mask rate (more predictions per step) and for longer; it is still evaluated
        # with the standard 15% masking.
        TrainConfig(steps=900, short_fraction=0.75, mask_prob=0.3),
        {"train": 48, "eval": 32},
    ),
}


def bundled_dir(name: str) -> Path:
    """Folder of a bundled model."""
    if name not in MODELS:
        raise DatasetError(f"no bundled model {name!r}; bundled: {', '.join(MODELS)}")
    return BUNDLED / name


def load_tokenizer() -> Tokenizer:
    """The tokenizer shared by the bundled models."""
    path = BUNDLED / "tokenizer.json"
    if not path.exists():
        raise DatasetError(f"{path} is missing; run `sparsebench datasets train shakespeare-lm`")
    return Tokenizer.load(path)


def load_model(name: str) -> EntmaxTransformer:
    """A bundled model, ready for inference."""
    folder = bundled_dir(name)
    if not (folder / "model.safetensors").exists():
        raise DatasetError(f"{folder} has no weights; run `sparsebench datasets train {name}`")
    return EntmaxTransformer.load(folder)


def train(name: str, *, steps: int | None = None, log: Callable[[str], None] = print) -> Path:
    """Train a bundled model from scratch and write its weights and model card.

    Most of its length is the model card, built from what training and validation measured.
    """
    cfg, tc, _ = MODELS[name] if name in MODELS else (None, None, None)
    if cfg is None:
        raise DatasetError(f"no bundled model {name!r}; bundled: {', '.join(MODELS)}")
    if steps is not None:
        tc = TrainConfig(**{**asdict(tc), "steps": steps})
    tok_path = BUNDLED / "tokenizer.json"
    if tok_path.exists():
        tok = Tokenizer.load(tok_path)
    else:
        from .text import play_texts, split_plays

        texts = play_texts()
        tok = Tokenizer.train([texts[p] for p in split_plays()["train"]], VOCAB_SIZE)
        BUNDLED.mkdir(parents=True, exist_ok=True)
        tok.save(tok_path)
        log(f"trained the tokenizer ({len(tok)} tokens) -> {tok_path}")
    streams = token_streams(tok)
    model, run = train_model(cfg, tc, streams, log=log)
    folder = bundled_dir(name)
    model.save(folder)
    # Evaluate the stored (float16-rounded) weights: the figures belong to what is shipped.
    shipped = EntmaxTransformer.load(folder)
    val = evaluate_model(shipped, streams["eval"], seq_len=cfg.max_len, mask_prob=EVAL_MASK_PROB)
    uni = unigram_loss(streams["train"], streams["eval"], cfg.vocab_size)
    data = build_data(name, shipped, tok, streams, log=log)
    card = {
        "name": name,
        "kind": "causal language model" if cfg.causal else "masked language model (encoder)",
        "attention": f"alpha-entmax, alpha={cfg.alpha} (entmax15, exact)",
        "config": asdict(cfg),
        "parameters": shipped.num_params(),
        "weights": "float16 safetensors (model.safetensors), loaded as float32",
        "tokenizer": f"byte-pair encoding, {len(tok)} tokens, trained on the training plays",
        "text_source": TEXT_SOURCE,
        "text_sha256": SDIST_SHA256,
        "text_license": TEXT_LICENSE,
        "eval_plays": list(EVAL_PLAYS),
        "train_tokens": int(sum(len(s) for s in streams["train"])),
        "training": {
            "command": f"sparsebench datasets train {name}"
            + (f" --steps {steps}" if steps is not None else ""),
            **asdict(tc),
            "wall_seconds": run["wall_seconds"],
            "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}",
            "history": run["history"],
        },
        "validation": {
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in val.items()},
            "unigram_loss": round(uni, 4),
            "loss_below_unigram_nats": round(uni - val["loss"], 4),
        },
        "gold_sparsity_per_layer": data.split("eval").gold_sparsity(),
    }
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (folder / "README.md").write_text(_model_card_md(card))
    log(
        f"wrote {folder}: validation loss {val['loss']:.3f} (unigram {uni:.3f}), "
        f"accuracy {val['accuracy']:.3f}"
    )
    return folder


def _model_card_md(card: dict) -> str:
    v, t = card["validation"], card["training"]
    rows = "\n".join(f"| {i} | {s:.4f} |" for i, s in enumerate(card["gold_sparsity_per_layer"]))
    cfg = card["config"]
    masking = (
        ""
        if cfg["causal"]
        else f"\n- Masking: {int(t['mask_prob'] * 100)}% of tokens in training (80% `<mask>`, "
        f"10% random, 10% kept); validation masks the standard 15% with a fixed seed."
    )
    val_row = (
        f"| {v['loss']:.4f} | {v['accuracy']:.4f} | {v['perplexity']:.2f} "
        f"| {v['unigram_loss']:.4f} | {v['loss_below_unigram_nats']:.4f} nats |"
    )
    return f"""# {card["name"]}

A {card["kind"]} with {card["attention"]} in every layer, trained on Shakespeare's plays.
Generated by `{t["command"]}`; every figure below comes from that run.

- Size: {cfg["n_layers"]} layers, {cfg["n_heads"]} heads of {cfg["d_model"] // cfg["n_heads"]},
  model width {cfg["d_model"]}, feed-forward {cfg["d_ff"]}, context {cfg["max_len"]} tokens,
  {card["parameters"]:,} parameters; {card["weights"]}.
- Tokenizer: {card["tokenizer"]}.
- Text: {card["text_source"]} (sha256 `{card["text_sha256"][:16]}…`); {card["text_license"]}.
  Held-out plays (never trained on): {", ".join(card["eval_plays"])}.
- Training: {t["steps"]} steps of AdamW (lr {t["lr"]}, warm-up {t["warmup"]}, cosine decay,
  weight decay {t["weight_decay"]}, gradient clipping {t["grad_clip"]}); the first
  {int(t["short_fraction"] * 100)}% of steps on {t["short_len"]}-token windows, then
  {t["seq_len"]}-token windows; {card["train_tokens"]:,} training tokens; seed {t["seed"]}.
  Wall time {t["wall_seconds"] / 60:.1f} min on {t["machine"]}.{masking}

## Validation (held-out plays, {v["windows"]} windows of {cfg["max_len"]} tokens)

| loss (nats/token) | accuracy | perplexity | unigram loss | below unigram |
|---|---|---|---|---|
{val_row}

## Gold α-entmax sparsity per layer (eval split of the built dataset)

| layer | sparsity |
|---|---|
{rows}
"""


def _sequences(streams: list[torch.Tensor], count: int, max_len: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    seqs = []
    for _ in range(count):
        length = int(torch.randint(max_len // 4, max_len + 1, (1,), generator=g))
        w = int(torch.randint(0, len(streams), (1,), generator=g))
        start = int(torch.randint(0, len(streams[w]) - length, (1,), generator=g))
        seqs.append(streams[w][start : start + length])
    return seqs


def build_data(
    name: str,
    model: EntmaxTransformer,
    tok: Tokenizer,
    streams,
    *,
    counts: dict[str, int] | None = None,
    log: Callable[[str], None] = print,
) -> QKData:
    """Run ``model`` over seeded windows of each split's plays and collect q, k, v."""
    cfg = model.cfg
    counts = counts or MODELS[name][2]
    qs, ks, vs, lens, splits = [], [], [], [], []
    n = cfg.max_len
    for si, (split, count) in enumerate(counts.items()):
        seqs = _sequences(streams[split], count, n, seed=100 + si)
        for i in range(0, len(seqs), 8):
            chunk = seqs[i : i + 8]
            ids = torch.zeros(len(chunk), n, dtype=torch.long)
            lengths = torch.tensor([len(s) for s in chunk])
            for j, s in enumerate(chunk):
                ids[j, : len(s)] = s
            cap: list = []
            with torch.no_grad():
                model(ids, lengths, capture=cap)
            pad = ~real_tokens(lengths, len(chunk), n).view(len(chunk), 1, n, 1)
            for store, which in ((qs, 0), (ks, 1), (vs, 2)):
                t = torch.stack([c[which] for c in cap], dim=1)  # (b, layers, H, n, dh)
                store.append(t.masked_fill(pad.unsqueeze(1), 0.0).contiguous())
            lens.append(lengths)
            splits += [split] * len(chunk)
            log(f"  {split}: {min(i + 8, len(seqs))}/{len(seqs)} sequences")
    return QKData(
        q=torch.cat(qs),
        k=torch.cat(ks),
        v=torch.cat(vs),
        lengths=torch.cat(lens),
        causal=cfg.causal,
        alpha=cfg.alpha,
        splits=splits,
        meta={
            "name": name,
            "version": 1,
            "model": f"bundled {name} ({model.num_params():,} parameters)",
            "tokenization": f"byte-pair encoding, {len(tok)} tokens (bundled tokenizer.json)",
            "text_source": TEXT_SOURCE,
            "text_license": TEXT_LICENSE,
            "eval_plays": list(EVAL_PLAYS),
            "sequences": "seeded windows of 128-512 tokens from each split's plays",
        },
    )


def build(
    name: str,
    out: str | Path,
    *,
    counts: dict[str, int] | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Build the dataset of a bundled model into ``out`` (atomically).

    ``counts`` overrides the number of sequences per split (``{"train": 48, "eval": 32}``).
    """
    t0 = time.perf_counter()
    model = load_model(name)
    tok = load_tokenizer()
    streams = token_streams(tok)
    data = build_data(name, model, tok, streams, counts=counts, log=log)
    extra = {
        "gold_sparsity_per_layer": data.split("eval").gold_sparsity(),
        "build_seconds": round(time.perf_counter() - t0, 1),
    }
    path = data.save(out, extra_card=extra)
    log(f"built {name} in {path} ({extra['build_seconds']} s)")
    return path
