"""Building blocks against the published formulas (DeepSeek ``inference/model.py``, transformers)."""

from __future__ import annotations

import math

import torch

from ascend.reference.layers import Rope, rope_inv_freq


def test_interleaved_rope_is_deepseeks_complex_multiply():
    """DeepSeek ``apply_rotary_emb``: view adjacent pairs as complex numbers, multiply by e^{i·angle}."""
    torch.manual_seed(0)
    x = torch.randn(5, 3, 16)
    rope = Rope(16, 10000.0)
    pos = torch.arange(7, 12)
    cos, sin = rope.cos_sin(pos)
    freqs = torch.polar(torch.ones(5, 8), pos.float()[:, None] * rope.inv_freq[None])
    want = torch.view_as_real(torch.view_as_complex(x.view(5, 3, 8, 2)) * freqs[:, None]).flatten(-2)
    assert torch.allclose(Rope.rotate(x, cos, sin, interleaved=True), want, atol=1e-6)


def test_transformers_interleave_is_a_permutation_of_ours():
    """transformers de-interleaves (evens, then odds): same values, permuted; dot products equal."""
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import apply_rotary_pos_emb_interleave

    torch.manual_seed(0)
    q, k = torch.randn(6, 16), torch.randn(6, 16)
    rope = Rope(16, 10000.0)
    cos, sin = rope.cos_sin(torch.arange(6))
    hf_cos, hf_sin = torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)
    hq, hk = apply_rotary_pos_emb_interleave(q[None, None], k[None, None], hf_cos[None], hf_sin[None])
    ours_q = Rope.rotate(q, cos, sin, interleaved=True)
    perm = torch.cat([torch.arange(0, 16, 2), torch.arange(1, 16, 2)])
    assert torch.allclose(hq[0, 0], ours_q[:, perm], atol=1e-6)
    assert torch.allclose((hq[0, 0] * hk[0, 0]).sum(-1), (ours_q * Rope.rotate(k, cos, sin, True)).sum(-1), atol=1e-5)


def test_neox_rope_is_rotate_half():
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import apply_rotary_pos_emb

    torch.manual_seed(0)
    q = torch.randn(4, 2, 8)
    rope = Rope(8, 1e6)
    cos, sin = rope.cos_sin(torch.arange(4))
    hq, _ = apply_rotary_pos_emb(q, q, torch.cat([cos, cos], -1), torch.cat([sin, sin], -1), unsqueeze_dim=1)
    assert torch.allclose(Rope.rotate(q, cos, sin, interleaved=False), hq, atol=1e-6)


def test_yarn_matches_transformers_and_deepseek_v3_numbers():
    """DeepSeek-V3's YaRN (factor 40, original 4096, beta 32/1): inv_freq as transformers computes it,
    the correction range of checkpoints.md §8.2, and the softmax scale 0.135234."""
    from transformers import DeepseekV3Config
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from ascend.models.args import ModelArgs
    from ascend.reference.attention import mla_softmax_scale

    scaling = {"rope_type": "yarn", "factor": 40, "original_max_position_embeddings": 4096, "beta_fast": 32,
               "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0, "rope_theta": 10000.0}
    ours, att = rope_inv_freq(64, 10000.0, scaling)
    config = DeepseekV3Config(rope_parameters=dict(scaling), max_position_embeddings=163840)
    want, want_att = ROPE_INIT_FUNCTIONS["yarn"](config, "cpu")
    assert torch.allclose(ours, want, rtol=1e-6) and att == want_att == 1.0
    base = 1.0 / (10000.0 ** (torch.arange(0, 64, 2) / 64))
    assert torch.allclose(ours[:10], base[:10]) and torch.allclose(ours[23:], base[23:] / 40)  # low 10, high 23
    cfg = {"model_type": "deepseek_v3", "rope_theta": 10000, "max_position_embeddings": 163840,
           "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                            "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}}
    scale = mla_softmax_scale(ModelArgs.from_config(cfg))
    assert math.isclose(scale, 192**-0.5 * (0.1 * math.log(40) + 1) ** 2, rel_tol=1e-12)
    assert abs(scale - 0.135234) < 1e-6


def test_dsa_ties_go_to_earlier_positions():
    """Equal index scores: the earlier key wins (stable), in prefill and in decode alike."""
    from ascend.reference.attention import DSAIndexer, SeqSlice

    class Args:
        index_head_dim, index_n_heads, qk_rope_head_dim, index_topk = 4, 1, 2, 2
        indexer_rope_interleave = True

    idx = DSAIndexer.__new__(DSAIndexer)
    idx.a, idx.interleaved = Args, True
    idx.wq_b = torch.zeros(4, 3)  # q = 0: every score relu(0) = 0, all tied
    idx.wk, idx.k_norm_w, idx.k_norm_b = torch.randn(4, 5), torch.ones(4), torch.zeros(4)
    idx.weights_proj = torch.ones(1, 5)
    x, c_q = torch.randn(5, 5), torch.randn(5, 3)
    cos, sin = Rope(2, 10000.0).cos_sin(torch.arange(5))
    allowed = torch.tril(torch.ones(5, 5, dtype=torch.bool))
    chosen = idx.select(x, c_q, cos, sin, SeqSlice(slice(0, 5), torch.arange(5)), allowed)
    assert chosen[4].tolist() == [True, True, False, False, False]
    assert chosen[1].tolist()[:2] == [True, True]
