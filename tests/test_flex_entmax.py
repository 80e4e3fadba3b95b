"""The flex_entmax path (α-entmax over a block layout by FlexAttention) equals the dense reference.

Compiled FlexAttention on CPU: each distinct shape and layout compiles once (15–25 s cold on a
2-core machine, seconds with a warm Inductor cache), so the CPU cases share one shape
(B = 2, H = 2, N = 256, D = 64) and two block sizes. Errors are normwise:
``max|out − ref| / max|ref|``. CUDA cases are marked ``cuda`` and skipped without a GPU.
"""

from __future__ import annotations

import math

import pytest
import torch

from sparsebench.bench import block_plan, dense_attention, execute, prepare
from sparsebench.bench.kernels.flex_entmax import flex_entmax_attention, threshold_tolerance
from sparsebench.methods import Band, Globals, Graph

B, H, N, D = 2, 2, 256, 64
LENGTHS = torch.tensor([256, 201])
#: Normwise relative error allowed in float32 (the issue's bound).
FP32 = 1e-5
#: Half-precision inputs, against the float32 reference of the same (rounded) inputs: the output
#: is rounded to the input dtype (bf16 keeps 8 significant bits, fp16 11), plus the threshold's
#: stopping tolerance for half precision (1e-3, about 2e-3 on the output).
HALF = {torch.bfloat16: 1e-2, torch.float16: 4e-3}

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def qkv(device="cpu", dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(
        (torch.randn(B, H, N, D, generator=g) * 1.5).to(device=device, dtype=dtype)
        for _ in range(3)
    )


def window_globals(causal: bool) -> Graph:
    pos = torch.tensor([[0, 7], [0, -1]])
    return Graph((B, H, N, N), [Band(-40, 40), Globals(pos)], lengths=LENGTHS, causal=causal)


def random_blocks(causal: bool, b: int = 64) -> Graph:
    """A random block pattern (the diagonal always kept) plus scattered single edges."""
    g = torch.Generator().manual_seed(3)
    nb = N // b
    blocks = (torch.rand(B, H, nb, nb, generator=g) < 0.3) | torch.eye(nb, dtype=torch.bool)
    dense = blocks.repeat_interleave(b, -1).repeat_interleave(b, -2)
    dense |= torch.rand(B, H, N, N, generator=g) < 0.02
    return Graph.from_dense(dense, lengths=LENGTHS, causal=causal)


def rel_error(out, ref) -> float:
    return float((out.double() - ref.double()).abs().max() / ref.double().abs().max())


GRAPHS = {
    "window+globals padded": lambda: window_globals(False),
    "window+globals padded causal": lambda: window_globals(True),
    "random blocks padded": lambda: random_blocks(False),
    "random blocks padded causal": lambda: random_blocks(True),
}


@pytest.mark.parametrize("name", list(GRAPHS))
def test_matches_dense_reference_fp32(name):
    q, k, v = qkv()
    graph = GRAPHS[name]()
    ref = dense_attention(q, k, v, graph)
    stats: dict = {}
    out = flex_entmax_attention(q, k, v, block_plan(graph, 64), 1.5, stats=stats)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert rel_error(out, ref) <= FP32, rel_error(out, ref)
    # Padding rows have no allowed key: zeros, as the reference.
    assert torch.equal(out[1, :, 201:], torch.zeros_like(out[1, :, 201:]))
    assert 3 <= stats["threshold_passes"] <= 16  # max pass, Newton start, a few secant steps


def test_block_size_128_through_execute():
    q, k, v = qkv(seed=1)
    graph = window_globals(True)
    plan = prepare(graph, path="flex_entmax", block_size=128)
    assert plan.path == "flex_entmax" and plan.layout.block_size == 128
    ref = execute(q, k, v, graph, path="dense")
    assert rel_error(execute(q, k, v, plan), ref) <= FP32


@pytest.mark.parametrize("alpha", [1.25, 2.0])
def test_other_alphas_match_dense_reference(alpha):
    q, k, v = qkv(seed=2)
    graph = window_globals(False)
    ref = dense_attention(q, k, v, graph, alpha=alpha)
    out = execute(q, k, v, graph, alpha=alpha, path="flex_entmax", block_size=64)
    assert rel_error(out, ref) <= FP32, rel_error(out, ref)


def exact_entmax_output(q, k, v, graph, alpha):
    """α-entmax attention in float64 by 100 bisection steps per row (a reference for α > 2)."""
    s = q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1])
    x = (alpha - 1) * s.masked_fill(~graph.to_dense(), -math.inf)
    top = x.amax(-1, keepdim=True)
    x = x - torch.where(torch.isinf(top), 0.0, top)
    lo, hi = torch.full_like(top, -1.0), torch.zeros_like(top)
    for _ in range(100):
        mid = (lo + hi) / 2
        big = ((x - mid).clamp(min=0) ** (1 / (alpha - 1))).sum(-1, keepdim=True) >= 1
        lo, hi = torch.where(big, mid, lo), torch.where(big, hi, mid)
    p = (x - lo).clamp(min=0) ** (1 / (alpha - 1))
    return (p / p.sum(-1, keepdim=True)).nan_to_num(0.0) @ v.double()


def test_alpha_above_two_converges():
    """α > 2 (γ < 1): φ is not convex, the bracket takes over; p ∝ w^γ with γ < 1 is steep at the
    threshold, so float32 scores limit any implementation (the dense reference is 4e-4 off)."""
    q, k, v = qkv(seed=2)
    graph = window_globals(False)
    ref = exact_entmax_output(q, k, v, graph, 3.0)
    out = execute(q, k, v, graph, alpha=3.0, path="flex_entmax", block_size=64)
    assert rel_error(out, ref) <= 1e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_inputs(dtype):
    q, k, v = qkv(dtype=dtype, seed=4)
    graph = random_blocks(True)
    ref = dense_attention(q.float(), k.float(), v.float(), graph)
    out = execute(q, k, v, graph, path="flex_entmax", block_size=64)
    assert out.dtype == dtype
    assert rel_error(out, ref) <= HALF[dtype], rel_error(out, ref)
    assert threshold_tolerance(dtype) == 1e-3 and threshold_tolerance(torch.float32) == 1e-6


def test_rows_without_keys_are_zero():
    q, k, v = qkv(seed=5)
    graph = Graph((B, H, N, N), [Band(70, 100)], lengths=LENGTHS)  # rows >= 186 have no key
    ref = dense_attention(q, k, v, graph)
    out = execute(q, k, v, graph, path="flex_entmax", block_size=64)
    assert torch.equal(out[:, :, 190:], torch.zeros_like(out[:, :, 190:]))
    assert rel_error(out, ref) <= FP32
    none = Graph.empty((B, H, N, N))
    out = execute(q, k, v, none, path="flex_entmax", block_size=64)
    assert torch.equal(out, torch.zeros_like(q))


def test_path_names_and_refusals():
    q, k, v = qkv()
    graph = window_globals(False)
    with pytest.raises(NotImplementedError, match="α-entmax only"):
        execute(q, k, v, graph, normalizer="softmax", path="flex_entmax")
    with pytest.raises(NotImplementedError, match="softmax only"):
        execute(q, k, v, graph, path="flex")
    plan = prepare(graph, path="flex_entmax", block_size=64)
    with pytest.raises(NotImplementedError, match="α-entmax only"):
        execute(q, k, v, plan, normalizer="softmax")


# -- CUDA ---------------------------------------------------------------------------------------
@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("name", list(GRAPHS))
def test_cuda_matches_dense_reference(name):
    q, k, v = qkv("cuda")
    graph = GRAPHS[name]()
    ref = dense_attention(q.cpu(), k.cpu(), v.cpu(), graph)
    out = execute(q, k, v, graph, path="flex_entmax", block_size=64)
    assert out.is_cuda and rel_error(out.cpu(), ref) <= FP32


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_cuda_half_precision_runs_natively(dtype):
    """On CUDA the Flex kernels take half precision as is; probabilities are rounded to the
    input dtype before they multiply the values, so the bound is twice the CPU one."""
    q, k, v = qkv("cuda", dtype, seed=4)
    graph = random_blocks(True)
    ref = dense_attention(q.float().cpu(), k.float().cpu(), v.float().cpu(), graph)
    out = execute(q, k, v, graph, path="flex_entmax", block_size=64)
    assert out.dtype == dtype and rel_error(out.cpu(), ref) <= 2 * HALF[dtype]


@pytest.mark.cuda
@cuda
def test_cuda_flex_softmax_half_precision():
    q, k, v = qkv("cuda", torch.bfloat16, seed=6)
    graph = window_globals(True)
    q32, k32, v32 = (x.float().cpu() for x in (q, k, v))
    ref = dense_attention(q32, k32, v32, graph, normalizer="softmax")
    out = execute(q, k, v, graph, normalizer="softmax", path="flex", block_size=64)
    assert out.dtype == torch.bfloat16 and rel_error(out.cpu(), ref) <= 2 * HALF[torch.bfloat16]
