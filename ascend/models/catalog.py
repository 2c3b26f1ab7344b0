"""Published model configs by hub id, so ``ascend plan`` works before anything is downloaded.

Provenance (``reference/checkpoints.md`` §1): DeepSeek-V3 values are the official
``inference/configs/config_671B.json`` plus the Hugging Face ``config.json`` (YaRN block and FP8
``quantization_config`` verbatim). GLM-5 is **reconstructed** — no verbatim official config.json
was available; values come from xLLM ``glm5.h`` defaults, transformers ``GlmMoeDsaConfig`` and
slime's ``glm5-744B-A40B.sh``, and they reproduce the published 744B-A40B. GLM-4.5 / 4.5-Air come
from transformers' ``convert_glm4_moe_weights_to_hf.py`` and slime (355B-A32B / 106B-A12B);
GLM-4.6 and 4.7 share GLM-4.5's architecture (zai-org/GLM-4.5 README) with a 202752 context
(commonly cited, unverified). DeepSeek-V3.2(-Exp) = V3 + indexer (64 heads × 128, top-2048) and
``scale_fmt: ue8m0``.

``mtp_has_copies`` (does the MTP layer store its own embed_tokens / shared_head.head?) is not a
config.json key; it is recorded here from checkpoints.md §3: present in DeepSeek-V3 and GLM-4.5,
absent in GLM-4.6 (and assumed for 4.7), absent in the GLM-5 BF16 release (vllm-ascend's GLM-5
tutorial ships ``adjust_weight.py`` to add them), present in Eco-Tech's W8A8 GLM-5 builds.
:func:`~ascend.models.args.load_model_args` decides it from the real index when a checkpoint
is on disk.
"""

from __future__ import annotations

import copy
import difflib
import inspect
from pathlib import Path
from typing import Any

from ascend.errors import RecipeError
from ascend.models.args import FAMILIES, ModelArgs, load_model_args

_FP8_BLOCK = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]}

_GLM5: dict[str, Any] = {
    "architectures": ["GlmMoeDsaForCausalLM"],
    "model_type": "glm_moe_dsa",
    "vocab_size": 154880,
    "hidden_size": 6144,
    "intermediate_size": 12288,
    "moe_intermediate_size": 2048,
    "num_hidden_layers": 78,
    "first_k_dense_replace": 3,
    "moe_layer_freq": 1,
    "num_attention_heads": 64,
    "num_key_value_heads": 64,
    "head_dim": 64,
    "q_lora_rank": 2048,
    "kv_lora_rank": 512,
    "qk_nope_head_dim": 192,
    "qk_rope_head_dim": 64,
    "v_head_dim": 256,
    "index_n_heads": 32,
    "index_head_dim": 128,
    "index_topk": 2048,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "num_experts_per_tok": 8,
    "n_group": 1,
    "topk_group": 1,
    "routed_scaling_factor": 2.5,
    "norm_topk_prob": True,
    "scoring_func": "sigmoid",
    "topk_method": "noaux_tc",
    "num_nextn_predict_layers": 1,
    "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
    "rope_interleave": True,
    "indexer_rope_interleave": True,
    "max_position_embeddings": 202752,
    "rms_norm_eps": 1e-05,
    "attention_bias": False,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "eos_token_id": [154820, 154827, 154829],
    "pad_token_id": 154820,
    "dtype": "bfloat16",
}

_DSV3: dict[str, Any] = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "vocab_size": 129280,
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "moe_intermediate_size": 2048,
    "num_hidden_layers": 61,
    "first_k_dense_replace": 3,
    "moe_layer_freq": 1,
    "num_attention_heads": 128,
    "num_key_value_heads": 128,
    "q_lora_rank": 1536,
    "kv_lora_rank": 512,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "num_experts_per_tok": 8,
    "n_group": 8,
    "topk_group": 4,
    "routed_scaling_factor": 2.5,
    "norm_topk_prob": True,
    "scoring_func": "sigmoid",
    "topk_method": "noaux_tc",
    "num_nextn_predict_layers": 1,
    "rope_theta": 10000,
    "rope_scaling": {
        "type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
        "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0,
    },
    "max_position_embeddings": 163840,
    "rms_norm_eps": 1e-06,
    "attention_bias": False,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "torch_dtype": "bfloat16",
    "quantization_config": dict(_FP8_BLOCK),
}

_DSV32: dict[str, Any] = {
    **_DSV3,
    "architectures": ["DeepseekV32ForCausalLM"],
    "model_type": "deepseek_v32",
    "index_n_heads": 64,
    "index_head_dim": 128,
    "index_topk": 2048,
    "quantization_config": {**_FP8_BLOCK, "scale_fmt": "ue8m0"},
}

_GLM45: dict[str, Any] = {
    "architectures": ["Glm4MoeForCausalLM"],
    "model_type": "glm4_moe",
    "vocab_size": 151552,
    "hidden_size": 5120,
    "intermediate_size": 12288,
    "moe_intermediate_size": 1536,
    "num_hidden_layers": 92,
    "first_k_dense_replace": 3,
    "num_attention_heads": 96,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "n_routed_experts": 160,
    "n_shared_experts": 1,
    "num_experts_per_tok": 8,
    "n_group": 1,
    "topk_group": 1,
    "routed_scaling_factor": 2.5,
    "norm_topk_prob": True,
    "num_nextn_predict_layers": 1,
    "rope_theta": 1000000,
    "partial_rotary_factor": 0.5,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-05,
    "attention_bias": True,
    "use_qk_norm": True,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "eos_token_id": [151329, 151336, 151338],
    "pad_token_id": 151329,
    "torch_dtype": "bfloat16",
}

_GLM45_AIR: dict[str, Any] = {
    **_GLM45,
    "hidden_size": 4096,
    "intermediate_size": 10944,
    "moe_intermediate_size": 1408,
    "num_hidden_layers": 46,
    "first_k_dense_replace": 1,
    "n_routed_experts": 128,
    "routed_scaling_factor": 1.0,
    "use_qk_norm": False,
    "rope_theta": 10000,  # import script value (unverified)
}

_GLM46: dict[str, Any] = {**_GLM45, "max_position_embeddings": 202752}

# (config, mtp_has_copies, ids). ModelScope ids first, then Hugging Face ids.
_ENTRIES: list[tuple[dict[str, Any], bool, tuple[str, ...]]] = [
    (_GLM5, False, ("ZhipuAI/GLM-5", "zai-org/GLM-5", "ZhipuAI/GLM-5.1", "zai-org/GLM-5.1")),
    ({**_GLM5, "quantization_config": dict(_FP8_BLOCK)}, False,
     ("ZhipuAI/GLM-5-FP8", "zai-org/GLM-5-FP8", "ZhipuAI/GLM-5.1-FP8", "zai-org/GLM-5.1-FP8")),
    # Prebuilt msModelSlim W8A8 builds of GLM-5 (ascend-ops.md §4.5): same architecture, MTP copies
    # included; their precision is the recipe's `convert.precision`, not a quantization_config.
    (_GLM5, True, ("Eco-Tech/GLM-5-w8a8", "Eco-Tech/GLM-5-W8A8-xLLM", "Eco-Tech/GLM-5-W8A8-xLLM-0403",
                   "Eco-Tech/GLM-5.1-W8A8-xLLM")),
    (_DSV3, True, ("deepseek-ai/DeepSeek-V3", "deepseek-ai/DeepSeek-V3-0324", "deepseek-ai/DeepSeek-R1",
                   "deepseek-ai/DeepSeek-R1-0528")),
    (_DSV32, True, ("deepseek-ai/DeepSeek-V3.2-Exp", "deepseek-ai/DeepSeek-V3.2")),
    (_GLM45, True, ("ZhipuAI/GLM-4.5", "zai-org/GLM-4.5")),
    (_GLM45_AIR, True, ("ZhipuAI/GLM-4.5-Air", "zai-org/GLM-4.5-Air")),
    (_GLM46, False, ("ZhipuAI/GLM-4.6", "zai-org/GLM-4.6", "ZhipuAI/GLM-4.7", "zai-org/GLM-4.7")),
]

_BY_ID: dict[str, tuple[dict[str, Any], bool, str]] = {
    hub_id.lower(): (cfg, copies, hub_id) for cfg, copies, ids in _ENTRIES for hub_id in ids
}


def known_model_ids() -> list[str]:
    """Every hub id with a published config here."""
    return [hub_id for _, _, ids in _ENTRIES for hub_id in ids]


def published_config(model_id: str) -> dict[str, Any] | None:
    """A copy of the published config.json dict for ``model_id`` (case-insensitive), or None."""
    hit = _BY_ID.get(model_id.strip().lower())
    return copy.deepcopy(hit[0]) if hit else None


def published_model_args(model_id: str) -> ModelArgs | None:
    """``ModelArgs`` of a published model by hub id, or None when the id is unknown."""
    hit = _BY_ID.get(model_id.strip().lower())
    if hit is None:
        return None
    cfg, copies, hub_id = hit
    args = ModelArgs.from_config(copy.deepcopy(cfg), source=f"published config of {hub_id}")
    args.mtp_has_copies = copies
    return args


def _field(section: Any, name: str, default: Any = None) -> Any:
    if isinstance(section, dict):
        return section.get(name, default)
    return getattr(section, name, default)


def _as_dict(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return dict(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    return dict(vars(obj))


def model_args_for_recipe(model: Any) -> ModelArgs:
    """``ModelArgs`` for a recipe's ``model`` section (pydantic model or dict).

    Order: ``config.json`` under ``model.path`` when it exists; else the published config of
    ``model.id``; else, for ``model.source == "tiny"``, ``ascend.tiny.configs.tiny_config(family,
    **model.tiny)``; else a RecipeError saying how to fix it. The family of the result must equal
    ``model.family``.
    """
    family = _field(model, "family")
    model_id = _field(model, "id")
    path = _field(model, "path")
    source = _field(model, "source")
    args: ModelArgs | None = None
    origin = ""
    if path and (Path(path) / "config.json").is_file():
        args, origin = load_model_args(path), f"{Path(path) / 'config.json'}"
    elif model_id and (args := published_model_args(str(model_id))) is not None:
        origin = f"the published config of {model_id}"
    elif source == "tiny":
        from ascend.tiny.configs import tiny_config  # lazy: models/ must not import the fixture package at load

        accepted = inspect.signature(tiny_config).parameters
        options = {k: v for k, v in _as_dict(_field(model, "tiny")).items() if v is not None and k in accepted}
        args, origin = ModelArgs.from_config(tiny_config(family, **options), source="tiny config"), "the tiny config"
    if args is None:
        hint = difflib.get_close_matches(str(model_id or ""), known_model_ids(), n=1, cutoff=0.6)
        raise RecipeError(
            f"model: no config.json for {model_id or family!r}"
            + (f" (nothing at model.path {path})" if path else ""),
            fix=(f"did you mean model.id {hint[0]!r}? " if hint else "")
            + "set model.path to a directory holding config.json, or model.id to a published model ("
            + ", ".join(known_model_ids()[:6]) + ", ...)",
        )
    if family and family != args.family:
        raise RecipeError(
            f"model.family is {family!r} but {origin} says model_type {args.family!r}",
            fix=f"set model.family: {args.family}" if args.family in FAMILIES else "check model.id / model.path",
        )
    return args
