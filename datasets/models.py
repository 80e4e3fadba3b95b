"""Small transformers whose attention is α-entmax: the bundled Shakespeare models.

Attention logits are computed by :func:`sparsebench.methods.attention_logits` — the same
function the gold graph uses — so the gold graph of the stored queries and keys is exactly the
support of the model's own attention.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from sparsebench.methods import attention_logits, attention_probs, valid_pairs

__all__ = ["EntmaxTransformer", "ModelConfig"]

#: ``restrict(layer, q, k, lengths, causal) -> bool mask (B, H, N, N) or None``: the keys each
#: query may attend to (used to replace attention with a predicted graph at test time).
Restrict = Callable[[int, Tensor, Tensor, Tensor, bool], Tensor | None]


@dataclass
class ModelConfig:
    """Size and kind of an :class:`EntmaxTransformer`."""

    vocab_size: int = 1024
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 512
    max_len: int = 512
    causal: bool = True
    alpha: float = 1.5

    @property
    def head_dim(self) -> int:
        """Size of one head."""
        return self.d_model // self.n_heads


class Block(nn.Module):
    """Pre-LayerNorm transformer block with α-entmax self-attention."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ff = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.d_model)
        )

    def forward(
        self,
        x: Tensor,
        valid: Tensor,
        layer: int,
        lengths: Tensor,
        restrict: Restrict | None,
        capture: list | None,
    ) -> Tensor:
        B, N, _ = x.shape
        H, dh = self.cfg.n_heads, self.cfg.head_dim
        qkv = self.qkv(self.ln1(x)).view(B, N, 3, H, dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, N, dh) each; q unscaled
        if capture is not None:
            capture.append((q.detach(), k.detach(), v.detach()))
        allowed = valid  # (B, 1, N, N)
        if restrict is not None:
            mask = restrict(layer, q.detach(), k.detach(), lengths, self.cfg.causal)
            if mask is not None:
                allowed = allowed & mask
        scores = torch.where(allowed, attention_logits(q, k), float("-inf"))
        p = attention_probs(scores, "entmax", self.cfg.alpha)
        att = (p @ v).transpose(1, 2).reshape(B, N, H * dh)
        x = x + self.out(att)
        return x + self.ff(self.ln2(x))


class EntmaxTransformer(nn.Module):
    """A causal language model or a bidirectional masked-LM encoder with α-entmax attention."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.d_model % cfg.n_heads:
            raise ValueError(f"d_model {cfg.d_model} is not divisible by n_heads {cfg.n_heads}")
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(
        self,
        ids: Tensor,
        lengths: Tensor | None = None,
        *,
        restrict: Restrict | None = None,
        capture: list | None = None,
    ) -> Tensor:
        """Logits ``(B, N, vocab)`` of token ids ``(B, N)``.

        Args:
            ids: token ids, padded past each length.
            lengths: ``(B,)`` real lengths (``None``: all of ``N``).
            restrict: optional predicted graph per layer (see :data:`Restrict`).
            capture: a list that receives ``(q, k, v)`` of each layer, ``(B, H, N, dh)``.
        """
        B, N = ids.shape
        if N > self.cfg.max_len:
            raise ValueError(f"sequence of {N} tokens exceeds the context of {self.cfg.max_len}")
        if lengths is None:
            lengths = torch.full((B,), N, dtype=torch.long, device=ids.device)
        pos = torch.arange(N, device=ids.device)
        valid = valid_pairs(B, N, N, lengths, self.cfg.causal, device=ids.device)  # (B, 1, N, N)
        x = self.tok(ids) + self.pos(pos)
        for i, block in enumerate(self.blocks):
            x = block(x, valid, i, lengths, restrict, capture)
        return self.ln(x) @ self.tok.weight.T

    def num_params(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.parameters())

    # -- storage --------------------------------------------------------------------------
    def save(self, folder: str | Path, dtype: torch.dtype = torch.float16) -> None:
        """Write ``model.safetensors`` (weights in ``dtype``) and ``config.json``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to(dtype).contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps(asdict(self.cfg), indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> EntmaxTransformer:
        """Read a model written by :meth:`save` (weights become float32)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        cfg = ModelConfig(**json.loads((folder / "config.json").read_text()))
        model = cls(cfg)
        state = {k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()}
        model.load_state_dict(state)
        return model.eval()
