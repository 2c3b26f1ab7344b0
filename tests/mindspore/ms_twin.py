"""The plain-loop MindSpore converter the CLI's MindSpore output is checked against (tests only).

``convert_hf_to_mindspore`` writes a whole HF checkpoint as MindSpore Transformers files in one
loop, ``convert_mindspore_to_hf`` the way back; ``ascend convert --layout mindspore`` /
``--from-format mindspore`` are the product. Both need the ``mindspore`` extra.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from ascend.checkpoint.fp8 import dequantize_fp8_block
from ascend.checkpoint.safetensors_io import DTYPE_NAMES, INDEX_FILE, SafetensorsDir
from ascend.checkpoint.safetensors_writer import SafetensorsWriter
from ascend.errors import CheckpointError, ConvertError, first_names
from ascend.fileio import write_json
from ascend.interop.mindspore.io import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_MAX_FILE_BYTES,
    NAME_MAP_FILE,
    SCALE_INV,
    list_mindspore,
    read_mindspore,
    require_mindspore,
)
from ascend.interop.mindspore.layout import (
    _config_dir,
    from_mindspore,
    mindspore_file_name,
    plan_mindspore_files,
    resolve_mindspore_names,
    stored_mindspore_rules,
    write_mindspore_file,
)

_WEIGHT_SUFFIXES = (".safetensors", ".ckpt")
_NOT_COPIED = {INDEX_FILE, NAME_MAP_FILE, "ascend-manifest.json"}


def _copy_aux_files(src: Path, out: Path) -> None:
    """config.json, tokenizer, chat template, ...: every small non-weight file of ``src``."""
    for f in sorted(src.iterdir()):
        if f.is_file() and f.suffix not in _WEIGHT_SUFFIXES and f.name not in _NOT_COPIED and ".partial" not in f.name:
            shutil.copyfile(f, out / f.name)


def convert_hf_to_mindspore(
    src: str | Path,
    out: str | Path,
    *,
    format: str = "safetensors",
    mtp: bool | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> dict[str, Any]:
    """Write the Hugging Face checkpoint ``src`` as a MindSpore Transformers checkpoint ``out``.

    Output: ``model-0000k-of-0000n.<format>`` files, ``param_name_map.json`` ({name: file}) and
    the non-weight files of ``src``. ``mtp``: include the MTP layers (default: when ``src`` has
    them; ``mtp=False`` drops them). Block-FP8 weights are dequantized to BF16 (exactly as
    ``ascend.checkpoint.fp8.dequantize_fp8_block``) and ``quantization_config`` leaves the
    copied config.json. Returns a summary dict.
    """
    from ascend.interop.mindspore.names import hf_name_map, mindspore_rules, own_copy_rules
    from ascend.models.args import load_model_args

    require_mindspore()
    src, out = Path(src), Path(out)
    sd = SafetensorsDir(src)
    try:
        args = load_model_args(src)
        if mtp is None:
            mtp = any(f"model.layers.{layer}.eh_proj.weight" in sd for layer in args.mtp_layers)
        # Block-FP8 weights are dequantized to BF16 (MindSpore cannot save float8), as
        # MindSpore Transformers' own converter does.
        fp8 = {n for n, i in sd.tensors.items() if i.dtype.startswith("F8")}
        unscaled = sorted(n for n in fp8 if n + SCALE_INV not in sd)
        if unscaled:
            raise ConvertError(f"FP8 tensor {unscaled[0]} has no {SCALE_INV}", why="MindSpore checkpoints cannot hold float8",
                               fix="use a block-FP8 checkpoint with its scales, or a BF16 one")
        block = args.fp8_block or (128, 128)

        def read_hf(name: str) -> torch.Tensor:
            if name in fp8:
                return dequantize_fp8_block(sd.read(name), sd.read(name + SCALE_INV), block, dtype=torch.bfloat16)
            return sd.read(name)

        def hf_nbytes(name: str) -> int:
            info = sd.tensors[name]
            return info.nbytes * 2 if name in fp8 else info.nbytes

        rules = mindspore_rules(args, mtp=mtp)
        needed = hf_name_map(rules)
        needed.update({n + SCALE_INV: needed[n] for n in fp8 if n in needed})
        missing = [n for n in needed if n not in sd]
        if missing:
            raise CheckpointError(
                f"{src} lacks {len(missing)} tensor(s) the {args.family} MindSpore layout needs",
                why=first_names(missing),
                fix="check config.json against the checkpoint",
            )
        mtp_prefixes = tuple(f"model.layers.{layer}." for layer in args.mtp_layers)
        dropped = [n for n in sd.tensors if not mtp and n not in needed and n.startswith(mtp_prefixes)]
        extra = [n for n in sd.tensors if n not in needed and n not in dropped]
        if extra:
            raise ConvertError(
                f"{len(extra)} tensor(s) of {src} have no MindSpore Transformers name",
                why=first_names(extra),
                fix="check that config.json describes this checkpoint (layers, experts, MTP)",
            )
        stored = stored_mindspore_rules(sd, rules)
        kept = [r.ms for r in stored if r.ms in own_copy_rules(rules)]
        groups = plan_mindspore_files(stored, hf_nbytes, max_file_bytes)
        out.mkdir(parents=True, exist_ok=True)
        name_map: dict[str, str] = {}
        files = []
        for k, group in enumerate(groups, start=1):
            fname = mindspore_file_name(k, len(groups), format)
            nbytes, sha = write_mindspore_file(out / fname, group, read_hf, format)
            name_map.update({rule.ms: fname for rule in group})
            files.append({"file": fname, "size": nbytes, "sha256": sha})
        write_json(out / NAME_MAP_FILE, name_map)
        _copy_aux_files(src, out)
        if fp8:  # the weights are BF16 now
            config = {k: v for k, v in args.config.items() if k != "quantization_config"}
            write_json(out / "config.json", {**config, "torch_dtype": "bfloat16"} if "torch_dtype" in config else config)
        return {"family": args.family, "format": format, "files": files, "tensors": len(name_map), "mtp": mtp,
                "dropped": len(dropped), "kept_copies": kept, "dequantized": len(fp8)}
    finally:
        sd.close()


def convert_mindspore_to_hf(
    src: str | Path, out: str | Path, *, config: str | Path | None = None, batch_bytes: int = DEFAULT_BATCH_BYTES
) -> dict[str, Any]:
    """Write the MindSpore Transformers checkpoint ``src`` (file or directory) as a Hugging Face
    checkpoint ``out``: one ``model-0000k-of-0000n.safetensors`` per MindSpore file, plus
    ``model.safetensors.index.json`` and the non-weight files.

    ``config``: the model's HF ``config.json`` (or its directory); default ``src/config.json``.
    Optimizer state and step counters of training checkpoints are skipped and reported.
    """
    from ascend.models.args import load_model_args

    require_mindspore()
    src, out = Path(src), Path(out)
    args = load_model_args(_config_dir(src, config))
    listing = list_mindspore(src)
    by_ms, aliases, skipped = resolve_mindspore_names(listing, args, str(src))
    files = list(dict.fromkeys(info.path for name, info in listing.items() if name in by_ms))
    out.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    total = 0
    written = []
    for k, f in enumerate(files, start=1):
        fname = f"model-{k:05d}-of-{len(files):05d}.safetensors"
        hf: dict[str, torch.Tensor] = {}
        names = [n for n, i in listing.items() if i.path == f and n in by_ms]
        for name, t in read_mindspore(f, names, batch_bytes=batch_bytes):
            hf.update(from_mindspore(by_ms[name], t))
            for copy in aliases.get(name, ()):
                hf[copy] = t
        entries = [(n, DTYPE_NAMES[t.dtype], tuple(t.shape)) for n, t in hf.items()]
        writer = SafetensorsWriter(out / fname, entries)
        for _, t in hf.items():
            writer.write(t)
        size, sha = writer.commit()
        total += sum(t.numel() * t.element_size() for t in hf.values())
        weight_map.update({n: fname for n in hf})
        written.append({"file": fname, "size": size, "sha256": sha})
        del hf
    write_json(out / INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})
    if src.is_dir():
        _copy_aux_files(src, out)
    if not (out / "config.json").is_file():
        shutil.copyfile(_config_dir(src, config) / "config.json", out / "config.json")
    mtp = any(name.startswith("mtp.layers.") for name in by_ms)
    return {"family": args.family, "files": written, "tensors": len(weight_map), "skipped": skipped, "mtp": mtp}
