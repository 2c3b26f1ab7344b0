"""W8A8 schemes per family, as data: which kind every linear gets (reference/quantization.md §3).

Kinds (the values of ``quant_model_description.json``):

- ``W8A8``          static: int8 weight, per-tensor activation scale/offset from calibration
- ``W8A8_DYNAMIC``  int8 weight, activations quantized per token at run time (no calibration)
- ``FLOAT``         left in the model dtype

Schemes:

- ``w8a8`` (default): the family's published engine practice. DeepSeek-V3/R1 and DeepSeek-V3.2 /
  GLM-5 (MLA): static on the attention projections except ``kv_b_proj`` (and, with the DSA
  indexer, except ``wk``; ``wq_b`` sits under ``*self_attn*`` in ``glm_5_w8a8.yaml`` and is
  static), dynamic on the dense MLP, shared and routed experts. GLM-4.x: static q/k/v/o
  (xLLM packs them as ``ALL_W8A8_ANTI``) and dynamic ``*mlp.experts*`` only — the GLM-4.7
  practice leaves the dense MLP, the shared expert and the MTP layer in float.
- ``dynamic``: data-free, every quantizable linear ``W8A8_DYNAMIC`` (vllm-ascend reads the kind
  per tensor; xLLM's loaders do not, see :func:`xllm_accepts`).

Never quantized in any scheme: router ``gate`` and its bias, norms, embeddings, ``lm_head``,
MTP ``eh_proj`` / ``shared_head``, indexer ``weights_proj`` and ``k_norm``.

Patterns are ``fnmatch`` globs on the tensor name after ``model.layers.N.``; first match wins;
a name matching no rule is FLOAT. No torch here.
"""

from __future__ import annotations

import fnmatch
import re

STATIC, DYNAMIC, FLOAT = "W8A8", "W8A8_DYNAMIC", "FLOAT"
KINDS = (STATIC, DYNAMIC, FLOAT)
SCHEMES = ("w8a8", "dynamic")
DEFAULT_SCHEME = "w8a8"

# Linears the tensor table calls quantizable (every family); anything else is FLOAT in any scheme.
_LINEARS = (
    "self_attn.q_a_proj.*", "self_attn.q_b_proj.*", "self_attn.q_proj.*", "self_attn.k_proj.*",
    "self_attn.v_proj.*", "self_attn.kv_a_proj_with_mqa.*", "self_attn.kv_b_proj.*", "self_attn.o_proj.*",
    "self_attn.indexer.wq_b.*", "self_attn.indexer.wk.*",
    "mlp.gate_proj.*", "mlp.up_proj.*", "mlp.down_proj.*",
    "mlp.shared_experts.*_proj.*", "mlp.experts.*.*_proj.*",
)
_MLP_DYNAMIC = (("mlp.gate_proj.*", DYNAMIC), ("mlp.up_proj.*", DYNAMIC), ("mlp.down_proj.*", DYNAMIC),
                ("mlp.shared_experts.*_proj.*", DYNAMIC), ("mlp.experts.*.*_proj.*", DYNAMIC))
_MLA_PRACTICE = (
    ("self_attn.kv_b_proj.*", FLOAT),  # absorbed into MLA attention; float in every engine
    ("self_attn.indexer.wk.*", FLOAT),  # xLLM maps only indexer.wk.weight (a float linear)
    ("self_attn.indexer.wq_b.*", STATIC),
    ("self_attn.q_a_proj.*", STATIC), ("self_attn.q_b_proj.*", STATIC), ("self_attn.q_proj.*", STATIC),
    ("self_attn.kv_a_proj_with_mqa.*", STATIC), ("self_attn.o_proj.*", STATIC),
    *_MLP_DYNAMIC,
)
_GLM4_PRACTICE = (
    ("self_attn.q_proj.*", STATIC), ("self_attn.k_proj.*", STATIC), ("self_attn.v_proj.*", STATIC),
    ("self_attn.o_proj.*", STATIC),
    ("mlp.experts.*.*_proj.*", DYNAMIC),
)

# family -> scheme -> (rules for main layers, whether the MTP layer follows them or stays FLOAT)
_SCHEMES: dict[str, dict[str, tuple[tuple[tuple[str, str], ...], bool]]] = {
    family: {"w8a8": practice, "dynamic": (tuple((p, DYNAMIC) for p in _LINEARS), True)}
    for family, practice in (
        ("deepseek_v3", (_MLA_PRACTICE, True)),
        ("deepseek_v32", (_MLA_PRACTICE, True)),
        ("glm_moe_dsa", (_MLA_PRACTICE, True)),
        ("glm4_moe", (_GLM4_PRACTICE, False)),  # GLM-4.7 practice: the MTP layer (92) excluded
    )
}

# Why xLLM's loader for a family cannot read a scheme (reference/quantization.md §3). Sources:
# xllm deepseek_decoder_loader_constants.h / npu_deepseek_v2_decoder_layer_impl.cpp (DeepSeek-V3),
# glm_moe_loader_constants.h / npu_glm4_moe_decoder_layer.cpp (GLM-4.x),
# npu_deepseek_v32_decoder_layer_impl.cpp (GLM-5, DeepSeek-V3.2), tags v0.10.0 / v0.10.1.
_XLLM_REFUSES: dict[tuple[str, str], str] = {
    ("deepseek_v3", "dynamic"): "xLLM's DeepSeek-V3 attention hard-codes static W8A8 (it reads quant_bias, "
                                "deq_scale, input_scale, input_offset for q_a, q_b, kv_a_proj_with_mqa, o_proj)",
    ("glm4_moe", "dynamic"): "xLLM's GLM-4.x attention is packed as static W8A8 with anti-outlier smoothing "
                             "(ALL_W8A8_ANTI); q/k/v have no weight_scale slot",
    ("glm_moe_dsa", "dynamic"): "xLLM's GLM-5 layer loads the DSA indexer's wk as a float linear "
                                "(only indexer.wk.weight is mapped); the dynamic scheme quantizes it",
    ("deepseek_v32", "dynamic"): "xLLM's DeepSeek-V3.2 layer loads the DSA indexer's wk as a float linear "
                                 "(only indexer.wk.weight is mapped); the dynamic scheme quantizes it",
}

_LAYER = re.compile(r"model\.layers\.(\d+)\.(.*)")


def _rules(family: str, scheme: str) -> tuple[tuple[tuple[str, str], ...], bool]:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown W8A8 scheme {scheme!r} (one of {', '.join(SCHEMES)})")
    try:
        return _SCHEMES[family][scheme]
    except KeyError:
        raise ValueError(f"no W8A8 schemes for family {family!r}") from None


def linear_kind(family: str, scheme: str, tensor_name: str, *, mtp: bool = False) -> str:
    """The kind of ``tensor_name`` (a weight or bias of a linear; any other tensor is FLOAT; the
    bias of a dynamic linear is FLOAT).
    ``mtp``: the tensor belongs to an MTP layer (``layer >= num_hidden_layers``)."""
    rules, mtp_follows = _rules(family, scheme)
    m = _LAYER.fullmatch(tensor_name)
    if m is None or (mtp and not mtp_follows):
        return FLOAT
    rest = m.group(2)
    if not any(fnmatch.fnmatchcase(rest, p) for p in _LINEARS):
        return FLOAT
    kind = next((kind for pattern, kind in rules if fnmatch.fnmatchcase(rest, pattern)), FLOAT)
    # a static linear's float bias is folded into quant_bias and kept as one of its tensors; a
    # dynamic linear has no bias slot, so its bias stays a FLOAT tensor
    return FLOAT if kind == DYNAMIC and rest.endswith(".bias") else kind


def static_linears(family: str, scheme: str, args, *, mtp: bool = True) -> list[str]:
    """Module names (``model.layers.N.self_attn.q_a_proj``) whose input needs calibration, in
    checkpoint order. ``args``: ModelArgs; ``mtp=False`` leaves out the MTP layers."""
    from ascend.models.tensors import tensor_specs

    return [s.name[: -len(".weight")] for s in tensor_specs(args, mtp=mtp)
            if s.quantizable and s.scale_of is None and s.name.endswith(".weight")
            and linear_kind(family, scheme, s.name, mtp=s.mtp) == STATIC]


def xllm_accepts(family: str, scheme: str) -> str | None:
    """None when xLLM's loader for ``family`` reads ``scheme``; else the reason it cannot."""
    _rules(family, scheme)
    return _XLLM_REFUSES.get((family, scheme))


# What xLLM's loader (v0.10.x) reads per linear, as data (reference/quantization.md §3; sources as
# for _XLLM_REFUSES above): family -> [(pattern after model.layers.N., kinds it accepts)], first
# match wins; a linear matching none is read as FLOAT. Used by `ascend verify --engine xllm`.
_MLA_STATIC = ("self_attn.q_a_proj.*", "self_attn.q_b_proj.*", "self_attn.q_proj.*",
               "self_attn.kv_a_proj_with_mqa.*", "self_attn.o_proj.*")
_MLP = ("mlp.gate_proj.*", "mlp.up_proj.*", "mlp.down_proj.*", "mlp.shared_experts.*_proj.*",
        "mlp.experts.*.*_proj.*")
_DSA_CONTRACT = (
    ("self_attn.kv_b_proj.*", (FLOAT,)), ("self_attn.indexer.wk.*", (FLOAT,)),
    *((p, (STATIC, DYNAMIC)) for p in (*_MLA_STATIC, "self_attn.indexer.wq_b.*")),
    *((p, (DYNAMIC, FLOAT)) for p in _MLP),
)
XLLM_CONTRACT: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    # attention hard-codes static W8A8 (quant_bias, deq_scale, input_scale, input_offset); MLP dynamic
    "deepseek_v3": (("self_attn.kv_b_proj.*", (FLOAT,)), *((p, (STATIC,)) for p in _MLA_STATIC),
                    *((p, (DYNAMIC,)) for p in _MLP)),
    # ALL_W8A8_ANTI attention: static q/k/v/o, no weight_scale slot for q/k/v
    "glm4_moe": (*((f"self_attn.{p}_proj.*", (STATIC,)) for p in "qkvo"), *((p, (DYNAMIC, FLOAT)) for p in _MLP)),
    # kind per layer from the description; q_a and kv_a must match; wk and kv_b_proj float
    "glm_moe_dsa": _DSA_CONTRACT,
    "deepseek_v32": _DSA_CONTRACT,
}
# Linears whose kinds xLLM requires to be equal within a layer (fused q_a / kv_a projection).
XLLM_SAME_KIND = {family: (("self_attn.q_a_proj", "self_attn.kv_a_proj_with_mqa"),)
                  for family in ("glm_moe_dsa", "deepseek_v32")}


def xllm_kinds(family: str, tensor_name: str) -> tuple[str, ...]:
    """The kinds xLLM's loader for ``family`` accepts for the linear weight ``tensor_name``."""
    m = _LAYER.fullmatch(tensor_name)
    rest = m.group(2) if m else ""
    return next((kinds for pattern, kinds in XLLM_CONTRACT[family] if fnmatch.fnmatchcase(rest, pattern)), (FLOAT,))
