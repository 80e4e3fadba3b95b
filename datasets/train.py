"""Training and validation of the bundled Shakespeare models.

``shakespeare-lm`` is a causal decoder trained on next-token prediction; ``shakespeare-mlm`` a
bidirectional encoder trained on masked-token prediction (15% of tokens; of those 80% become
``<mask>``, 10% a random token, 10% stay). Both read random windows of the training plays and are
validated on the held-out plays, against a unigram model fitted on the training plays.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .models import EntmaxTransformer, ModelConfig, Restrict
from .text import play_texts, split_plays
from .tokenizer import Tokenizer

__all__ = [
    "TrainConfig",
    "evaluate_model",
    "held_out_windows",
    "mlm_mask",
    "token_streams",
    "train_model",
]


@dataclass
class TrainConfig:
    """Optimisation settings (the defaults are the bundled models' recipe)."""

    steps: int = 600
    batch_size: int = 8
    seq_len: int = 512
    short_len: int = 128
    short_fraction: float = 0.6
    lr: float = 2e-3
    warmup: int = 60
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    mask_prob: float = 0.15
    seed: int = 0


# Encoded plays per tokenizer (vocabulary and merges): a build and an accuracy run in one
# process (``sparsebench run``) encode the text once.
_STREAMS: dict[int, dict[str, list[Tensor]]] = {}


def token_streams(tok: Tokenizer) -> dict[str, list[Tensor]]:
    """Token ids of every play, per split: ``{"train": [ids, ...], "eval": [...]}``."""
    key = hash((tuple(tok.vocab), tuple(map(tuple, tok.merges))))
    if key not in _STREAMS:
        texts = play_texts()
        _STREAMS[key] = {
            split: [torch.tensor(tok.encode(texts[p]), dtype=torch.long) for p in plays]
            for split, plays in split_plays().items()
        }
    return {split: list(streams) for split, streams in _STREAMS[key].items()}


def _windows(streams: list[Tensor], n: int, length: int, g: torch.Generator) -> Tensor:
    sizes = torch.tensor([len(s) - length for s in streams], dtype=torch.float)
    which = torch.multinomial(sizes.clamp(min=0), n, replacement=True, generator=g)
    out = torch.empty(n, length, dtype=torch.long)
    for i, w in enumerate(which.tolist()):
        start = int(torch.randint(0, len(streams[w]) - length, (1,), generator=g))
        out[i] = streams[w][start : start + length]
    return out


def mlm_mask(ids: Tensor, vocab: int, prob: float, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Masked inputs and targets (``-100`` where no prediction is asked)."""
    from .tokenizer import SPECIALS, Tokenizer

    chosen = torch.rand(ids.shape, generator=g) < prob
    targets = torch.where(chosen, ids, -100)
    roll = torch.rand(ids.shape, generator=g)
    inputs = ids.clone()
    inputs[chosen & (roll < 0.8)] = Tokenizer.mask_id
    rand_tok = torch.randint(len(SPECIALS), vocab, ids.shape, generator=g)
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = rand_tok[swap]
    return inputs, targets


def _forward(
    model: EntmaxTransformer,
    ids: Tensor,
    causal: bool,
    vocab: int,
    prob: float,
    g: torch.Generator,
    restrict: Restrict | None = None,
) -> tuple[Tensor, Tensor]:
    """Logits and targets (``-100`` where no prediction is asked) of one batch.

    The inputs are made (and masked, with the CPU generator ``g``) on the CPU, then moved to
    the model's device.
    """
    if causal:
        inputs, targets = ids[:, :-1], ids[:, 1:]
    else:
        inputs, targets = mlm_mask(ids, vocab, prob, g)
    device = next(model.parameters()).device
    inputs, targets = inputs.to(device), targets.to(device)
    return model(inputs, restrict=restrict), targets


def _loss(
    model: EntmaxTransformer,
    ids: Tensor,
    causal: bool,
    vocab: int,
    prob: float,
    g: torch.Generator,
    restrict: Restrict | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Summed loss, correct predictions and number of predictions of one batch."""
    logits, targets = _forward(model, ids, causal, vocab, prob, g, restrict)
    return _totals(logits, targets)


def _totals(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Summed loss, correct predictions and number of predictions of logits and targets."""
    flat_t = targets.reshape(-1)
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), flat_t, ignore_index=-100, reduction="sum"
    )
    keep = flat_t != -100
    correct = (logits.reshape(-1, logits.shape[-1]).argmax(-1) == flat_t)[keep].sum()
    return loss, correct, keep.sum()


def _per_window(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Summed loss, correct predictions and predictions of each window (row) of a batch."""
    rows = targets.shape[0]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=-100,
        reduction="none",
    ).view(rows, -1)
    keep = targets != -100
    correct = (logits.argmax(-1) == targets) & keep
    return loss.double().sum(1), correct.sum(1), keep.sum(1)


def evaluate_model(
    model: EntmaxTransformer,
    streams: list[Tensor],
    *,
    seq_len: int = 512,
    mask_prob: float = 0.15,
    seed: int = 1234,
    restrict: Restrict | None = None,
    max_windows: int | None = None,
) -> dict:
    """Loss (nats per predicted token), accuracy and perplexity on non-overlapping windows.

    The windows are every non-overlapping window of ``seq_len`` tokens of the streams (the
    held-out plays), in order; ``max_windows`` keeps the first ones (``None``: all). The
    masking of the encoder's evaluation is seeded, so figures are reproducible. Windows run on
    the model's device.

    Returns:
        ``loss``, ``accuracy``, ``perplexity``, ``tokens`` (= ``num_tokens``: predictions
        scored), ``windows``, and ``per_window``: ``{"loss": [summed loss], "correct":
        [correct predictions], "tokens": [predictions]}`` of each window, in order, from which
        a bootstrap over windows recomputes the figures.
    """
    causal = model.cfg.causal
    g = torch.Generator().manual_seed(seed)
    windows = held_out_windows(streams, seq_len, causal)
    if max_windows is not None:
        windows = windows[:max_windows]
    tot_loss = tot_correct = tot_n = 0.0
    per: dict[str, list] = {"loss": [], "correct": [], "tokens": []}
    model.eval()
    with torch.no_grad():
        for i in range(0, len(windows), 8):
            ids = torch.stack(windows[i : i + 8])
            logits, targets = _forward(
                model, ids, causal, model.cfg.vocab_size, mask_prob, g, restrict
            )
            loss, correct, n = _totals(logits, targets)
            tot_loss += float(loss)
            tot_correct += float(correct)
            tot_n += float(n)
            for name, values in zip(per, _per_window(logits, targets), strict=True):
                per[name] += values.tolist()
    loss = tot_loss / tot_n
    return {
        "loss": loss,
        "accuracy": tot_correct / tot_n,
        "perplexity": math.exp(loss),
        "tokens": int(tot_n),
        "num_tokens": int(tot_n),
        "windows": len(windows),
        "per_window": per,
    }


def held_out_windows(streams: list[Tensor], seq_len: int, causal: bool) -> list[Tensor]:
    """Every non-overlapping window of the streams, in order: what :func:`evaluate_model` scores.

    A decoder's window holds ``seq_len + 1`` tokens (inputs and next-token targets).
    """
    span = seq_len + 1 if causal else seq_len
    return [s[i : i + span] for s in streams for i in range(0, len(s) - span + 1, span)]


def unigram_loss(train: list[Tensor], evals: list[Tensor], vocab: int) -> float:
    """Cross-entropy (nats/token) of the eval tokens under add-one-smoothed train unigrams."""
    counts = torch.bincount(torch.cat(train), minlength=vocab).double() + 1
    logp = (counts / counts.sum()).log()
    ids = torch.cat(evals)
    return float(-logp[ids].mean())


def train_model(
    cfg: ModelConfig,
    tc: TrainConfig,
    streams: dict[str, list[Tensor]],
    *,
    log: Callable[[str], None] = print,
) -> tuple[EntmaxTransformer, dict]:
    """Train a model; returns it and a log of the run (steps, wall time, losses)."""
    torch.manual_seed(tc.seed)
    g = torch.Generator().manual_seed(tc.seed)
    model = EntmaxTransformer(cfg)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tc.weight_decay}, {"params": other, "weight_decay": 0}],
        lr=tc.lr,
        betas=(0.9, 0.98),
    )
    short_steps = int(tc.steps * tc.short_fraction)

    def lr_at(step: int) -> float:
        if step < tc.warmup:
            return tc.lr * (step + 1) / tc.warmup
        frac = (step - tc.warmup) / max(1, tc.steps - tc.warmup)
        return tc.lr * 0.5 * (1 + math.cos(math.pi * frac))

    history = []
    t0 = time.perf_counter()
    model.train()
    for step in range(tc.steps):
        length = tc.short_len if step < short_steps else tc.seq_len
        # Short windows first (cheap), full context after, so the model learns long range too.
        batch = tc.batch_size * (tc.seq_len // length) if step < short_steps else tc.batch_size
        ids = _windows(streams["train"], batch, length + (1 if cfg.causal else 0), g)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss, _, n = _loss(model, ids, cfg.causal, cfg.vocab_size, tc.mask_prob, g)
        opt.zero_grad(set_to_none=True)
        (loss / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        if step % 50 == 0 or step == tc.steps - 1:
            elapsed = time.perf_counter() - t0
            history.append(
                {
                    "step": step,
                    "loss": round(loss.item() / float(n), 4),
                    "seconds": round(elapsed, 1),
                }
            )
            log(
                f"step {step:5d}/{tc.steps}  len {length}  loss {loss.item() / float(n):.3f}  "
                f"{elapsed / 60:.1f} min"
            )
    wall = time.perf_counter() - t0
    model.eval()
    return model, {"steps": tc.steps, "wall_seconds": round(wall, 1), "history": history}
