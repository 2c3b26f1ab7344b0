"""`ascend verify --engine xllm`: does a converted W8A8 directory have exactly what xLLM's loader
for its family reads? The contract is data (``ascend.models.quant_schemes.XLLM_CONTRACT``, from
reference/quantization.md §2-3); this module compares the output's tensor set, dtypes, shapes,
description kinds and config.json with it and names every difference.

Per linear ``P`` (``[out, in]``), by kind:

- ``W8A8``: ``P.weight`` I8 [out, in], ``P.quant_bias`` I32 [out], ``P.deq_scale`` F32 [out] (the
  output is BF16), ``P.input_scale`` / ``P.input_offset`` F32 [1], ``P.bias`` F32 [out] when
  the float linear has a bias
- ``W8A8_DYNAMIC``: ``P.weight`` I8, ``P.weight_scale`` / ``P.weight_offset`` F32 [out, 1]
- ``FLOAT``: ``P.weight`` in a float dtype
"""

from __future__ import annotations

import json
from pathlib import Path

from ascend.checkpoint.safetensors_io import read_header
from ascend.checkpoint.w8a8 import DESCRIPTION_FILE, WEIGHT_FILE_STEM
from ascend.models.args import ModelArgs
from ascend.models.quant_schemes import (
    DYNAMIC,
    FLOAT,
    STATIC,
    XLLM_CONTRACT,
    XLLM_SAME_KIND,
    xllm_kinds,
)
from ascend.models.tensors import tensor_specs

FLOAT_DTYPES = ("BF16", "F16", "F32")
HEADER_KEYS = ("model_quant_type", "version", "group_size", "metadata", "optional")


def _expected(spec, kind: str, biased: bool) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    """{tensor name: (allowed dtypes, shape)} a linear of ``kind`` is stored as."""
    p, (out, inp) = spec.name[: -len(".weight")], spec.shape
    if kind == STATIC:
        want = {p + ".weight": (("I8",), (out, inp)), p + ".quant_bias": (("I32",), (out,)),
                p + ".deq_scale": (("F32",), (out,)), p + ".input_scale": (("F32",), (1,)),
                p + ".input_offset": (("F32",), (1,))}
        if biased:
            want[p + ".bias"] = (("F32",), (out,))
        return want
    if kind == DYNAMIC:
        return {p + ".weight": (("I8",), (out, inp)), p + ".weight_scale": (("F32",), (out, 1)),
                p + ".weight_offset": (("F32",), (out, 1))}
    return {spec.name: (FLOAT_DTYPES, spec.shape)}


def check_xllm(out_dir: str | Path) -> tuple[list[str], list[str]]:
    """(problems, notes) of ``out_dir`` against xLLM's loader for its family."""
    out = Path(out_dir)
    cfg = json.loads((out / "config.json").read_text())
    args = ModelArgs.from_config(cfg, source=str(out / "config.json"))
    family = args.family
    if family not in XLLM_CONTRACT:
        return [f"xLLM contract: no contract for family {family}"], []
    problems: list[str] = []
    index = out / f"{WEIGHT_FILE_STEM}.safetensors.index.json"
    desc_path = out / DESCRIPTION_FILE
    if cfg.get("quantize") != "w8a8_dynamic":
        problems.append(f"config.json: quantize is {cfg.get('quantize')!r}; xLLM switches its W8A8 loader on "
                        "'w8a8_dynamic'")
    for path in (index, desc_path):
        if not path.is_file():
            problems.append(f"{path.name}: missing (xLLM reads the msModelSlim v1 layout: {index.name}, {desc_path.name})")
    if problems and not (index.is_file() and desc_path.is_file()):
        return problems, []
    found: dict[str, tuple[str, tuple[int, ...]]] = {}
    for file in sorted(set(json.loads(index.read_text())["weight_map"].values())):
        tensors, _, _ = read_header(out / file)
        found.update({n: (t.dtype, tuple(t.shape)) for n, t in tensors.items()})
    desc = {k: v for k, v in json.loads(desc_path.read_text()).items() if k not in HEADER_KEYS}

    mtp = any(n.startswith(f"model.layers.{layer}.") for layer in args.mtp_layers for n in found)
    specs = [s for s in tensor_specs(args, mtp=mtp) if s.scale_of is None]
    names = {s.name for s in specs}
    expected: dict[str, tuple[tuple[str, ...], tuple[int, ...], str]] = {}
    kinds: dict[str, str] = {}
    for spec in specs:
        if spec.quantizable:
            kind = desc.get(spec.name, FLOAT)
            # an MTP layer kept in the main dir is not read by the main model (xLLM loads the
            # exported draft); it only has to be stored as its description says
            allowed = (kind,) if spec.mtp else xllm_kinds(family, spec.name)
            kinds[spec.name[: -len(".weight")]] = kind
            if kind not in allowed:
                problems.append(f"{spec.name}: description kind {kind}, xLLM's {family} loader reads "
                                f"{' or '.join(allowed)}")
                kind = allowed[0]
            bias = spec.name[: -len(".weight")] + ".bias"
            for n, (dtypes, shape) in _expected(spec, kind, bias in names).items():
                expected[n] = (dtypes, shape, kind)
        elif spec.name not in expected:  # a static linear's bias is already listed, as F32
            expected[spec.name] = (FLOAT_DTYPES, spec.shape, FLOAT)
    if family == "glm4_moe":  # ALL_W8A8_ANTI also maps the anti-outlier norm biases (when present)
        for n in found:
            if n.endswith(("input_layernorm.bias", "post_attention_layernorm.bias")):
                expected[n] = (FLOAT_DTYPES, (args.hidden_size,), FLOAT)
    for n, (dtypes, shape, kind) in expected.items():
        got = found.get(n)
        if got is None:
            problems.append(f"{n}: missing (xLLM's {family} loader reads it for a {kind} tensor)")
        elif got[0] not in dtypes or got[1] != shape:
            problems.append(f"{n}: {got[0]}{list(got[1])}, xLLM reads {'/'.join(dtypes)}{list(shape)}")
        elif desc.get(n) != kind:
            problems.append(f"{n}: description kind {desc.get(n)}, expected {kind}")
    for n in sorted(set(found) - set(expected)):
        problems.append(f"{n}: unexpected tensor (xLLM's {family} loader does not read it)")
    for n in sorted(set(desc) - set(found)):
        problems.append(f"{DESCRIPTION_FILE}: {n} is described but not stored")
    for a, b in ((f"model.layers.{i}.{x}", f"model.layers.{i}.{y}") for x, y in XLLM_SAME_KIND.get(family, ())
                 for i in range(args.num_hidden_layers)):
        if a in kinds and b in kinds and kinds[a] != kinds[b]:
            problems.append(f"{a} is {kinds[a]} but {b} is {kinds[b]}; xLLM fuses them and needs one kind")
    notes = []
    if family == "glm4_moe" and not any(n.endswith("layernorm.bias") for n in found):
        notes.append("xLLM's GLM-4.x loader also maps input_layernorm.bias / post_attention_layernorm.bias "
                     "(anti-outlier smoothing); this output has none (calibrated without smoothing)")
    if (out / "mtp").is_dir():
        notes.append("mtp/ (the draft model) is not contract-checked")
    return problems, notes
