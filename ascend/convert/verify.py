"""`ascend verify`: is a converted directory complete, as listed, and numerically right?

1. Structure: ``ascend-manifest.json`` present; every file it lists has its size and sha256;
   no unlisted files; every weight file holds exactly the listed tensors with the listed
   dtype and shape (the jobs is recomputed from the source when it is available).
2. Numbers: every output tensor (or ``sample`` of them) is compared with the source window it
   came from, in row chunks, within the bound its transform allows:
   copy (BF16, norms, FP8 pass-through) and FP8 -> BF16 dequant: bit-exact;
   FP8 quantization: |W - deq| <= half an e4m3 step of the block (``fp8_error_bound``);
   W8A8: |W - q·scale| <= scale/2 per row, offsets 0, |q| <= 127.
3. Logits (models that fit in memory, outputs the reference runtime loads: BF16/FP8, hf or
   sharded): reference logits of output vs source on fixed tokens; top-1 agreement and max
   error against stated bounds (see ``LOGIT_BOUNDS``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ascend.checkpoint.files import DRAFT_SUBDIR, MANIFEST, STATE_DIR
from ascend.checkpoint.fp8 import dequantize_fp8_block, fp8_error_bound
from ascend.checkpoint.safetensors_io import SafetensorsDir, file_sha256, read_header
from ascend.checkpoint.w8a8 import dequantize_w8a8, w8a8_error_bound
from ascend.convert import w8a8_pieces as w8
from ascend.convert.adapters import output_layout, source_format
from ascend.convert.config_check import check_config
from ascend.convert.execute import all_finite, chunk_rows, source_fp32
from ascend.convert.jobs import ConvertJobs, ConvertOptions, OutputFile, Piece, build_jobs
from ascend.convert.pipeline import load_source
from ascend.errors import CheckFailed, CheckpointError

# Logit agreement required of output vs source, by the least exact transform in the output:
# exact weights (copy only) must agree to float rounding of a different reduction order;
# BF16 from FP8 differs by one BF16 rounding per weight. FP8/int8 outputs carry quantization
# noise that routing and DSA top-k selections turn into discrete jumps (measured on tiny random
# models: 18-46% of max |logit| for both FP8 and W8A8 while every tensor is within its bound),
# so for them the max error is reported, not enforced (None), and only top-1 agreement gates;
# the per-tensor bounds above are the exact check.
LOGIT_BOUNDS = {
    "exact": {"max_rel_error": 1e-3, "min_top1": 1.0},
    "bf16": {"max_rel_error": 0.05, "min_top1": 0.8},
    "quantized": {"max_rel_error": None, "min_top1": 0.5},
}
LOGIT_TOKENS = 16
LOGITS_MAX_PARAMS = int(os.environ.get("ASCEND_VERIFY_LOGITS_MAX_PARAMS", str(2 * 10**9)))


@dataclass
class VerifyReport:
    out_dir: str
    problems: list[str] = field(default_factory=list)
    files_checked: int = 0
    tensors_checked: int = 0
    tensors_total: int = 0
    logits: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def logits_line(self) -> str | None:
        """One line of the logits comparison, e.g. ``top-1 agreement 100%, max error 0.24%``."""
        lg = self.logits
        if not lg:
            return None
        if lg["class"] == "calibrated W8A8":
            return f"top-1 agreement {lg['top1']:.0%}, KL {lg['kl']:.3g}, rel. error {lg['rel_err']:.2%} (calibration gate's bounds)"
        return f"top-1 agreement {lg['top1_agreement']:.0%}, max error {lg['max_rel_error']:.2%} of max |logit|"

    def to_json(self) -> dict[str, Any]:
        return {"out_dir": self.out_dir, "ok": self.ok, "problems": self.problems, "files_checked": self.files_checked,
                "tensors_checked": self.tensors_checked, "tensors_total": self.tensors_total,
                "logits": self.logits, "notes": self.notes}




def _source_available(src: Path, opts: ConvertOptions) -> bool:
    if source_format(opts.source_format) is not None:
        return src.exists()  # its adapter names a missing config.json or a missing extra
    return (src / "config.json").is_file()


def _load_jobs(out: Path, manifest: dict, against: str | None, report: VerifyReport):
    """(jobs, SafetensorsDir source or None): recomputed from the source when available."""
    src_dir = against or manifest.get("source", {}).get("path")
    opts = ConvertOptions.from_json(manifest["options"])
    if src_dir and _source_available(Path(src_dir), opts):
        src, args = load_source(src_dir, opts)  # another format opens through its adapter (or exit 2)
        jobs = w8.calibrated_jobs(build_jobs(src, args, opts), out, lambda calib: build_jobs(src, args, opts, calib))
        if jobs.source_fingerprint != manifest.get("source", {}).get("fingerprint"):
            report.problems.append(f"source {src_dir} is not the checkpoint this output was made from (fingerprint differs)")
        elif jobs.digest() != manifest.get("plan_digest"):
            report.problems.append("the jobs recomputed from the source differs from the one recorded in the manifest")
        return jobs, src
    report.notes.append(f"source {src_dir} not available: structure checked against the recorded jobs, numbers not checked")
    state = out / STATE_DIR / "jobs.json"
    if not state.is_file():
        report.problems.append(f"no source and no recorded jobs ({state}): pass --against SRC_DIR")
        return None, None
    return _jobs_from_json(json.loads(state.read_text())["jobs"]), None


def _jobs_from_json(d: dict) -> ConvertJobs:
    def files(fs):
        return [OutputFile(f["name"], [Piece(**{**p, "outputs": [(o[0], o[1], tuple(o[2])) for o in p["outputs"]],
                                                "rows": tuple(p["rows"]) if p["rows"] else None,
                                                "cols": tuple(p["cols"]) if p["cols"] else None})
                                       for p in f["pieces"]]) for f in fs]

    jobs = ConvertJobs(ConvertOptions.from_json(d["options"]), files(d["files"]), d["config"], d["quant_description"], d["index_name"],
                       d["sharding"], None, d["source_fingerprint"])
    if d.get("draft"):
        jobs.draft = _jobs_from_json({**d["draft"], "source_fingerprint": d["source_fingerprint"]})
    return jobs


def _check_files(out: Path, manifest: dict, report: VerifyReport) -> None:
    listed = manifest.get("files", {})
    for rel, rec in listed.items():
        p = out / rel
        if not p.is_file():
            report.problems.append(f"{rel}: listed in the manifest but missing")
            continue
        if p.stat().st_size != rec["size"]:
            report.problems.append(f"{rel}: size {p.stat().st_size}, manifest says {rec['size']}")
            continue
        if file_sha256(p) != rec["sha256"]:
            report.problems.append(f"{rel}: sha256 differs from the manifest (file changed or corrupt)")
        report.files_checked += 1
    for p in sorted(out.rglob("*")):
        rel = str(p.relative_to(out))
        if p.is_file() and not rel.startswith(STATE_DIR) and rel != MANIFEST and rel not in listed:
            report.problems.append(f"{rel}: not listed in the manifest (extra or half-written file)")


def _check_structure(out: Path, jobs: ConvertJobs, report: VerifyReport) -> None:
    for rel, f in jobs.all_files():
        p = out / rel
        if not p.is_file():
            report.problems.append(f"{rel}: listed weight file missing")
            continue
        try:
            tensors, _, _ = read_header(p)
        except CheckpointError as err:
            report.problems.append(err.line())
            continue
        listed = {n: (d, tuple(s)) for n, d, s in f.tensors}
        for name, (dtype, shape) in listed.items():
            t = tensors.get(name)
            if t is None:
                report.problems.append(f"{rel}: tensor {name} missing")
            elif (t.dtype, tuple(t.shape)) != (dtype, shape):
                report.problems.append(f"{rel}: tensor {name} is {t.dtype}{list(t.shape)}, listed {dtype}{list(shape)}")
        for name in sorted(set(tensors) - set(listed)):
            report.problems.append(f"{rel}: unexpected tensor {name}")
        report.tensors_total += len(listed)


def _sample(pieces: list[tuple[str, Piece]], n: int | None) -> list[tuple[str, Piece]]:
    if n is None or n >= len(pieces):
        return pieces
    step = len(pieces) / max(1, n)
    return [pieces[int(i * step)] for i in range(n)]


def check_piece(src: SafetensorsDir, out: SafetensorsDir, p: Piece, calib=None) -> str | None:
    """None when the output tensors of ``p`` match the source window within the bound, else why.
    ``calib()``: the output's calibration (static W8A8 pieces)."""
    if p.op in (w8.STATIC_OP, w8.CALIB_OP):
        return w8.check_piece(src, out, p, calib(), lambda a, b: source_fp32(src, p, a, b),
                              chunk_rows(src.tensors[p.source].shape[1]) if p.op == w8.STATIC_OP else 0)
    shape = src.tensors[p.source].shape
    main = p.outputs[0][0]
    if p.op == "copy":
        r0, r1 = p.rows if p.rows else (0, shape[0] if shape else 0)
        if len(shape) < 2:
            a = src.read_rows(p.source, r0, r1) if shape else src.read(p.source)
            b = out.read(main)
            if not all_finite(b):
                return "holds NaN or Inf"
            return None if torch.equal(a.view(torch.uint8), b.view(torch.uint8)) else "bytes differ from the source"
        step = chunk_rows(shape[1])
        for a0 in range(r0, r1, step):
            a1 = min(a0 + step, r1)
            a = src.read_rows(p.source, a0, a1)
            if p.cols:
                a = a[:, p.cols[0]:p.cols[1]]
            b = out.read_rows(main, a0 - r0, a1 - r0)
            if not all_finite(b):
                return f"holds NaN or Inf in rows [{a0}, {a1})"
            if not torch.equal(a.contiguous().view(torch.uint8), b.view(torch.uint8)):
                return f"bytes differ from the source in rows [{a0}, {a1})"
        return None
    r0, r1 = p.rows if p.rows else (0, shape[0])
    if p.op == "fp8":
        scale = out.read(p.outputs[1][0])
    elif p.op == "w8a8":
        scale, offset = out.read(p.outputs[1][0]), out.read(p.outputs[2][0])
        if offset.any():
            return "weight_offset is not zero"
    step = chunk_rows(shape[1])
    worst = 0.0
    for a0 in range(r0, r1, step):
        a1 = min(a0 + step, r1)
        rows = slice(a0 - r0, a1 - r0)
        if p.op == "dequant":
            want = source_fp32(src, p, a0, a1, dtype=torch.bfloat16)
            got = out.read_rows(main, rows.start, rows.stop)
            if not all_finite(got):
                return f"holds NaN or Inf in rows [{a0}, {a1})"
            if not torch.equal(want.contiguous().view(torch.int16), got.view(torch.int16)):
                return f"BF16 differs from the exact FP8 dequantization in rows [{a0}, {a1})"
            continue
        ref = source_fp32(src, p, a0, a1)
        q = out.read_rows(main, rows.start, rows.stop)
        if p.op == "fp8":
            s = scale[rows.start // 128: -(-rows.stop // 128)]
            got = dequantize_fp8_block(q, s)
            s_full = s.repeat_interleave(128, 0).repeat_interleave(128, 1)[: q.shape[0], : q.shape[1]]
            bound = fp8_error_bound(s_full, ref)
        else:
            if q.min() < -127:
                return "int8 weight uses -128 (symmetric range is ±127)"
            s = scale[rows]
            got = dequantize_w8a8(q, s)
            bound = w8a8_error_bound(s).expand_as(got)
        if not all_finite(got):  # (comparisons with NaN are False: the bound check below would pass)
            return f"reconstructs to NaN or Inf in rows [{a0}, {a1})"
        err = (got - ref).abs()
        ratio = float((err / bound).max()) if err.numel() else 0.0
        worst = max(worst, ratio)
        if not ratio <= 1.0:
            return f"reconstruction error {float(err.max()):.3g} exceeds the {p.op} bound ({ratio:.2f}x the bound)"
    return None


def _check_numbers(out: Path, jobs: ConvertJobs, src: SafetensorsDir, sample: int | None, report: VerifyReport) -> None:
    for prefix, sub in (("", jobs), (f"{DRAFT_SUBDIR}/", jobs.draft)):
        if sub is None:
            continue
        pieces_by_file: dict[str, list[Piece]] = {}
        for f in sub.files:
            pieces_by_file[f.name] = f.pieces
        items = [(fname, p) for fname, ps in pieces_by_file.items() for p in ps]
        views: dict[str, _FileView] = {}
        for fname, p in _sample(items, sample):
            try:
                view = views.get(fname) or views.setdefault(fname, _FileView(out / prefix / fname))
                why = check_piece(src, view, p, lambda: w8.load_calibration(out, cached=True))
            except (CheckpointError, KeyError) as err:
                why = f"cannot read: {err}"
            report.tensors_checked += len(p.outputs)
            if why:
                report.problems.append(f"{prefix}{p.outputs[0][0]} (from {p.source}, {p.op}): {why}")
        for view in views.values():
            view.close()


class _FileView(SafetensorsDir):
    """One safetensors file read like a directory."""

    def __init__(self, path: Path):
        self.dir = path.parent
        tensors, _, raw = read_header(path)
        self.tensors, self.headers, self.files, self.weight_map = tensors, {path.name: raw}, [path.name], None
        self._fds = {}


def _logit_class(jobs: ConvertJobs) -> str:
    ops = {p.op for f in jobs.files for p in f.pieces}
    if ops & {"fp8", *w8.W8A8_OPS}:
        return "quantized"
    if "dequant" in ops:
        return "bf16"
    return "exact"


def _check_logits(out: Path, jobs: ConvertJobs, src_dir: str, args_params: int, report: VerifyReport) -> None:
    if args_params > LOGITS_MAX_PARAMS:
        report.notes.append(f"logits not compared: {args_params / 1e9:.1f} B parameters do not fit the CPU reference")
        return
    try:
        from ascend.reference import compute_logits
    except ImportError as err:  # pragma: no cover - the reference runtime is part of the package
        report.notes.append(f"logits not compared: reference runtime unavailable ({err})")
        return
    vocab = int(jobs.config.get("vocab_size", 2))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (LOGIT_TOKENS,), generator=g).tolist()
    ref = compute_logits(src_dir, ids)
    got = compute_logits(str(out), ids)
    for what, t in (("output", got), ("source", ref)):
        if not bool(torch.isfinite(t).all()):
            report.problems.append(f"logits: the {what}'s logits hold NaN or Inf (the error and top-1 figures are meaningless)")
    gate = _calibration_gate(out, jobs)
    if gate is not None:  # calibrated W8A8: the bounds its accuracy gate passed
        _check_logits_gate(ref, got, gate, report)
        return
    kind = _logit_class(jobs)
    bound = LOGIT_BOUNDS[kind]
    max_err = float((ref - got).abs().max())
    scale = float(ref.abs().max()) or 1.0
    top1 = float((ref.argmax(-1) == got.argmax(-1)).float().mean())
    report.logits = {"tokens": len(ids), "max_abs_error": max_err, "max_rel_error": max_err / scale,
                     "top1_agreement": top1, "class": kind, "bounds": bound}
    max_rel = bound["max_rel_error"]
    if (max_rel is not None and not max_err / scale <= max_rel) or top1 < bound["min_top1"]:
        limit = "max error not enforced" if max_rel is None else f"max error {max_rel:.1%}"
        report.problems.append(
            f"logits: max error {max_err:.3g} ({max_err / scale:.2%} of max |logit|), top-1 agreement {top1:.0%}; "
            f"bound for {kind} conversions: {limit}, top-1 {bound['min_top1']:.0%}")


def _calibration_gate(out: Path, jobs: ConvertJobs):
    """The thresholds the output's calibration passed (CalibrationThresholds), when it has static
    W8A8 linears and its calibration was gated; else None (the generic bounds apply)."""
    from ascend.recipe.schema import CalibrationThresholds

    if not w8.needs_calibration(jobs.files):
        return None
    th = w8.load_calibration(out, cached=True).thresholds
    return CalibrationThresholds(**th) if th is not None else None


def _check_logits_gate(ref: torch.Tensor, got: torch.Tensor, th, report: VerifyReport) -> None:
    from ascend.quant.accuracy import logits_agreement, logits_problems

    lg = logits_agreement(ref, got)
    report.logits = {**lg, "top1_agreement": lg["top1"], "class": "calibrated W8A8",
                     "bounds": {"logits_kl": th.logits_kl, "top1": th.top1, "logits_rel_err": th.logits_rel_err}}
    broken = logits_problems(lg, th)
    if broken:
        report.problems.append("logits: " + "; ".join(broken) + " (the bounds of the calibration's accuracy gate, "
                               "convert.calibration.thresholds)")


def _check_engine_xllm(out: Path, jobs: ConvertJobs, report: VerifyReport) -> None:
    from ascend.convert.xllm_contract import check_xllm

    if jobs.options.layout != "hf":
        report.problems.append(f"xLLM contract: layout {jobs.options.layout}; xLLM loads the hf layout (it shards at load)")
        return
    if jobs.quant_description is None:
        report.notes.append("xLLM contract: not a W8A8 output; nothing engine-specific to check")
        return
    problems, notes = check_xllm(out)
    report.problems += [f"xLLM contract: {p}" for p in problems]
    report.notes += [f"xLLM contract: {n}" for n in notes]


def verify(out_dir: str | Path, against: str | None = None, sample: int | None = None, logits: bool = True,
           engine: str | None = None) -> VerifyReport:
    """``engine="xllm"``: also check the output against what xLLM's loader reads (``xllm_contract``)."""
    out = Path(out_dir)
    report = VerifyReport(str(out))
    manifest_path = out / MANIFEST
    if not manifest_path.is_file() and not (out / STATE_DIR).is_dir():
        raise CheckpointError(f"{out}: not an ascend convert output (no {MANIFEST}, no {STATE_DIR}/)",
                              fix="point verify at the --out directory of a conversion")
    if not manifest_path.is_file():
        raise CheckFailed(f"{out}: no {MANIFEST}", why="the conversion did not finish (the manifest is written last)",
                          fix="rerun ascend convert with the same arguments; it resumes")
    try:
        manifest = json.loads(manifest_path.read_text())
        if not isinstance(manifest, dict) or not isinstance(manifest.get("options"), dict):
            raise ValueError("not a manifest object with 'options'")
    except (ValueError, OSError) as err:  # the manifest is written whole, so this is damage
        raise CheckFailed(f"{manifest_path}: unreadable ({err})", why="the output was modified after conversion",
                          fix="rerun ascend convert with --force") from None
    _check_files(out, manifest, report)
    jobs, src = _load_jobs(out, manifest, against, report)
    if jobs is None:
        return report
    report.problems += check_config(out, jobs, manifest)
    layout = output_layout(jobs.options.layout)
    if layout is not None:  # another framework's layout checks its own files
        sampled = {(name, p.outputs[0][0]) for name, p in _sample([(f.name, p) for f in jobs.files for p in f.pieces], sample)}
        try:
            layout.verify(out, jobs, src, sampled, report)
        finally:
            if src is not None:
                src.close()
        return report
    _check_structure(out, jobs, report)
    if engine == "xllm":
        _check_engine_xllm(out, jobs, report)
    if src is not None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # many small tensors: thread hand-offs cost more than they save
        try:
            _check_numbers(out, jobs, src, sample, report)
            if logits and not report.problems:
                from ascend.models.tensors import param_counts

                fmt = source_format(jobs.options.source_format)
                if fmt is not None:
                    # the reference runtime reads HF and sharded directories only
                    report.notes.append(f"logits not compared: the source is {fmt.title} (its tensors were "
                                        "compared with the output above)")
                else:
                    from ascend.models.args import load_model_args

                    total = param_counts(load_model_args(src.dir)).total
                    _check_logits(out, jobs, str(src.dir), total, report)
        finally:
            torch.set_num_threads(threads)
            src.close()
    return report
