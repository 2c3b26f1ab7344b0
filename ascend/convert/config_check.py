"""`ascend verify`: does the output's config.json describe the weights next to it?

A loader trusts config.json, not the files: an FP8 checkpoint without its ``quantization_config``
is loaded as BF16 garbage, a BF16 one with it looks for scales that do not exist, xLLM switches
its W8A8 loader on ``"quantize": "w8a8_dynamic"`` (reference/quantization.md §2), and an MTP
count without MTP weights makes engines look for a layer that is not there. So config.json must
equal the one the conversion jobs prescribe, and agree with the tensors actually listed (whose
names, dtypes and shapes the structure check has compared with the files' headers).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ascend.convert.adapters import output_layout

W8A8_MARK = ("quantize", "w8a8_dynamic")


def check_config(out: Path, jobs, manifest: dict[str, Any]) -> list[str]:
    """Problems (one line each) of ``out``'s config.json(s) against ``jobs`` and ``manifest``."""
    problems = []
    options = json.loads(json.dumps(asdict(jobs.options)))  # as JSON stores them (tuples become lists)
    if manifest.get("options") is not None and manifest["options"] != options:
        # (matters when the jobs are the recorded ones: recomputed jobs take the manifest's options)
        problems.append("the manifest's conversion options differ from the ones its jobs were made with")
    for prefix, sub in (("", jobs), ("mtp/", jobs.draft)):
        if sub is not None:
            problems += [f"{prefix}config.json: {p}" for p in _check_one(out / prefix, sub, main=not prefix)]
    return problems


def _check_one(d: Path, jobs, main: bool) -> list[str]:
    try:
        config = json.loads((d / "config.json").read_text())
    except (OSError, ValueError) as err:
        return [f"unreadable ({err})"]
    if not isinstance(config, dict):
        return ["not a JSON object"]
    problems = []
    if config != jobs.config:
        keys = sorted(k for k in set(config) | set(jobs.config) if config.get(k) != jobs.config.get(k))
        problems.append(f"differs from the one the conversion prescribes in {', '.join(keys)}")
    tensors = {n: dtype for f in jobs.files for n, dtype, _ in f.tensors}
    fp8 = sorted(n for n, dtype in tensors.items() if dtype == "F8_E4M3")
    qc = config.get("quantization_config")
    if fp8:
        if not isinstance(qc, dict) or qc.get("quant_method") != "fp8" or list(qc.get("weight_block_size") or []) != [128, 128]:
            problems.append(f"the weights are block-FP8 ({fp8[0]} ...) but quantization_config is not "
                            "quant_method fp8 with weight_block_size [128, 128]")
        else:
            skipped = set(qc.get("modules_to_not_convert") or [])
            wrong = [n for n in fp8 if n.removesuffix(".weight") in skipped or n + "_scale_inv" not in tensors]
            if wrong:
                problems.append(f"FP8 weight {wrong[0]} is listed in modules_to_not_convert or has no _scale_inv")
    elif qc is not None:
        problems.append("has a quantization_config, but no weight is FP8")
    w8a8 = any(dtype == "I8" for dtype in tensors.values())
    if w8a8 and config.get(W8A8_MARK[0]) != W8A8_MARK[1]:
        problems.append(f'the weights are W8A8 but config.json lacks "{W8A8_MARK[0]}": "{W8A8_MARK[1]}" (xLLM\'s switch)')
    elif not w8a8 and W8A8_MARK[0] in config:
        problems.append(f'has "{W8A8_MARK[0]}": {config[W8A8_MARK[0]]!r}, but no weight is int8')
    for key in ("dtype", "torch_dtype"):
        if key in config and config[key] != "bfloat16":
            problems.append(f"{key} is {config[key]!r}; the unquantized weights are written as bfloat16")
    if main and output_layout(jobs.options.layout) is None:  # another framework's names: its adapter checks
        layers = config.get("num_hidden_layers")
        declared = config.get("num_nextn_predict_layers") or 0
        stored = any(n.startswith(f"model.layers.{layers}.") for n in tensors)
        if bool(declared) != stored:
            problems.append(f"num_nextn_predict_layers is {declared}, but the weights "
                            f"{'hold' if stored else 'do not hold'} an MTP layer (model.layers.{layers})")
    return problems
