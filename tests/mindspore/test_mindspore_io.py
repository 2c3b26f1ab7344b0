"""MindSpore checkpoint I/O through the real ``mindspore`` package (skipped where it is absent)."""

from __future__ import annotations

import json

import pytest
import torch

from ascend.errors import BackendUnavailable, ConvertError
from ascend.interop.mindspore.io import (
    NAME_MAP_FILE,
    list_mindspore,
    read_mindspore,
    require_mindspore,
    write_mindspore,
)

# Not pytest.importorskip("mindspore"): under pytest this very directory imports as an empty
# "mindspore" namespace package where MindSpore is absent.
try:
    ms = require_mindspore()
except BackendUnavailable as err:
    pytest.skip(err.line(), allow_module_level=True)

from ms_fixtures import FAMILIES, load_hf, shard_of  # noqa: E402  (after the skip)
from ms_twin import convert_hf_to_mindspore, convert_mindspore_to_hf  # noqa: E402

# bf16 bit patterns that a float round trip would lose or canonicalise: +0, -0, +inf, -inf,
# quiet NaN with payload, signalling NaN, smallest subnormal, 1.0, all-ones NaN, arbitrary.
BF16_BITS = [0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC1, 0x7F81, 0x0001, 0x3F80, 0xFFFF, 0x1234]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


def _identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bits(a), _bits(b))


def _sample_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    special = torch.tensor(BF16_BITS, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    return {
        "w.bf16": torch.cat([special, torch.randn(246, generator=g).to(torch.bfloat16)]).reshape(16, 16),
        "w.f32": torch.randn(5, 3, generator=g),
        "w.f16": torch.randn(7, generator=g).half(),
        "w.i64": torch.arange(4),
    }


@pytest.mark.parametrize("fmt", ["safetensors", "ckpt"])
def test_write_read_preserves_dtype_and_every_bit(tmp_path, fmt):
    tensors = _sample_tensors()
    path = tmp_path / f"one.{fmt}"
    size, sha = write_mindspore(path, tensors, fmt)
    assert path.stat().st_size == size and len(sha) == 64
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind
    back = dict(read_mindspore(path))
    assert set(back) == set(tensors)
    for name, t in tensors.items():
        assert _identical(back[name], t), name
    # MindSpore itself sees bf16, not int16 (the bit carrier stays internal).
    assert ms.load_checkpoint(str(path), format=fmt)["w.bf16"].dtype == ms.bfloat16
    listing = list_mindspore(path)
    assert listing["w.bf16"].dtype == torch.bfloat16 and listing["w.bf16"].shape == (16, 16)


def test_safetensors_files_are_mindspore_safetensors(tmp_path):
    from ascend.checkpoint.safetensors_io import read_header

    write_mindspore(tmp_path / "a.safetensors", _sample_tensors())
    tensors, metadata, _ = read_header(tmp_path / "a.safetensors")
    assert metadata.get("format") == "ms"
    assert tensors["w.bf16"].dtype == "BF16"


def test_read_in_small_batches_and_by_name(tmp_path):
    tensors = _sample_tensors()
    write_mindspore(tmp_path / "a.safetensors", tensors)
    got = list(read_mindspore(tmp_path / "a.safetensors", batch_bytes=1))  # one tensor per load
    assert sorted(n for n, _ in got) == sorted(tensors)
    only = dict(read_mindspore(tmp_path, names=["w.f32"]))
    assert list(only) == ["w.f32"] and _identical(only["w.f32"], tensors["w.f32"])


def test_overwrite_is_atomic_replace(tmp_path):
    path = tmp_path / "a.ckpt"
    write_mindspore(path, {"x": torch.zeros(3)}, "ckpt")
    write_mindspore(path, {"y": torch.ones(2)}, "ckpt")
    assert list(dict(read_mindspore(path))) == ["y"]


@pytest.mark.parametrize("op", ["experts_fc1", "experts_fc2", "interleave", "qkv"])
def test_lean_builder_equals_plain_transform_and_inverts(op):
    from ascend.interop.mindspore.layout import build_mindspore_tensor, from_mindspore, to_mindspore
    from ascend.interop.mindspore.names import MsRule

    g = torch.Generator().manual_seed(0)
    shapes = {
        "experts_fc1": [(6, 10)] * 8,  # 4 experts x (gate, up) [I=6, H=10]
        "experts_fc2": [(10, 6)] * 4,  # 4 experts x down [H, I]
        "interleave": [(6, 10)] * 2,
        "qkv": [(8 * 3, 10), (2 * 3, 10), (2 * 3, 10)],  # Hq 8, Hkv 2, head_dim 3
    }[op]
    names = tuple(f"t{i}" for i in range(len(shapes)))
    rule = MsRule("m", names, op, params={"num_heads": 8, "num_kv_heads": 2, "head_dim": 3} if op == "qkv" else {})
    src = {n: torch.randn(s, generator=g).to(torch.bfloat16) for n, s in zip(names, shapes)}
    plain = to_mindspore(rule, [src[n] for n in names])
    assert _identical(build_mindspore_tensor(rule, src.__getitem__), plain)
    back = from_mindspore(rule, plain)
    assert all(_identical(back[n], src[n]) for n in names)


def test_fp8_cannot_be_written(tmp_path):
    with pytest.raises(ConvertError, match="bf16") as info:
        write_mindspore(tmp_path / "a.safetensors", {"w": torch.zeros(4).to(torch.float8_e4m3fn)})
    assert "\n" not in info.value.line()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["safetensors", "ckpt"])
@pytest.mark.parametrize("family", FAMILIES)
def test_hf_to_mindspore_to_hf_is_bit_identical(tiny_hf, tmp_path, family, fmt):
    src = tiny_hf(family)
    summary = convert_hf_to_mindspore(src, tmp_path / "ms", format=fmt, max_file_bytes=100_000)
    assert summary["mtp"] is True and len(summary["files"]) > 1
    # The MindSpore side really is MindSpore's: MindSpore's own loader reads every file.
    name_map = json.loads((tmp_path / "ms" / NAME_MAP_FILE).read_text())
    for fname in set(name_map.values()):
        assert set(ms.load_checkpoint(str(tmp_path / "ms" / fname), format=fmt)) == {
            n for n, f in name_map.items() if f == fname}
    back = convert_mindspore_to_hf(tmp_path / "ms", tmp_path / "hf")
    assert back["skipped"] == []
    a, b = load_hf(src), load_hf(tmp_path / "hf")
    assert set(a) == set(b)
    assert [n for n in a if not _identical(a[n], b[n])] == []
    assert json.loads((tmp_path / "hf" / "config.json").read_text()) == json.loads((src / "config.json").read_text())
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(a)


def test_file_size_cap(tiny_hf, tmp_path):
    src = tiny_hf("deepseek_v3")
    cap = 60_000
    convert_hf_to_mindspore(src, tmp_path / "ms", max_file_bytes=cap)
    listing = list_mindspore(tmp_path / "ms")
    per_file: dict[str, list[int]] = {}
    for info in listing.values():
        per_file.setdefault(info.path.name, []).append(info.nbytes)
    for sizes in per_file.values():
        assert sum(sizes) <= cap or len(sizes) == 1  # only a single over-cap tensor may exceed it


def _ms_tensors(directory) -> dict[str, torch.Tensor]:
    return dict(read_mindspore(directory))


def test_deepseek_layout_matches_mindformers(tiny_hf, tmp_path):
    """The MindSpore tensors are laid out as mindformers' reverse_mcore_deepseekv3_weight_to_hf.py
    undoes them: fc1 rows interleaved (gate = rows 0::2), experts.weight1 = [E*H, 2I] with
    expert e's [gate | up] transposed, experts.weight2 = [E*I, H] with down_e transposed."""
    src = tiny_hf("deepseek_v3")
    convert_hf_to_mindspore(src, tmp_path / "ms")
    hf, msd = load_hf(src), _ms_tensors(tmp_path / "ms")
    cfg = json.loads((src / "config.json").read_text())
    h, i, e = cfg["hidden_size"], cfg["moe_intermediate_size"], cfg["n_routed_experts"]

    fc1 = msd["decoder.layers.0.mlp.linear_fc1.weight"]
    assert torch.equal(fc1[0::2], hf["model.layers.0.mlp.gate_proj.weight"])
    assert torch.equal(fc1[1::2], hf["model.layers.0.mlp.up_proj.weight"])
    shared = msd["decoder.layers.1.mlp.shared_experts.linear_fc1.weight"]
    assert torch.equal(shared[1::2], hf["model.layers.1.mlp.shared_experts.up_proj.weight"])

    w1 = msd["decoder.layers.1.mlp.experts.weight1"]
    w2 = msd["decoder.layers.1.mlp.experts.weight2"]
    assert w1.shape == (e * h, 2 * i) and w2.shape == (e * i, h)
    for x in (0, 5, e - 1):
        block = w1[x * h:(x + 1) * h]  # [H, 2I]
        assert torch.equal(block[:, :i].T, hf[f"model.layers.1.mlp.experts.{x}.gate_proj.weight"])
        assert torch.equal(block[:, i:].T, hf[f"model.layers.1.mlp.experts.{x}.up_proj.weight"])
        assert torch.equal(w2[x * i:(x + 1) * i].T, hf[f"model.layers.1.mlp.experts.{x}.down_proj.weight"])

    assert torch.equal(msd["decoder.layers.1.self_attention.linear_kv_up_proj.weight"], hf["model.layers.1.self_attn.kv_b_proj.weight"])
    # dtype preserved (transformers 5.23 saves this bias in bf16, 5.24 in fp32; either must survive)
    assert msd["decoder.layers.1.mlp.router.expert_bias"].dtype == hf["model.layers.1.mlp.gate.e_score_correction_bias"].dtype
    mtp = cfg["num_hidden_layers"]
    assert torch.equal(msd["mtp.layers.0.eh_proj.weight"], hf[f"model.layers.{mtp}.eh_proj.weight"])
    assert torch.equal(msd["mtp.layers.0.final_layernorm.weight"], hf[f"model.layers.{mtp}.shared_head.norm.weight"])
    assert not any("embed_tokens" in n or n.startswith("mtp.output_layer") for n in msd)  # shared, not stored


def test_glm4_qkv_is_grouped_per_kv_head(tiny_hf, tmp_path):
    """linear_qkv as mindformers' split_qkv_weight (qwen3 / qwen3_moe reverse scripts) reads it:
    [Hkv, (Hq/Hkv + 2) * d, H] with each group's q heads, then its k head, then its v head."""
    src = tiny_hf("glm4_moe")
    convert_hf_to_mindspore(src, tmp_path / "ms")
    hf, msd = load_hf(src), _ms_tensors(tmp_path / "ms")
    cfg = json.loads((src / "config.json").read_text())
    hq, hkv, d = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    rep = hq // hkv
    for suffix in ("weight", "bias"):
        qkv = msd[f"decoder.layers.1.self_attention.linear_qkv.{suffix}"]
        groups = qkv.reshape(hkv, (rep + 2) * d, -1)
        q = hf[f"model.layers.1.self_attn.q_proj.{suffix}"].reshape(hkv, rep * d, -1)
        k = hf[f"model.layers.1.self_attn.k_proj.{suffix}"].reshape(hkv, d, -1)
        v = hf[f"model.layers.1.self_attn.v_proj.{suffix}"].reshape(hkv, d, -1)
        assert torch.equal(groups[:, :rep * d], q)
        assert torch.equal(groups[:, rep * d:rep * d + d], k)
        assert torch.equal(groups[:, rep * d + d:], v)


def test_training_state_is_skipped_and_unknown_names_refused(tiny_hf, tmp_path):
    src = tiny_hf("glm4_moe")
    convert_hf_to_mindspore(src, tmp_path / "ms")
    write_mindspore(tmp_path / "ms" / "zz-optimizer.safetensors",
                    {"adam_m.output_layer.weight": torch.zeros(2), "global_step": torch.tensor([7])})
    name_map = json.loads((tmp_path / "ms" / NAME_MAP_FILE).read_text())
    name_map.update({"adam_m.output_layer.weight": "zz-optimizer.safetensors", "global_step": "zz-optimizer.safetensors"})
    (tmp_path / "ms" / NAME_MAP_FILE).write_text(json.dumps(name_map))
    summary = convert_mindspore_to_hf(tmp_path / "ms", tmp_path / "hf")
    assert sorted(summary["skipped"]) == ["adam_m.output_layer.weight", "global_step"]
    assert set(load_hf(tmp_path / "hf")) == set(load_hf(src))

    write_mindspore(tmp_path / "ms" / "zz-optimizer.safetensors", {"decoder.layers.9.mystery.weight": torch.zeros(2)})
    name_map = {k: v for k, v in name_map.items() if v != "zz-optimizer.safetensors"}
    name_map["decoder.layers.9.mystery.weight"] = "zz-optimizer.safetensors"
    (tmp_path / "ms" / NAME_MAP_FILE).write_text(json.dumps(name_map))
    with pytest.raises(ConvertError, match="decoder.layers.9.mystery.weight"):
        convert_mindspore_to_hf(tmp_path / "ms", tmp_path / "hf2")

    # MindSpore Transformers' older non-Mcore layout is recognised and named in the error.
    write_mindspore(tmp_path / "ms" / "zz-optimizer.safetensors", {"model.layers.0.attention.l2q_nope_proj.weight": torch.zeros(2)})
    del name_map["decoder.layers.9.mystery.weight"]
    name_map["model.layers.0.attention.l2q_nope_proj.weight"] = "zz-optimizer.safetensors"
    (tmp_path / "ms" / NAME_MAP_FILE).write_text(json.dumps(name_map))
    with pytest.raises(ConvertError, match="research/deepseek3 layout"):
        convert_mindspore_to_hf(tmp_path / "ms", tmp_path / "hf3")


def test_mtp_copy_that_differs_is_kept_under_its_own_name(tiny_hf, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    src = tmp_path / "hf"
    shutil.copytree(tiny_hf("deepseek_v3"), src)
    mtp = json.loads((src / "config.json").read_text())["num_hidden_layers"]
    shard = shard_of(src, f"model.layers.{mtp}.shared_head.head.weight")
    sd = load_file(shard)
    sd[f"model.layers.{mtp}.shared_head.head.weight"][0, 0] += 1
    save_file(sd, shard)
    summary = convert_hf_to_mindspore(src, tmp_path / "ms")
    assert summary["kept_copies"] == ["mtp.layers.0.output_layer.weight"]  # the equal embed copy stays shared
    convert_mindspore_to_hf(tmp_path / "ms", tmp_path / "back")
    a, b = load_hf(src), load_hf(tmp_path / "back")
    assert set(a) == set(b) and [n for n in a if not _identical(a[n], b[n])] == []

    summary = convert_hf_to_mindspore(src, tmp_path / "ms-nomtp", mtp=False)  # or drop the MTP layer
    assert summary["mtp"] is False and summary["dropped"] > 0
    assert not any(n.startswith("mtp.") for n in list_mindspore(tmp_path / "ms-nomtp"))


def test_fp8_source_is_dequantized_to_bf16(tmp_path):
    """Block-FP8 HF -> MindSpore holds exactly dequantize_fp8_block(w, scale) in BF16."""
    from ascend.checkpoint.fp8 import dequantize_fp8_block
    from ascend.tiny.writer import write_tiny_checkpoint

    src = write_tiny_checkpoint(tmp_path / "hf", "deepseek_v3", fp8=True, seed=2)
    hf = load_hf(src)
    summary = convert_hf_to_mindspore(src, tmp_path / "ms")
    assert summary["dequantized"] > 0
    msd = _ms_tensors(tmp_path / "ms")
    want = dequantize_fp8_block(hf["model.layers.1.self_attn.q_b_proj.weight"],
                                hf["model.layers.1.self_attn.q_b_proj.weight_scale_inv"], dtype=torch.bfloat16)
    assert _identical(msd["decoder.layers.1.self_attention.linear_q_up_proj.weight"], want)
    assert not any(t.dtype.is_floating_point and t.element_size() == 1 for t in msd.values())
    assert "quantization_config" not in json.loads((tmp_path / "ms" / "config.json").read_text())


def test_fp8_without_scale_is_refused(tiny_hf, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    src = tmp_path / "hf"
    shutil.copytree(tiny_hf("deepseek_v3"), src)
    name = "model.layers.0.self_attn.q_a_proj.weight"
    shard = shard_of(src, name)
    sd = load_file(shard)
    sd[name] = sd[name].to(torch.float8_e4m3fn)
    save_file(sd, shard)
    with pytest.raises(ConvertError, match="has no _scale_inv") as info:
        convert_hf_to_mindspore(src, tmp_path / "ms")
    assert "\n" not in info.value.line()
    assert not (tmp_path / "ms").exists()


@pytest.mark.slow
def test_mindspore_sourced_checkpoint_gives_the_same_logits(tmp_path):
    """GLM-5 tiny checkpoint from the project's own writer (MTP copies that differ from the main
    embedding/head) -> MindSpore -> HF: reference logits, main and MTP, are equal."""
    from ascend.reference import compute_logits, compute_mtp_logits
    from ascend.tiny.writer import write_tiny_checkpoint

    src = write_tiny_checkpoint(tmp_path / "hf", "glm_moe_dsa", seed=3)
    convert_hf_to_mindspore(src, tmp_path / "ms")
    convert_mindspore_to_hf(tmp_path / "ms", tmp_path / "back")
    ids = [5, 17, 99, 3, 250, 7, 1000, 12]
    assert torch.equal(compute_logits(tmp_path / "back", ids), compute_logits(src, ids))
    assert torch.equal(compute_mtp_logits(tmp_path / "back", ids), compute_mtp_logits(src, ids))


def test_training_output_without_config_takes_config_from_elsewhere(tiny_hf, tmp_path):
    """MindSpore Transformers' merged training output has no config.json: pass the HF one."""
    from ascend.errors import CheckpointError

    src = tiny_hf("glm_moe_dsa")
    convert_hf_to_mindspore(src, tmp_path / "ms", format="ckpt")
    for f in (tmp_path / "ms").iterdir():
        if f.suffix != ".ckpt":
            f.unlink()  # only the weights, no name map, no config
    with pytest.raises(CheckpointError, match="config.json"):
        convert_mindspore_to_hf(tmp_path / "ms", tmp_path / "hf")
    convert_mindspore_to_hf(tmp_path / "ms", tmp_path / "hf", config=src / "config.json")
    a, b = load_hf(src), load_hf(tmp_path / "hf")
    assert set(a) == set(b) and [n for n in a if not _identical(a[n], b[n])] == []
