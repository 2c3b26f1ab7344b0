"""End-to-end conversions of tiny checkpoints of every family, checked by `verify` and directly."""

import json

import pytest
import torch
from convert_fixtures import FAMILIES
from safetensors.torch import load_file

from ascend.checkpoint.files import MANIFEST
from ascend.checkpoint.safetensors_io import SafetensorsDir
from ascend.convert.jobs import ConvertOptions
from ascend.convert.pipeline import convert
from ascend.convert.verify import verify


def run(src, out, **kw):
    result = convert(src, out, ConvertOptions.from_flags(**kw))
    assert result.complete and (out / MANIFEST).is_file()
    return out


def assert_verified(out, src, logits=False):
    report = verify(out, against=str(src), logits=logits)
    assert report.ok, report.problems
    assert report.tensors_checked == report.tensors_total > 0
    return report


def load_all(d):
    tensors = {}
    for f in sorted(d.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    return tensors


def reference_dequant(q, s):
    """The definition, block by block (checkpoints.md §5)."""
    out = torch.empty(q.shape, dtype=torch.float32)
    for bi in range(s.shape[0]):
        for bj in range(s.shape[1]):
            blk = (slice(bi * 128, (bi + 1) * 128), slice(bj * 128, (bj + 1) * 128))
            out[blk] = q[blk].float() * s[bi, bj].item()
    return out.to(torch.bfloat16)


@pytest.mark.parametrize("family", FAMILIES)
def test_fp8_to_bf16_is_the_definition_bit_for_bit(ckpt_factory, tmp_path, family):
    src = ckpt_factory(family, fp8=True)
    out = run(src, tmp_path / "bf16", precision="bf16")
    assert_verified(out, src)
    got, srcs = load_all(out), load_all(src)
    scaled = [n for n in srcs if n + "_scale_inv" in srcs]
    assert scaled and not [n for n in got if n.endswith("_scale_inv")]
    for name in scaled:
        assert got[name].dtype == torch.bfloat16
        assert torch.equal(got[name].view(torch.int16), reference_dequant(srcs[name], srcs[name + "_scale_inv"]).view(torch.int16)), name
    for name in set(srcs) - set(scaled) - {n + "_scale_inv" for n in scaled}:
        assert torch.equal(got[name], srcs[name]), name  # everything else copied unchanged
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg
    for side in ("tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        assert (out / side).read_bytes() == (src / side).read_bytes()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(got)


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_to_fp8_to_bf16(ckpt_factory, tmp_path, family):
    src = ckpt_factory(family)
    fp8 = run(src, tmp_path / "fp8", precision="fp8")
    assert_verified(fp8, src)
    cfg = json.loads((fp8 / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == "fp8"
    back = run(fp8, tmp_path / "bf16", precision="bf16")
    assert_verified(back, fp8)
    q, b, s = load_all(fp8), load_all(back), load_all(src)
    name = "model.layers.1.self_attn.o_proj.weight"
    assert q[name].dtype == torch.float8_e4m3fn
    err = (b[name].float() - s[name].float()).abs().max()
    assert 0 < err <= s[name].float().abs().max() / 16  # e4m3 keeps ~4 significant bits


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fp8", [False, True], ids=["bf16-src", "fp8-src"])
def test_to_w8a8_msmodelslim_layout(ckpt_factory, tmp_path, family, fp8):
    src = ckpt_factory(family, fp8=fp8)
    out = run(src, tmp_path / "w8a8", precision="w8a8", w8a8_scheme="dynamic")
    assert_verified(out, src)
    desc = json.loads((out / "quant_model_description.json").read_text())
    t = load_all(out)
    assert set(desc) - {"model_quant_type", "version", "group_size", "metadata", "optional"} == set(t)
    for name, kind in desc.items():
        if name.endswith(".weight") and kind == "W8A8_DYNAMIC":
            assert t[name].dtype == torch.int8
            assert t[name + "_scale"].shape == (t[name].shape[0], 1)
            assert not t[name + "_offset"].any()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quantize"] == "w8a8_dynamic" and "quantization_config" not in cfg
    assert (out / "quant_model_weights.safetensors.index.json").is_file()


def test_fp8_pass_through_is_bit_exact(ckpt_factory, tmp_path):
    src = ckpt_factory("deepseek_v32", fp8=True)  # ue8m0 scales
    out = run(src, tmp_path / "fp8", precision="fp8")
    assert_verified(out, src)
    a, b = load_all(src), load_all(out)
    assert set(a) == set(b)
    for n in a:
        assert torch.equal(a[n].view(torch.uint8), b[n].view(torch.uint8)), n
    assert json.loads((out / "config.json").read_text())["quantization_config"]["scale_fmt"] == "ue8m0"


@pytest.mark.parametrize("tp,dp,ep", [(2, 1, 1), (4, 1, 1), (2, 1, 2), (4, 1, 4), (1, 2, 2)])
def test_sharded_reassembles_to_hf(ckpt_factory, tmp_path, tp, dp, ep):
    from ascend.models.args import load_model_args
    from ascend.models.sharding import ShardCoords, shard_slice
    from ascend.models.tensors import spec_index, tensor_specs

    src = ckpt_factory("glm_moe_dsa", fp8=True)
    hf = load_all(run(src, tmp_path / "hf", precision="bf16"))
    out = run(src, tmp_path / "sh", precision="bf16", layout="sharded", tp=tp, dp=dp, ep=ep)
    assert_verified(out, src)
    specs = spec_index(tensor_specs(load_model_args(src)))
    world = tp * dp
    covered = {n: torch.zeros(t.shape, dtype=torch.bool) for n, t in hf.items()}
    for rank in range(world):
        part = load_file(str(out / f"model-rank-{rank:05d}-of-{world:05d}.safetensors"))
        coords = ShardCoords.for_rank(rank, world, dp=dp, ep=ep)
        for name, t in part.items():
            sl = shard_slice(specs[name], coords)
            assert torch.equal(hf[name][sl], t), (rank, name)
            covered[name][sl] = True
    assert all(c.all() for c in covered.values())  # every element of every tensor is on some rank
    plan = json.loads((out / "ascend-sharding.json").read_text())
    assert (plan["world_size"], plan["dp"], plan["ep"]) == (world, dp, ep)


def test_mtp_keep_drop_export(ckpt_factory, tmp_path):
    src = ckpt_factory("glm_moe_dsa", fp8=True)
    keep = load_all(run(src, tmp_path / "keep", precision="bf16", mtp="keep"))
    drop_dir = run(src, tmp_path / "drop", precision="bf16", mtp="drop")
    drop = load_all(drop_dir)
    mtp_names = {n for n in keep if n.startswith("model.layers.3.")}
    assert mtp_names and set(keep) - set(drop) == mtp_names
    assert json.loads((drop_dir / "config.json").read_text())["num_nextn_predict_layers"] == 0
    exp = run(src, tmp_path / "export", precision="w8a8", w8a8_scheme="dynamic", mtp="export")
    assert_verified(exp, src)
    draft_cfg = json.loads((exp / "mtp" / "config.json").read_text())
    assert draft_cfg["model_type"] == "glm_moe_dsa_mtp" and draft_cfg["num_hidden_layers"] == 1
    assert draft_cfg["architectures"] == ["GlmMoeDsaMtpForCausalLM"]
    draft = load_all(exp / "mtp")
    assert "model.layers.0.mlp.experts.0.gate_proj.weight_scale" in draft
    assert "model.eh_proj.weight" in draft and "model.enorm.weight" in draft
    assert "model.shared_head.head.weight" in draft and "model.embed_tokens.weight" in draft
    assert not [n for n in draft if n.startswith("model.layers.3.")]
    assert (exp / "mtp" / "quant_model_description.json").is_file()
    assert (exp / "mtp" / "chat_template.jinja").is_file()


def test_mtp_export_copies_embed_and_head_when_missing(tmp_path):
    from convert_fixtures import make_checkpoint

    src = make_checkpoint(tmp_path / "src", "glm4_moe", mtp_copies=False)
    assert not [n for n in SafetensorsDir(src).tensors if "shared_head.head" in n]
    exp = run(src, tmp_path / "export", precision="bf16", mtp="export")
    assert_verified(exp, src)
    draft, main = load_all(exp / "mtp"), load_all(src)
    assert torch.equal(draft["model.embed_tokens.weight"], main["model.embed_tokens.weight"])
    assert torch.equal(draft["model.shared_head.head.weight"], main["lm_head.weight"])
    assert json.loads((exp / "mtp" / "config.json").read_text())["model_type"] == "glm4_moe_mtp"


def test_multi_node_parts_are_disjoint_and_last_part_finalizes(ckpt_factory, tmp_path):
    src = ckpt_factory("deepseek_v3", fp8=True)
    opts = dict(precision="bf16", layout="sharded", tp=4, ep=4)
    whole = run(src, tmp_path / "whole", **opts)
    out = tmp_path / "parts"
    r0 = convert(src, out, ConvertOptions.from_flags(**opts), node_rank=0, nnodes=3)
    assert not r0.complete and not (out / MANIFEST).exists()
    r2 = convert(src, out, ConvertOptions.from_flags(**opts), node_rank=2, nnodes=3)
    r1 = convert(src, out, ConvertOptions.from_flags(**opts), node_rank=1, nnodes=3)
    assert not r2.complete and r1.complete
    sets = [set(r.files_written) for r in (r0, r1, r2)]
    assert not (sets[0] & sets[1]) and not (sets[1] & sets[2]) and len(set.union(*sets)) == 4
    for f in whole.glob("*.safetensors"):
        assert (out / f.name).read_bytes() == f.read_bytes()
    parts_files = json.loads((out / MANIFEST).read_text())["files"]
    whole_files = json.loads((whole / MANIFEST).read_text())["files"]
    assert {k: v for k, v in parts_files.items() if k.endswith(".safetensors")} == {
        k: v for k, v in whole_files.items() if k.endswith(".safetensors")}


def test_resume_skips_complete_files_and_redoes_damaged_ones(ckpt_factory, tmp_path):
    src = ckpt_factory("deepseek_v3", fp8=True)
    opts = ConvertOptions.from_flags(precision="bf16", layout="sharded", tp=2)
    out = tmp_path / "o"
    convert(src, out, opts)
    good = (out / "model-rank-00000-of-00002.safetensors").read_bytes()
    (out / MANIFEST).unlink()
    damaged = out / "model-rank-00001-of-00002.safetensors"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes: only the sha256 notices
    damaged.write_bytes(bytes(data))
    r = convert(src, out, opts)
    assert r.files_skipped == ["model-rank-00000-of-00002.safetensors"]
    assert r.files_written == ["model-rank-00001-of-00002.safetensors"] and r.complete
    assert (out / "model-rank-00000-of-00002.safetensors").read_bytes() == good
    assert verify(out, logits=False).ok


def test_verify_names_a_tampered_tensor(ckpt_factory, tmp_path):
    import hashlib

    src = ckpt_factory("glm4_moe", fp8=True)
    out = run(src, tmp_path / "o", precision="w8a8", w8a8_scheme="dynamic")
    f = next(out.glob("quant_model_weights-*.safetensors"))
    from ascend.checkpoint.safetensors_io import read_header

    name = "model.layers.1.mlp.experts.2.up_proj.weight_scale"
    info = read_header(f)[0][name]
    data = bytearray(f.read_bytes())
    data[info.start:info.start + 4] = torch.tensor([1.0]).numpy().tobytes()  # a wrong scale
    f.write_bytes(bytes(data))
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["files"][f.name]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()  # hide it from the checksum
    (out / MANIFEST).write_text(json.dumps(manifest))
    report = verify(out, logits=False)
    assert not report.ok
    assert any("model.layers.1.mlp.experts.2.up_proj.weight" in p and "exceeds the w8a8 bound" in p for p in report.problems)
