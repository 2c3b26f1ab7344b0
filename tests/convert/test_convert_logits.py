"""Outputs run: the reference runtime (sharded, gloo) and transformers load what we write."""

import json

import pytest
import torch
from convert_fixtures import make_checkpoint

from ascend.convert.jobs import ConvertOptions
from ascend.convert.pipeline import convert
from ascend.convert.verify import verify

IDS = [5, 17, 300, 42, 9, 77, 12, 400, 3, 999]


@pytest.mark.slow
@pytest.mark.parametrize("tp,dp,ep", [(2, 1, 2), (1, 2, 2)], ids=["tp2-ep2", "dp2-ep2"])
def test_sharded_logits_equal_source_logits(ckpt_factory, tmp_path, tp, dp, ep):
    from ascend.reference import compute_logits

    src = ckpt_factory("glm_moe_dsa")  # BF16 source: sharding must not change a single weight
    out = tmp_path / "sh"
    convert(src, out, ConvertOptions.from_flags(precision="bf16", layout="sharded", tp=tp, dp=dp, ep=ep))
    ref = compute_logits(str(src), IDS)
    got = compute_logits(str(out), IDS)  # spawns tp*dp ranks from ascend-sharding.json
    assert got.shape == ref.shape
    assert torch.allclose(got, ref, rtol=0, atol=1e-4 * float(ref.abs().max())), float((got - ref).abs().max())
    assert torch.equal(got.argmax(-1), ref.argmax(-1))


@pytest.mark.slow
def test_verify_compares_reference_logits(ckpt_factory, tmp_path):
    src = ckpt_factory("deepseek_v32", fp8=True)
    out = tmp_path / "bf16"
    convert(src, out, ConvertOptions.from_flags(precision="bf16"))
    report = verify(out)
    assert report.ok, report.problems
    lg = report.logits
    assert lg["class"] == "bf16" and lg["tokens"] == 16
    assert lg["max_rel_error"] <= lg["bounds"]["max_rel_error"] and lg["top1_agreement"] >= 0.8


# A tiny DeepSeek-V3 whose every FP8 weight dim is a multiple of 128: transformers' CPU FP8
# dequantizer refuses partial blocks, which every published checkpoint has (kv_a 576 rows).
BLOCK_ALIGNED = dict(hidden_size=256, intermediate_size=256, moe_intermediate_size=128, num_attention_heads=2,
                     num_key_value_heads=2, q_lora_rank=128, kv_lora_rank=128, qk_nope_head_dim=128,
                     qk_rope_head_dim=128, v_head_dim=128, head_dim=128)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp8"])
def test_transformers_loads_hf_output(tmp_path, precision):
    from transformers import AutoModelForCausalLM

    from ascend.reference import compute_logits

    # bf16: an FP8 source dequantized; fp8: a block-aligned FP8 source kept FP8
    src = make_checkpoint(tmp_path / "src", "deepseek_v3", fp8=True, overrides=BLOCK_ALIGNED if precision == "fp8" else None)
    out = tmp_path / precision
    convert(src, out, ConvertOptions.from_flags(precision=precision))
    if precision == "fp8":
        assert json.loads((out / "config.json").read_text())["quantization_config"]["quant_method"] == "fp8"
    # transformers dequantizes FP8 to BF16 on CPU, so the FP8 model runs in BF16
    dtype = torch.float32 if precision == "bf16" else torch.bfloat16
    model, info = AutoModelForCausalLM.from_pretrained(str(out), output_loading_info=True, dtype=dtype)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert all(k.startswith("model.layers.3.") for k in info["unexpected_keys"])  # only the MTP layer
    with torch.no_grad():
        logits = model(torch.tensor([IDS])).logits[0].float()
    assert torch.isfinite(logits).all()
    if precision == "bf16":
        ref = compute_logits(str(out), IDS)
        assert (logits - ref).abs().max() <= 1e-4 * ref.abs().max()
        return
    # FP8: transformers dequantizes to BF16 at load; its weights must be exactly our
    # dequantization (a BF16 forward is too noisy against the fp32 reference to compare logits)
    from safetensors.torch import load_file

    from ascend.checkpoint.fp8 import dequantize_fp8_block

    ours = load_file(str(next(out.glob("model-*.safetensors"))))
    state = model.state_dict()
    checked = 0
    for name, w in ours.items():
        if w.dtype == torch.float8_e4m3fn and name in state:
            want = dequantize_fp8_block(w, ours[name + "_scale_inv"], dtype=torch.bfloat16)
            assert torch.equal(state[name], want), name
            checked += 1
    assert checked >= 10
