"""W8A8 conversion: msModelSlim v1 layout, kinds per tensor by scheme, static pieces from a
calibration file (a FIXTURE with given min/max, see calib_fixture.py), read back with the official
``safetensors`` library and checked against the formulas of quantization.md §1 computed here."""

import json
import re

import calib_fixture
import pytest
import torch
from convert_fixtures import FAMILIES
from safetensors import safe_open

from ascend.checkpoint.files import MANIFEST
from ascend.convert.jobs import ConvertOptions
from ascend.convert.pipeline import convert
from ascend.convert.verify import verify
from ascend.errors import ConvertError
from ascend.models.args import load_model_args
from ascend.models.quant_schemes import linear_kind, static_linears
from ascend.models.sharding import ShardCoords
from ascend.reference.weights import CheckpointReader

STATIC_SUFFIXES = (".weight", ".quant_bias", ".input_scale", ".input_offset", ".deq_scale")


def load_dir(d):
    """Every tensor of a dir, through the official safetensors reader."""
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            for k in h.keys():
                out[k] = h.get_tensor(k)
    return out


def calibrated(src, out, family, **kw):
    args = load_model_args(src)
    ranges = calib_fixture.fixed_ranges(static_linears(family, "w8a8", args))
    calib_fixture.write_calibration(out, family, ranges, **kw)
    return ranges


def source_float(src):
    """The source's float weights (FP8 dequantized) through the reference reader."""
    args = load_model_args(src)
    reader = CheckpointReader(src, args, ShardCoords.for_rank(0, 1))
    return reader, args


def expected_static(w, bias, lo, hi):
    """quantization.md §1, written out here (weights in fp32 as msModelSlim, the rest in float64)."""
    w = w.float()
    ws = w.abs().amax(dim=1).clamp(min=1e-12) / 127
    q = torch.round(w / ws[:, None]).clamp(-128, 127)
    ws = ws.double()
    scale = max(max(hi, 0) / 255 - min(lo, 0) / 255, torch.finfo(torch.float32).eps)
    offset = round(-min(lo, 0) / scale) - 128
    deq = scale * ws
    b = bias.double() if bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    qb = torch.round(b / deq - offset * q.sum(1))
    return q, scale, offset, deq, qb


@pytest.mark.parametrize("fp8", [False, True], ids=["bf16", "fp8"])
@pytest.mark.parametrize("family", FAMILIES)
def test_practice_scheme_v1_layout(ckpt_factory, tmp_path, family, fp8):
    src = ckpt_factory(family, fp8=fp8)
    out = tmp_path / "w8a8"
    ranges = calibrated(src, out, family)
    assert convert(src, out, ConvertOptions.from_flags(precision="w8a8")).complete
    files = sorted(p.name for p in out.glob("*.safetensors"))
    assert files and all(re.fullmatch(r"quant_model_weights-\d{5}-of-\d{5}\.safetensors", f) for f in files)
    index = json.loads((out / "quant_model_weights.safetensors.index.json").read_text())
    got = load_dir(out)
    assert set(index["weight_map"]) == set(got) and set(index["weight_map"].values()) == set(files)
    desc = json.loads((out / "quant_model_description.json").read_text())
    header = {"model_quant_type": "W8A8", "version": "1.0.0", "group_size": 0, "metadata": {}, "optional": {}}
    assert {k: desc.pop(k) for k in header} == header
    assert set(desc) == set(got)  # a kind for every tensor, nothing else
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quantize"] == "w8a8_dynamic" and "quantization_config" not in cfg

    reader, args = source_float(src)
    mtp_layers = set(args.mtp_layers)
    for name, kind in desc.items():
        layer = re.match(r"model\.layers\.(\d+)\.", name)
        mtp = bool(layer) and int(layer.group(1)) in mtp_layers
        module = re.sub(r"\.(weight|bias|quant_bias|input_scale|input_offset|deq_scale|weight_scale|weight_offset)$", "", name)
        assert kind == linear_kind(family, "w8a8", module + ".weight", mtp=mtp) or kind == "FLOAT", name
    statics = sorted({n.rsplit(".", 1)[0] for n, k in desc.items() if k == "W8A8"})
    assert statics == sorted(ranges)  # exactly the calibrated modules
    for module in statics:
        w = reader.read(module + ".weight")
        bias = reader.read(module + ".bias") if reader.has(module + ".bias") else None
        q, scale, offset, deq, qb = expected_static(w, bias, *ranges[module])
        assert got[module + ".weight"].dtype == torch.int8
        assert torch.equal(got[module + ".weight"].long(), q.long()), module
        assert got[module + ".input_scale"].dtype == torch.float32 and got[module + ".input_scale"].shape == (1,)
        assert got[module + ".input_scale"].item() == pytest.approx(scale, rel=1e-6)
        assert got[module + ".input_offset"].tolist() == [offset]
        assert got[module + ".deq_scale"].dtype == torch.float32
        assert torch.allclose(got[module + ".deq_scale"].double(), deq, rtol=1e-6, atol=0)
        assert got[module + ".quant_bias"].dtype == torch.int32
        assert (got[module + ".quant_bias"].long() - qb.long()).abs().max() <= 1, module  # fp32 vs fp64 rounding
        if bias is not None:
            assert got[module + ".bias"].dtype == torch.float32 and torch.equal(got[module + ".bias"], bias)
        else:
            assert module + ".bias" not in got
        # the identity on the WRITTEN tensors: quant_bias = round(bias/deq - offset * sum(q))
        d = got[module + ".deq_scale"].double()
        b = bias.double() if bias is not None else 0
        exact = torch.round(b / d - got[module + ".input_offset"].double() * got[module + ".weight"].long().sum(1).double())
        assert torch.equal(got[module + ".quant_bias"].double(), exact), module
    for name, kind in desc.items():
        if kind == "W8A8_DYNAMIC" and name.endswith(".weight"):
            assert got[name].dtype == torch.int8 and got[name + "_scale"].shape == (got[name].shape[0], 1)
    report = verify(out, against=str(src), logits=False)
    assert report.ok, report.problems
    assert report.tensors_checked == report.tensors_total > 0
    reader.close()


@pytest.mark.parametrize("family", FAMILIES)
def test_dynamic_scheme_needs_no_calibration(ckpt_factory, tmp_path, family):
    src = ckpt_factory(family)
    out = tmp_path / "dyn"
    assert convert(src, out, ConvertOptions.from_flags(precision="w8a8", w8a8_scheme="dynamic")).complete
    desc = json.loads((out / "quant_model_description.json").read_text())
    assert desc["model_quant_type"] == "W8A8_DYNAMIC"
    assert "W8A8" not in desc.values() and not (out / ".ascend-convert" / "calibration").exists()
    got = load_dir(out)
    assert not [n for n in got if n.endswith((".quant_bias", ".deq_scale", ".input_scale"))]
    assert got["model.layers.0.self_attn.o_proj.weight"].dtype == torch.int8


def test_a_part_of_a_multi_node_conversion_needs_an_existing_calibration(ckpt_factory, tmp_path):
    src = ckpt_factory("deepseek_v3")
    with pytest.raises(ConvertError) as err:
        convert(src, tmp_path / "o", ConvertOptions.from_flags(precision="w8a8"), node_rank=0, nnodes=2)
    assert err.value.exit_code == 2 and "calibration" in err.value.line()
    assert not (tmp_path / "o" / MANIFEST).exists()


def test_convert_calibrates_first_and_holds_the_gate(ckpt_factory, tmp_path):
    """The default scheme's static linears are calibrated by convert itself (layer by layer, into
    the output's state dir); a broken accuracy threshold stops it before any weight is written."""
    from ascend.errors import CheckFailed
    from ascend.recipe.schema import CalibrationSection, CalibrationThresholds

    src = ckpt_factory("deepseek_v3")
    strict = CalibrationSection(samples=8, max_len=32, thresholds=CalibrationThresholds(layer_rel_l2=1e-9))
    with pytest.raises(CheckFailed, match="accuracy gate failed"):
        convert(src, tmp_path / "strict", ConvertOptions.from_flags(precision="w8a8"), calibration=strict)
    assert not (tmp_path / "strict" / MANIFEST).exists()
    loose = CalibrationSection(samples=8, max_len=32, thresholds=CalibrationThresholds(
        layer_rel_l2=None, logits_kl=None, top1=None, logits_rel_err=None))
    out = tmp_path / "o"
    assert convert(src, out, ConvertOptions.from_flags(precision="w8a8", mtp="drop"), calibration=loose).complete
    desc = json.loads((out / "quant_model_description.json").read_text())
    assert desc["model_quant_type"] == "W8A8" and desc["model.layers.0.self_attn.q_a_proj.weight"] == "W8A8"
    assert (out / ".ascend-convert" / "calibration" / "calibration.json").is_file()


def test_rules_only_on_experts_need_no_calibration(ckpt_factory, tmp_path):
    """The tiny recipes quantize experts only: dynamic under the practice, no calibration."""
    src = ckpt_factory("glm_moe_dsa", fp8=True)
    out = tmp_path / "o"
    assert convert(src, out, ConvertOptions.from_flags(precision="bf16", rules=[("*.mlp.experts.*", "w8a8")])).complete
    desc = json.loads((out / "quant_model_description.json").read_text())
    assert desc["model_quant_type"] == "W8A8_DYNAMIC"


@pytest.mark.parametrize("family", ["glm_moe_dsa", "glm4_moe"])
def test_sharded_static_and_mtp_export(ckpt_factory, tmp_path, family):
    src = ckpt_factory(family, fp8=True)
    out = tmp_path / "sh"
    calibrated(src, out, family)
    assert convert(src, out, ConvertOptions.from_flags(precision="w8a8", layout="sharded", tp=2, ep=2)).complete
    report = verify(out, against=str(src), logits=False)
    assert report.ok, report.problems
    rank1 = load_dir(out)
    assert any(n.endswith(".o_proj.quant_bias") for n in rank1)
    exp = tmp_path / "exp"
    calibrated(src, exp, family)
    assert convert(src, exp, ConvertOptions.from_flags(precision="w8a8", mtp="export")).complete
    draft = json.loads((exp / "mtp" / "config.json").read_text())
    assert draft["num_hidden_layers"] == 1
    if family == "glm4_moe":  # GLM-4.7 practice leaves the MTP layer out: a float draft
        assert not (exp / "mtp" / "quant_model_description.json").exists()
    else:
        desc = json.loads((exp / "mtp" / "quant_model_description.json").read_text())
        assert desc["model.layers.0.self_attn.q_a_proj.weight"] == "W8A8"
        assert desc["model.eh_proj.weight"] == "FLOAT"
        assert (exp / "mtp" / "quant_model_weights.safetensors.index.json").is_file()
    assert verify(exp, against=str(src), logits=False).ok


def test_smoothing_and_added_norm_bias(ckpt_factory, tmp_path):
    """Calibration with smoothing: the weight's input columns are multiplied by smooth_scale, the
    replaced norm weight and the added anti-outlier norm bias are written (GLM-4.x form)."""
    src = ckpt_factory("glm4_moe")
    out = tmp_path / "sm"
    args = load_model_args(src)
    mods = static_linears("glm4_moe", "w8a8", args)
    h = args.hidden_size
    s = torch.linspace(0.5, 2.0, h)
    q0 = "model.layers.0.self_attn.q_proj"
    norm = "model.layers.0.input_layernorm"
    new_norm = torch.linspace(0.9, 1.1, h, dtype=torch.float32)
    v0 = "model.layers.0.self_attn.v_proj"
    reader, _ = source_float(src)
    new_v = reader.read(v0 + ".weight") * 0.5  # a replaced static weight (v -> o smoothing)
    calib_fixture.write_calibration(out, "glm4_moe", calib_fixture.fixed_ranges(mods), smooth={q0: s},
                                    replaced={norm + ".weight": new_norm, norm + ".bias": torch.full((h,), 0.01),
                                              v0 + ".weight": new_v})
    assert convert(src, out, ConvertOptions.from_flags(precision="w8a8")).complete
    got = load_dir(out)
    assert torch.equal(got[norm + ".weight"], new_norm.to(torch.bfloat16))
    assert got[norm + ".bias"].shape == (h,) and got[norm + ".bias"].dtype == torch.bfloat16
    w = reader.read(q0 + ".weight") * s[None, :]
    q, *_ = expected_static(w, reader.read(q0 + ".bias"), *calib_fixture.fixed_ranges(mods)[q0])
    assert torch.equal(got[q0 + ".weight"].long(), q.long())
    qv, *_ = expected_static(new_v, reader.read(v0 + ".bias"), *calib_fixture.fixed_ranges(mods)[v0])
    assert torch.equal(got[v0 + ".weight"].long(), qv.long())
    desc = json.loads((out / "quant_model_description.json").read_text())
    assert desc[norm + ".bias"] == "FLOAT"
    assert verify(out, against=str(src), logits=False).ok
    # a changed calibration makes the old output another conversion's
    calib_fixture.write_calibration(out, "glm4_moe", calib_fixture.fixed_ranges(mods, hi=9.0))
    with pytest.raises(ConvertError, match="another recipe or with other options"):
        convert(src, out, ConvertOptions.from_flags(precision="w8a8"))
    reader.close()


def test_scheme_leaves_non_w8a8_digests_alone(ckpt_factory):
    """Outputs without W8A8 keep the plan digest they had before the scheme option existed."""
    from ascend.convert.pipeline import conversion_jobs

    src = ckpt_factory("deepseek_v3", fp8=True)
    a = conversion_jobs(src, ConvertOptions.from_flags(precision="bf16"))
    b = conversion_jobs(src, ConvertOptions.from_flags(precision="bf16", w8a8_scheme="dynamic"))
    assert a.digest() == b.digest()
    c = conversion_jobs(src, ConvertOptions.from_flags(precision="w8a8", w8a8_scheme="dynamic"))
    assert c.to_json()["options"]["precision"]["w8a8_scheme"] == "dynamic"


def test_static_resume_rewrites_a_lost_file_byte_identical(ckpt_factory, tmp_path):
    src = ckpt_factory("deepseek_v3", fp8=True)
    out = tmp_path / "r"
    calibrated(src, out, "deepseek_v3")
    opts = ConvertOptions.from_flags(precision="w8a8", file_bytes=200_000)
    assert convert(src, out, opts).complete
    files = sorted(out.glob("quant_model_weights-*.safetensors"))
    assert len(files) > 2
    before = {f.name: f.read_bytes() for f in files}
    (out / MANIFEST).unlink()
    files[1].unlink()  # as if the run died before this file and the finalize
    result = convert(src, out, opts)
    assert result.complete and result.files_written == [files[1].name]
    assert {f.name: f.read_bytes() for f in sorted(out.glob("quant_model_weights-*.safetensors"))} == before


def test_calibration_may_not_replace_a_dynamic_linear(ckpt_factory, tmp_path):
    src = ckpt_factory("glm4_moe")
    out = tmp_path / "bad"
    args = load_model_args(src)
    expert = "model.layers.1.mlp.experts.0.up_proj.weight"
    calib_fixture.write_calibration(out, "glm4_moe", calib_fixture.fixed_ranges(static_linears("glm4_moe", "w8a8", args)),
                                    replaced={expert: torch.zeros(args.moe_intermediate_size, args.hidden_size)})
    with pytest.raises(ConvertError, match="replaces model.layers.1.mlp.experts.0.up_proj.weight"):
        convert(src, out, ConvertOptions.from_flags(precision="w8a8"))
