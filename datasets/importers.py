"""Importers for query/key dumps written by other projects.

``import_sparsefinder`` reads the files of the Sparsefinder paper (Treviso et al., 2022): a
torch-saved dict with ``length_src`` (one length per sequence), ``q`` and ``k`` as Python lists
with one ``(layers, heads, length, head_dim)`` tensor per sequence, and, in the machine
translation dumps, ``length_trg``.
"""

from __future__ import annotations

import math
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .card import check_name, name_from
from .qkdata import DatasetError, QKData

__all__ = ["import_sparsefinder"]

_REQUIRED = ("length_src", "q", "k")


def _load_dump(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetError(f"{path} does not exist or is not a file")
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        if "weights only load failed" in str(e).lower():
            raise DatasetError(
                f"{path} holds objects other than tensors, numbers and plain containers, which "
                "safe loading (weights_only=True) refuses; it is not a Sparsefinder dump"
            ) from None
        raise DatasetError(
            f"{path} is truncated or not a torch-saved dict (unpickling failed: {e})"
        ) from None
    except (zipfile.BadZipFile, EOFError, OSError, RuntimeError) as e:
        # A cut-off or damaged archive surfaces as any of these, depending on where it breaks.
        raise DatasetError(
            f"{path} is truncated or not a torch-saved dict ({type(e).__name__}: {e}); "
            "download or extract it again"
        ) from None
    if not isinstance(obj, dict):
        raise DatasetError(
            f"{path} holds a {type(obj).__name__}, not a dict with 'length_src', 'q' and 'k'"
        )
    return obj


def _lengths(obj: dict[str, Any], key: str, path: Path) -> Tensor:
    value = obj[key]
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise DatasetError(
            f"{path}: {key!r} must be a 1-D tensor of lengths, got {type(value).__name__}"
        ) from None
    if t.dim() != 1 or t.is_floating_point() or t.is_complex():
        raise DatasetError(
            f"{path}: {key!r} must be a 1-D integer tensor, got shape {tuple(t.shape)} {t.dtype}"
        )
    return t.to(torch.long)


def _tensor_list(obj: dict[str, Any], key: str, path: Path) -> list[Tensor]:
    value = obj[key]
    if isinstance(value, Tensor):
        value = list(value.unbind(0)) if value.dim() == 5 else value
    if not isinstance(value, (list, tuple)):
        raise DatasetError(
            f"{path}: {key!r} must be a list of per-sequence tensors (layers, heads, length, "
            f"head_dim), got {type(value).__name__}"
        )
    for i, t in enumerate(value):
        if not isinstance(t, Tensor):
            raise DatasetError(f"{path}: {key}[{i}] is a {type(t).__name__}, not a tensor")
        if t.dim() != 4:
            raise DatasetError(
                f"{path}: {key}[{i}] has rank {t.dim()} (shape {tuple(t.shape)}); expected "
                "(layers, heads, length, head_dim)"
            )
        if not t.is_floating_point():
            raise DatasetError(f"{path}: {key}[{i}] must be floating point, got {t.dtype}")
    return list(value)


def import_sparsefinder(
    path: str | os.PathLike,
    *,
    rescale_queries: bool = False,
    causal: bool | None = None,
    alpha: float = 1.5,
    eval_fraction: float = 0.1,
    name: str | None = None,
) -> QKData:
    """Import an official Sparsefinder q/k dump as :class:`QKData`.

    Most of its length is validation: each check names the key and sequence at fault.

    The file is loaded with ``torch.load(..., weights_only=True)`` on the CPU, so it can only
    hold tensors and plain containers. Expected keys: ``length_src`` (1-D), ``q`` and ``k``
    (lists with one ``(layers, heads, length, head_dim)`` tensor per sequence) and, for machine
    translation dumps, ``length_trg``.

    How the keys are read: when ``length_trg`` is present, the stored tensors are taken to be
    the decoder (target-side) self-attention, so each sequence's length is its ``length_trg``
    entry and ``causal`` defaults to True; ``length_src`` is then only kept in the card (it is
    what the official tooling bins the sequences by). Without ``length_trg`` the tensors are the
    encoder's, lengths come from ``length_src`` and ``causal`` defaults to False. In both cases
    each length must fit the tensors' length dimension; shorter lengths mean the tensors carry
    padding, which is zeroed.

    Like the official loader, sequences keep their file order and the last
    ``int(eval_fraction * N)`` of them form the ``"eval"`` split, the rest ``"train"``.

    Args:
        path: the ``.pt`` file.
        rescale_queries: multiply every query by ``√d``. Use it only for dumps whose queries were
            stored already multiplied by ``1/√d`` (the machine translation data); the RoBERTa
            masked-LM dumps hold unscaled queries and must be imported with it off.
        causal: override the causal flag (default: True exactly when ``length_trg`` exists).
        alpha: entmax α of the model that produced the dump (1.5 in the paper).
        eval_fraction: share of sequences (from the end of the file) in the eval split.
        name: dataset name for the card (default: the file's stem, with every character a
            name may not hold replaced by ``-``; see :func:`~.card.check_name`).

    Returns:
        The sequences zero-padded to the longest, with ``v`` absent (the dumps have no values).

    Raises:
        DatasetError: if the file is missing, truncated, not a torch-saved dict, lacks a key, or
            its lists and tensors disagree in count or shape, or ``name`` is not a valid name.
    """
    path = Path(path)
    name = check_name(name) if name is not None else name_from(path.stem)
    if not 0 <= eval_fraction < 1:
        raise DatasetError(f"eval_fraction must lie in [0, 1), got {eval_fraction}")
    obj = _load_dump(path)
    missing = [key for key in _REQUIRED if key not in obj]
    if missing:
        raise DatasetError(
            f"{path} lacks key(s) {missing}; a Sparsefinder dump has 'length_src', 'q', 'k' "
            f"(and 'length_trg' for translation); found {sorted(map(str, obj))}"
        )
    mt = "length_trg" in obj
    length_key = "length_trg" if mt else "length_src"
    lengths = _lengths(obj, length_key, path)
    length_src = _lengths(obj, "length_src", path)
    qs = _tensor_list(obj, "q", path)
    ks = _tensor_list(obj, "k", path)
    S = len(qs)
    if S == 0:
        raise DatasetError(f"{path} holds no sequences (empty 'q')")
    counts = {"q": S, "k": len(ks), length_key: int(lengths.numel())}
    if mt:
        counts["length_src"] = int(length_src.numel())
    if len(set(counts.values())) != 1:
        raise DatasetError(
            f"{path}: the per-sequence entries disagree in number: "
            + ", ".join(f"{key} has {n}" for key, n in counts.items())
        )
    layers, heads, _, d = qs[0].shape
    for i, (q, k) in enumerate(zip(qs, ks, strict=True)):
        if q.shape != k.shape:
            raise DatasetError(
                f"{path}: sequence {i} has q of shape {tuple(q.shape)} but k of {tuple(k.shape)}"
            )
        if (q.shape[0], q.shape[1], q.shape[3]) != (layers, heads, d):
            raise DatasetError(
                f"{path}: sequence {i} has shape {tuple(q.shape)}; sequence 0 has "
                f"{(layers, heads, '*', d)} (layers, heads and head_dim must agree)"
            )
        L = int(lengths[i])
        if not 1 <= L <= q.shape[2]:
            raise DatasetError(
                f"{path}: sequence {i} has {length_key} {L} but its tensors have length "
                f"{q.shape[2]}"
            )
    n = int(lengths.max())
    dtype = torch.promote_types(qs[0].dtype, torch.float32)
    Q = torch.zeros(S, layers, heads, n, d, dtype=dtype)
    K = torch.zeros_like(Q)
    for i, (q, k) in enumerate(zip(qs, ks, strict=True)):
        L = int(lengths[i])
        Q[i, :, :, :L] = q[:, :, :L].to(dtype)
        K[i, :, :, :L] = k[:, :, :L].to(dtype)
    if rescale_queries:
        Q.mul_(math.sqrt(d))
    n_eval = int(eval_fraction * S)
    splits = ["train"] * (S - n_eval) + ["eval"] * n_eval
    meta = {
        "name": name,
        "source": "Sparsefinder q/k dump",
        "source_file": path.name,
        "side": "decoder (target) self-attention" if mt else "encoder self-attention",
        "length_key": length_key,
        "queries_rescaled_on_import": bool(rescale_queries),
        "split_rule": f"file order; last int({eval_fraction} * N) sequences are eval",
    }
    if mt:
        meta["length_src_range"] = [int(length_src.min()), int(length_src.max())]
    return QKData(
        q=Q,
        k=K,
        lengths=lengths,
        v=None,
        causal=mt if causal is None else bool(causal),
        alpha=alpha,
        splits=splits,
        meta=meta,
    )
