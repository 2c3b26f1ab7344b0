"""`ascend verify --engine xllm`: the output against what xLLM's loader reads (quantization.md §3)."""

import json

import calib_fixture
import pytest
from convert_fixtures import FAMILIES
from test_convert_cli import cli

from ascend.convert.jobs import ConvertOptions
from ascend.convert.pipeline import convert
from ascend.models.args import ModelArgs, load_model_args
from ascend.models.quant_schemes import (
    linear_kind,
    static_linears,
    xllm_accepts,
    xllm_kinds,
)
from ascend.models.tensors import tensor_specs
from ascend.tiny.configs import tiny_config


@pytest.mark.parametrize("family", FAMILIES)
def test_contract_data_agrees_with_the_schemes(family):
    """The practice scheme gives every linear a kind xLLM reads; the dynamic scheme breaks the
    contract exactly for the families xllm_accepts refuses (two tables, one story)."""
    args = ModelArgs.from_config(tiny_config(family, mtp=True))
    linears = [s for s in tensor_specs(args, mtp=False) if s.quantizable and s.scale_of is None]
    for s in linears:
        assert linear_kind(family, "w8a8", s.name, mtp=s.mtp) in xllm_kinds(family, s.name), s.name
    broken = [s.name for s in linears if linear_kind(family, "dynamic", s.name) not in xllm_kinds(family, s.name)]
    assert bool(broken) == (xllm_accepts(family, "dynamic") is not None)


@pytest.mark.parametrize("family", FAMILIES)
def test_practice_output_passes(ckpt_factory, tmp_path, capsys, monkeypatch, family):
    src = ckpt_factory(family, fp8=True)
    out = tmp_path / "o"
    calib_fixture.write_calibration(out, family, calib_fixture.fixed_ranges(
        static_linears(family, "w8a8", load_model_args(src))))
    assert convert(src, out, ConvertOptions.from_flags(precision="w8a8")).complete
    code, stdout, err = cli(capsys, "verify", out, "--engine", "xllm", "--no-logits", "--json")
    report = json.loads(stdout)
    assert code == 0 and report["ok"], report["problems"]


def test_dynamic_deepseek_names_every_missing_and_unexpected_tensor(ckpt_factory, tmp_path, capsys):
    src = ckpt_factory("deepseek_v3")
    out = tmp_path / "d"
    assert convert(src, out, ConvertOptions.from_flags(precision="w8a8", w8a8_scheme="dynamic", mtp="drop")).complete
    code, stdout, err = cli(capsys, "verify", out, "--engine", "xllm", "--no-logits", "--json")
    assert code == 3
    problems = json.loads(stdout)["problems"]
    layers = load_model_args(src).num_hidden_layers
    for i in range(layers):
        for p in ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "o_proj"):
            m = f"model.layers.{i}.self_attn.{p}"
            assert any(x.startswith(f"xLLM contract: {m}.weight: description kind W8A8_DYNAMIC") for x in problems), m
            for t in ("quant_bias", "deq_scale", "input_scale", "input_offset"):
                assert f"xLLM contract: {m}.{t}: missing (xLLM's deepseek_v3 loader reads it for a W8A8 tensor)" in problems
            assert any(x.startswith(f"xLLM contract: {m}.weight_scale: unexpected tensor") for x in problems), m
        kv_b = f"model.layers.{i}.self_attn.kv_b_proj.weight"
        assert any(x.startswith(f"xLLM contract: {kv_b}: description kind W8A8_DYNAMIC") for x in problems)
    assert "verify failed" in err


def test_glm5_dynamic_wk_and_sharded_layout(ckpt_factory, tmp_path, capsys):
    src = ckpt_factory("glm_moe_dsa")
    out = tmp_path / "d"
    assert convert(src, out, ConvertOptions.from_flags(precision="w8a8", w8a8_scheme="dynamic", mtp="drop")).complete
    code, stdout, _ = cli(capsys, "verify", out, "--engine", "xllm", "--no-logits", "--json")
    problems = json.loads(stdout)["problems"]
    assert code == 3
    assert any("self_attn.indexer.wk.weight: description kind W8A8_DYNAMIC, xLLM's glm_moe_dsa loader reads FLOAT" in p
               for p in problems)
    assert not any("q_a_proj.weight: description kind" in p for p in problems)  # dynamic attention is fine for GLM-5
    sh = tmp_path / "sh"
    assert convert(src, sh, ConvertOptions.from_flags(precision="bf16", layout="sharded", tp=2)).complete
    code, stdout, _ = cli(capsys, "verify", sh, "--engine", "xllm", "--no-logits", "--json")
    assert code == 3 and any("xLLM loads the hf layout" in p for p in json.loads(stdout)["problems"])


def test_unknown_engine_is_exit_2(tmp_path, capsys):
    code, _, err = cli(capsys, "verify", tmp_path, "--engine", "vllm")
    assert code == 2 and "--engine xllm" in err


def test_glm5_q_a_and_kv_a_must_share_a_kind(ckpt_factory, tmp_path, capsys):
    src = ckpt_factory("glm_moe_dsa")
    out = tmp_path / "mixed"
    opts = ConvertOptions.from_flags(precision="bf16", rules=[("*.q_a_proj.*", "w8a8")], w8a8_scheme="dynamic", mtp="drop")
    assert convert(src, out, opts).complete
    code, stdout, _ = cli(capsys, "verify", out, "--engine", "xllm", "--no-logits", "--json")
    problems = json.loads(stdout)["problems"]
    assert code == 3
    assert ("xLLM contract: model.layers.0.self_attn.q_a_proj is W8A8_DYNAMIC but "
            "model.layers.0.self_attn.kv_a_proj_with_mqa is FLOAT; xLLM fuses them and needs one kind") in problems
