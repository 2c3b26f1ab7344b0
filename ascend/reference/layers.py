"""Building blocks of the reference models, in plain PyTorch, float32.

Read next to transformers' ``modeling_{deepseek_v3,deepseek_v32,glm_moe_dsa,glm4_moe}.py`` and
DeepSeek's ``inference/model.py``. Notation: N = tokens of this step (all sequences concatenated),
T = tokens in a sequence's cache, H = heads on this rank, h = hidden size.

The model's blocks (``attention.py``, ``moe.py``) are plain classes holding float32 tensors (no
autograd, no nn.Module bookkeeping); the parallel ones hold only this rank's slice.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------------------------
# linears: float, or static W8A8 simulated
# --------------------------------------------------------------------------------------------
class StaticW8A8:
    """A static W8A8 linear (quantization.md §1) simulated on this rank's part of it.

    ``q``: int8 codes [out, in] (this rank's rows/columns), ``deq``: deq_scale values [out],
    ``input_scale`` / ``input_offset``: [1]; ``bias_int`` [out] = ``quant_bias + input_offset *
    sum_k q_full[:, k]`` = round(bias / deq), kept only on the first column window. Then
    ``deq * ((x_q - input_offset) @ q.T + bias_int)`` equals the kernel's ``deq * (x_q @ q.T +
    quant_bias)`` on the whole linear, and a row-split (column-window) part's outputs add up
    across ranks to it. Integer arithmetic is exact in float64."""

    def __init__(self, q: torch.Tensor, deq: torch.Tensor, input_scale: torch.Tensor, input_offset: torch.Tensor,
                 bias_int: torch.Tensor):
        self.q = q.to(torch.float64)
        self.deq = deq.to(torch.float64)
        self.input_scale, self.input_offset = input_scale.to(torch.float32), input_offset.to(torch.float32)
        self.bias_int = bias_int.to(torch.float64)

    @property
    def shape(self) -> torch.Size:
        return self.q.shape

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from ascend.checkpoint.w8a8 import quantize_activation

        xq = quantize_activation(x, self.input_scale, self.input_offset).to(torch.float64) - self.input_offset.double()
        return ((xq @ self.q.T + self.bias_int) * self.deq).to(torch.float32)


def linear(x: torch.Tensor, w, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ w.T + bias`` for a float weight; a ``StaticW8A8`` runs its simulation (its float
    bias is already folded into ``quant_bias``, so ``bias`` is not added again)."""
    if isinstance(w, StaticW8A8):
        return w(x)
    return F.linear(x, w, bias)


# --------------------------------------------------------------------------------------------
# norms
# --------------------------------------------------------------------------------------------
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``x``: [..., d] float32; ``weight``: [d]. ``x / sqrt(mean(x^2) + eps) * weight``."""
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over the last dim (the DSA indexer's ``k_norm``)."""
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


# --------------------------------------------------------------------------------------------
# RoPE
# --------------------------------------------------------------------------------------------
def rope_inv_freq(dim: int, theta: float, scaling: dict | None) -> tuple[torch.Tensor, float]:
    """Inverse frequencies [dim/2] and the cos/sin attention factor.

    ``scaling`` None or ``{"rope_type": "yarn", factor, original_max_position_embeddings,
    beta_fast, beta_slow, mscale, mscale_all_dim}`` (DeepSeek demo ``precompute_freqs_cis``;
    checkpoints.md §8.2). Other types are rejected by the caller.
    """
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    if not scaling or scaling.get("rope_type", "default") == "default":
        return inv, 1.0
    factor = float(scaling["factor"])
    orig = float(scaling["original_max_position_embeddings"])
    beta_fast = float(scaling.get("beta_fast") or 32)
    beta_slow = float(scaling.get("beta_slow") or 1)

    def corr_dim(rotations: float) -> float:
        return dim * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low = max(math.floor(corr_dim(beta_fast)), 0)
    high = min(math.ceil(corr_dim(beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    inv = inv / factor * ramp + inv * (1 - ramp)
    mscale, mscale_all = scaling.get("mscale"), scaling.get("mscale_all_dim")
    if scaling.get("attention_factor") is not None:
        att = float(scaling["attention_factor"])
    elif mscale and mscale_all:
        att = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all)
    else:
        att = yarn_mscale(factor, 1.0)
    return inv, att


def yarn_mscale(factor: float, mscale: float) -> float:
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


class Rope:
    """cos/sin tables for absolute positions; applies the interleaved or NeoX rotation.

    Interleaved rotates pairs ``(x[2i], x[2i+1])`` (DeepSeek MLA, GLM-5 MLA and indexer);
    NeoX rotates ``(x[i], x[i + d/2])`` (GLM-4.x, DeepSeek-V3.2 indexer). transformers computes
    the interleaved case on a de-interleaved permutation: dot products agree, values do not.
    """

    def __init__(self, dim: int, theta: float, scaling: dict | None = None):
        self.dim = dim
        self.inv_freq, self.attention_factor = rope_inv_freq(dim, theta, scaling)

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``positions``: [N] int64 -> cos, sin [N, dim/2]."""
        angles = positions.float()[:, None] * self.inv_freq[None, :]
        return angles.cos() * self.attention_factor, angles.sin() * self.attention_factor

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool) -> torch.Tensor:
        """``x``: [N, ..., d]; cos/sin: [N, d/2] broadcast over the middle dims."""
        shape = (cos.shape[0],) + (1,) * (x.dim() - 2) + (cos.shape[-1],)
        cos, sin = cos.view(shape), sin.view(shape)
        if interleaved:
            x1, x2 = x[..., 0::2], x[..., 1::2]
            return torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


# --------------------------------------------------------------------------------------------
# attention core
# --------------------------------------------------------------------------------------------
def causal_mask(q_pos: torch.Tensor, k_len: int) -> torch.Tensor:
    """Boolean [S, T]: True where key t may be attended by the query at position q_pos[s]."""
    return torch.arange(k_len)[None, :] <= q_pos[:, None]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, scale: float) -> torch.Tensor:
    """Softmax attention. ``q``: [S, H, dq]; ``k``: [T, H, dq]; ``v``: [T, H, dv];
    ``allowed``: [S, T] bool (or [H, S, T]). Returns [S, H, dv]."""
    scores = torch.einsum("shd,thd->hst", q, k) * scale
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.einsum("hst,thd->shd", probs, v)
