"""SmoothQuant-style smoothing of one decoder layer's attention (quantization.md §5).

Per input channel c of a static linear: ``s_c = max|x_c|^α / max|W_:,c|^(1-α)``. The activation
is divided by ``s`` and the weight's input columns multiplied by it, so the float output is
unchanged while activation outliers move into the weight. Two subgraph kinds:

- ``norm → linear``: the norm's weight is divided by ``s`` (every linear reading that norm's
  output, quantized or float, gets its columns multiplied). GLM-4.x uses the anti-outlier form
  xLLM loads (``ALL_W8A8_ANTI``): the activation is also shifted by ``z_c = (max_c + min_c) / 2``,
  which becomes a norm bias ``-z / s`` and a linear bias ``b + W z``.
- ``v → o``: rows of the value projection (MLA: the v rows of ``kv_b_proj``; GQA: ``v_proj``,
  one scale per KV channel shared by the query heads using it) are divided by ``s``, ``o_proj``'s
  columns multiplied.

``smooth_layer`` returns the changed float tensors under their checkpoint names and, per smoothed
static linear, ``(shift, scale)`` so recorded input ranges can be mapped: ``x' = (x - shift) / s``.
``scaled`` names the static linears whose new weight is just the source's with its columns
multiplied by ``scale``: calibration stores ``scale`` for those, not the weight (the W8A8 writer
applies it), which keeps the calibration file small (no copy of the attention weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ascend.models.args import ModelArgs

MIN_SCALE = 1e-5


@dataclass
class Smoothing:
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # checkpoint name -> new float tensor
    transforms: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # module -> (shift, scale)
    scaled: set[str] = field(default_factory=set)  # static modules whose weight is source * scale (columns)


def smooth_scale(act_absmax: torch.Tensor, w_absmax: torch.Tensor, alpha: float) -> torch.Tensor:
    s = act_absmax.clamp_min(0).pow(alpha) / w_absmax.clamp_min(0).pow(1 - alpha)
    ok = (act_absmax > 0) & (w_absmax > 0) & torch.isfinite(s)
    return torch.where(ok, s.clamp_min(MIN_SCALE), torch.ones_like(s))


def smooth_layer(a: ModelArgs, layer: int, static: set[str], stats_min: dict, stats_max: dict, read, alpha: float) -> Smoothing:
    """``static``: this layer's static linear modules; ``stats_*``: their recorded per-channel input
    min / max; ``read(name)``: the float tensor (or None when the checkpoint lacks it)."""
    out = Smoothing()
    p = f"model.layers.{layer}.self_attn"
    norm = f"model.layers.{layer}.input_layernorm"
    if a.is_mla:
        first = [f"{p}.q_a_proj" if a.q_lora_rank else f"{p}.q_proj", f"{p}.kv_a_proj_with_mqa"]
        if a.layer_has_indexer(layer):
            first += [f"{p}.indexer.wk", f"{p}.indexer.weights_proj"]
        _norm_group(out, norm, first, static, stats_min, stats_max, read, alpha, shift=False)
        if a.q_lora_rank:
            second = [f"{p}.q_b_proj"] + ([f"{p}.indexer.wq_b"] if a.layer_has_indexer(layer) else [])
            _norm_group(out, f"{p}.q_a_layernorm", second, static, stats_min, stats_max, read, alpha, shift=False)
    else:
        qkv = [f"{p}.q_proj", f"{p}.k_proj", f"{p}.v_proj"]
        _norm_group(out, norm, qkv, static, stats_min, stats_max, read, alpha, shift=bool(a.attention_bias))
    o = f"{p}.o_proj"
    if o in static:
        _v_to_o(out, a, p, stats_min[o], stats_max[o], read, alpha)
    return out


def _current(out: Smoothing, read, name: str):
    return out.tensors[name] if name in out.tensors else read(name)


def _norm_group(out, norm, linears, static, lo, hi, read, alpha, *, shift: bool) -> None:
    members = [m for m in linears if m in static]
    if not members:
        return
    mn = torch.stack([lo[m] for m in members]).amin(0)
    mx = torch.stack([hi[m] for m in members]).amax(0)
    w_absmax = torch.stack([read(f"{m}.weight").abs().amax(0) for m in members]).amax(0)
    z = (mx + mn) / 2 if shift else torch.zeros_like(mn)
    act = (mx - mn) / 2 if shift else torch.maximum(mn.abs(), mx.abs())
    s = smooth_scale(act, w_absmax, alpha)
    out.tensors[f"{norm}.weight"] = read(f"{norm}.weight") / s
    if shift:
        out.tensors[f"{norm}.bias"] = -z / s
    for m in linears:  # quantized members and float consumers of the same normed input
        w = read(f"{m}.weight")
        out.tensors[f"{m}.weight"] = w * s
        if shift:
            bias = read(f"{m}.bias")
            out.tensors[f"{m}.bias"] = (bias if bias is not None else torch.zeros(w.shape[0])) + w @ z
        if m in static:
            out.transforms[m] = (z, s)
            out.scaled.add(m)


def _v_to_o(out, a: ModelArgs, p: str, mn, mx, read, alpha) -> None:
    o_name = f"{p}.o_proj.weight"
    o = _current(out, read, o_name)
    act, w_absmax = torch.maximum(mn.abs(), mx.abs()), o.abs().amax(0)  # per o input channel
    if a.is_mla:
        s = smooth_scale(act, w_absmax, alpha)  # [H * dv], each head owns its v rows
        kv_b = _current(out, read, f"{p}.kv_b_proj.weight")
        dn, dv = a.qk_nope_head_dim, a.v_head_dim
        kv_b = kv_b.view(-1, dn + dv, kv_b.shape[-1]).clone()
        kv_b[:, dn:, :] /= s.view(-1, dv, 1)
        out.tensors[f"{p}.kv_b_proj.weight"] = kv_b.view(-1, kv_b.shape[-1])
    else:
        d = a.head_dim
        heads = o.shape[1] // d
        v = _current(out, read, f"{p}.v_proj.weight")
        rep = heads // (v.shape[0] // d)
        per_kv = lambda t: t.view(-1, rep, d).amax(1).reshape(-1)  # query heads sharing a KV head
        s_kv = smooth_scale(per_kv(act), per_kv(w_absmax), alpha)  # [Hkv * d]
        s = s_kv.view(-1, 1, d).expand(-1, rep, d).reshape(-1)
        out.tensors[f"{p}.v_proj.weight"] = v / s_kv[:, None]
        out.scaled.discard(f"{p}.v_proj")  # rows divided too: its weight is stored whole
        bias = _current(out, read, f"{p}.v_proj.bias") if a.attention_bias else None
        if bias is not None:
            out.tensors[f"{p}.v_proj.bias"] = bias / s_kv
    if o_name not in out.tensors:  # o_proj read from the source
        out.scaled.add(f"{p}.o_proj")
    out.tensors[o_name] = o * s
    out.transforms[f"{p}.o_proj"] = (torch.zeros_like(s), s)
