"""A small byte-pair-encoding tokenizer, trained on the training plays and stored as JSON.

Text is split into pre-tokens (a newline run, or an optional space followed by a word or by one
other character); each pre-token starts as its characters and the most frequent adjacent pair
is merged repeatedly until the vocabulary is full. Pair counts are kept up to date
incrementally, so training on the plays takes seconds.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

__all__ = ["SPECIALS", "Tokenizer"]

SPECIALS = ("<pad>", "<unk>", "<mask>", "<bos>")
_PRETOKEN = re.compile(r"\n+| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]| +(?=\n)| +$")


def _normalise(text: str) -> str:
    text = text.replace("\t", " ")
    text = re.sub(r"[ \u00a0]+", " ", text)
    return re.sub(r" *\n *", "\n", text)


def pretokenize(text: str) -> list[str]:
    """Pre-tokens of normalised text (they concatenate back to it)."""
    return _PRETOKEN.findall(_normalise(text))


class Tokenizer:
    """BPE over characters with ``<pad>``, ``<unk>``, ``<mask>`` and ``<bos>`` specials."""

    def __init__(self, vocab: list[str], merges: list[tuple[str, str]]):
        self.vocab = list(vocab)
        self.merges = [tuple(m) for m in merges]
        self.index = {t: i for i, t in enumerate(self.vocab)}
        self.ranks = {m: r for r, m in enumerate(self.merges)}
        self._cache: dict[str, list[int]] = {}

    # -- special ids ----------------------------------------------------------------------
    pad_id, unk_id, mask_id, bos_id = 0, 1, 2, 3

    def __len__(self) -> int:
        return len(self.vocab)

    # -- training -------------------------------------------------------------------------
    @classmethod
    def train(cls, texts: list[str], vocab_size: int = 1024, min_count: int = 2) -> Tokenizer:
        """Learn merges on ``texts`` until ``vocab_size`` tokens (deterministic)."""
        counts = Counter(p for t in texts for p in pretokenize(t))
        chars = Counter()
        for word, c in counts.items():
            for ch in word:
                chars[ch] += c
        alphabet = sorted(ch for ch, c in chars.items() if c >= min_count)
        vocab = list(SPECIALS) + alphabet
        words = [list(w) for w in counts]
        freq = list(counts.values())
        pairs: Counter = Counter()
        where: dict[tuple[str, str], set[int]] = defaultdict(set)
        for wi, w in enumerate(words):
            for a, b in zip(w, w[1:], strict=False):
                pairs[a, b] += freq[wi]
                where[a, b].add(wi)
        merges: list[tuple[str, str]] = []
        while len(vocab) < vocab_size and pairs:
            # Most frequent pair; ties broken by the pair itself so training is deterministic.
            best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
            (a, b), c = best
            if c < min_count:
                break
            merges.append((a, b))
            vocab.append(a + b)
            for wi in list(where[a, b]):
                w, f = words[wi], freq[wi]
                for x, y in zip(w, w[1:], strict=False):
                    pairs[x, y] -= f
                    if pairs[x, y] <= 0:
                        del pairs[x, y]
                merged, i = [], 0
                while i < len(w):
                    if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                        merged.append(a + b)
                        i += 2
                    else:
                        merged.append(w[i])
                        i += 1
                words[wi] = merged
                for x, y in zip(merged, merged[1:], strict=False):
                    pairs[x, y] += f
                    where[x, y].add(wi)
            pairs.pop((a, b), None)
            where.pop((a, b), None)
        return cls(vocab, merges)

    # -- encoding -------------------------------------------------------------------------
    def _encode_word(self, word: str) -> list[int]:
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        parts = list(word)
        while len(parts) > 1:
            ranked = [
                (self.ranks.get((x, y), 1 << 30), i)
                for i, (x, y) in enumerate(zip(parts, parts[1:], strict=False))
            ]
            rank, i = min(ranked)
            if rank == 1 << 30:
                break
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        ids = [self.index.get(p, self.unk_id) for p in parts]
        self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        return [i for w in pretokenize(text) for i in self._encode_word(w)]

    def decode(self, ids: list[int]) -> str:
        """Text of token ids (specials are dropped)."""
        return "".join(self.vocab[i] for i in ids if i >= len(SPECIALS))

    # -- storage --------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the vocabulary and merges as JSON."""
        Path(path).write_text(
            json.dumps({"vocab": self.vocab, "merges": self.merges}, ensure_ascii=False) + "\n"
        )

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Read a tokenizer written by :meth:`save`."""
        data = json.loads(Path(path).read_text())
        return cls(data["vocab"], [tuple(m) for m in data["merges"]])
