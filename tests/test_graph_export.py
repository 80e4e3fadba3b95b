"""A predicted graph in your own model: FlexAttention BlockMask and an attention bias."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sparsebench import methods
from sparsebench.bench import dense_attention
from sparsebench.methods import Band, Globals, Graph, Groups

B, H, N, D = 2, 2, 70, 16


def qkv(seed=0, n=N):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, n, D, generator=g) for _ in range(3)]


def graphs(lengths, causal, n=N):
    g = torch.Generator().manual_seed(1)
    rnd = torch.rand(B, H, n, n, generator=g) < 0.15
    yield "random", Graph.from_dense(rnd, lengths=lengths, causal=causal)
    pos = torch.tensor([[0, 5], [0, -1]])
    band = Graph((B, H, n, n), [Band(-3, 3), Globals(pos)], lengths=lengths, causal=causal)
    yield "band+globals", band
    qg = torch.randint(0, 6, (B, H, n, 1), generator=g)
    kg = torch.randint(0, 6, (B, H, n, 1), generator=g)
    yield "groups", Graph((B, H, n, n), [Groups(qg, kg)], lengths=lengths, causal=causal)
    yield "shared band", Graph((B, H, n, n), [Band(-4, 2)], lengths=lengths, causal=causal)
    # Wide enough for full blocks: eager FlexAttention evaluates mask_mod inside them too.
    wide = Graph((B, H, n, n), [Band(-20, 20), Globals(pos)], lengths=lengths, causal=causal)
    yield "wide band (full blocks)", wide
    yield "empty rows", Graph((B, H, n, n), [Band(5, 9)], lengths=lengths, causal=False)


CASES = [(None, False), (torch.tensor([70, 41]), False), (torch.tensor([70, 33]), True)]
IDS = ["full", "padded", "padded-causal"]


@pytest.mark.parametrize("block_size", [16, 64])
@pytest.mark.parametrize(("lengths", "causal"), CASES, ids=IDS)
def test_block_mask_attention_equals_dense_reference(lengths, causal, block_size):
    from torch.nn.attention.flex_attention import flex_attention

    q, k, v = qkv()
    for name, graph in graphs(lengths, causal):
        mask = graph.to_block_mask(block_size)
        out = flex_attention(q, k, v, block_mask=mask, scale=D**-0.5)
        ref = dense_attention(q, k, v, graph, normalizer="softmax")
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6, msg=name)


def test_block_mask_skips_empty_blocks_and_marks_full_ones():
    pos = torch.tensor([[0, 5], [0, -1]])
    graph = Graph((B, H, N, N), [Band(-20, 20), Globals(pos)], lengths=torch.tensor([70, 41]))
    mask = graph.to_block_mask(16)
    blocks = F.pad(graph.to_dense(), (0, 80 - N, 0, 80 - N)).view(B, H, 5, 16, 5, 16)
    kept = blocks.any(-1).any(-2)
    full = blocks.all(-1).all(-2)
    assert 0 < int(full.sum()) < int(kept.sum()) < kept.numel()
    assert torch.equal(mask.to_dense().bool().expand_as(kept), kept)
    assert torch.equal(mask.full_kv_num_blocks.expand(B, H, 5), full.sum(-1).to(torch.int32))
    partial = (mask.kv_num_blocks.expand(B, H, 5)).sum()
    assert int(partial) == int((kept & ~full).sum())


def test_block_mask_keeps_shared_structure_broadcast():
    graph = Graph((B, H, N, N), [Band(-2, 2)])
    mask = graph.to_block_mask(32)
    assert mask.kv_num_blocks.shape[:2] == (1, 1)  # one layout for every sequence and head
    q, k, v = qkv()
    from torch.nn.attention.flex_attention import flex_attention

    out = flex_attention(q, k, v, block_mask=mask, scale=D**-0.5)
    torch.testing.assert_close(out, dense_attention(q, k, v, graph, normalizer="softmax"))


def test_block_mask_of_a_predicted_graph_with_a_sequence_length_off_the_block_grid():
    from torch.nn.attention.flex_attention import flex_attention

    q, k, v = qkv(n=100)
    graph = methods.create("window", w=9, global_tokens=1).predict(q, k, causal=True)
    out = flex_attention(q, k, v, block_mask=graph.to_block_mask(32), scale=D**-0.5)
    torch.testing.assert_close(out, dense_attention(q, k, v, graph, normalizer="softmax"))


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "64"])
def test_block_mask_refuses_a_bad_block_size(bad):
    with pytest.raises(ValueError, match="block_size"):
        Graph((1, 1, 8, 8), [Band(0, 0)]).to_block_mask(bad)


@pytest.mark.parametrize(("lengths", "causal"), CASES, ids=IDS)
def test_attn_bias_in_sdpa_equals_dense_reference(lengths, causal):
    q, k, v = qkv()
    for name, graph in graphs(lengths, causal):
        bias = graph.to_attn_bias()
        assert bias.shape == (B, H, N, N) and bias.dtype == torch.float32
        assert torch.equal(bias == 0, graph.to_dense()), name
        assert torch.isneginf(bias[~graph.to_dense()]).all(), name
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        ref = dense_attention(q, k, v, graph, normalizer="softmax")
        rows = graph.to_dense().any(-1)  # rows with no edge are NaN in SDPA, zero in ours
        torch.testing.assert_close(out[rows], ref[rows], rtol=1e-5, atol=1e-6, msg=name)
        assert torch.equal(ref[~rows], torch.zeros_like(ref[~rows]))


def test_attn_bias_is_aligned_for_xformers_and_takes_the_inputs_dtype():
    graph = Graph((B, H, N, N), [Band(-3, 3)])  # 70 keys: not a multiple of 8
    bias = graph.to_attn_bias(torch.bfloat16)
    assert bias.dtype == torch.bfloat16
    assert bias.stride(-2) % 8 == 0 and bias.stride(-2) >= N  # xformers' alignment rule
    assert bias.stride(-1) == 1
    assert torch.equal(bias == 0, graph.to_dense())


@pytest.mark.parametrize("bad", [torch.int64, torch.bool, "float32"])
def test_attn_bias_refuses_a_non_floating_dtype(bad):
    with pytest.raises(ValueError, match="floating dtype"):
        Graph((1, 1, 8, 8), [Band(0, 0)]).to_attn_bias(bad)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="xformers kernels need CUDA")
def test_attn_bias_in_xformers_on_cuda_equals_dense_reference():
    xops = pytest.importorskip("xformers.ops")
    q, k, v = (t.cuda() for t in qkv())
    graph = Graph((B, H, N, N), [Band(-3, 3), Globals(torch.tensor([[0], [1]]))]).with_validity(
        lengths=torch.tensor([70, 41])
    )
    bias = graph.to_attn_bias(q.dtype, device="cuda")
    out = xops.memory_efficient_attention(
        *(t.transpose(1, 2).contiguous() for t in (q, k, v)), attn_bias=bias, scale=D**-0.5
    ).transpose(1, 2)
    ref = dense_attention(q.cpu(), k.cpu(), v.cpu(), graph, normalizer="softmax")
    rows = graph.to_dense().any(-1)
    torch.testing.assert_close(out.cpu()[rows], ref[rows], rtol=1e-4, atol=1e-5)
    assert math.isfinite(float(out.cpu()[rows].abs().max()))


def test_readme_graph_export_example_runs():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(
        b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "to_block_mask" in b
    )
    ns: dict = {}
    exec(block.replace("1024", "256"), ns)  # the example's own assert checks the two agree
    assert ns["bias"].shape == (1, 8, 256, 256)
