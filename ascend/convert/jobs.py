"""The conversion jobs: for every output file, the tensors it holds and how each is made.

A jobs is pure data (JSON-serialisable), computed from the source headers, the model's tensor
table (``ascend.models``) and the options. Every output tensor group comes from one ``Piece``:
one source tensor (plus its FP8 ``_scale_inv`` partner), an optional row/column window (a TP
shard), and an operation:

- ``copy``     bytes copied unchanged (norms, router, BF16 weights staying BF16, FP8 pass-through
               weight and scale windows on 128-block boundaries)
- ``dequant``  FP8 block -> BF16 (exact: fp32 product, one rounding)
- ``fp8``      -> FP8 block, writes ``weight`` + ``weight_scale_inv``
- ``w8a8``     -> int8 per-channel, writes ``weight`` + ``weight_scale`` + ``weight_offset``
- ``w8a8_static`` / ``calib``  static W8A8 and calibration-provided tensors (``w8a8_pieces``)

Which source tensors are FP8 is decided by the presence of ``<name>_scale_inv`` only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ascend.checkpoint.files import DRAFT_SUBDIR
from ascend.checkpoint.w8a8 import WEIGHT_FILE_STEM as W8A8_STEM
from ascend.convert import w8a8_pieces as w8
from ascend.convert.inventory import (  # noqa: F401 (SourceTensor, natural_key: re-exported for adapters)
    SCALE_INV_SUFFIX,
    SourceTensor,
    _without_mtp_weights,
    inventory,
    mtp_weights_missing,
    natural_key,
)
from ascend.convert.output_config import _draft_config, _mtp_draft_name, _output_config, _output_formats
from ascend.errors import ConvertError
from ascend.models.precision import FOLDED_BIAS, PrecisionPolicy
from ascend.models.sharding import ParallelLayout

FP8_BLOCK = 128
DEFAULT_FILE_BYTES = 5 * 10**9  # ~5 GB per hf output file, as published checkpoints
JOBS_FORMAT = "ascend-convert-jobs/1"



@dataclass
class Piece:
    """One source tensor (window) -> one group of output tensors, in file order.

    rows / cols: [start, stop) window of the source tensor (None = all).
    outputs: [(name, safetensors dtype, shape)], the main tensor first.
    """

    op: str
    source: str
    outputs: list[tuple[str, str, tuple[int, ...]]]
    scale: str | None = None
    rows: tuple[int, int] | None = None
    cols: tuple[int, int] | None = None
    scale_fmt: str | None = None
    # an adapter layout's own data for its op (JSON; ``ascend.convert.adapters``)
    extra: dict[str, Any] | None = None


@dataclass
class OutputFile:
    name: str
    pieces: list[Piece] = field(default_factory=list)

    @property
    def tensors(self) -> list[tuple[str, str, tuple[int, ...]]]:
        return [o for p in self.pieces for o in p.outputs]

    @property
    def nbytes(self) -> int:
        from ascend.checkpoint.safetensors_writer import data_size

        return data_size(self.tensors)


@dataclass
class ConvertOptions:
    """What to produce. ``parallel`` matters for ``layout == "sharded"`` only.

    ``precision`` and ``parallel`` are the recipe's own settings objects (or the same objects
    built from flags), so their checks and their rule matcher exist once.
    """

    precision: PrecisionPolicy = PrecisionPolicy()
    layout: str = "hf"  # hf | sharded | mindspore (MindSpore Transformers checkpoint, needs the extra)
    parallel: ParallelLayout = ParallelLayout(1, 1)
    mtp: str = "keep"  # keep | drop | export
    misaligned_fp8: str = "refuse"  # refuse | requantize
    file_bytes: int = DEFAULT_FILE_BYTES
    source_format: str = "hf"  # hf | mindspore (MindSpore Transformers checkpoint, needs the extra)
    source_config: str | None = None  # HF config.json (or its dir) of a MindSpore source without one
    ms_format: str = "safetensors"  # layout mindspore: safetensors | ckpt

    @classmethod
    def from_recipe(cls, recipe: Any) -> "ConvertOptions":
        """Options of a recipe's ``convert`` section (attention TP = world / dp, as in xLLM)."""
        c = recipe.convert
        return cls(precision=recipe.precision, layout=c.layout, parallel=recipe.layout, mtp=c.mtp,
                   misaligned_fp8=c.misaligned_fp8)

    @classmethod
    def from_flags(cls, precision: str = "bf16", *, rules: Any = (), tp: int = 1, dp: int = 1, ep: int = 1,
                   w8a8_scheme: str = "w8a8", **rest: Any) -> "ConvertOptions":
        """Flag mode (``ascend convert --src ... --precision ... --tp ...``): world = tp x dp."""
        return cls(precision=PrecisionPolicy(precision, tuple(tuple(r) for r in rules), w8a8_scheme),
                   parallel=ParallelLayout(1, tp * dp, dp, ep), **rest)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ConvertOptions":
        """The inverse of ``dataclasses.asdict`` (jobs recorded in a state dir or manifest)."""
        p = d["precision"]  # before W8A8 schemes, every W8A8 linear was dynamic
        return cls(**{**d, "precision": PrecisionPolicy(p["default"], tuple(tuple(r) for r in p["rules"]),
                                                        p.get("w8a8_scheme", "dynamic")),
                      "parallel": ParallelLayout(**d["parallel"])})

    def validate(self) -> None:
        """What the recipe schema cannot say: the sharded layout's shape, and what an adapter's
        layout can hold (``ascend.convert.adapters``)."""
        from ascend.convert.adapters import output_layout

        if self.source_config is not None and self.source_format == "hf":
            raise ConvertError("--config is for sources without a config.json", fix="add --from-format, or drop --config")
        self.parallel.check()
        layout = output_layout(self.layout)
        if layout is not None:
            layout.check(self)


@dataclass
class ConvertJobs:
    options: ConvertOptions
    files: list[OutputFile]
    config: dict[str, Any]  # config.json of the output
    quant_description: dict[str, str] | None  # W8A8 only
    index_name: str | None  # hf layout: the index file name
    sharding: dict[str, Any] | None  # sharded layout: ascend-sharding.json body
    draft: "ConvertJobs | None" = None  # mtp: export -> the draft model dir (subdir "mtp")
    source_fingerprint: str = ""
    warnings: list[str] = field(default_factory=list)  # for the user; not part of the digest
    calibration: str | None = None  # fingerprint of the calibration the static pieces use

    def to_json(self) -> dict[str, Any]:
        return {
            "format": JOBS_FORMAT,
            "options": asdict(self.options),
            "source_fingerprint": self.source_fingerprint,
            "files": [{"name": f.name, "pieces": [asdict(p) for p in f.pieces]} for f in self.files],
            "config": self.config,
            "quant_description": self.quant_description,
            "index_name": self.index_name,
            "sharding": self.sharding,
            "draft": self.draft.to_json() if self.draft else None,
        } | ({"calibration": self.calibration} if self.calibration else {})

    def digest(self) -> str:
        body = self.to_json()
        if not any(p.op in w8.W8A8_OPS for _, f in self.all_files() for p in f.pieces):
            # the scheme changes nothing without W8A8: such an output stays complete when it changes
            for part in (body, body["draft"] or {}):
                part.get("options", {}).get("precision", {}).pop("w8a8_scheme", None)
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def all_files(self, prefix: str = "") -> list[tuple[str, OutputFile]]:
        """(relative path, file) for this jobs and its draft dir."""
        out = [(prefix + f.name, f) for f in self.files]
        if self.draft:
            out += self.draft.all_files(f"{prefix}{DRAFT_SUBDIR}/")
        return out


# ---------------------------------------------------------------------------------------------
# Windows and FP8 block alignment


def _aligned(window: tuple[int, int], size: int) -> bool:
    """A window keeps whole 128-blocks: starts on a block and ends on one or at the tensor end."""
    start, stop = window
    return start % FP8_BLOCK == 0 and (stop % FP8_BLOCK == 0 or stop == size)


def _scale_window(window: tuple[int, int] | None) -> tuple[int, int] | None:
    if window is None:
        return None
    return window[0] // FP8_BLOCK, -(-window[1] // FP8_BLOCK)


def _window_shape(shape: tuple[int, ...], rows, cols) -> tuple[int, ...]:
    out = list(shape)
    if rows is not None:
        out[0] = rows[1] - rows[0]
    if cols is not None:
        out[1] = cols[1] - cols[0]
    return tuple(out)


def make_pieces(
    src_name: str,
    out_name: str,
    info_dtype: str,
    shape: tuple[int, ...],
    has_scale: bool,
    fmt: str,
    quantizable: bool,
    rows: tuple[int, int] | None,
    cols: tuple[int, int] | None,
    opts: ConvertOptions,
    scale_fmt: str | None,
    bias: str | None = None,
) -> list[Piece]:
    """The pieces producing ``out_name`` (and its scales) from a source tensor window.
    ``bias``: the float bias a ``w8a8_static`` linear folds in."""
    scale = src_name + SCALE_INV_SUFFIX if has_scale else None
    wshape = _window_shape(shape, rows, cols)
    if not quantizable or len(shape) != 2:
        fmt = "keep"
    if has_scale and fmt in ("keep", "bf16"):
        # a source FP8 tensor the table calls non-quantizable still has to become a real dtype
        return [Piece("dequant", src_name, [(out_name, "BF16", wshape)], scale=scale, rows=rows, cols=cols)]
    if fmt in ("keep", "bf16"):
        return [Piece("copy", src_name, [(out_name, info_dtype, wshape)], rows=rows, cols=cols)]
    if fmt == "fp8":
        if has_scale:
            misaligned = [
                (axis, w, size)
                for axis, w, size in (("rows", rows, shape[0]), ("columns", cols, shape[1]))
                if w is not None and not _aligned(w, size)
            ]
            if not misaligned:
                srows, scols = _scale_window(rows), _scale_window(cols)
                return [
                    Piece("copy", src_name, [(out_name, "F8_E4M3", wshape)], rows=rows, cols=cols),
                    Piece("copy", scale, [(out_name + SCALE_INV_SUFFIX, "F32", (-(-wshape[0] // 128), -(-wshape[1] // 128)))],
                          rows=srows, cols=scols),
                ]
            if opts.misaligned_fp8 != "requantize":
                axis, (start, stop), size = misaligned[0]
                raise ConvertError(
                    f"FP8 shard of {src_name} breaks 128-blocks: {axis} [{start}, {stop}) of {size} "
                    f"({stop - start} {axis} per shard = {(stop - start) / FP8_BLOCK:g} blocks of {FP8_BLOCK})",
                    why="block-FP8 scales cannot be split inside a 128-block",
                    fix="use convert.misaligned_fp8: requantize (--requantize-misaligned), a smaller TP, or bf16/w8a8 output",
                )
        return [Piece("fp8", src_name, [(out_name, "F8_E4M3", wshape),
                                        (out_name + SCALE_INV_SUFFIX, "F32", (-(-wshape[0] // 128), -(-wshape[1] // 128)))],
                      scale=scale, rows=rows, cols=cols, scale_fmt=scale_fmt)]
    if fmt == w8.STATIC_OP:
        return w8.static_pieces(Piece, src_name, out_name, wshape, scale, rows, cols, bias, w8.deq_dtype("bfloat16"))
    if fmt == "w8a8":
        return [Piece("w8a8", src_name, [(out_name, "I8", wshape), (out_name + "_scale", "F32", (wshape[0], 1)),
                                         (out_name + "_offset", "F32", (wshape[0], 1))],
                      scale=scale, rows=rows, cols=cols)]
    raise ConvertError(f"unknown format {fmt!r} for {src_name}")


# ---------------------------------------------------------------------------------------------
# Source inventory


HF_STEM = "model"


def _window(sl: tuple[slice, ...] | None, shape: tuple[int, ...], dim: int) -> tuple[int, int] | None:
    if sl is None or len(shape) <= dim:
        return None
    s = sl[dim]
    return None if (s.start, s.stop) == (0, shape[dim]) else (s.start, s.stop)


def _pack(pieces_by_tensor: list[list[Piece]], stem: str, file_bytes: int) -> list[OutputFile]:
    """Greedy packing into files of at most ``file_bytes`` (a tensor never spans two files)."""
    from ascend.checkpoint.safetensors_writer import data_size

    groups: list[list[Piece]] = [[]]
    size = 0
    for pieces in pieces_by_tensor:
        n = data_size([o for p in pieces for o in p.outputs])
        if groups[-1] and size + n > file_bytes:
            groups.append([])
            size = 0
        groups[-1].extend(pieces)
        size += n
    total = len(groups)
    return [OutputFile(f"{stem}-{i + 1:05d}-of-{total:05d}.safetensors", g) for i, g in enumerate(groups)]


def build_jobs(src, args, opts: ConvertOptions, calibration=None) -> ConvertJobs:
    """The full jobs for converting ``src`` (SafetensorsDir) described by ``args`` (ModelArgs).
    ``calibration``: (Calibration, fingerprint) of the static pieces, when calibrated."""
    from ascend.convert.adapters import output_layout
    from ascend.models.sharding import shard_slice
    from ascend.models.tensors import tensor_specs

    specs = [s for s in tensor_specs(args, mtp=True) if s.scale_of is None]
    no_mtp = mtp_weights_missing(src, args)
    warnings = [w for w in [_without_mtp_weights(args, opts)] if w] if no_mtp else []
    if no_mtp:
        specs = [s for s in specs if not s.mtp]
    by_name = {s.name: s for s in specs}
    inv = inventory(src, by_name)
    layout = output_layout(opts.layout)
    if layout is not None:  # another framework's layout plans its own files
        jobs = layout.build_jobs(src, args, opts, inv)
        jobs.warnings = warnings
        return jobs
    src_quant = (args.config or {}).get("quantization_config") or None
    scale_fmt = args.quantization.scale_fmt if args.quantization is not None else None
    main_specs = [s for s in specs if not (s.mtp and opts.mtp != "keep")]

    replaced, added = w8.calibration_tensors(calibration[0], specs) if calibration else (set(), [])
    added_after = {after: (name, shape) for name, after, shape in added}

    def pieces_for(spec, out_name: str, rows=None, cols=None) -> list[Piece]:
        t = inv[spec.name]
        fmt = opts.precision.written_format(args.family, spec)
        if fmt == FOLDED_BIAS:
            return []  # folded into its static linear's quant_bias (and written as its fp32 bias)
        bias = spec.name[: -len(".weight")] + ".bias" if fmt == w8.STATIC_OP else None
        pieces = make_pieces(spec.name, out_name, t.dtype, t.shape, t.has_scale, fmt, spec.quantizable,
                             rows, cols, opts, scale_fmt, bias=bias if bias in inv else None)
        if spec.name in replaced and pieces[0].op != w8.STATIC_OP:  # a static piece reads it itself
            if pieces[0].op not in ("copy", "dequant"):
                raise ConvertError(f"calibration replaces {spec.name}, which this conversion quantizes dynamically",
                                   fix="calibration may replace float tensors and static W8A8 linears only")
            pieces = [Piece(w8.CALIB_OP, spec.name, pieces[0].outputs[:1], rows=rows, cols=cols)]
        if spec.name in added_after:
            name, shape = added_after[spec.name]
            pieces.append(Piece(w8.CALIB_OP, name, [(out_name[: -len(".weight")] + ".bias", pieces[0].outputs[0][1], shape)]))
        return pieces

    sharding = None
    if opts.layout == "hf":
        per_tensor = [pieces_for(s, s.name) for s in main_specs]
        probe = [p for ps in per_tensor for p in ps]
        stem = W8A8_STEM if any(p.op in w8.W8A8_OPS for p in probe) else HF_STEM
        files = _pack(per_tensor, stem, opts.file_bytes)
    else:
        par = opts.parallel
        world = par.world
        files, ranks = [], []
        for rank in range(world):
            coords = par.coords(rank)
            f = OutputFile(f"model-rank-{rank:05d}-of-{world:05d}.safetensors")
            for spec in main_specs:
                sl = shard_slice(spec, coords)
                if sl is None:
                    continue
                f.pieces.extend(pieces_for(spec, spec.name, _window(sl, spec.shape, 0), _window(sl, spec.shape, 1)))
            files.append(f)
            ranks.append({"rank": rank, "file": f.name, "coords": asdict(coords)})
        sharding = {
            "format": "ascend-sharded/1",
            "world_size": world, "dp": par.dp, "ep": par.ep, "attn_tp": par.attn_tp, "moe_tp": par.moe_tp,
            "mtp": "drop" if no_mtp else opts.mtp, "ranks": ranks,
        }
    if {"fp8", "w8a8"} <= _output_formats(files):
        raise ConvertError("one output cannot mix FP8 and W8A8 tensors", fix="pick fp8 or w8a8 in the precision rules, not both")
    config = _output_config(args.config, files, src_quant)
    if (opts.mtp != "keep" or no_mtp) and args.num_nextn_predict_layers:
        config["num_nextn_predict_layers"] = 0  # the main dir no longer holds the MTP layer
    is_w8a8 = "w8a8" in _output_formats(files)
    jobs = ConvertJobs(
        options=opts,
        files=files,
        config=config,
        quant_description=w8.quant_description(files) if is_w8a8 else None,
        index_name=f"{W8A8_STEM if is_w8a8 else HF_STEM}.safetensors.index.json" if opts.layout == "hf" else None,
        sharding=sharding,
        source_fingerprint=src.fingerprint(),
        warnings=warnings,
        calibration=calibration[1] if calibration else None,
    )
    if opts.mtp == "export":
        jobs.draft = _draft_jobs(args, specs, inv, pieces_for, opts, src_quant)
    return jobs


def _draft_jobs(args, specs, inv, pieces_for, opts: ConvertOptions, src_quant) -> ConvertJobs:
    mtp_specs = [s for s in specs if s.mtp]
    if not mtp_specs:
        raise ConvertError("mtp: export asked, but the checkpoint has no MTP layer",
                           why="config.json num_nextn_predict_layers is 0", fix="use mtp: drop or keep")
    layers = sorted({s.layer for s in mtp_specs})
    if len(layers) != 1:
        raise ConvertError(f"mtp: export supports one MTP layer, the checkpoint has {len(layers)}")
    layer = layers[0]
    per_tensor = [pieces_for(s, _mtp_draft_name(s.name, layer)) for s in mtp_specs]
    names = {p.outputs[0][0] for ps in per_tensor for p in ps}
    by_name = {s.name: s for s in specs}
    # embed and head copies from the main model when the MTP layer lacks them
    for draft_name, main_name in (("model.embed_tokens.weight", "model.embed_tokens.weight"),
                                  ("model.shared_head.head.weight", "lm_head.weight")):
        if draft_name not in names and main_name in by_name:
            per_tensor.append(pieces_for(by_name[main_name], draft_name))
    probe = [p for ps in per_tensor for p in ps]
    is_w8a8 = any(p.op in w8.W8A8_OPS for p in probe)
    stem = W8A8_STEM if is_w8a8 else HF_STEM
    files = _pack(per_tensor, stem, opts.file_bytes)
    config = _draft_config(_output_config(args.config, files, src_quant))
    return ConvertJobs(
        options=opts, files=files, config=config,
        quant_description=w8.quant_description(files) if is_w8a8 else None,
        index_name=f"{stem}.safetensors.index.json", sharding=None,
    )
