"""``ascend tiny``: layout, determinism, FP8 format, tokenizer and chat template."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors import safe_open

from ascend.tiny.configs import FAMILIES, special_tokens, tiny_config


def _digest(path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def _tensors(path) -> dict[str, torch.Tensor]:
    index = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    out = {}
    for name, file in index.items():
        with safe_open(str(path / file), "pt") as f:
            out[name] = f.get_tensor(name)
    return out


def test_tiny_config_properties():
    for family in FAMILIES:
        cfg = tiny_config(family)
        assert cfg["model_type"] == family
        assert cfg["num_attention_heads"] % 4 == 0 and cfg["n_routed_experts"] % 4 == 0
        assert cfg["hidden_size"] % 128 != 0  # FP8 partial blocks along the input dim
        if "index_topk" in cfg:
            assert cfg["index_topk"] < 8
    assert tiny_config("deepseek_v3")["n_group"] == 8 and tiny_config("deepseek_v3")["topk_group"] == 4
    assert tiny_config("glm4_moe", mtp=False)["num_nextn_predict_layers"] == 0
    assert tiny_config("glm_moe_dsa", layers=5)["num_hidden_layers"] == 5
    with pytest.raises(ValueError):
        tiny_config("deepseek_v3", experts=12)  # not a multiple of 8 groups


def test_layout_names_and_dtypes(tiny_dir):
    path = tiny_dir("glm_moe_dsa")
    files = sorted(p.name for p in path.glob("model-*.safetensors"))
    assert len(files) == 5 and files[0] == "model-00001-of-00005.safetensors"  # globals + 3 layers + MTP
    t = _tensors(path)
    assert t["model.layers.1.mlp.gate.e_score_correction_bias"].dtype == torch.float32
    assert t["model.layers.0.self_attn.q_a_proj.weight"].dtype == torch.bfloat16
    assert t["model.layers.2.self_attn.indexer.wq_b.weight"].shape == (8 * 32, 96)
    assert t["model.layers.1.mlp.experts.7.down_proj.weight"].shape == (160, 64)
    assert t["model.layers.3.eh_proj.weight"].shape == (160, 320)  # the MTP layer
    assert torch.equal(t["model.layers.3.shared_head.head.weight"], t["lm_head.weight"])
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (path / name).is_file()


def test_deterministic_for_a_seed(tiny_dir, tmp_path):
    from ascend.tiny.writer import write_tiny_checkpoint

    again = write_tiny_checkpoint(tmp_path / "again", "deepseek_v3")
    other = write_tiny_checkpoint(tmp_path / "other", "deepseek_v3", seed=1)
    first = _digest(tiny_dir("deepseek_v3"))
    assert _digest(again) == first
    changed = {k for k, v in _digest(other).items() if first[k] != v}
    assert changed and all(k.startswith("model-0") for k in changed)  # only the weights change


@pytest.mark.parametrize("family", ["glm4_moe", "deepseek_v32"])
def test_fp8_format(family, tiny_dir):
    path = tiny_dir(family, fp8=True)
    cfg = json.loads((path / "config.json").read_text())
    q = cfg["quantization_config"]
    assert q["quant_method"] == "fp8" and q["fmt"] == "e4m3" and q["weight_block_size"] == [128, 128]
    t = _tensors(path)
    name = "model.layers.1.self_attn.k_proj.weight" if family == "glm4_moe" else "model.layers.1.self_attn.kv_a_proj_with_mqa.weight"
    w, s = t[name], t[name + "_scale_inv"]
    assert w.dtype == torch.float8_e4m3fn and s.dtype == torch.float32
    assert w.shape[1] == 160 and w.shape[0] < 128 and s.shape == (1, 2)  # partial blocks on both dims
    assert t["model.embed_tokens.weight"].dtype == torch.bfloat16
    assert t["model.layers.1.mlp.gate.weight"].dtype == torch.bfloat16
    assert "model.layers.1.mlp.gate.weight_scale_inv" not in t
    if family == "deepseek_v32":
        assert q["scale_fmt"] == "ue8m0"
        assert torch.equal(s, torch.exp2(torch.log2(s).round()))  # powers of two
        assert t["model.layers.1.self_attn.indexer.weights_proj.weight"].dtype == torch.bfloat16


def test_fp8_matches_its_dequantized_copy(tiny_dir, tmp_path):
    """FP8 tiny -> dequantized copy (float32, and BF16 where exact): same logits."""
    from safetensors.torch import save_file

    from ascend.checkpoint.fp8 import dequantize_fp8_block
    from ascend.reference import compute_logits

    src = tiny_dir("glm_moe_dsa", fp8=True)
    t = _tensors(src)
    plain = {}
    for name, v in t.items():
        if name.endswith("_scale_inv"):
            continue
        plain[name] = dequantize_fp8_block(v, t[name + "_scale_inv"]) if name + "_scale_inv" in t else v
    out = tmp_path / "dequantized"
    out.mkdir()
    save_file(plain, str(out / "model.safetensors"))
    cfg = json.loads((src / "config.json").read_text())
    del cfg["quantization_config"]
    (out / "config.json").write_text(json.dumps(cfg))
    ids = [3, 99, 512, 7, 45, 800, 21, 5]
    fp8 = compute_logits(src, ids)
    assert (fp8 - compute_logits(out, ids)).abs().max().item() < 1e-5
    # and the FP8 weights really differ from the BF16 tiny of the same seed (quantization happened)
    assert (fp8 - compute_logits(tiny_dir("glm_moe_dsa"), ids)).abs().max().item() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_and_chat_template(family, tiny_dir):
    import transformers

    path = tiny_dir(family)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    assert len(tok) <= 1024
    for text, tid in special_tokens(family).items():
        assert tok.convert_tokens_to_ids(text) == tid
        assert tok.encode(text, add_special_tokens=False) == [tid]
    text = "hello world, 北京 weather?"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]
    on = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    off = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    convo = msgs + [
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "18C"},
    ]
    with_tools = tok.apply_chat_template(convo, tools=tools, tokenize=False, add_generation_prompt=True)
    if family == "glm_moe_dsa":
        assert on == "[gMASK]<sop><|system|>Be brief.<|user|>Weather in Paris?<|assistant|><think>"
        assert off.endswith("<|assistant|></think>")
        assert with_tools.endswith(
            "<|assistant|></think><tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call>"
            "<|observation|><tool_response>18C</tool_response><|assistant|><think>")
    elif family == "glm4_moe":
        assert on == "[gMASK]<sop><|system|>\nBe brief.<|user|>\nWeather in Paris?<|assistant|>"
        assert off.endswith("Weather in Paris?/nothink<|assistant|>\n<think></think>")
        assert "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>" in with_tools
        assert with_tools.endswith("<|observation|>\n<tool_response>\n18C\n</tool_response><|assistant|>")
    else:
        assert on == "<｜begin▁of▁sentence｜>Be brief.<｜User｜>Weather in Paris?<｜Assistant｜><think>"
        assert off.endswith("<｜Assistant｜></think>")
        assert '<｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris"}<｜tool▁call▁end｜>' in with_tools
        assert with_tools.endswith("<｜tool▁output▁begin｜>18C<｜tool▁output▁end｜>")
        assert "### get_weather" in with_tools
    # the serving layer's renderer gives the same prompt as transformers
    from ascend.chat.template import ChatTemplate

    mine = ChatTemplate.from_model_dir(path).render(msgs, enable_thinking=False)
    assert mine == off


def test_cli_tiny(cli, tmp_path):
    res = cli("tiny", str(tmp_path / "t"), "--arch", "glm4_moe", "--layers", "2", "--no-mtp", "--json")
    assert res.code == 0, res.err
    info = json.loads(res.out)
    assert info["family"] == "glm4_moe" and "config.json" in info["files"]
    cfg = json.loads((tmp_path / "t" / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 2 and cfg["num_nextn_predict_layers"] == 0
    index = json.loads((tmp_path / "t" / "model.safetensors.index.json").read_text())["weight_map"]
    assert not any(k.startswith("model.layers.2.") for k in index)
    again = cli("tiny", str(tmp_path / "t"), "--arch", "glm4_moe")
    assert again.code == 2 and "already exists" in again.err
    bad = cli("tiny", str(tmp_path / "u"), "--arch", "llama")
    assert bad.code == 2 and "glm_moe_dsa" in bad.err


def test_fp8_partial_blocks_follow_the_published_formula(tiny_dir):
    """Dequantization uses 128x128 blocks with a partial last block (DeepSeek ``weight_dequant``,
    README_WEIGHTS.md). transformers 5.23's ``FineGrainedFP8Config(dequantize=True)`` instead cuts
    a 160-wide row into 2 equal 80-wide blocks, so it disagrees on columns 80..127: we follow the
    published format (documented in docs/reference-models.md)."""
    import transformers
    from transformers import FineGrainedFP8Config

    from ascend.models.args import load_model_args
    from ascend.models.sharding import ShardCoords
    from ascend.reference.weights import CheckpointReader

    path = tiny_dir("glm4_moe", fp8=True)
    name = "model.layers.0.self_attn.q_proj.weight"  # [256, 160]: scale [2, 2], last column block partial
    t = _tensors(path)
    w, s = t[name], t[name + "_scale_inv"]
    published = w.float() * s.repeat_interleave(128, 0).repeat_interleave(128, 1)[: w.shape[0], : w.shape[1]]
    ours = CheckpointReader(path, load_model_args(path), ShardCoords()).read(name)
    assert torch.equal(ours, published)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, quantization_config=FineGrainedFP8Config(dequantize=True))
    theirs = hf.state_dict()[name].float()
    same = torch.cat([torch.arange(0, 80), torch.arange(128, 160)])
    assert torch.allclose(theirs[:, same], published[:, same], rtol=1e-2)  # bf16 rounding only
    assert not torch.allclose(theirs[:, 80:128], published[:, 80:128], rtol=1e-2)


def test_fixture_variations_scales_apart_no_mtp_copies_overrides(tmp_path):
    """The variations the conversion and MindSpore fixtures use, on the one writer."""
    from ascend.models.args import load_model_args
    from ascend.tiny.writer import write_tiny_checkpoint

    out = write_tiny_checkpoint(tmp_path / "v", "glm4_moe", fp8=True, scales_apart=True, mtp_copies=False,
                                overrides={"moe_intermediate_size": 32})
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    scales = {n for n in index if n.endswith("_scale_inv")}
    assert scales and {index[n] for n in scales} == {max(index.values())}  # one file, the last
    assert not any(index[n[: -len("_scale_inv")]] == index[n] for n in scales)
    mtp = json.loads((out / "config.json").read_text())["num_hidden_layers"]
    assert f"model.layers.{mtp}.eh_proj.weight" in index
    assert not [n for n in index if n.startswith(f"model.layers.{mtp}.") and ("embed_tokens" in n or "shared_head.head" in n)]
    assert load_model_args(out).moe_intermediate_size == 32
    assert _tensors(out)["model.layers.1.mlp.experts.0.down_proj.weight"].shape == (160, 32)
