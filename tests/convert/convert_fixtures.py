"""Tiny synthetic checkpoints in the real HF layout, built from the ``ascend.models`` tables.

Sharded over three files with an index; FP8 scales go to the last file so a weight and its
``_scale_inv`` live in different shards, as in the published checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ascend.checkpoint.fp8 import quantize_fp8_block
from ascend.models.args import ModelArgs
from ascend.models.tensors import tensor_specs
from ascend.tiny.configs import tiny_config

FAMILIES = ("glm_moe_dsa", "deepseek_v3", "deepseek_v32", "glm4_moe")


def make_checkpoint(out: Path, family: str, *, fp8: bool = False, mtp: bool = True, layers: int | None = None,
                    experts: int | None = None, seed: int = 0, config: dict | None = None,
                    mtp_copies: bool = True) -> Path:
    cfg = config or tiny_config(family, fp8=fp8, mtp=mtp, layers=layers, experts=experts)
    args = ModelArgs.from_config(cfg)
    g = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    scales: dict[str, torch.Tensor] = {}
    scale_fmt = (cfg.get("quantization_config") or {}).get("scale_fmt")
    for spec in tensor_specs(args, mtp=True):
        if spec.scale_of is not None:
            continue
        if not mtp_copies and spec.mtp and spec.component in ("embed", "head"):
            continue  # GLM-4.6-style MTP layer without its own embed/head copies
        if spec.name.endswith("norm.weight") or spec.name.endswith("layernorm.weight"):
            t = 1.0 + 0.1 * torch.randn(spec.shape, generator=g)
        else:
            t = 0.05 * torch.randn(spec.shape, generator=g)
        dtype = torch.float32 if spec.dtype == "f32" else torch.bfloat16
        t = t.to(dtype)
        if spec.dtype.startswith("f8"):
            q, s = quantize_fp8_block(t, scale_fmt=scale_fmt)
            tensors[spec.name] = q
            scales[spec.name + "_scale_inv"] = s
        else:
            tensors[spec.name] = t
    out.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    thirds = [names[: len(names) // 2], names[len(names) // 2:]]
    files = {f"model-0000{i + 1}-of-00003.safetensors": {n: tensors[n] for n in part} for i, part in enumerate(thirds)}
    files["model-00003-of-00003.safetensors"] = scales or {"model.norm.weight": files["model-00001-of-00003.safetensors"].pop("model.norm.weight")}
    if not scales:  # keep norm in exactly one file
        for f in list(files)[:2]:
            files[f].pop("model.norm.weight", None)
    weight_map = {}
    for fname, part in files.items():
        save_file(part, str(out / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    (out / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    (out / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    (out / "generation_config.json").write_text(json.dumps({"do_sample": False}))
    return out
