"""What a record keeps besides its means: per-sequence figures, and the figures by length.

A record's scalar figures are the paper's aggregation (per sequence and head, averaged over
sequences, then heads). To let a report put a bootstrap interval on them and show how quality
changes with sequence length, a record also carries:

* ``per_sequence``: ``{metric: [value or None per sequence of the split, in its order]}``, each
  value the sequence's mean over heads (heads without a value left out; ``None`` when no head
  has one), rounded to 6 significant digits;
* ``sequence_lengths``: ``[length per sequence]``, in the same order;
* ``by_length``: ``{"0-128": {"num_sequences": n, metric: value, ...}, "128-256": ...}``, fixed
  bins of :data:`LENGTH_BIN` tokens from 0 up to the dataset's longest sequence. A bin
  ``"lo-hi"`` holds the sequences with ``lo < length <= hi``; its values are the paper's
  aggregation over those sequences only (``None`` for a bin without sequences or values),
  rounded to 6 significant digits.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .metrics import macro_average

__all__ = [
    "LENGTH_BIN",
    "PER_SEQUENCE",
    "by_length",
    "length_bins",
    "per_sequence",
    "round_figure",
]

#: Metrics a record keeps per sequence and per length bin, when it has them.
PER_SEQUENCE = (
    "recall",
    "sparsity",
    "exact",
    "precision",
    "mass_recall",
    "block_sparsity",
    "gold_sparsity",
    "output_error",
)

#: Width of the sequence-length bins, in tokens.
LENGTH_BIN = 128


def round_figure(value: float) -> float | None:
    """``value`` to 6 significant digits; ``None`` for NaN or infinity."""
    value = float(value)
    return float(f"{value:.6g}") if math.isfinite(value) else None


def _kept(per_bh: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: per_bh[name] for name in PER_SEQUENCE if name in per_bh}


def per_sequence(per_bh: dict[str, Tensor]) -> dict[str, list[float | None]]:
    """Each sequence's mean over heads of ``(S, H)`` figures, for :data:`PER_SEQUENCE` metrics."""
    out = {}
    for name, values in _kept(per_bh).items():
        means = torch.nanmean(values.to(torch.float64), dim=1)
        out[name] = [round_figure(x) for x in means.tolist()]
    return out


def length_bins(longest: int, width: int = LENGTH_BIN) -> list[tuple[int, int]]:
    """``(lo, hi)`` bins of ``width`` tokens covering lengths ``1 .. longest``."""
    count = max(1, -(-int(longest) // width))
    return [(i * width, (i + 1) * width) for i in range(count)]


def by_length(
    per_bh: dict[str, Tensor], lengths: Tensor, longest: int, width: int = LENGTH_BIN
) -> dict[str, dict[str, float | int | None]]:
    """The paper's aggregation of ``(S, H)`` figures within each length bin.

    Args:
        per_bh: ``{metric: (S, H)}`` per sequence and head (NaN where a pair has no value).
        lengths: ``(S,)`` sequence lengths.
        longest: the dataset's longest sequence (the bins reach it; a longer one in
            ``lengths`` extends them).
        width: bin width in tokens.

    Returns:
        ``{"lo-hi": {"num_sequences": n, metric: value or None, ...}}`` in length order.
    """
    lengths = torch.as_tensor(lengths).cpu()
    longest = max(int(longest), int(lengths.max()) if lengths.numel() else 0)
    kept = _kept(per_bh)
    out: dict[str, dict[str, float | int | None]] = {}
    for lo, hi in length_bins(longest, width):
        inside = (lengths > lo) & (lengths <= hi)
        entry: dict[str, float | int | None] = {"num_sequences": int(inside.sum())}
        for name, values in kept.items():
            chosen = values[inside].to(torch.float64)
            if chosen.numel() == 0:
                entry[name] = None
                continue
            entry[name] = round_figure(macro_average(chosen)[0])
        out[f"{lo}-{hi}"] = entry
    return out
