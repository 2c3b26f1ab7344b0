"""W8A8 schemes per family: the kind of every tensor against the practice table
(reference/quantization.md §3), written out by hand here per family."""

import pytest

from ascend.models.args import ModelArgs
from ascend.models.quant_schemes import linear_kind, static_linears, xllm_accepts
from ascend.models.tensors import tensor_specs
from ascend.tiny.configs import tiny_config

FAMILIES = ("glm_moe_dsa", "deepseek_v3", "deepseek_v32", "glm4_moe")
S, D, F = "W8A8", "W8A8_DYNAMIC", "FLOAT"

# The practice table, tensor by tensor (name after ``model.layers.N.``).
MLA_PRACTICE = {
    "self_attn.q_a_proj.weight": S, "self_attn.q_b_proj.weight": S, "self_attn.q_proj.weight": S,
    "self_attn.kv_a_proj_with_mqa.weight": S, "self_attn.o_proj.weight": S,
    "self_attn.kv_b_proj.weight": F,
    "self_attn.indexer.wq_b.weight": S, "self_attn.indexer.wk.weight": F,
    "self_attn.indexer.weights_proj.weight": F, "self_attn.indexer.k_norm.weight": F,
    "self_attn.indexer.k_norm.bias": F,
    "mlp.gate_proj.weight": D, "mlp.up_proj.weight": D, "mlp.down_proj.weight": D,
    "mlp.shared_experts.gate_proj.weight": D, "mlp.shared_experts.down_proj.weight": D,
    "mlp.experts.3.up_proj.weight": D, "mlp.experts.0.down_proj.weight": D,
    "mlp.gate.weight": F, "mlp.gate.e_score_correction_bias": F,
    "input_layernorm.weight": F, "post_attention_layernorm.weight": F,
    "self_attn.q_a_layernorm.weight": F, "self_attn.kv_a_layernorm.weight": F,
    "eh_proj.weight": F, "enorm.weight": F, "hnorm.weight": F, "shared_head.head.weight": F,
    "embed_tokens.weight": F,
}
GLM4_PRACTICE = {
    "self_attn.q_proj.weight": S, "self_attn.k_proj.weight": S, "self_attn.v_proj.weight": S,
    "self_attn.o_proj.weight": S, "self_attn.q_proj.bias": S,
    "self_attn.q_norm.weight": F, "self_attn.k_norm.weight": F,
    "mlp.experts.7.gate_proj.weight": D, "mlp.experts.7.down_proj.weight": D,
    # GLM-4.7 practice quantizes attention and *mlp.experts* only
    "mlp.gate_proj.weight": F, "mlp.shared_experts.up_proj.weight": F,
    "mlp.gate.weight": F, "mlp.gate.e_score_correction_bias": F, "input_layernorm.weight": F,
    "eh_proj.weight": F,
}
PRACTICE = {"deepseek_v3": MLA_PRACTICE, "deepseek_v32": MLA_PRACTICE, "glm_moe_dsa": MLA_PRACTICE,
            "glm4_moe": GLM4_PRACTICE}


@pytest.mark.parametrize("family", FAMILIES)
def test_practice_kinds_per_tensor(family):
    for rest, kind in PRACTICE[family].items():
        assert linear_kind(family, "w8a8", f"model.layers.4.{rest}") == kind, rest
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"):
        assert linear_kind(family, "w8a8", name) == F


@pytest.mark.parametrize("family", FAMILIES)
def test_mtp_layer_follows_practice(family):
    name = "model.layers.9.mlp.experts.0.up_proj.weight"
    assert linear_kind(family, "w8a8", name, mtp=True) == (F if family == "glm4_moe" else D)
    assert linear_kind(family, "w8a8", "model.layers.9.eh_proj.weight", mtp=True) == F


@pytest.mark.parametrize("family", FAMILIES)
def test_dynamic_scheme_is_every_quantizable_linear(family):
    """Cross-checked against the tensor table's own ``quantizable`` flag (an independent list)."""
    args = ModelArgs.from_config(tiny_config(family, mtp=True))
    for spec in tensor_specs(args, mtp=True):
        want = D if spec.quantizable else F
        assert linear_kind(family, "dynamic", spec.name, mtp=spec.mtp) == want, spec.name


@pytest.mark.parametrize("family", FAMILIES)
def test_every_practice_kind_is_on_a_quantizable_tensor(family):
    args = ModelArgs.from_config(tiny_config(family, mtp=True))
    for spec in tensor_specs(args, mtp=True):
        if linear_kind(family, "w8a8", spec.name, mtp=spec.mtp) != F and spec.name.endswith(".weight"):
            assert spec.quantizable, spec.name


def test_static_linears_deepseek_v3():
    args = ModelArgs.from_config(tiny_config("deepseek_v3", mtp=True))
    mods = static_linears("deepseek_v3", "w8a8", args)
    layers = [*range(args.num_hidden_layers), *args.mtp_layers]
    want = [f"model.layers.{i}.self_attn.{p}" for i in layers
            for p in ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "o_proj")]
    assert mods == want
    assert static_linears("deepseek_v3", "w8a8", args, mtp=False) == want[: 4 * args.num_hidden_layers]
    assert static_linears("deepseek_v3", "dynamic", args) == []


def test_static_linears_glm5_has_indexer_wq_b_not_wk():
    args = ModelArgs.from_config(tiny_config("glm_moe_dsa", mtp=False))
    mods = static_linears("glm_moe_dsa", "w8a8", args)
    assert "model.layers.0.self_attn.indexer.wq_b" in mods
    assert not any(m.endswith((".wk", ".kv_b_proj", ".weights_proj")) for m in mods)


def test_static_linears_glm4_leaves_mtp_out():
    args = ModelArgs.from_config(tiny_config("glm4_moe", mtp=True))
    mods = static_linears("glm4_moe", "w8a8", args)
    assert {int(m.split(".")[2]) for m in mods} == set(range(args.num_hidden_layers))
    assert {m.split(".")[-1] for m in mods} == {"q_proj", "k_proj", "v_proj", "o_proj"}


@pytest.mark.parametrize("family", FAMILIES)
def test_xllm_accepts_practice_refuses_dynamic(family):
    assert xllm_accepts(family, "w8a8") is None
    why = xllm_accepts(family, "dynamic")
    assert why and "xLLM" in why


def test_unknown_scheme_or_family():
    with pytest.raises(ValueError, match="scheme"):
        linear_kind("deepseek_v3", "w4a8", "model.layers.0.self_attn.o_proj.weight")
    with pytest.raises(ValueError, match="family"):
        xllm_accepts("llama", "w8a8")
