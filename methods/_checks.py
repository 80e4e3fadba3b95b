"""Checks of what enters the public functions: α, the normaliser, and query/key/value tensors.

Every entry that takes α (the gold graph, attention, execution, the output error, the ``gold``
row) calls :func:`check_alpha`; every entry that takes queries and keys calls :func:`check_qk`.
Half-precision inputs are scored in float32 (:func:`scoring_dtype`): ``q·k`` of float16 data
overflows its range (65504) on ordinary activations, which would turn whole rows into ``inf``.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor

from ._masks import as_lengths

__all__ = [
    "NORMALIZERS",
    "check_alpha",
    "check_normalizer",
    "check_qk",
    "check_tensor",
    "scoring_dtype",
    "to_scoring",
]

#: The attention normalisers, as ``normalizer=`` names them.
NORMALIZERS = ("entmax", "softmax")

_HALF = (torch.float16, torch.bfloat16)


def check_alpha(alpha: object) -> float:
    """``alpha`` as a float when it is a finite number > 1 (α-entmax), else a ``ValueError``.

    α = 1 is softmax, which has no sparse support; α = 1.5 is entmax15, α = 2 sparsemax.

    Raises:
        ValueError: naming α and the valid range.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, Real | Tensor):
        raise ValueError(
            f"alpha must be a finite number > 1 (e.g. 1.5 for entmax15), got {alpha!r}"
        )
    try:
        value = float(alpha)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"alpha must be a finite number > 1 (e.g. 1.5 for entmax15), got {alpha!r}"
        ) from None
    if not (math.isfinite(value) and value > 1):
        raise ValueError(
            f"alpha must be a finite number > 1 (e.g. 1.5 for entmax15; 1 is softmax, use "
            f"normalizer='softmax'), got {value}"
        )
    return value


def check_normalizer(normalizer: object) -> str:
    """``normalizer`` when it is one of :data:`NORMALIZERS`, else a ``ValueError``."""
    if normalizer not in NORMALIZERS:
        raise ValueError(
            f"unknown normalizer {normalizer!r}; choose from {', '.join(map(repr, NORMALIZERS))}"
        )
    return normalizer  # type: ignore[return-value]


def scoring_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype scores are computed in: float32 for float16 and bfloat16, else ``dtype``."""
    return torch.float32 if dtype in _HALF else dtype


def to_scoring(t: Tensor) -> Tensor:
    """``t`` in :func:`scoring_dtype` (half precision upcast to float32; others unchanged)."""
    return t.float() if t.dtype in _HALF else t


def check_tensor(name: str, t: object) -> Tensor:
    """A 4-D real floating-point tensor named ``name``, else a one-line ``ValueError``."""
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(
            f"{name} must be (B, H, N, D) for one layer, got shape {tuple(t.shape)}; "
            "select a layer first (QKData.layer(i))"
        )
    if t.is_complex():
        raise ValueError(f"{name} is complex ({t.dtype}); pass real floating-point data")
    if not t.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point tensor, got {t.dtype}; cast it with .float()"
        )
    return t


def _check_finite(name: str, t: Tensor) -> None:
    # One reduction: the largest magnitude is NaN or inf exactly when some entry is.
    if t.numel() and not torch.isfinite(t.abs().amax()):
        raise ValueError(
            f"{name} contains NaN or inf values; clean the data (e.g. check the extraction "
            "for overflow in half precision)"
        )


def check_qk(
    q: Tensor,
    k: Tensor,
    *,
    lengths: Tensor | None = None,
    causal: bool = False,
    v: Tensor | None = None,
) -> Tensor | None:
    """Validate one layer's queries and keys (and values); returns ``lengths`` as CPU int64.

    ``q`` and ``k`` must be real floating-point ``(B, H, N, D)`` / ``(B, H, M, D)`` tensors of
    one scoring dtype (float16 and bfloat16 count as float32, which they are scored in),
    finite, with at least one sequence and one token; ``v``, when given, ``(B, H, M, Dv)``.

    Raises:
        ValueError: naming the problem and the fix.
    """
    check_tensor("q", q)
    check_tensor("k", k)
    B, H, N, D = q.shape
    if B == 0:
        raise ValueError("empty batch: q has no sequences (B=0); pass at least one sequence")
    if N == 0 or k.shape[2] == 0:
        raise ValueError(f"sequences must have at least one token, got N={N}, M={k.shape[2]}")
    if k.shape[0] != B or k.shape[1] != H or k.shape[3] != D:
        raise ValueError(
            f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree: they need the same batch, "
            "heads and head dim, (B, H, N, D) and (B, H, M, D)"
        )
    if causal and k.shape[2] != N:
        raise ValueError(
            f"causal attention needs as many keys as queries, got N={N}, M={k.shape[2]}"
        )
    if scoring_dtype(q.dtype) != scoring_dtype(k.dtype):
        raise ValueError(
            f"q ({q.dtype}) and k ({k.dtype}) have different dtypes; cast both to one dtype"
        )
    checked = [("q", q), ("k", k)]
    if v is not None:
        check_tensor("v", v)
        if v.shape[:3] != k.shape[:3]:
            raise ValueError(f"v {tuple(v.shape)} must match k {tuple(k.shape)} in (B, H, M)")
        if scoring_dtype(v.dtype) != scoring_dtype(q.dtype):
            raise ValueError(
                f"v ({v.dtype}) and q ({q.dtype}) have different dtypes; cast both to one dtype"
            )
        checked.append(("v", v))
    for name, t in checked:
        _check_finite(name, t)
    return as_lengths(lengths, B, bound=min(N, k.shape[2]))
