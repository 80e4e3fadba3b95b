"""``QKData``: per-layer queries and keys of real sequences, saved as safetensors + a card.

On disk a dataset is a directory::

    card.json            what the data is (model, α, causal, scaling convention, splits, ...)
                         and the sha256 of every tensor file
    <split>.safetensors  q, k (and v) as (num_seqs, layers, heads, n, d), lengths (num_seqs,)

Queries are stored unscaled: logits are ``q·k/√d``. Directories are written atomically (to a
temporary sibling, then renamed) and only over an earlier dataset (see :mod:`.store`); loading
checks the card (see :mod:`.card`), that its files lie inside the directory, and the checksums.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .card import CARD_VERSION, DatasetError, card_file, check_name, read_card
from .store import check_target, clean_stale, make_temp, replace_dir

__all__ = ["CARD_VERSION", "DatasetError", "LayerData", "QKData", "content_hash", "sha256_file"]


class LayerData(NamedTuple):
    """One layer of a split: tensors ``(S, H, n, d)`` and lengths ``(S,)``."""

    q: Tensor
    k: Tensor
    v: Tensor | None
    lengths: Tensor
    causal: bool
    alpha: float


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_hash(card: dict[str, Any]) -> str | None:
    """The identity of a saved dataset: 16 hex digits of a sha256 over what decides its figures.

    Built from the card's per-file sha256 (the tensors), α and causality, so two builds with
    the same tensors share it and any change to them gives another. ``None`` for a card that
    lists no files (a dataset that was never saved).
    """
    files = card.get("files")
    if not isinstance(files, dict) or not files:
        return None
    h = hashlib.sha256(f"alpha={float(card['alpha'])!r};causal={bool(card['causal'])}".encode())
    for name in sorted(files):
        h.update(f";{name}={files[name]['sha256']}".encode())
    return h.hexdigest()[:16]


@dataclass
class QKData:
    """Queries and keys of sequences, per layer and head, each sequence tagged with a split.

    Attributes:
        q: ``(S, layers, heads, n, d)`` float, zero-padded past each length, unscaled.
        k: same shape as ``q``.
        lengths: ``(S,)`` int64 real lengths.
        v: optional values, same shape as ``q``.
        causal: decoder self-attention (keys after the query are excluded).
        alpha: entmax α of the model's attention.
        splits: ``(S,)`` split name of each sequence (``"train"``, ``"eval"``, ...).
        meta: the dataset card (name, model, text source, scaling convention, ...).
    """

    q: Tensor
    k: Tensor
    lengths: Tensor
    v: Tensor | None = None
    causal: bool = False
    alpha: float = 1.5
    splits: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.lengths = torch.as_tensor(self.lengths, dtype=torch.long)
        if not self.splits:
            self.splits = ["train"] * int(self.q.shape[0]) if self.q.dim() == 5 else []
        self.validate()

    # -- checks ---------------------------------------------------------------------------
    def validate(self) -> None:
        """Check shapes, dtypes and values; raise :class:`DatasetError` naming the problem."""
        for name in ("q", "k", "v"):
            t = getattr(self, name)
            if t is None:
                continue
            if not isinstance(t, Tensor) or t.dim() != 5:
                raise DatasetError(
                    f"{name} must be a tensor (num_seqs, layers, heads, n, d), got "
                    f"{tuple(getattr(t, 'shape', ()))}"
                )
            if not t.is_floating_point():
                raise DatasetError(f"{name} must be floating point, got {t.dtype}")
            if t.shape[:4] != self.q.shape[:4]:
                raise DatasetError(
                    f"{name} has shape {tuple(t.shape)} but q has {tuple(self.q.shape)}"
                )
        if self.k.shape != self.q.shape:
            raise DatasetError(f"k has shape {tuple(self.k.shape)} but q has {tuple(self.q.shape)}")
        S, _, _, n, _ = self.q.shape
        if S == 0:
            raise DatasetError("the dataset has no sequences")
        if self.lengths.shape != (S,):
            raise DatasetError(f"lengths must have shape ({S},), got {tuple(self.lengths.shape)}")
        if (self.lengths < 1).any() or (self.lengths > n).any():
            raise DatasetError(
                f"lengths must lie in [1, {n}], got min {int(self.lengths.min())} "
                f"max {int(self.lengths.max())}"
            )
        if len(self.splits) != S:
            raise DatasetError(f"splits names {len(self.splits)} sequences, the data has {S}")
        if (
            not isinstance(self.alpha, (int, float))
            or isinstance(self.alpha, bool)
            or not math.isfinite(self.alpha)
            or not self.alpha > 1
        ):
            raise DatasetError(f"alpha must be a finite number > 1, got {self.alpha!r}")
        if "name" in self.meta:
            check_name(self.meta["name"])
        for name in ("q", "k"):
            if not torch.isfinite(getattr(self, name)).all():
                raise DatasetError(f"{name} contains NaN or inf; the extraction overflowed")

    # -- views ----------------------------------------------------------------------------
    @property
    def content_hash(self) -> str:
        """This dataset's identity (see :func:`content_hash`); records are keyed with it.

        A dataset loaded from disk takes it from its card; one built in memory hashes its
        tensors, lengths, splits, α and causality.
        """
        saved = content_hash(self.meta)
        if saved is not None:
            return saved
        h = hashlib.sha256(f"alpha={float(self.alpha)!r};causal={bool(self.causal)}".encode())
        h.update(";".join(self.splits).encode())
        for t in (self.q, self.k, self.v, self.lengths):
            if t is not None:
                h.update(str((t.dtype, tuple(t.shape))).encode())
                h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    @property
    def num_layers(self) -> int:
        """Number of layers."""
        return int(self.q.shape[1])

    @property
    def num_heads(self) -> int:
        """Number of heads per layer."""
        return int(self.q.shape[2])

    @property
    def head_dim(self) -> int:
        """Head dimension d."""
        return int(self.q.shape[4])

    @property
    def split_names(self) -> list[str]:
        """Split names in first-seen order."""
        return list(dict.fromkeys(self.splits))

    def __len__(self) -> int:
        return int(self.q.shape[0])

    def select(self, index: Tensor | list[int]) -> QKData:
        """A subset of the sequences (trimmed to its longest sequence)."""
        index = torch.as_tensor(index, dtype=torch.long)
        if index.numel() == 0:
            raise DatasetError("selection is empty")
        n = int(self.lengths[index].max())
        pick = lambda t: None if t is None else t[index][:, :, :, :n].contiguous()  # noqa: E731
        return QKData(
            q=pick(self.q),
            k=pick(self.k),
            v=pick(self.v),
            lengths=self.lengths[index],
            causal=self.causal,
            alpha=self.alpha,
            splits=[self.splits[i] for i in index.tolist()],
            meta=self.meta,
        )

    def split(self, name: str) -> QKData:
        """The sequences of one split, e.g. ``data.split("train")``."""
        idx = [i for i, s in enumerate(self.splits) if s == name]
        if not idx:
            raise DatasetError(f"no split {name!r}; this dataset has {self.split_names}")
        return self.select(idx)

    def layer(self, i: int) -> LayerData:
        """Tensors of layer ``i``: ``q``, ``k``, ``v`` as ``(S, H, n, d)``, plus lengths."""
        if not -self.num_layers <= i < self.num_layers:
            raise DatasetError(f"layer {i} out of range: the dataset has {self.num_layers} layers")
        v = None if self.v is None else self.v[:, i]
        return LayerData(self.q[:, i], self.k[:, i], v, self.lengths, self.causal, self.alpha)

    def batches(
        self, layer: int, batch_size: int = 16, *, order: Tensor | None = None
    ) -> Iterator[LayerData]:
        """Layer ``layer`` in batches of sequences, each trimmed to its longest sequence.

        ``order`` (a permutation of the sequence indices) takes the sequences in that order, e.g.
        :meth:`by_length`, so that each batch pads little.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        full = self.layer(layer)
        for s in range(0, len(self), batch_size):
            idx = slice(s, s + batch_size) if order is None else order[s : s + batch_size]
            L = full.lengths[idx]
            n = int(L.max())
            cut = lambda t: None if t is None else t[idx, :, :n]  # noqa: E731
            yield LayerData(cut(full.q), cut(full.k), cut(full.v), L, self.causal, self.alpha)

    def by_length(self) -> Tensor:
        """The sequence indices from shortest to longest (ties in dataset order)."""
        return torch.sort(self.lengths, stable=True).indices

    def gold_sparsity(self, batch_size: int = 16) -> list[float]:
        """Sparsity of the gold α-entmax graph per layer (per sequence, then heads, averaged)."""
        from sparsebench.methods import Graph, gold_graph

        out = []
        for layer in range(self.num_layers):
            vals = []
            for b in self.batches(layer, batch_size):
                g = gold_graph(b.q, b.k, alpha=self.alpha, lengths=b.lengths, causal=self.causal)
                valid = Graph(g.shape, lengths=b.lengths, causal=self.causal).num_valid()
                vals.append(1 - g.num_edges().double() / valid.double().view(-1, 1))
            out.append(round(float(torch.cat(vals).mean(0).mean()), 4))
        return out

    # -- disk -----------------------------------------------------------------------------
    def card(self) -> dict[str, Any]:
        """The dataset card describing this data (without file checksums)."""
        card = dict(self.meta)
        card.update(
            {
                "card_version": CARD_VERSION,
                "name": check_name(self.meta.get("name", "unnamed")),
                "alpha": self.alpha,
                "causal": self.causal,
                "layers": self.num_layers,
                "heads": self.num_heads,
                "head_dim": self.head_dim,
                "scaling": "queries stored unscaled; logits are q.k/sqrt(d)",
                "has_values": self.v is not None,
            }
        )
        splits = {}
        for name in self.split_names:
            L = self.lengths[[i for i, s in enumerate(self.splits) if s == name]].double()
            splits[name] = {
                "num_seqs": int(L.numel()),
                "length_min": int(L.min()),
                "length_mean": round(float(L.mean()), 2),
                "length_max": int(L.max()),
            }
        card["splits"] = splits
        return card

    def save(self, path: str | os.PathLike, *, extra_card: dict[str, Any] | None = None) -> Path:
        """Write the dataset directory atomically; returns its path.

        Sequences are stored grouped by split, splits in first-seen order. ``path`` may be
        absent, an empty directory or an earlier sparsebench dataset, which is replaced;
        temporaries that a killed write left beside ``path`` are removed first.

        Raises:
            DatasetError: if ``path`` is a file or a directory that is not a sparsebench dataset
                (nothing is written or deleted), or the card is invalid.
        """
        from safetensors.torch import save_file

        path = Path(path)
        check_target(path)
        card = self.card()
        if extra_card:
            card.update(extra_card)
            check_name(card["name"])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DatasetError(
                f"cannot create {path.parent} ({e.strerror}); choose another folder"
            ) from None
        clean_stale(path)
        try:
            tmp = make_temp(path)
        except OSError as e:
            raise DatasetError(
                f"cannot write in {path.parent} ({e.strerror}); choose another folder"
            ) from None
        try:
            card["files"] = {}
            card["split_order"] = self.split_names
            card["sparsebench_version"] = _version()
            for name in self.split_names:
                sub = self.split(name)
                tensors = {"q": sub.q, "k": sub.k, "lengths": sub.lengths}
                if sub.v is not None:
                    tensors["v"] = sub.v
                fname = f"{name}.safetensors"
                save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / fname))
                card["files"][name] = {"file": fname, "sha256": sha256_file(tmp / fname)}
            with open(tmp / "card.json", "w") as f:
                json.dump(card, f, indent=2, sort_keys=True)
                f.write("\n")
            replace_dir(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, verify: bool = True) -> QKData:
        """Load a dataset directory, checking the card and (``verify``) the checksums."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_dir():
            raise DatasetError(f"{path} is not a dataset directory (no such directory)")
        card = read_card(path)
        parts, splits = [], []
        for name in card.get("split_order", list(card["files"])):
            info = card["files"][name]
            f = card_file(path, info["file"], path / "card.json")
            if not f.is_file():
                raise DatasetError(f"{f} is missing; rebuild the dataset")
            if verify and sha256_file(f) != info["sha256"]:
                raise DatasetError(
                    f"{f} does not match the sha256 in card.json (truncated or modified); "
                    "rebuild the dataset"
                )
            try:
                t = load_file(str(f))
            except (SafetensorError, OSError, ValueError) as e:
                raise DatasetError(f"{f} cannot be read ({e}); rebuild the dataset") from None
            for key in ("q", "k", "lengths"):
                if key not in t:
                    raise DatasetError(f"{f} lacks tensor {key!r}; rebuild the dataset")
            want = (card["layers"], card["heads"], card["head_dim"])
            shape = tuple(t["q"].shape)
            if len(shape) != 5 or (shape[1], shape[2], shape[4]) != want:
                raise DatasetError(
                    f"{f} holds q of shape {shape}, but card.json says (layers, heads, head_dim) "
                    f"= {want}; rebuild the dataset"
                )
            parts.append(t)
            splits += [name] * int(t["lengths"].shape[0])
        n = max(int(t["q"].shape[3]) for t in parts)
        cat = lambda key: torch.cat([_pad_n(t[key], n) for t in parts])  # noqa: E731
        has_v = all("v" in t for t in parts)
        return cls(
            q=cat("q"),
            k=cat("k"),
            v=cat("v") if has_v else None,
            lengths=torch.cat([t["lengths"] for t in parts]),
            causal=bool(card["causal"]),
            alpha=float(card["alpha"]),
            splits=splits,
            meta=card,
        )


def _pad_n(t: Tensor, n: int) -> Tensor:
    return torch.nn.functional.pad(t, (0, 0, 0, n - t.shape[3])) if t.shape[3] < n else t


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sparsebench")
    except PackageNotFoundError:
        return "unknown"
