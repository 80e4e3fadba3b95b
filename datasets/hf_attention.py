"""α-entmax attention for transformers' attention interface, and the recording of q, k and v.

transformers routes the attention of most architectures through one dispatch: each attention
module projects its queries, keys and values, applies what the model applies to them (rotary
embeddings, a key/value cache), then calls ``ALL_ATTENTION_FUNCTIONS[config._attn_implementation]``
with ``(module, query, key, value, attention_mask, scaling=..., dropout=..., **kwargs)``. The
attention mask comes from the mask function registered under the same name
(``ALL_MASK_ATTENTION_FUNCTIONS``), built once per forward pass from the padding mask and the
model's pattern (causal for decoders, bidirectional for encoders).

:func:`register` puts :func:`entmax_attention` and a mask builder under :data:`ATTN_NAME`; a
model loaded with ``attn_implementation=ATTN_NAME`` then runs α-entmax attention. What the
function sees is what the model's own attention dot-products, so rotary embeddings are already
applied. Inside :func:`recording` it records each call:

* queries *unscaled*: ``q·k/√d`` gives the logits whatever scaling the model uses (GPT-2's
  inverse-layer scaling, Gemma's ``query_pre_attn_scalar``, no scaling at all): the model's
  factor ``s`` is folded into the stored queries, ``q_stored = q · s·√d``;
* keys and values, with grouped-query attention expanded to one key/value head per query head
  (query head ``h`` reads key/value head ``h // groups``, as every transformers model does), or
  kept as the model holds them (``expand_kv=False``);
* the boolean mask of the keys each query may attend to, so the caller can check that it is
  the padding mask, causal or not, and nothing else (:func:`mask_causality`).

Logit changes an α-entmax over ``q·k/√d`` cannot express (soft-capping, additive position
biases, attention sinks) are refused with a :class:`DatasetError` naming the layer.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from sparsebench.methods import attention_probs

from .card import DatasetError

__all__ = [
    "ATTN_NAME",
    "INSTALL_HINT",
    "LayerRecord",
    "entmax_attention",
    "mask_causality",
    "recording",
    "register",
    "restricted_attention",
    "transformers_module",
]

#: Name under which the entmax attention (and its mask builder) is registered in transformers.
ATTN_NAME = "sparsebench_entmax"
#: How to install what this module needs.
INSTALL_HINT = 'pip install -c constraints.txt -e ".[hf]"'
#: Attention arguments that change the logits beyond ``q·k`` times a scale.
_LOGIT_CHANGES = ("softcap", "position_bias", "s_aux", "sinks")


@dataclass
class LayerRecord:
    """What one call of the attention function saw (one layer of one forward pass).

    Attributes:
        q: ``(B, H, n, d)`` float32 queries, unscaled: the model's logits are ``q·k/√d``.
        k: ``(B, H, m, d)`` float32 keys (``(B, H_kv, m, d)`` when recorded with
            ``expand_kv=False``).
        v: values, with the heads of ``k``.
        allowed: bool ``(B, 1 or H, n, m)``: the keys each query may attend to under the
            model's attention mask.
        scaling: the factor the model multiplies ``q·kᵀ`` by.
        kv_groups: query heads per key/value head (1 without grouped-query attention).
        causal: the module declares causal attention.
    """

    q: Tensor
    k: Tensor
    v: Tensor
    allowed: Tensor
    scaling: float
    kv_groups: int
    causal: bool


@dataclass
class _Recording:
    layers: list[LayerRecord] = field(default_factory=list)
    expand_kv: bool = True


# The recording of the forward pass in progress, or None.
_CAPTURE: contextvars.ContextVar[_Recording | None] = contextvars.ContextVar(
    "sparsebench_hf_capture", default=None
)
# The attention restriction of the forward pass in progress: (restrict, lengths, calls), or None.
_RESTRICT: contextvars.ContextVar[tuple[Any, Tensor, list[int]] | None] = contextvars.ContextVar(
    "sparsebench_hf_restrict", default=None
)


def transformers_module():
    """Import transformers offline (``HF_HUB_OFFLINE=1``), with an install hint if missing.

    Raises:
        DatasetError: when transformers is not installed.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError as e:
        raise DatasetError(
            f"transformers is not installed ({e}); install the hf extra: {INSTALL_HINT}"
        ) from None
    return transformers


def _layer_name(module: torch.nn.Module) -> str:
    idx = getattr(module, "layer_idx", None)
    return f"{type(module).__name__} (layer {idx})" if idx is not None else type(module).__name__


def _refuse_logit_changes(module: torch.nn.Module, kwargs: dict[str, Any]) -> None:
    for name in _LOGIT_CHANGES:
        value = kwargs.get(name)
        if value is not None and not (isinstance(value, (int, float)) and value == 0):
            raise DatasetError(
                f"{_layer_name(module)} passes {name} to its attention, which changes the logits "
                "beyond q.k/sqrt(d); sparsebench cannot extract this architecture"
            )


def _allowed_keys(
    module: torch.nn.Module, mask: Tensor | None, shape: tuple[int, int, int], kwargs
) -> tuple[Tensor, bool]:
    """The bool ``(B, 1 or H, n, m)`` mask of allowed keys, and whether the module is causal."""
    batch, n, m = shape
    causal = kwargs.get("is_causal")
    causal = bool(getattr(module, "is_causal", True) if causal is None else causal)
    if mask is None:
        # What transformers' sdpa attention does without a mask: causal iff the module is.
        allowed = torch.ones(n, m, dtype=torch.bool)
        if causal and n > 1:
            allowed = allowed.tril(m - n)
        return allowed.expand(batch, 1, n, m), causal
    if mask.dtype == torch.bool:
        return mask.expand(batch, -1, n, m), causal
    mask = mask.float()
    allowed = mask > torch.finfo(torch.float32).min / 2
    if torch.any(mask[allowed] != 0):
        raise DatasetError(
            f"{_layer_name(module)} adds a bias to its attention logits through the mask; "
            "sparsebench cannot extract this architecture"
        )
    return allowed.expand(batch, -1, n, m), causal


def entmax_attention(
    module: torch.nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """Attention function for transformers: α-entmax over ``scaling · q·kᵀ`` plus the mask.

    It follows the order of transformers' attention call (masks, capture, scores, normalisation,
    output) in one place, so the stored tensors are provably the ones the model uses.

    α is the attention module's ``config.entmax_alpha`` (1.5 when unset). Keys and values with
    fewer heads than the queries (grouped-query attention) are repeated to the query heads.
    Masked keys get exactly zero probability; a query with no allowed key outputs zero.

    Returns:
        ``(output (B, n, H, d_v), probabilities (B, H, n, m))`` as transformers expects.

    Raises:
        DatasetError: when the module passes a logit change entmax cannot express.
    """
    _refuse_logit_changes(module, kwargs)
    batch, heads, n, d = query.shape
    if scaling is None:
        scaling = d**-0.5
    groups = heads // key.shape[1]
    alpha = float(getattr(module.config, "entmax_alpha", 1.5))
    q32, k32, v32 = query.float(), key.float(), value.float()
    k_heads = k32.repeat_interleave(groups, dim=1) if groups > 1 else k32
    v_heads = v32.repeat_interleave(groups, dim=1) if groups > 1 else v32
    scores = torch.matmul(q32 * scaling, k_heads.transpose(-1, -2))
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        else:
            scores = scores + attention_mask.float()
    q_unscaled = q32 * (scaling * math.sqrt(d))  # q_unscaled·k/√d gives the logits
    hook = _RESTRICT.get()
    if hook is not None:
        restrict, lengths, calls = hook
        causal = bool(getattr(module, "is_causal", False)) and n > 1
        allowed = restrict(len(calls), q_unscaled, k_heads, lengths, causal)
        calls.append(1)
        scores = scores.masked_fill(~allowed.to(scores.device), float("-inf"))
    probs = attention_probs(scores, "entmax", alpha)
    if dropout and module.training:
        probs = torch.nn.functional.dropout(probs, p=dropout)
    out = torch.matmul(probs, v_heads).to(value.dtype)
    record = _CAPTURE.get()
    if record is not None:
        allowed, causal = _allowed_keys(module, attention_mask, (batch, n, key.shape[2]), kwargs)
        keep = not record.expand_kv
        record.layers.append(
            LayerRecord(
                q=q_unscaled,
                k=k32 if keep else k_heads,
                v=v32 if keep else v_heads,
                allowed=allowed,
                scaling=float(scaling),
                kv_groups=groups,
                causal=causal,
            )
        )
    return out.transpose(1, 2).contiguous(), probs.to(value.dtype)


def _entmax_mask(*args: Any, **kwargs: Any) -> Tensor | None:
    """The boolean mask of transformers' sdpa, always built: never left to an ``is_causal`` flag."""
    from transformers.masking_utils import sdpa_mask

    kwargs["allow_is_causal_skip"] = False
    kwargs["allow_is_bidirectional_skip"] = False
    return sdpa_mask(*args, **kwargs)


def register() -> None:
    """Register :func:`entmax_attention` and its mask builder under :data:`ATTN_NAME`.

    Raises:
        DatasetError: when transformers is not installed.
    """
    transformers_module()
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTN_NAME, entmax_attention)
    AttentionMaskInterface.register(ATTN_NAME, _entmax_mask)


@contextlib.contextmanager
def recording(*, expand_kv: bool = True) -> Iterator[list[LayerRecord]]:
    """Within the block, record every call of the entmax attention, in call order.

    Args:
        expand_kv: repeat grouped key/value heads to the query heads (``k`` and ``v`` then have
            the shape of ``q``); ``False`` keeps the model's key/value heads.

    Yields:
        The list the :class:`LayerRecord` of each call is appended to.
    """
    rec = _Recording(expand_kv=expand_kv)
    token = _CAPTURE.set(rec)
    try:
        yield rec.layers
    finally:
        _CAPTURE.reset(token)


@contextlib.contextmanager
def restricted_attention(restrict: Callable, lengths: Tensor) -> Iterator[None]:
    """Within the block, restrict the entmax attention of every layer to a predicted graph.

    Args:
        restrict: ``restrict(layer, q, k, lengths, causal)`` -> bool ``(B, H, N, M)`` of the keys
            each query may attend to, from that layer's own unscaled queries and keys (key
            heads expanded to the query heads); ``layer`` counts the attention calls of the
            forward pass. A query whose allowed row is empty outputs zero.
        lengths: ``(B,)`` real lengths of the batch being run.
    """
    token = _RESTRICT.set((restrict, lengths, []))
    try:
        yield
    finally:
        _RESTRICT.reset(token)


def mask_causality(records: list[LayerRecord], lengths: Tensor) -> bool:
    """Check that every layer masked padding and nothing else but the future; return causality.

    For each sequence ``b`` of real length ``L``, the first ``L`` queries must attend to no key
    at or past ``L`` and, among the first ``L`` keys, to exactly all of them (bidirectional) or
    exactly those at or before the query (causal), the same in every layer.

    Raises:
        DatasetError: naming the layer whose mask is something else (padding not masked, a
            sliding window or chunked attention shorter than the sequences, ...).
    """
    causal_layers = []
    for i, rec in enumerate(records):
        kinds = set()
        for b, length in enumerate(lengths.tolist()):
            rows = rec.allowed[b, :, :length].cpu()
            if rows[..., length:].any():
                raise DatasetError(
                    f"attention layer {i} lets real tokens attend to padding; the model does "
                    "not mask padded keys: extract with batch_size=1"
                )
            square = rows[..., :length]
            if length == 1:
                continue  # one token: causal and bidirectional alike
            if bool(square.all()):
                kinds.add(False)
            elif bool((square == torch.ones(length, length, dtype=torch.bool).tril()).all()):
                kinds.add(True)
            else:
                raise DatasetError(
                    f"attention layer {i} masks more than padding and the future (a sliding "
                    f"window or chunked attention shorter than {length} tokens?); pass a "
                    "max_length within the model's attention window"
                )
        if len(kinds) > 1:
            raise DatasetError(
                f"attention layer {i} is causal for some sequences and not for others; "
                "sparsebench cannot extract this model"
            )
        causal_layers.append(kinds.pop() if kinds else rec.causal)
    if len(set(causal_layers)) > 1:
        raise DatasetError(
            f"layers {[i for i, c in enumerate(causal_layers) if c]} are causal and the others "
            "bidirectional; a sparsebench dataset is one or the other"
        )
    return bool(causal_layers[0]) if causal_layers else False
