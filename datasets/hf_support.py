"""Inputs and cards of Hugging Face extraction: text files, splits, padded batches, the card."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .card import DatasetError, name_from
from .qkdata import sha256_file

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "extraction_card",
    "pad_batch",
    "read_texts",
    "tail_splits",
    "text_source",
]

#: Longest sequence extracted by default, in tokens, special tokens included.
DEFAULT_MAX_LENGTH = 128


def read_texts(path: str | os.PathLike) -> list[str]:
    """The texts of a UTF-8 file, one per line; blank lines are skipped, ends stripped.

    Raises:
        DatasetError: if the file cannot be read, is not UTF-8, or holds no text.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"no texts file {path}; pass a text file with one text per line")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not UTF-8 text; convert it to UTF-8") from None
    except OSError as e:
        raise DatasetError(f"cannot read {path} ({e.strerror}); check its permissions") from None
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise DatasetError(f"{path} holds no text; write one text per line")
    return texts


def tail_splits(count: int, eval_fraction: float) -> list[str]:
    """Split names for ``count`` texts: the last ``round(count · eval_fraction)`` are ``eval``.

    The held-out texts are the end of the file, contiguous, so neighbouring lines of one
    document do not land on both sides. A fraction above 0 holds out at least one text and
    keeps at least one for training.

    Raises:
        DatasetError: for a fraction outside ``[0, 1)``, or one text with a fraction above 0.
    """
    if not (isinstance(eval_fraction, (int, float)) and 0 <= eval_fraction < 1):
        raise DatasetError(f"eval_fraction must lie in [0, 1), got {eval_fraction!r}")
    if eval_fraction == 0:
        return ["train"] * count
    if count < 2:
        raise DatasetError(
            f"{count} text cannot be split into train and eval; add texts or pass eval_fraction 0"
        )
    num_eval = min(max(round(count * eval_fraction), 1), count - 1)
    return ["train"] * (count - num_eval) + ["eval"] * num_eval


def pad_batch(encoded: dict[str, Any], idx: Sequence[int], pad_id: int | None) -> dict[str, Tensor]:
    """The sequences ``idx`` of a tokenizer's output, right-padded into tensors.

    ``input_ids`` are padded with the tokenizer's pad token (0 when it has none: padded
    positions are masked and dropped, so the id only has to exist); ``attention_mask`` with 0
    (and 1 on the real tokens when the tokenizer gave none); other per-token fields with 0.
    """
    ids = [encoded["input_ids"][i] for i in idx]
    width = max(len(x) for x in ids)
    out: dict[str, Tensor] = {}
    for key, values in encoded.items():
        if key == "attention_mask" or not isinstance(values, list):
            continue
        rows = [values[i] for i in idx]
        if any(not isinstance(r, list) or len(r) != len(x) for r, x in zip(rows, ids, strict=True)):
            continue
        fill = (pad_id if pad_id is not None else 0) if key == "input_ids" else 0
        out[key] = torch.tensor([r + [fill] * (width - len(r)) for r in rows], dtype=torch.long)
    out["attention_mask"] = torch.tensor(
        [[1] * len(x) + [0] * (width - len(x)) for x in ids], dtype=torch.long
    )
    return out


def extraction_card(
    model: str,
    net,
    tok,
    *,
    alpha: float,
    causal: bool,
    scalings: list[float],
    max_length: int,
    head_dim: int,
    transformers_version: str,
) -> dict[str, Any]:
    """The card fields of an extraction: model, attention, heads, the scaling convention."""
    cfg = net.config.get_text_config() if hasattr(net.config, "get_text_config") else net.config
    heads = int(cfg.num_attention_heads)
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    standard = all(math.isclose(s, head_dim**-0.5, rel_tol=1e-6) for s in scalings)
    masks = "causal mask and padding masked" if causal else "padding masked"
    return {
        "name": name_from(Path(model).name if os.path.isdir(model) else model),
        "model": str(getattr(net.config, "name_or_path", "") or model),
        "model_type": net.config.model_type,
        "architecture": type(net).__name__,
        "tokenization": (
            f"{type(tok).__name__} of the model ({tok.vocab_size} tokens), special tokens "
            f"added, truncated to {max_length}"
        ),
        "attention": f"softmax replaced by {alpha}-entmax over q.k/sqrt(d), {masks}",
        "num_layers": len(scalings),
        "num_heads": heads,
        "num_key_value_heads": kv_heads,
        "kv_heads": (
            f"grouped-query attention expanded: query head h reads key/value head "
            f"h // {heads // kv_heads}; k and v are stored per query head"
            if kv_heads != heads
            else "one key/value head per query head"
        ),
        "head_dim": head_dim,
        "model_scaling": [round(s, 8) for s in scalings],
        "scaling_note": (
            "the model scales q.k by 1/sqrt(d); queries stored as the model computes them"
            if standard
            else "the model scales q.k by model_scaling (per layer), not 1/sqrt(d); stored "
            "queries are multiplied by model_scaling*sqrt(d), so q.k/sqrt(d) gives its logits"
        ),
        "max_length": max_length,
        "transformers_version": transformers_version,
    }


def text_source(path: str | os.PathLike) -> dict[str, str]:
    """Card fields naming a texts file: its name and sha256."""
    path = Path(path)
    return {"text_source": path.name, "text_sha256": sha256_file(path)}
