"""MindSpore Transformers on convert's seam (``ascend.convert.adapters``).

- ``SOURCE`` (``--from-format mindspore``): the checkpoint opens as a ``MindSporeSource``, the
  same read interface as ``SafetensorsDir`` under Hugging Face names, so every layout can be
  written from it.
- ``LAYOUT`` (``--layout mindspore``): one piece per stored MindSpore tensor, carrying its HF
  sources and declared transform (``ascend.interop.mindspore.names``) in ``Piece.extra``,
  packed into files as MindSpore Transformers packs them; ``param_name_map.json`` is its index.
  Block-FP8 sources become BF16 (MindSpore has no float8).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ascend.checkpoint.fp8 import dequantize_fp8_block
from ascend.convert.execute import all_finite
from ascend.convert.jobs import ConvertJobs, ConvertOptions, OutputFile, Piece, SourceTensor
from ascend.convert.jobs import _output_config as output_config  # the config of any layout's files
from ascend.errors import CheckpointError, ConvertError
from ascend.interop.mindspore.io import NAME_MAP_FILE, SCALE_INV, require_mindspore
from ascend.interop.mindspore.names import MsRule
from ascend.models.precision import PrecisionPolicy


def piece_rule(piece: Piece) -> MsRule:
    """The ``MsRule`` a MindSpore piece carries."""
    extra = piece.extra or {}
    return MsRule(piece.outputs[0][0], tuple(extra.get("hf") or [piece.source]), extra.get("op", "rename"),
                  params=dict(extra.get("params") or {}))


def read_hf_as_written(src, name: str) -> torch.Tensor:
    """Whole HF tensor ``name`` as the MindSpore layout stores it: block-FP8 dequantized to BF16
    (MindSpore has no float8), everything else as is."""
    scale = name + SCALE_INV
    t = src.read(name)
    if src.tensors[name].dtype.startswith("F8") and scale in src:
        t = dequantize_fp8_block(t, src.read(scale), dtype=torch.bfloat16)
    if not all_finite(t):
        raise CheckpointError(f"source tensor {name} holds NaN or Inf values (or its {scale} does)",
                              fix="the checkpoint is damaged: re-download it, or repair that tensor")
    return t


class _Source:
    title = "a MindSpore checkpoint"

    def load(self, src_dir: Path, opts: ConvertOptions):
        from ascend.interop.mindspore.layout import MindSporeSource

        require_mindspore()  # without the extra: one install line (exit 2) before anything else
        if not src_dir.exists():
            raise CheckpointError(f"{src_dir}: no such file or directory", fix="point --src at a MindSpore checkpoint")
        config = Path(opts.source_config) if opts.source_config else None
        config_file = (config if config is not None and config.is_file() else
                       (config or (src_dir if src_dir.is_dir() else src_dir.parent)) / "config.json")
        if not config_file.is_file():
            raise CheckpointError(f"{config_file}: no config.json for the MindSpore checkpoint {src_dir}",
                                  fix="pass --config PATH with the model's Hugging Face config.json (or its directory)")
        s = MindSporeSource(src_dir, opts.source_config)
        return s, s.args

    def open(self, src_dir: str, config: str | None):
        from ascend.interop.mindspore.layout import MindSporeSource

        return MindSporeSource(src_dir, config)


class _Layout:
    def check(self, opts: ConvertOptions) -> None:
        if opts.precision != PrecisionPolicy():
            raise ConvertError("MindSpore output is BF16 only", why="MindSpore checkpoints cannot hold FP8 or W8A8 weights",
                               fix="use --precision bf16 without precision rules for --layout mindspore")
        if opts.mtp == "export":
            raise ConvertError("mtp export is not available for MindSpore output", fix="use mtp keep or drop")
        require_mindspore()  # without the extra: one install line (exit 2), nothing listed or written

    def build_jobs(self, src, args, opts: ConvertOptions, inv: dict[str, SourceTensor]) -> ConvertJobs:
        from ascend.interop.mindspore.layout import (
            mindspore_file_name,
            plan_mindspore_files,
            stored_mindspore_rules,
            to_mindspore,
        )
        from ascend.interop.mindspore.names import mindspore_rules

        mtp = opts.mtp == "keep" and any(f"model.layers.{layer}.eh_proj.weight" in inv for layer in args.mtp_layers)
        rules = mindspore_rules(args, mtp=mtp)
        missing = [n for rule in rules for n in rule.hf if n not in inv]
        if missing:
            raise CheckpointError(f"source lacks {len(missing)} tensor(s) the {args.family} MindSpore layout needs",
                                  why=", ".join(missing[:3]), fix="check config.json against the checkpoint")

        def out_dtype(name: str) -> str:
            return "BF16" if inv[name].has_scale else inv[name].dtype

        def hf_nbytes(name: str) -> int:
            t = inv[name]
            return 2 * math.prod(t.shape) if t.has_scale else src.tensors[name].nbytes

        groups = plan_mindspore_files(stored_mindspore_rules(src, rules), hf_nbytes, opts.file_bytes)
        files = []
        for k, group in enumerate(groups, start=1):
            f = OutputFile(mindspore_file_name(k, len(groups), opts.ms_format))
            for rule in group:
                meta = [torch.empty(inv[n].shape, dtype=torch.int8, device="meta") for n in rule.hf]
                shape = tuple(to_mindspore(rule, meta).shape)
                f.pieces.append(Piece("mindspore", rule.hf[0], [(rule.ms, out_dtype(rule.hf[0]), shape)],
                                      extra={"hf": list(rule.hf), "op": rule.op, "params": dict(rule.params) or None}))
            files.append(f)
        config = output_config(args.config, files, None)
        if not mtp and args.num_nextn_predict_layers:
            config["num_nextn_predict_layers"] = 0  # the output holds no MTP layer
        return ConvertJobs(options=opts, files=files, config=config, quant_description=None, index_name=None,
                           sharding=None, source_fingerprint=src.fingerprint())

    def write_file(self, src, path: Path, pieces: list[Piece]) -> tuple[int, str]:
        """One MindSpore file (``.safetensors`` or ``.ckpt`` by ``path``'s suffix). MindSpore writes
        whole tensors: the memory floor is the largest MindSpore tensor of the file plus one
        expert (see docs/mindspore.md), not the chunk budget of the other layouts."""
        from ascend.interop.mindspore.layout import write_mindspore_file

        return write_mindspore_file(path, [piece_rule(p) for p in pieces], lambda n: read_hf_as_written(src, n),
                                    "ckpt" if path.suffix == ".ckpt" else "safetensors")

    def side_files(self, jobs: ConvertJobs) -> dict[str, Any]:
        return {NAME_MAP_FILE: {n: f.name for f in jobs.files for n, _, _ in f.tensors}}  # MindSpore Transformers' index

    def describe(self, opts: ConvertOptions) -> str:
        return f"MindSpore {opts.ms_format}"

    def describe_piece(self, p: Piece) -> str:
        rule = piece_rule(p)
        outs = ", ".join(f"{n} {d}{list(s)}" for n, d, s in p.outputs)
        return f"{rule.op}: {rule.hf[0]}" + (f" (+{len(rule.hf) - 1} more)" if len(rule.hf) > 1 else "") + f" -> {outs}"

    def verify(self, out: Path, jobs: ConvertJobs, src, sampled: set[tuple[str, str]], report: Any) -> None:
        """Every listed MindSpore tensor present with its dtype and shape and nothing else (read
        through MindSpore itself), and, with the source, the ``sampled`` ones bit-identical to the
        tensor built from it again (the transforms are exact). The reference runtime does not
        read MindSpore checkpoints, so there are no logits."""
        from ascend.checkpoint.safetensors_io import DTYPE_NAMES as names_of
        from ascend.interop.mindspore.io import read_mindspore
        from ascend.interop.mindspore.layout import build_mindspore_tensor

        for f in jobs.files:
            path = out / f.name
            if not path.is_file():
                report.problems.append(f"{f.name}: listed weight file missing")
                continue
            listed = {p.outputs[0][0]: p for p in f.pieces}
            report.tensors_total += len(listed)
            try:
                found = dict(read_mindspore(path))
            except CheckpointError as err:
                report.problems.append(err.line())
                continue
            for name in sorted(set(found) - set(listed)):
                report.problems.append(f"{f.name}: unexpected tensor {name}")
            for name, p in listed.items():
                t = found.get(name)
                _, dtype, shape = p.outputs[0]
                if t is None:
                    report.problems.append(f"{f.name}: tensor {name} missing")
                elif (names_of.get(t.dtype), tuple(t.shape)) != (dtype, tuple(shape)):
                    report.problems.append(f"{f.name}: tensor {name} is {names_of.get(t.dtype)}{list(t.shape)}, "
                                           f"listed {dtype}{list(shape)}")
                elif src is not None and (f.name, name) in sampled:
                    rule = piece_rule(p)
                    want = build_mindspore_tensor(rule, lambda n: read_hf_as_written(src, n))
                    report.tensors_checked += 1
                    if not torch.equal(want.contiguous().view(-1).view(torch.uint8), t.contiguous().view(-1).view(torch.uint8)):
                        report.problems.append(f"{name} (from {', '.join(rule.hf)[:120]}, {rule.op}): bytes differ from the source")
        report.notes.append("logits not compared: the reference runtime does not read MindSpore checkpoints"
                            + (" (every tensor was compared bit for bit instead)" if src is not None else ""))


SOURCE = _Source()
LAYOUT = _Layout()
