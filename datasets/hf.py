"""Q/K data from Hugging Face models, encoder or decoder, with softmax swapped for α-entmax.

Any architecture whose attention goes through transformers' attention interface can be
extracted: BERT- and RoBERTa-family encoders, GPT-2, Llama, Qwen, Mistral and the other decoders
transformers ships. The model is loaded with ``attn_implementation`` set to sparsebench's
α-entmax attention (:mod:`.hf_attention`), which records each layer's queries, keys and values
as the model's attention dot-products them (after rotary embeddings), with:

* queries stored unscaled: logits are ``q·k/√d``; a model that scales ``q·kᵀ`` by another
  factor has it folded into the stored queries (the card's ``model_scaling`` says by what);
* causality read from the mask the model builds (causal for decoders), checked to be the
  padding mask plus, for decoders, the future, in every layer;
* grouped-query attention expanded: query head ``h`` reads key/value head ``h // groups``, so
  ``k`` and ``v`` are stored per query head (a dataset pairs each query head with its keys);
  :func:`~.hf_attention.recording` with ``expand_kv=False`` keeps the model's key/value heads
  for callers that want the raw tensors;
* sequences right-padded in batches of similar length, padded keys masked, so a sequence's
  tensors do not depend on the batch it ran in.

:func:`extract_dataset` turns a text file into a saved dataset (``sparsebench datasets
extract``). The ``minilm-entmax`` dataset built on :func:`extract_hf` lives in :mod:`.minilm`.

Needs the ``hf`` extra: ``pip install -c constraints.txt -e ".[hf]"``. Nothing is downloaded at
run time: ``HF_HUB_OFFLINE=1`` is set before transformers is imported.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from .hf_attention import (
    ATTN_NAME,
    INSTALL_HINT,
    mask_causality,
    recording,
    register,
    restricted_attention,
    transformers_module,
)
from .hf_support import (
    DEFAULT_MAX_LENGTH,
    extraction_card,
    pad_batch,
    read_texts,
    tail_splits,
    text_source,
)
from .qkdata import DatasetError, QKData

__all__ = [
    "ATTN_NAME",
    "DEFAULT_MAX_LENGTH",
    "INSTALL_HINT",
    "check_encoder",
    "entmax_model",
    "extract_dataset",
    "extract_hf",
    "restricted_attention",
]


def _load_error(model: str, e: Exception, what: str = "model") -> DatasetError:
    text = str(e).strip()
    reason = text.splitlines()[0] if text else type(e).__name__
    if "trust_remote_code" in text:
        return DatasetError(
            f"{model} needs custom code (trust_remote_code); sparsebench loads only "
            "architectures that transformers ships"
        )
    if not os.path.isdir(model):
        path_like = os.path.isabs(model) or model.startswith((".", "~")) or model.count("/") > 1
        hint = "" if path_like else f" (hf download {model}, with network access)"
        return DatasetError(
            f"model {model!r} not found locally; pass a local path or pre-download it{hint}"
        )
    if what == "model" and not os.path.isfile(os.path.join(model, "config.json")):
        return DatasetError(
            f"{model} has no config.json; pass a directory saved by save_pretrained"
        )
    return DatasetError(f"cannot load the {what} of {model} ({reason}); pass a model directory")


def entmax_model(
    model: str | os.PathLike,
    *,
    alpha: float = 1.5,
    progress: bool = True,
    device: str | torch.device | None = None,
):
    """Load ``(model, tokenizer)`` with α-entmax attention, float32, in eval mode, offline.

    Args:
        model: a local model directory, or a hub name already in the local Hugging Face cache;
            any model ``AutoModel`` loads whose attention uses transformers' attention interface.
        alpha: entmax α (> 1); 1.5 uses ``entmax15``, others ``entmax_bisect``.
        progress: show transformers' progress bar while the weights load.
        device: where to run the model (default: the CPU).

    Returns:
        The model (``AutoModel``: the base model, no task head) and its tokenizer.

    Raises:
        DatasetError: if transformers is missing, α is not > 1, or the model is not available
            offline or cannot be loaded.
    """
    if not alpha > 1:
        raise DatasetError(f"alpha must be > 1 for a sparse entmax, got {alpha}")
    register()
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        net = AutoModel.from_pretrained(
            str(model), attn_implementation=ATTN_NAME, local_files_only=True, dtype=torch.float32
        )
        try:
            tok = AutoTokenizer.from_pretrained(str(model), local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise _load_error(str(model), e, "tokenizer") from None
    except (OSError, ValueError, KeyError) as e:
        raise _load_error(str(model), e) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    for module in net.modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(cfg, "to_dict"):
            cfg.entmax_alpha = float(alpha)
    if device is not None:
        net.to(device)
    net.eval()
    return net, tok


def check_encoder(net) -> None:
    """Raise :class:`DatasetError` when ``net`` is configured as a decoder."""
    cfg = net.config
    if getattr(cfg, "is_decoder", False) or getattr(cfg, "is_encoder_decoder", False):
        raise DatasetError(
            f"{cfg.model_type} is configured as a decoder; this task takes BERT/RoBERTa encoders"
        )


def _num_layers(net) -> int:
    cfg = net.config.get_text_config() if hasattr(net.config, "get_text_config") else net.config
    return int(cfg.num_hidden_layers)


def _run_batch(net, batch: dict[str, Tensor], model: str, layers: int):
    """One forward pass under :func:`recording`; the records, checked to cover every layer."""
    device = next(net.parameters()).device
    with recording() as records, torch.no_grad():
        try:
            net(**{k: t.to(device) for k, t in batch.items()})
        except (IndexError, RuntimeError) as e:
            width = batch["input_ids"].shape[1]
            reason = str(e).strip().splitlines()[0]
            raise DatasetError(
                f"{model} failed on sequences of {width} tokens ({reason}); pass a smaller "
                "max_length"
            ) from None
    if len(records) != layers:
        raise DatasetError(
            f"{net.config.model_type}: the entmax attention ran in {len(records)} of {layers} "
            "layers; this architecture does not route its attention through transformers' "
            "attention interface, so sparsebench cannot extract it"
        )
    return records


def extract_hf(
    model: str | os.PathLike,
    texts: Sequence[str],
    *,
    alpha: float = 1.5,
    max_length: int = DEFAULT_MAX_LENGTH,
    batch_size: int = 8,
    split_names: Sequence[str] | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    log: Callable[[str], None] = print,
) -> QKData:
    """Run a model with α-entmax attention over ``texts`` and record its queries and keys.

    Its length is input checks, the batched capture loop and the card, which share the
    tokenizer, the model and the recorded tensors.

    Texts are tokenized with the model's tokenizer (special tokens added, truncated to
    ``max_length``) and run in right-padded batches of similar length; padded keys are masked,
    so they get exactly zero probability and the real tokens' q, k and v do not depend on the
    batch. Whether the data is causal is read from the model's own attention masks.

    Args:
        model: local model directory or cached hub name (see :func:`entmax_model`).
        texts: the sequences.
        alpha: entmax α replacing the softmax.
        max_length: longest sequence in tokens, special tokens included.
        batch_size: sequences per forward pass.
        split_names: split of each text (default: all ``"train"``).
        progress: log a line per batch.
        device: where to run the model (default: the CPU); the data is returned on the CPU.
        log: where progress lines go.

    Returns:
        ``QKData`` with q (unscaled), k, v as ``(num_texts, layers, heads, n, head_dim)``,
        zero-padded past each real length (``n`` is the longest), causal for decoders.

    Raises:
        DatasetError: if transformers is missing, the inputs are empty or inconsistent, the
            model cannot be loaded offline, or its attention cannot be extracted.
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
    net, tok = entmax_model(model, alpha=alpha, progress=progress, device=device)
    if getattr(net.config, "is_encoder_decoder", False):
        raise DatasetError(
            f"{net.config.model_type} is an encoder-decoder model; sparsebench extracts "
            "encoders and decoders (self-attention only)"
        )
    layers = _num_layers(net)
    encoded = tok(texts, truncation=True, max_length=max_length)
    ids = encoded["input_ids"]
    empty = [i for i, x in enumerate(ids) if len(x) == 0]
    if empty:
        raise DatasetError(f"text {empty[0]} has no tokens; drop empty texts")
    # Batches are formed from sequences of similar length, so little compute goes to padding;
    # padded keys are masked, so the batch a sequence lands in does not change its tensors.
    order = sorted(range(len(texts)), key=lambda i: (len(ids[i]), i))
    width = max(len(x) for x in ids)
    Q = K = V = torch.empty(0)
    lengths = torch.tensor([len(x) for x in ids], dtype=torch.long)
    causal = None
    scalings: list[float] = []
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        batch = pad_batch(encoded, idx, tok.pad_token_id)
        records = _run_batch(net, batch, str(model), layers)
        batch_causal = mask_causality(records, lengths[idx])
        if causal is not None and batch_causal != causal:
            raise DatasetError(f"{model} masked some batches causally and others not")
        causal = batch_causal
        if start == 0:
            _, heads, _, d = records[0].q.shape
            scalings = [r.scaling for r in records]
            Q = torch.zeros(len(texts), layers, heads, width, d)
            K = torch.zeros_like(Q)
            V = torch.zeros(len(texts), layers, heads, width, records[0].v.shape[-1])
        for j, i in enumerate(idx):
            L = int(lengths[i])
            for layer, rec in enumerate(records):
                Q[i, layer, :, :L] = rec.q[j, :, :L].cpu()
                K[i, layer, :, :L] = rec.k[j, :, :L].cpu()
                V[i, layer, :, :L] = rec.v[j, :, :L].cpu()
        if progress:
            log(f"  extracted {min(start + batch_size, len(texts))}/{len(texts)} sequences")
    meta = extraction_card(
        str(model),
        net,
        tok,
        alpha=alpha,
        causal=bool(causal),
        scalings=scalings,
        max_length=max_length,
        head_dim=int(Q.shape[4]),
        transformers_version=transformers_module().__version__,
    )
    return QKData(
        q=Q,
        k=K,
        v=V,
        lengths=lengths,
        causal=bool(causal),
        alpha=alpha,
        splits=list(split_names) if split_names is not None else [],
        meta=meta,
    )


def extract_dataset(
    model: str | os.PathLike,
    texts_file: str | os.PathLike,
    *,
    alpha: float = 1.5,
    out: str | os.PathLike,
    name: str | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    eval_fraction: float = 0.2,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Extract a dataset from a model over a text file and save it (``datasets extract``).

    The file holds one text per line (blank lines skipped); the last ``eval_fraction`` of the
    texts form the ``eval`` split, the rest ``train`` (see :func:`~.hf_support.tail_splits`).
    The card names the model, α, causality, the scaling convention (queries stored unscaled:
    logits are ``q·k/√d``; ``model_scaling`` and ``scaling_note`` say what was folded in), the
    texts file and its sha256, and the gold graph's sparsity per layer on the eval split.

    Args:
        model: local model directory or cached hub name (see :func:`entmax_model`).
        texts_file: UTF-8 text file, one text per line.
        alpha: entmax α replacing the softmax.
        out: dataset directory to write (absent, empty, or an earlier sparsebench dataset).
        name: the dataset's name (default: from the model's name).
        max_length: longest sequence in tokens, special tokens included.
        eval_fraction: share of the texts held out as the ``eval`` split, in ``[0, 1)``.
        batch_size: sequences per forward pass.
        device: where to run the model (default: the CPU).
        log: where progress lines go.

    Returns:
        The dataset directory.

    Raises:
        DatasetError: (a ``ValueError``) for a missing or empty texts file, a bad fraction or
            name, transformers missing, a model not available offline, or an architecture whose
            attention cannot be extracted.
    """
    t0 = time.perf_counter()
    texts = read_texts(texts_file)
    splits = tail_splits(len(texts), eval_fraction)
    log(f"extracting {len(texts)} texts from {texts_file} with {model} ({alpha}-entmax)")
    data = extract_hf(
        model,
        texts,
        alpha=alpha,
        max_length=max_length,
        batch_size=batch_size,
        split_names=splits,
        device=device,
        log=log,
    )
    if name is not None:
        data.meta["name"] = name
    data.meta.update(text_source(texts_file))
    data.meta["sequences"] = (
        f"one text per non-blank line of {Path(texts_file).name}; the eval split is the "
        f"file's last {splits.count('eval')} text(s)"
    )
    held_out = "eval" if "eval" in splits else "train"
    extra = {
        "gold_sparsity_per_layer": data.split(held_out).gold_sparsity(),
        "gold_sparsity_split": held_out,
        "build_seconds": round(time.perf_counter() - t0, 1),
    }
    path = data.save(out, extra_card=extra)
    kind = "causal" if data.causal else "bidirectional"
    shape = f"{data.num_layers} layers x {data.num_heads} heads"
    log(f"extracted {len(texts)} sequences ({kind}, {shape})")
    return path
