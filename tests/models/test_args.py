"""ModelArgs from config.json: derived keys agree with transformers 5.23, errors name the file."""

from __future__ import annotations

import json

import pytest

from ascend.errors import CheckpointError
from ascend.models import FAMILIES, ModelArgs, load_model_args, published_config, published_model_args


@pytest.mark.parametrize(
    "model_id",
    ["ZhipuAI/GLM-5-FP8", "deepseek-ai/DeepSeek-V3", "deepseek-ai/DeepSeek-V3.2-Exp", "ZhipuAI/GLM-4.5",
     "ZhipuAI/GLM-4.5-Air"],
)
def test_derived_keys_match_transformers(model_id):
    """Our derivation of qk_head_dim, head_dim, MLP/indexer layer types and RoPE equals transformers'."""
    from transformers import AutoConfig

    cfg = published_config(model_id)
    args = ModelArgs.from_config(cfg)
    kwargs = {k: v for k, v in cfg.items() if k not in ("model_type", "architectures", "quantization_config")}
    hf = AutoConfig.for_model(cfg["model_type"], **kwargs)
    assert args.num_hidden_layers == hf.num_hidden_layers
    if args.is_mla:
        assert args.qk_head_dim == hf.qk_head_dim
        assert args.head_dim == hf.head_dim  # transformers sets head_dim = qk_rope_head_dim for MLA
    else:
        assert args.head_dim == hf.head_dim
    mlp_types = getattr(hf, "mlp_layer_types", None) or [
        "dense" if i < hf.first_k_dense_replace else "sparse" for i in range(hf.num_hidden_layers)
    ]
    assert args.mlp_layer_types == mlp_types
    if args.has_indexer and hasattr(hf, "indexer_types"):
        assert args.indexer_types == hf.indexer_types
    for key in ("rope_type", "rope_theta", "factor", "partial_rotary_factor", "original_max_position_embeddings"):
        if key in hf.rope_parameters:
            assert args.rope_parameters[key] == hf.rope_parameters[key], key


def test_glm5_facts():
    # reference/checkpoints.md §1.1 (GLM-5 column) and §3 (MTP = layer 78)
    a = published_model_args("ZhipuAI/GLM-5-FP8")
    assert a.family == "glm_moe_dsa" and a.is_mla and a.has_indexer
    assert (a.qk_head_dim, a.index_n_heads, a.index_head_dim, a.index_topk) == (256, 32, 128, 2048)
    assert a.mlp_layer_types[:4] == ["dense", "dense", "dense", "sparse"] and a.num_moe_layers == 75
    assert a.mtp_layers == [78] and a.is_moe_layer(78) and a.layer_has_indexer(78)
    assert a.indexer_types == ["full"] * 78
    assert a.rope_parameters == {"rope_theta": 1000000.0, "rope_type": "default"}
    assert a.quantization.block_size == (128, 128) and a.fp8_block == (128, 128) and a.quantization.scale_fmt is None
    assert a.config["eos_token_id"] == [154820, 154827, 154829]  # raw dict kept


def test_old_rope_serialisation_is_normalised():
    # DeepSeek-V3 config.json writes rope_theta + rope_scaling{type: yarn} (checkpoints.md §1.1)
    a = published_model_args("deepseek-ai/DeepSeek-V3")
    rp = a.rope_parameters
    assert rp["rope_type"] == "yarn" and rp["factor"] == 40 and rp["rope_theta"] == 10000
    assert rp["original_max_position_embeddings"] == 4096 and rp["mscale_all_dim"] == 1.0
    # the new serialisation of the same facts gives the same dict
    cfg = published_config("deepseek-ai/DeepSeek-V3")
    cfg["rope_parameters"] = dict(cfg.pop("rope_scaling"), rope_theta=cfg.pop("rope_theta"))
    assert ModelArgs.from_config(cfg).rope_parameters == rp
    glm45 = published_model_args("ZhipuAI/GLM-4.5")
    assert glm45.rope_parameters["partial_rotary_factor"] == 0.5


def test_scale_fmt_ue8m0_for_v32():
    # checkpoints.md §1.1: V3.1 / V3.2 add scale_fmt "ue8m0"
    assert published_model_args("deepseek-ai/DeepSeek-V3.2").quantization.scale_fmt == "ue8m0"


def test_glm52_indexer_types_are_derived_like_transformers():
    """GLM-5.2 keys (checkpoints.md §1.2): shared layers derived from index_topk_freq / offset."""
    from transformers import AutoConfig

    cfg = published_config("ZhipuAI/GLM-5")
    cfg.update(num_hidden_layers=8, index_topk_freq=2, index_skip_topk_offset=3)
    a = ModelArgs.from_config(cfg)
    hf = AutoConfig.for_model("glm_moe_dsa", num_hidden_layers=8, index_topk_freq=2, index_skip_topk_offset=3)
    assert a.indexer_types == hf.indexer_types
    assert "shared" in a.indexer_types
    cfg2 = dict(cfg, index_topk_pattern="FFSFSSFF")
    assert ModelArgs.from_config(cfg2).indexer_types == ["full", "full", "shared", "full", "shared", "shared",
                                                         "full", "full"]


def test_unknown_model_type_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError) as err:
        load_model_args(tmp_path)
    assert str(tmp_path / "config.json") in err.value.line() and "llama" in err.value.line()
    assert all(f in err.value.line() for f in FAMILIES)


def test_missing_and_invalid_config(tmp_path):
    with pytest.raises(CheckpointError, match="config.json not found"):
        load_model_args(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model_args(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "glm4_moe", "num_hidden_layers": "many"}))
    with pytest.raises(CheckpointError, match="num_hidden_layers"):
        load_model_args(tmp_path)


def test_mtp_copies_read_from_the_index(tmp_path):
    cfg = published_config("ZhipuAI/GLM-4.5")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    index = {"weight_map": {"model.layers.92.eh_proj.weight": "a.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert load_model_args(tmp_path).mtp_has_copies is False
    index["weight_map"]["model.layers.92.shared_head.head.weight"] = "a.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert load_model_args(tmp_path).mtp_has_copies is True
