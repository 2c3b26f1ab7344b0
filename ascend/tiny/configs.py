"""Tiny configs of every supported family: real Hugging Face ``config.json`` dicts, tiny sizes.

``tiny_config(family)`` returns a dict that transformers, ``ModelArgs.from_config``, the planner
and the reference model all accept exactly like a published config. The sizes are chosen so that:

- a forward pass on CPU takes milliseconds (hidden 160, 3 layers, 8-16 experts of width 64);
- FP8 partial blocks happen: ``hidden_size`` 160 and most projection widths are not multiples of
  128 (e.g. ``kv_a_proj_with_mqa`` [80, 160] -> scale [1, 2]), like the real 576-row kv_a;
- tensor parallelism up to 4 is valid: attention heads, experts, the vocabulary and every
  column/row-split dimension divide by 4 (GLM-4.x has 2 KV heads, so TP 4 replicates them, like
  GLM-4.5's 8 KV heads at TP 16);
- DSA really selects: ``index_topk`` is 4, shorter than any test sequence;
- DeepSeek-V3 routing is really grouped (8 groups, keep 4) and uses YaRN with a non-trivial ramp;
- the vocabulary (1024) holds a small byte-level BPE plus the family's special tokens
  (``SPECIAL_TOKENS``; the first entry is the tokenizer's end-of-text token).

No torch here: this module is data plus a function.
"""

from __future__ import annotations

import copy
from typing import Any

FAMILIES = ("glm_moe_dsa", "deepseek_v3", "deepseek_v32", "glm4_moe")

TINY_VOCAB_SIZE = 1024

# Special tokens in id order, placed at the top of the vocabulary (GLM) or at its start (DeepSeek:
# bos 0, eos 1 as in the published tokenizer). Names are the published ones.
GLM_SPECIAL_TOKENS = [
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>",
    "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>",
    "<|end_of_video|>", "<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>",
    "</tool_response>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", "/nothink",
]
DEEPSEEK_SPECIAL_TOKENS = [
    "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", "<｜User｜>", "<｜Assistant｜>",
    "<think>", "</think>", "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>",
    "<｜tool▁call▁end｜>", "<｜tool▁sep｜>", "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>",
    "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>", "<｜fim▁hole｜>", "<｜fim▁begin｜>", "<｜fim▁end｜>",
]


def special_tokens(family: str) -> dict[str, int]:
    """``{token: id}`` of the family's special tokens in a tiny vocabulary."""
    _check_family(family)
    if family.startswith("glm"):
        first = TINY_VOCAB_SIZE - 32  # GLM: specials sit above the BPE vocabulary (154820.. in GLM-5)
        return {tok: first + i for i, tok in enumerate(GLM_SPECIAL_TOKENS)}
    return {tok: i for i, tok in enumerate(DEEPSEEK_SPECIAL_TOKENS)}  # DeepSeek: bos 0, eos 1


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        from ascend.errors import CheckpointError

        raise CheckpointError(
            f"unknown model family {family!r}", fix=f"use one of: {', '.join(FAMILIES)}"
        )


def tiny_config(
    family: str,
    *,
    layers: int | None = None,
    experts: int | None = None,
    mtp: bool = True,
    fp8: bool = False,
    seed: int | None = None,
) -> dict[str, Any]:
    """A tiny ``config.json`` dict for ``family``.

    ``layers``: number of main decoder layers (default 3: 1 dense + 2 MoE); ``experts``: routed
    experts (default 8 for GLM, 16 for DeepSeek; must divide by the routing groups); ``mtp``: one
    MTP layer (``num_nextn_predict_layers`` 1) or none; ``fp8``: add the published block-FP8
    ``quantization_config``. ``seed`` only affects the weights ``ascend tiny`` draws, never the
    config; it is accepted so a recipe's ``model.tiny`` section can be passed as keyword arguments.
    """
    _check_family(family)
    del seed  # the config is the same for every seed (see docstring)
    cfg = copy.deepcopy(_BASE[family])
    n_layers = 3 if layers is None else int(layers)
    if n_layers < 1:
        raise ValueError("layers must be >= 1")
    cfg["num_hidden_layers"] = n_layers
    cfg["first_k_dense_replace"] = min(cfg["first_k_dense_replace"], n_layers)
    if experts is not None:
        groups = cfg.get("n_group", 1)
        if experts < cfg["num_experts_per_tok"] or experts % groups or experts % 4:
            raise ValueError(
                f"experts={experts} must be a multiple of 4 and of n_group={groups}, "
                f"and >= num_experts_per_tok={cfg['num_experts_per_tok']}"
            )
        cfg["n_routed_experts"] = int(experts)
    cfg["num_nextn_predict_layers"] = 1 if mtp else 0
    if family == "glm_moe_dsa":
        cfg["indexer_types"] = ["full"] * n_layers
    if fp8:
        cfg["quantization_config"] = {
            "activation_scheme": "dynamic",
            "fmt": "e4m3",
            "quant_method": "fp8",
            "weight_block_size": [128, 128],
        }
        if family == "deepseek_v32":
            cfg["quantization_config"]["scale_fmt"] = "ue8m0"
    return cfg


def _specials_config(family: str) -> dict[str, Any]:
    ids = special_tokens(family)
    if family.startswith("glm"):
        eot, user, obs = ids["<|endoftext|>"], ids["<|user|>"], ids["<|observation|>"]
        return {"eos_token_id": [eot, user, obs], "pad_token_id": eot}
    return {"bos_token_id": 0, "eos_token_id": 1}


_MLA_COMMON = {
    "hidden_size": 160,
    "intermediate_size": 256,
    "moe_intermediate_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "q_lora_rank": 96,
    "kv_lora_rank": 64,
    "qk_nope_head_dim": 32,
    "qk_rope_head_dim": 16,
    "v_head_dim": 48,
    "n_shared_experts": 1,
    "num_experts_per_tok": 4,
    "routed_scaling_factor": 2.5,
    "norm_topk_prob": True,
    "scoring_func": "sigmoid",
    "topk_method": "noaux_tc",
    "moe_layer_freq": 1,
    "hidden_act": "silu",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "tie_word_embeddings": False,
    "use_cache": True,
    "torch_dtype": "bfloat16",
    "vocab_size": TINY_VOCAB_SIZE,
    "first_k_dense_replace": 1,
}

# DeepSeek-V3 and V3.2 share everything but the DSA indexer: 8 groups keep 4, YaRN.
_DEEPSEEK_COMMON = {
    **_MLA_COMMON,
    "n_routed_experts": 16,
    "n_group": 8,
    "topk_group": 4,
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 2048,
    "rope_theta": 10000,
    "rope_scaling": {
        "type": "yarn",
        "factor": 8,
        "original_max_position_embeddings": 256,
        "beta_fast": 32,
        "beta_slow": 1,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
    },
}

_BASE: dict[str, dict[str, Any]] = {
    "glm_moe_dsa": {
        "architectures": ["GlmMoeDsaForCausalLM"],
        "model_type": "glm_moe_dsa",
        **_MLA_COMMON,
        "head_dim": 16,
        "n_routed_experts": 8,
        "n_group": 1,
        "topk_group": 1,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 2048,
        "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
        "rope_interleave": True,
        "indexer_rope_interleave": True,
        "index_n_heads": 8,
        "index_head_dim": 32,
        "index_topk": 4,
        "ep_size": 1,
        "pretraining_tp": 1,
        **_specials_config("glm_moe_dsa"),
    },
    "deepseek_v3": {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        **_DEEPSEEK_COMMON,
        "ep_size": 1,
        "pretraining_tp": 1,
        **_specials_config("deepseek_v3"),
    },
    "deepseek_v32": {
        "architectures": ["DeepseekV32ForCausalLM"],
        "model_type": "deepseek_v32",
        **_DEEPSEEK_COMMON,
        "index_n_heads": 8,
        "index_head_dim": 32,
        "index_topk": 4,
        "ep_size": 1,
        **_specials_config("deepseek_v32"),
    },
    "glm4_moe": {
        "architectures": ["Glm4MoeForCausalLM"],
        "model_type": "glm4_moe",
        "hidden_size": 160,
        "intermediate_size": 256,
        "moe_intermediate_size": 64,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "partial_rotary_factor": 0.5,
        "rope_theta": 1000000,
        "use_qk_norm": True,
        "attention_bias": True,
        "attention_dropout": 0.0,
        "n_routed_experts": 8,
        "n_shared_experts": 1,
        "num_experts_per_tok": 4,
        "n_group": 1,
        "topk_group": 1,
        "routed_scaling_factor": 2.5,
        "norm_topk_prob": True,
        "first_k_dense_replace": 1,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 2048,
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        "use_cache": True,
        "torch_dtype": "bfloat16",
        "vocab_size": TINY_VOCAB_SIZE,
        **_specials_config("glm4_moe"),
    },
}
