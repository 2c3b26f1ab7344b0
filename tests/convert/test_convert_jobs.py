"""The conversion plan: which transform each tensor gets, split windows, FP8 alignment, options."""

import pytest
from convert_fixtures import FAMILIES

from ascend.checkpoint.safetensors_io import SafetensorsDir
from ascend.convert.jobs import ConvertOptions, build_jobs, make_pieces
from ascend.errors import ConvertError, PlanError
from ascend.models.args import load_model_args


def plan_for(src, **kw):
    return build_jobs(SafetensorsDir(src), load_model_args(src), ConvertOptions.from_flags(**kw))


@pytest.mark.parametrize("family", FAMILIES)
def test_fp8_source_to_bf16_dequantizes_exactly_the_scaled_tensors(ckpt_factory, family):
    src = ckpt_factory(family, fp8=True)
    sd = SafetensorsDir(src)
    scaled = {n[: -len("_scale_inv")] for n in sd.tensors if n.endswith("_scale_inv")}
    plan = plan_for(src, precision="bf16")
    ops = {p.source: p.op for f in plan.files for p in f.pieces}
    assert {n for n, op in ops.items() if op == "dequant"} == scaled
    outputs = [o for f in plan.files for o in f.tensors]
    assert not [n for n, _, _ in outputs if n.endswith("_scale_inv")]
    assert {d for _, d, _ in outputs} <= {"BF16", "F32"}
    assert "quantization_config" not in plan.config


def test_w8a8_never_quantizes_router_norms_embeddings_head_indexer_weights_or_eh_proj(ckpt_factory):
    src = ckpt_factory("glm_moe_dsa", fp8=False)
    plan = plan_for(src, precision="w8a8", w8a8_scheme="dynamic")
    quantized = {p.source for f in plan.files for p in f.pieces if p.op == "w8a8"}
    for name in quantized:
        for never in ("mlp.gate.weight", "norm", "embed_tokens", "lm_head", "weights_proj", "eh_proj", "shared_head"):
            assert never not in name, name
    assert any(".mlp.experts." in n for n in quantized) and any("q_b_proj" in n for n in quantized)
    desc = plan.quant_description
    assert desc["model_quant_type"] == "W8A8_DYNAMIC"
    every = {n for f in plan.files for n, _, _ in f.tensors}
    assert set(desc) - {"model_quant_type", "version", "group_size", "metadata", "optional"} == every
    assert desc["model.embed_tokens.weight"] == "FLOAT"
    assert desc["model.layers.1.mlp.experts.0.down_proj.weight_scale"] == "W8A8_DYNAMIC"
    assert plan.config["quantize"] == "w8a8_dynamic"
    assert plan.files[0].name.startswith("quant_model_weights-")
    assert plan.index_name == "quant_model_weights.safetensors.index.json"


def test_precision_rules_first_match_wins(ckpt_factory):
    src = ckpt_factory("deepseek_v3", fp8=False)
    plan = plan_for(src, precision="bf16", rules=[("*.mlp.experts.*", "w8a8"), ("*.mlp.*", "bf16")])
    ops = {p.source: p.op for f in plan.files for p in f.pieces}
    assert ops["model.layers.1.mlp.experts.3.up_proj.weight"] == "w8a8"
    assert ops["model.layers.1.mlp.shared_experts.up_proj.weight"] == "copy"
    assert ops["model.layers.0.self_attn.q_b_proj.weight"] == "copy"


def test_mixing_fp8_and_w8a8_is_refused(ckpt_factory):
    src = ckpt_factory("deepseek_v3", fp8=False)
    with pytest.raises(ConvertError, match="cannot mix FP8 and W8A8"):
        plan_for(src, precision="fp8", rules=[("*.mlp.experts.*", "w8a8")])


def test_misaligned_fp8_split_is_refused_with_numbers_or_requantized(ckpt_factory):
    src = ckpt_factory("glm_moe_dsa", fp8=True)
    with pytest.raises(ConvertError, match=r"rows \[0, 96\) of 192 .*0.75 blocks"):
        plan_for(src, precision="fp8", layout="sharded", tp=2)
    plan = plan_for(src, precision="fp8", layout="sharded", tp=2, misaligned_fp8="requantize")
    ops = {(f.name, p.source): p.op for f in plan.files for p in f.pieces}
    assert ops[("model-rank-00000-of-00002.safetensors", "model.layers.0.self_attn.q_b_proj.weight")] == "fp8"
    # replicated FP8 tensors stay bit-exact copies
    assert ops[("model-rank-00000-of-00002.safetensors", "model.layers.0.self_attn.q_a_proj.weight")] == "copy"


def test_aligned_fp8_windows_pass_through_with_block_scale_windows():
    opts = ConvertOptions.from_flags(precision="fp8")
    pieces = make_pieces("w", "w", "F8_E4M3", (512, 300), True, "fp8", True, (256, 512), None, opts, None)
    assert [p.op for p in pieces] == ["copy", "copy"]
    assert pieces[0].rows == (256, 512) and pieces[0].outputs[0][2] == (256, 300)
    assert pieces[1].source == "w_scale_inv" and pieces[1].rows == (2, 4)
    assert pieces[1].outputs[0] == ("w_scale_inv", "F32", (2, 3))
    # a partial last block on the columns is fine when the window ends at the tensor's end
    pieces = make_pieces("w", "w", "F8_E4M3", (256, 300), True, "fp8", True, None, (128, 300), opts, None)
    assert [p.op for p in pieces] == ["copy", "copy"] and pieces[1].cols == (1, 3)


def test_ep_must_divide_world():
    with pytest.raises(PlanError, match="parallel.ep = 3 does not divide world size 4"):
        ConvertOptions.from_flags(layout="sharded", tp=2, dp=2, ep=3).validate()


@pytest.mark.parametrize("tp,dp,ep", [(2, 1, 1), (4, 1, 4), (2, 1, 2), (1, 2, 2)])
def test_sharded_plan_uses_model_split_tables(ckpt_factory, tp, dp, ep):
    from ascend.models.sharding import ShardCoords, shard_slice
    from ascend.models.tensors import spec_index, tensor_specs

    src = ckpt_factory("deepseek_v3", fp8=False)
    args = load_model_args(src)
    plan = plan_for(src, precision="bf16", layout="sharded", tp=tp, dp=dp, ep=ep)
    specs = spec_index(tensor_specs(args))
    world = tp * dp
    assert [f.name for f in plan.files] == [f"model-rank-{r:05d}-of-{world:05d}.safetensors" for r in range(world)]
    for rank, f in enumerate(plan.files):
        coords = ShardCoords.for_rank(rank, world, dp=dp, ep=ep)
        held = {n for n, s in specs.items() if shard_slice(s, coords) is not None}
        assert {p.source for p in f.pieces} == held
        for p in f.pieces:
            sl = shard_slice(specs[p.source], coords)
            assert tuple(p.outputs[0][2]) == tuple(s.stop - s.start for s in sl)
    assert plan.sharding["moe_tp"] == world // ep and plan.sharding["attn_tp"] == tp
