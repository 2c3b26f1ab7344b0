"""TEMPORARY stand-in for ``ascend.models.quant_schemes.static_linears`` (the w8a8 branch owns the
real one; ``ascend.quant.calibrate`` imports it when present). Same signature; returns the
attention projections quantization.md §3 names for static W8A8, main layers only.
Delete this file once ``ascend/models/quant_schemes.py`` is merged."""

from __future__ import annotations

from ascend.models.args import ModelArgs


def static_linears(family: str, scheme: str, args: ModelArgs) -> list[str]:
    if scheme != "w8a8":
        return []
    if family == "glm4_moe":
        names = ["q_proj", "k_proj", "v_proj", "o_proj"]
    else:  # MLA: q_a (q when there is no q LoRA), q_b, kv_a, o; kv_b stays float
        names = (["q_a_proj", "q_b_proj"] if args.q_lora_rank else ["q_proj"]) + ["kv_a_proj_with_mqa", "o_proj"]
        if family == "glm_moe_dsa":  # glm_5_w8a8.yaml: *self_attn* except kv_b_proj, wk, weights_proj
            names.append("indexer.wq_b")
    return [f"model.layers.{i}.self_attn.{n}" for i in range(args.num_hidden_layers) for n in names]
