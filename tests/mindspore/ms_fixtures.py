"""Tiny Hugging Face checkpoints of every family, written by transformers itself.

transformers' ``save_pretrained`` is the independent oracle for the HF on-disk names, shapes and
dtypes (per-expert 2-D tensors, F32 router and bias). transformers does not build the MTP
layer, so the fixture appends one the way the published checkpoints lay it out
(checkpoints.md §3): a full MoE decoder layer at index ``num_hidden_layers`` plus ``enorm``,
``hnorm``, ``eh_proj`` [h, 2h], ``shared_head.norm`` and the ``embed_tokens`` /
``shared_head.head`` copies of the main embedding and head.
"""

from __future__ import annotations

import json
from pathlib import Path

FAMILIES = ("deepseek_v3", "deepseek_v32", "glm_moe_dsa", "glm4_moe")


def write_tiny_hf(directory: Path, family: str, *, layers: int = 2, seed: int = 0) -> Path:
    import torch
    import transformers
    from safetensors.torch import load_file, save_file

    from ascend.tiny.configs import tiny_config

    cfg = tiny_config(family, layers=layers)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**cfg), dtype=torch.bfloat16)
    model.save_pretrained(directory)
    (shard,) = directory.glob("*.safetensors")
    sd = load_file(shard)
    n, h = cfg["num_hidden_layers"], cfg["hidden_size"]
    g = torch.Generator().manual_seed(seed + 1)
    for name in [k for k in sd if k.startswith(f"model.layers.{n - 1}.")]:
        t = sd[name]
        sd[name.replace(f"model.layers.{n - 1}.", f"model.layers.{n}.")] = torch.randn(t.shape, generator=g).to(t.dtype)
    mtp = f"model.layers.{n}."
    for name in ("enorm.weight", "hnorm.weight", "shared_head.norm.weight"):
        sd[mtp + name] = torch.randn(h, generator=g).to(torch.bfloat16)
    sd[mtp + "eh_proj.weight"] = torch.randn(h, 2 * h, generator=g).to(torch.bfloat16)
    sd[mtp + "embed_tokens.weight"] = sd["model.embed_tokens.weight"].clone()
    sd[mtp + "shared_head.head.weight"] = sd["lm_head.weight"].clone()
    save_file(sd, shard, metadata={"format": "pt"})
    config = json.loads((directory / "config.json").read_text())
    assert config["num_nextn_predict_layers"] == 1
    return directory




def load_hf(directory: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(directory.glob("*.safetensors")):
        out.update(load_file(f))
    return out
