"""The tensor table against independent oracles: transformers' saved checkpoints, published counts."""

from __future__ import annotations

import json

import pytest

from ascend.models import ModelArgs, find_spec, param_counts, published_model_args, tensor_specs

MLA_SMALL = dict(q_lora_rank=16, kv_lora_rank=8, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=12)
SMALL = dict(vocab_size=96, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=3,
             num_attention_heads=4, n_routed_experts=8, num_experts_per_tok=2, first_k_dense_replace=1)

# Each case exercises different rows of the table: DSA indexer with shared layers (GLM-5.2 style),
# grouped routing, MLA without q_lora (q_proj) and attention biases, GQA with biases and QK-norm.
CASES = {
    "glm_moe_dsa": dict(**SMALL, **MLA_SMALL, num_key_value_heads=4, index_n_heads=2, index_head_dim=16,
                        index_topk=4, index_topk_pattern="FSF"),
    "deepseek_v32": dict(**SMALL, **MLA_SMALL, num_key_value_heads=4, index_n_heads=2, index_head_dim=16,
                         index_topk=4, n_group=2, topk_group=1),
    "deepseek_v3": dict(**{**SMALL, **MLA_SMALL, "q_lora_rank": None}, num_key_value_heads=4, n_group=2,
                        topk_group=1, attention_bias=True),
    "glm4_moe": dict(**SMALL, num_key_value_heads=2, head_dim=16, attention_bias=True, use_qk_norm=True),
}


def _saved_checkpoint(tmp_path, family: str) -> tuple[dict, dict[str, tuple[list[int], str]]]:
    """Build a tiny random transformers model, save it, return (config.json, {name: (shape, dtype)})."""
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = AutoConfig.for_model(family, **CASES[family])
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path)
    out = {}
    for f in tmp_path.glob("*.safetensors"):
        with safe_open(f, "pt") as st:
            for k in st.keys():
                sl = st.get_slice(k)
                out[k] = (sl.get_shape(), sl.get_dtype())
    return json.loads((tmp_path / "config.json").read_text()), out


@pytest.mark.parametrize("family", sorted(CASES))
def test_names_and_shapes_equal_what_transformers_saves(tmp_path, family):
    """On-disk names/shapes written by transformers 5.23 save_pretrained == tensor_specs (MTP excluded:
    transformers never builds the MTP layer)."""
    cfg, saved = _saved_checkpoint(tmp_path, family)
    specs = tensor_specs(ModelArgs.from_config(cfg), mtp=False)
    ours = {s.name: list(s.shape) for s in specs}
    assert ours == {k: v[0] for k, v in saved.items()}
    # the router bias is kept in fp32 by transformers (_keep_in_fp32_modules_strict), as in the checkpoints
    biases = [s for s in specs if s.name.endswith("e_score_correction_bias")]
    assert biases and all(s.dtype == "f32" and saved[s.name][1] == "F32" for s in biases)


def test_deepseek_v3_fp8_checkpoint_inventory():
    # checkpoints.md §2.1: the FP8 HF checkpoint has 91,991 tensors (MTP layer 61 included)
    specs = tensor_specs(published_model_args("deepseek-ai/DeepSeek-V3"))
    assert len(specs) == 91991
    by = {s.name: s for s in specs}
    assert by["model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv"].shape == (5, 56)  # partial block
    assert by["model.layers.0.self_attn.q_b_proj.weight"].shape == (24576, 1536)
    assert by["model.layers.0.self_attn.q_b_proj.weight_scale_inv"].shape == (192, 12)
    assert by["model.layers.0.self_attn.o_proj.weight_scale_inv"].shape == (56, 128)
    assert by["model.layers.3.mlp.experts.255.down_proj.weight"].dtype == "f8_e4m3"
    assert by["model.layers.3.mlp.gate.weight"].dtype == "bf16"
    assert by["model.layers.61.eh_proj.weight"].shape == (7168, 14336)
    assert by["model.layers.61.eh_proj.weight"].dtype == "bf16"  # BF16 even in the FP8 checkpoint (§3)
    assert "model.layers.61.eh_proj.weight_scale_inv" not in by
    assert "model.layers.61.shared_head.head.weight" in by and "model.layers.61.embed_tokens.weight" in by


def test_glm5_shapes_and_quantizable_flags():
    # checkpoints.md §2.2 (GLM-5 shapes) and §4 / ascend-ops.md §4 (what is never quantized)
    a = published_model_args("ZhipuAI/GLM-5-FP8")
    spec = {s.name: s for s in tensor_specs(a)}
    assert spec["model.layers.0.self_attn.kv_b_proj.weight"].shape == (28672, 512)
    assert spec["model.layers.0.self_attn.kv_b_proj.weight_scale_inv"].shape == (224, 4)
    assert spec["model.layers.5.self_attn.indexer.wq_b.weight"].shape == (4096, 2048)
    assert spec["model.layers.5.self_attn.indexer.wk.weight_scale_inv"].shape == (1, 48)
    assert spec["model.layers.78.self_attn.indexer.wk.weight"].mtp  # the MTP layer has its own indexer
    never = ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight", "model.layers.3.mlp.gate.weight",
             "model.layers.3.mlp.gate.e_score_correction_bias", "model.layers.0.self_attn.indexer.weights_proj.weight",
             "model.layers.0.self_attn.indexer.k_norm.weight", "model.layers.78.eh_proj.weight",
             "model.layers.0.self_attn.q_a_layernorm.weight"]
    assert not any(spec[n].quantizable for n in never)
    assert all(spec[n].quantizable for n in ["model.layers.0.self_attn.q_a_proj.weight",
                                             "model.layers.0.self_attn.indexer.wq_b.weight",
                                             "model.layers.3.mlp.shared_experts.down_proj.weight",
                                             "model.layers.3.mlp.experts.7.up_proj.weight"])
    # the FP8 checkpoint rule: a tensor is FP8 iff it is quantizable (its _scale_inv exists)
    assert {n for n, s in spec.items() if s.dtype == "f8_e4m3"} == {
        n for n, s in spec.items() if s.quantizable}
    # GLM-5 BF16 release: no MTP embed/head copies (vllm-ascend adjust_weight.py adds them)
    assert "model.layers.78.shared_head.head.weight" not in spec


def test_split_kinds():
    spec = {s.name: s for s in tensor_specs(published_model_args("ZhipuAI/GLM-4.5"))}
    assert spec["model.embed_tokens.weight"].split == "vocab" and spec["lm_head.weight"].split == "vocab"
    assert spec["model.layers.0.self_attn.q_proj.weight"].split == "column"
    assert spec["model.layers.0.self_attn.q_proj.bias"].split == "column"
    assert spec["model.layers.0.self_attn.k_proj.weight"].replicate_units
    assert spec["model.layers.0.self_attn.o_proj.weight"].split == "row"
    assert spec["model.layers.0.self_attn.q_norm.weight"].split == "replicated"
    e = spec["model.layers.3.mlp.experts.5.down_proj.weight"]
    assert (e.split, e.inner, e.group, e.expert, e.n_experts) == ("expert", "row", "moe", 5, 160)
    assert find_spec(published_model_args("ZhipuAI/GLM-4.5"), "model.layers.92.enorm.weight").component == "mtp"
    with pytest.raises(KeyError):
        find_spec(published_model_args("ZhipuAI/GLM-4.5"), "model.layers.0.self_attn.kv_b_proj.weight")


# Published totals / active parameters and the derived table of checkpoints.md §1.4.
# DeepSeek-V3: "671B total, 37B activated" (DeepSeek-V3 README); GLM-5: 744B-A40B (zai-org/GLM-5
# README; §1.4 derives 743.9B / 41.8B active); GLM-4.5: 355B-A32B (zai-org/GLM-4.5 README; the table
# gives 352.8B main model + 4.0B MTP, 33.6B active); GLM-4.5-Air 106B-A12B.
@pytest.mark.parametrize(
    "model_id, total, active, mtp, rel",
    [
        ("deepseek-ai/DeepSeek-V3", 671.0e9, 37.6e9, 11.6e9, 0.01),
        ("deepseek-ai/DeepSeek-V3.2", 671.9e9, 38.4e9, 11.6e9, 0.01),
        ("ZhipuAI/GLM-5", 743.9e9, 41.8e9, 9.95e9, 0.01),
        ("ZhipuAI/GLM-4.5", 352.8e9, 33.6e9, 4.0e9, 0.01),
        ("ZhipuAI/GLM-4.5-Air", 106.9e9, 13.4e9, 2.4e9, 0.01),
    ],
)
def test_param_counts_match_published(model_id, total, active, mtp, rel):
    pc = param_counts(published_model_args(model_id))
    assert pc.total == pytest.approx(total, rel=rel)
    assert pc.active == pytest.approx(active, rel=rel)
    # §1.4 counts the MTP layer without embed/head copies
    copies = pc.mtp_by_component.get("embed", 0) + pc.mtp_by_component.get("head", 0)
    assert pc.mtp - copies == pytest.approx(mtp, rel=0.02)
    assert sum(pc.by_component.values()) == pc.total


def test_published_headline_figures():
    # the rounded figures the model cards publish
    assert round(param_counts(published_model_args("deepseek-ai/DeepSeek-V3")).total / 1e9) == 671
    glm5 = param_counts(published_model_args("ZhipuAI/GLM-5"))
    assert round(glm5.total / 1e9) == 744 and 40e9 <= glm5.active <= 42e9
    glm45 = param_counts(published_model_args("ZhipuAI/GLM-4.5"))
    # 355B counts the MTP layer: 352.8 + 4.0 (checkpoints.md §1.4)
    mtp_core = glm45.mtp - glm45.mtp_by_component["embed"] - glm45.mtp_by_component["head"]
    assert round((glm45.total + mtp_core) / 1e9) in (356, 357) and 32e9 <= glm45.active <= 34e9
    # routed experts are ~97% of GLM-5 and DeepSeek-V3 (§1.4 "routed share")
    assert glm5.by_component["routed_expert"] / glm5.total == pytest.approx(0.974, abs=0.002)
