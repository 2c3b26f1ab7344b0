"""The MindSpore Transformers naming tables (no mindspore needed)."""

from __future__ import annotations

import pytest

from ascend.errors import CheckpointError
from ascend.interop.mindspore.names import (
    FAMILY_BLOCKS,
    aliases_of,
    hf_name_map,
    is_training_state,
    mindspore_rules,
    ms_name_map,
)
from ascend.models.args import ModelArgs

# Published DeepSeek-V3 config (checkpoints.md §1.1).
DEEPSEEK_V3 = {
    "model_type": "deepseek_v3", "hidden_size": 7168, "num_hidden_layers": 61, "first_k_dense_replace": 3,
    "n_routed_experts": 256, "n_shared_experts": 1, "q_lora_rank": 1536, "kv_lora_rank": 512,
    "num_attention_heads": 128, "num_key_value_heads": 128, "num_nextn_predict_layers": 1,
}


def test_deepseek_v3_moe_layer_names_are_the_published_ones():
    """Names and fusions as mindformers' toolkit/weight_convert/deepseekv3 writes them."""
    rules = mindspore_rules(ModelArgs.from_config(DEEPSEEK_V3))
    layer3 = {r.ms: r for r in rules if r.ms.startswith("decoder.layers.3.")}
    p = "decoder.layers.3."
    assert {name[len(p):] for name in layer3} == {
        "input_layernorm.weight", "pre_mlp_layernorm.weight",
        "self_attention.linear_q_down_proj.weight", "self_attention.q_layernorm.weight",
        "self_attention.linear_q_up_proj.weight", "self_attention.linear_kv_down_proj.weight",
        "self_attention.kv_layernorm.weight", "self_attention.linear_kv_up_proj.weight",
        "self_attention.linear_proj.weight",
        "mlp.router.weight", "mlp.router.expert_bias",
        "mlp.shared_experts.linear_fc1.weight", "mlp.shared_experts.linear_fc2.weight",
        "mlp.experts.weight1", "mlp.experts.weight2",
    }
    assert layer3[p + "self_attention.linear_q_up_proj.weight"].hf == ("model.layers.3.self_attn.q_b_proj.weight",)
    assert layer3[p + "mlp.router.expert_bias"].hf == ("model.layers.3.mlp.gate.e_score_correction_bias",)
    fc1 = layer3[p + "mlp.experts.weight1"]
    assert fc1.op == "experts_fc1" and len(fc1.hf) == 2 * 256
    assert fc1.hf[:3] == (
        "model.layers.3.mlp.experts.0.gate_proj.weight",
        "model.layers.3.mlp.experts.0.up_proj.weight",
        "model.layers.3.mlp.experts.1.gate_proj.weight",
    )
    assert layer3[p + "mlp.shared_experts.linear_fc1.weight"].op == "interleave"
    dense = {r.ms: r for r in rules if r.ms.startswith("decoder.layers.0.mlp.")}
    assert dense["decoder.layers.0.mlp.linear_fc1.weight"].hf == (
        "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight")
    assert all(r.published for r in rules)


def test_deepseek_v3_counts_and_mtp():
    rules = mindspore_rules(ModelArgs.from_config(DEEPSEEK_V3))
    stored = ms_name_map(rules)
    # 3 global + 3 dense x 11 + 58 MoE x 15 + MTP (4 own + 15 decoder-layer tensors)
    assert len(stored) == 3 + 3 * 11 + 58 * 15 + 4 + 15
    hf = hf_name_map(rules)
    # HF: 3 global + 3 dense x 12 + 58 MoE x (2+7+2+3+256*3) + MTP (4 own + 2 copies + one MoE layer)
    moe_hf = 2 + 7 + 2 + 3 + 256 * 3
    assert len(hf) == 3 + 3 * 12 + 58 * moe_hf + 4 + 2 + moe_hf
    assert stored["mtp.layers.0.final_layernorm.weight"].hf == ("model.layers.61.shared_head.norm.weight",)
    assert stored["mtp.layers.0.transformer_layer.mlp.experts.weight2"].hf[0] == "model.layers.61.mlp.experts.0.down_proj.weight"
    assert aliases_of(rules) == {
        "embedding.word_embeddings.weight": ["model.layers.61.embed_tokens.weight"],
        "output_layer.weight": ["model.layers.61.shared_head.head.weight"],
    }
    assert not any(r.ms.startswith("mtp.") for r in mindspore_rules(ModelArgs.from_config(DEEPSEEK_V3), mtp=False))


def test_mtp_without_copies_has_no_aliases():
    args = ModelArgs.from_config(DEEPSEEK_V3)
    args.mtp_has_copies = False  # GLM-4.6/4.7 style: no embed/head copies in the MTP layer
    assert aliases_of(mindspore_rules(args)) == {}


def test_glm4_moe_gqa_layout():
    cfg = {"model_type": "glm4_moe", "hidden_size": 5120, "num_hidden_layers": 4, "first_k_dense_replace": 1,
           "num_attention_heads": 96, "num_key_value_heads": 8, "head_dim": 128, "attention_bias": True,
           "use_qk_norm": True, "n_routed_experts": 160, "num_nextn_predict_layers": 0}
    stored = ms_name_map(mindspore_rules(ModelArgs.from_config(cfg)))
    qkv = stored["decoder.layers.1.self_attention.linear_qkv.weight"]
    assert qkv.op == "qkv" and qkv.params == {"num_heads": 96, "num_kv_heads": 8, "head_dim": 128}
    assert stored["decoder.layers.1.self_attention.linear_qkv.bias"].hf[2] == "model.layers.1.self_attn.v_proj.bias"
    assert stored["decoder.layers.1.self_attention.k_layernorm.weight"].hf == ("model.layers.1.self_attn.k_norm.weight",)
    # GLM-4.5-Air: no QK-norm, so no q/k_layernorm
    air = ms_name_map(mindspore_rules(ModelArgs.from_config({**cfg, "use_qk_norm": False})))
    assert not any("layernorm" in n and "self_attention" in n for n in air)


def test_glm5_indexer_only_on_full_layers():
    cfg = {"model_type": "glm_moe_dsa", "num_hidden_layers": 4, "first_k_dense_replace": 1,
           "indexer_types": ["full", "shared", "full", "shared"], "num_nextn_predict_layers": 1}
    rules = mindspore_rules(ModelArgs.from_config(cfg))
    layers = {int(r.ms.split(".")[2]) for r in rules if ".indexer." in r.ms and r.ms.startswith("decoder.")}
    assert layers == {0, 2}
    assert "mtp.layers.0.transformer_layer.self_attention.core_attention.indexer.linear_wk.weight" in ms_name_map(rules)
    assert not all(r.published for r in rules)  # the DSA names are ours, and marked so


@pytest.mark.parametrize("family", sorted(FAMILY_BLOCKS))
def test_names_are_unique_and_rules_consistent(family):
    from ascend.tiny.configs import tiny_config

    rules = mindspore_rules(ModelArgs.from_config(tiny_config(family)))
    ms_names = [r.ms for r in rules if r.op != "alias"]
    hf_names = [n for r in rules for n in r.hf]
    assert len(ms_names) == len(set(ms_names))
    assert len(hf_names) == len(set(hf_names))
    assert {r.op for r in rules} <= {"rename", "interleave", "experts_fc1", "experts_fc2", "qkv", "alias"}


def test_unknown_family_is_a_checkpoint_error():
    args = ModelArgs.from_config(DEEPSEEK_V3)
    args.family = "llama"
    with pytest.raises(CheckpointError, match="no MindSpore Transformers naming"):
        mindspore_rules(args)


def test_training_state_names():
    assert is_training_state("adam_m.decoder.layers.0.mlp.linear_fc1.weight")
    assert is_training_state("global_step")
    assert not is_training_state("decoder.layers.0.mlp.linear_fc1.weight")
