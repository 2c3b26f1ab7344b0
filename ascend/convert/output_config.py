"""config.json of a conversion's output (its quantization block matching what the files hold) and
of the MTP draft model xLLM's ``--draft_model`` loads, with the draft's tensor names."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ascend.convert import w8a8_pieces as w8
from ascend.convert.inventory import natural_key

if TYPE_CHECKING:
    from ascend.convert.jobs import OutputFile

# xLLM's draft-model export (tools/export_mtp.py) lifts these MTP-layer modules to model level
# and renames the rest of layer N to layer 0. Shared by every family with an MTP layer.
MTP_MODEL_LEVEL_MODULES = ("embed_tokens", "shared_head", "enorm", "hnorm", "eh_proj")


def _output_formats(files: list[OutputFile]) -> set[str]:
    return {"w8a8" if p.op in w8.W8A8_OPS else p.op for f in files for p in f.pieces} & {"fp8", "w8a8"} | (
        {"fp8"} if any(o[1] == "F8_E4M3" for f in files for o in f.tensors) else set()
    )


def _output_config(cfg: dict[str, Any], files: list[OutputFile], src_quant: dict | None) -> dict[str, Any]:
    """config.json for the output: quantization block matching what the files hold."""
    cfg = json.loads(json.dumps(cfg))
    cfg.pop("quantization_config", None)
    cfg.pop("quantize", None)
    formats = _output_formats(files)
    if "fp8" in formats:
        qc = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]}
        if src_quant and src_quant.get("scale_fmt"):
            qc["scale_fmt"] = src_quant["scale_fmt"]
        # 2-D weights left unquantized, so loaders do not look for their scales
        scaled = {o[0] for f in files for o in f.tensors if o[1] == "F8_E4M3"}
        qc["modules_to_not_convert"] = sorted(
            {o[0][: -len(".weight")] for f in files for o in f.tensors
             if o[0].endswith(".weight") and len(o[2]) == 2 and o[0] not in scaled},
            key=natural_key,
        )
        cfg["quantization_config"] = qc
    if "w8a8" in formats:
        cfg["quantize"] = "w8a8_dynamic"  # what xLLM's loader reads (reference/xllm.md §7)
    for key in ("torch_dtype", "dtype"):
        if key in cfg:
            cfg[key] = "bfloat16"
    return cfg




def _mtp_draft_name(name: str, mtp_layer: int) -> str:
    """xLLM draft naming: ``model.layers.N.<embed_tokens|shared_head|enorm|hnorm|eh_proj>...`` ->
    ``model.<...>``; every other tensor of layer N -> ``model.layers.0.<...>``."""
    prefix = f"model.layers.{mtp_layer}."
    rest = name[len(prefix):]
    if rest.split(".")[0] in MTP_MODEL_LEVEL_MODULES:
        return "model." + rest
    return "model.layers.0." + rest


def _draft_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """config.json of the MTP draft model xLLM's ``--draft_model`` loads (tools/export_mtp.py)."""
    cfg = json.loads(json.dumps(cfg))
    model_type = cfg.get("model_type", "")
    cfg["model_type"] = f"{model_type}_mtp"
    cfg["architectures"] = [a.replace("ForCausalLM", "MtpForCausalLM") for a in cfg.get("architectures", [])]
    cfg["num_hidden_layers"] = 1
    cfg["first_k_dense_replace"] = 0  # the MTP layer is an MoE layer
    for key in ("mlp_layer_types", "indexer_types"):
        if isinstance(cfg.get(key), list) and cfg[key]:
            cfg[key] = [cfg[key][-1] if key == "indexer_types" else "sparse"]
    return cfg
