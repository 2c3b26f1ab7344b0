"""What a source checkpoint holds, checked against the model's tensor table: the inventory the
conversion jobs are built from (``jobs.build_jobs``), and the one known gap (no MTP weights)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ascend.errors import CheckpointError, ConvertError

if TYPE_CHECKING:
    from ascend.convert.jobs import ConvertOptions

SCALE_INV_SUFFIX = "_scale_inv"  # a source tensor is FP8 iff <name>_scale_inv exists


def natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


@dataclass
class SourceTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    has_scale: bool


def inventory(src, specs: dict[str, Any] | None) -> dict[str, SourceTensor]:
    """Base tensors of the source (``_scale_inv`` partners folded in), checked against the table.

    src: SafetensorsDir; specs: {name: TensorSpec} from ``ascend.models.tensor_specs`` or None.
    """
    out: dict[str, SourceTensor] = {}
    for name, info in src.tensors.items():
        if name.endswith(SCALE_INV_SUFFIX):
            base = name[: -len(SCALE_INV_SUFFIX)]
            if base not in src.tensors:
                raise CheckpointError(f"scale {name} has no weight {base}", fix="the checkpoint is incomplete; re-download it")
            continue
        has_scale = (name + SCALE_INV_SUFFIX) in src.tensors
        if info.dtype.startswith("F8") and not has_scale:
            raise CheckpointError(
                f"FP8 tensor {name} has no {name}{SCALE_INV_SUFFIX}",
                why="block-FP8 weights cannot be dequantized without their scales",
                fix="re-download the checkpoint (a shard holding the scale is missing or truncated)",
            )
        if has_scale and info.dtype != "F8_E4M3":
            raise CheckpointError(
                f"{name} has a {name}{SCALE_INV_SUFFIX} but is stored as {info.dtype}, not F8_E4M3",
                fix="only e4m3 block-FP8 checkpoints are supported; check the source's quantization_config",
            )
        if has_scale:
            from ascend.checkpoint.fp8 import scale_shape

            sinfo = src.tensors[name + SCALE_INV_SUFFIX]
            if len(info.shape) != 2 or tuple(sinfo.shape) != scale_shape(info.shape):
                raise CheckpointError(
                    f"{name}{SCALE_INV_SUFFIX} has shape {list(sinfo.shape)}, expected "
                    f"{list(scale_shape(info.shape)) if len(info.shape) == 2 else '2-D weight'} for weight {list(info.shape)}",
                    fix="the checkpoint is not 128x128 block-FP8; check its quantization_config",
                )
        out[name] = SourceTensor(name, info.dtype, tuple(info.shape), has_scale)
    if specs is not None:
        problems = []
        for name, spec in specs.items():
            t = out.get(name)
            if t is None:
                problems.append(f"missing {name}")
            elif tuple(t.shape) != tuple(spec.shape):
                problems.append(f"{name} has shape {list(t.shape)}, config.json implies {list(spec.shape)}")
        extra = sorted(set(out) - set(specs), key=natural_key)
        if problems:
            raise CheckpointError(
                f"source checkpoint disagrees with its config.json: {problems[0]}"
                + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                fix="check that config.json belongs to these weights and that every shard is complete",
            )
        if extra:
            raise CheckpointError(
                f"source has {len(extra)} tensor(s) its config.json does not describe, e.g. {extra[0]}",
                fix="check that config.json belongs to these weights",
            )
    return out


def mtp_weights_missing(src, args) -> bool:
    """config.json declares MTP layers, but the source stores no tensor of any of them.

    transformers' ``save_pretrained`` writes such checkpoints (every fine-tune made with the
    usual HF tooling): its model classes have no MTP module, yet the config keeps
    ``num_nextn_predict_layers``.
    """
    prefixes = tuple(f"model.layers.{layer}." for layer in args.mtp_layers)
    return bool(prefixes) and not any(name.startswith(prefixes) for name in src.tensors)


def _without_mtp_weights(args, opts: ConvertOptions) -> str | None:
    """What to tell the user about a source without its MTP weights (``--mtp export`` cannot
    work: exit 2); None for ``--mtp drop``, which asks for exactly this."""
    what = "no MTP weights: this looks like a transformers-saved checkpoint"
    why = (f"config.json declares num_nextn_predict_layers {args.num_nextn_predict_layers}, but no tensor of "
           f"model.layers.{args.mtp_layers[0]} is stored (transformers' save_pretrained leaves the MTP layer out)")
    if opts.mtp == "export":
        raise ConvertError(what, why=why, fix="use --mtp drop (mtp: drop) to convert without a draft model, or "
                                             "export the MTP layer from the original checkpoint")
    if opts.mtp == "keep":
        return f"{what}; converting without MTP (num_nextn_predict_layers 0 in the output) — pass --mtp drop to say so"
    return None


# ---------------------------------------------------------------------------------------------
# Building the jobs
