"""`ascend convert`: FP8 / BF16 / W8A8 conversion, hf or sharded layout, resumable."""

from __future__ import annotations

from typing import Literal, Optional

import typer

from ascend.cli.common import set_option
from ascend.recipe.schema import Precision

HELP = """\
Convert a checkpoint for serving: precision (bf16 | fp8 | w8a8), layout (hf | sharded |
mindspore), MTP; from Hugging Face or MindSpore Transformers checkpoints.

Recipe mode reads the recipe's convert section (output, layout, precision rules, mtp, workers)
and parallel layout; flag mode takes everything on the command line (world = tp x dp, ep must
divide it, MoE TP = world / ep, as in xLLM). A rerun skips finished files; --force starts over.

Examples:

\b
  ascend convert glm5/a3-w8a8 --src /data/GLM-5-FP8
  ascend convert glm5/a3-w8a8 --dry-run
  ascend convert --src /data/GLM-5-FP8 --out /data/GLM-5-bf16 --precision bf16 --layout hf
  ascend convert --src /data/GLM-5-FP8 --out /data/GLM-5-w8a8 --precision w8a8 --mtp export
  ascend convert --src ckpt --out ckpt-tp4 --precision bf16 --layout sharded --tp 4 --ep 4
  # a MindSpore Transformers checkpoint (needs: pip install "ascend-recipes[mindspore]"):
  ascend convert --src /data/ms-ft --from-format mindspore --config /data/GLM-5/config.json \\
      --out /data/GLM-5-ft-w8a8 --precision w8a8
  # and back: a MindSpore Transformers checkpoint (BF16) from a Hugging Face one
  ascend convert --src /data/GLM-5-FP8 --out /data/GLM-5-ms --precision bf16 --layout mindspore --ms-format ckpt
  # spread over 4 machines (shared filesystem), e.g. a Slurm array:
  ascend convert glm5/a3-w8a8 --node-rank $SLURM_ARRAY_TASK_ID --nnodes 4
  ascend convert glm5/a3-w8a8 --finalize
  # the same as scheduler jobs (docs/slurm.md, docs/kubernetes.md):
  ascend convert glm5/a3-w8a8 --emit slurm --nnodes 4 | bash
  ascend convert glm5/a3-w8a8 --emit kubernetes --nnodes 4 | kubectl apply -f -
"""


def register(app: typer.Typer) -> None:
    @app.command("convert", help=HELP)
    def convert_cmd(
        recipe: Optional[str] = typer.Argument(None, help="Recipe file or built-in name (omit for flag mode)."),
        src: Optional[str] = typer.Option(None, "--src", help="Source checkpoint dir (recipe: model.path)."),
        out: Optional[str] = typer.Option(None, "--out", help="Output dir (recipe: convert.output)."),
        precision: Optional[Precision] = typer.Option(None, "--precision", help="bf16 | fp8 | w8a8 (flag mode)."),
        layout: Optional[Literal["hf", "sharded", "mindspore"]] = typer.Option(
            None, "--layout", help="hf | sharded | mindspore (flag mode; mindspore: BF16, needs the extra)."),
        tp: int = typer.Option(1, "--tp", min=1, help="Attention TP size (flag mode, sharded)."),
        dp: int = typer.Option(1, "--dp", min=1, help="Attention DP groups (flag mode, sharded)."),
        ep: int = typer.Option(1, "--ep", min=1, help="Expert-parallel size; must divide tp x dp (flag mode)."),
        mtp: Optional[Literal["keep", "drop", "export"]] = typer.Option(
            None, "--mtp", help="keep | drop | export (flag mode; default keep)."),
        w8a8_scheme: Optional[Literal["w8a8", "dynamic"]] = typer.Option(
            None, "--w8a8-scheme",
            help="w8a8 (default: the family's engine practice, static attention needs calibration) | dynamic "
                 "(all W8A8_DYNAMIC, data-free; not readable by xLLM) (flag mode)."),
        device: Optional[Literal["cpu", "npu"]] = typer.Option(
            None, "--device",
            help="Calibration device (recipe: convert.calibration.device; default cpu): cpu, or npu through "
                 "torch_npu. Conversion itself runs on the CPU. When the output has static W8A8 linears, npu is "
                 "checked before any work, even if their calibration is already done (exit 2 without torch_npu)."),
        requantize_misaligned: bool = typer.Option(
            False, "--requantize-misaligned",
            help="FP8 output whose TP split breaks 128-blocks: requantize per shard instead of refusing."),
        workers: Optional[int] = typer.Option(None, "--workers", help="Worker processes (recipe: convert.workers; default 1)."),
        force: bool = typer.Option(False, "--force", help="Start over: overwrite a previous or foreign output dir."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the per-file plan and exit."),
        node_rank: int = typer.Option(0, "--node-rank", help="This machine's part (0-based) of a multi-node conversion."),
        nnodes: int = typer.Option(1, "--nnodes", help="Number of parts the output files are spread over."),
        finalize: bool = typer.Option(False, "--finalize", help="Only write index + manifest once all parts are done."),
        calibrate_only: bool = typer.Option(
            False, "--calibrate-only",
            help="Only calibrate the static W8A8 linears (into OUT/.ascend-convert/calibration/), then stop: the "
            "first job of a multi-node conversion, whose parts use that calibration (--emit submits it first)."),
        file_gb: float = typer.Option(5.0, "--file-gb", help="Target size of hf output files in GB."),
        ms_format: Literal["safetensors", "ckpt"] = typer.Option(
            "safetensors", "--ms-format", help="--layout mindspore: safetensors | ckpt."),
        from_format: Literal["hf", "mindspore"] = typer.Option(
            "hf", "--from-format", help="Source format: hf | mindspore (MindSpore Transformers)."),
        config: Optional[str] = typer.Option(
            None, "--config", help="HF config.json (or its dir) of a MindSpore source that has none."),
        sets: list[str] = set_option(),
        emit: Optional[str] = typer.Option(
            None, "--emit", metavar="FORM",
            help="Print a job file instead of converting: `slurm` (submits a job array of the parts, then a "
            "dependent --finalize job; a --calibrate-only job first when the output has static W8A8) or "
            "`kubernetes` (Indexed Job + finalize Job; a calibrate Job first, the parts wait for it). Parts: "
            "--nnodes, else hardware.nodes. Redirect stdout to save it."),
    ) -> None:
        from ascend.convert.jobs import ConvertOptions
        from ascend.errors import ConvertError

        recipe_hash = None
        out_flag = out is not None
        if recipe is not None:
            from ascend.recipe import load_recipe
            from ascend.recipe import recipe_hash as hash_of

            r = load_recipe(recipe, sets)
            if emit is not None:  # the job carries the resolved recipe; --src/--out become its paths
                from ascend.cluster.emit import emit_convert

                paths = [f"model.path={src}"] * bool(src) + [f"convert.output={out}"] * bool(out)
                emit_convert(load_recipe(recipe, [*sets, *paths]) if paths else r, emit,
                             parts=nnodes if nnodes > 1 else r.hardware.nodes)
                return
            for flag, value in (("--precision", precision), ("--layout", layout), ("--mtp", mtp),
                                ("--w8a8-scheme", w8a8_scheme)):
                if value is not None:
                    raise ConvertError(f"{flag} is a flag-mode option", fix=f"use --set convert.… with a recipe instead of {flag}")
            c = r.convert
            opts = ConvertOptions.from_recipe(r)
            if requantize_misaligned:
                opts.misaligned_fp8 = "requantize"
            src = src or r.model.path
            out = out or c.output
            workers = workers or c.workers
            recipe_hash = hash_of(r, ["model", "parallel", "hardware", "convert"])
        else:
            if sets:
                raise ConvertError("--set needs a recipe", fix="pass a recipe, or use flags only")
            if emit is not None:
                raise ConvertError("--emit needs a recipe", fix="pass a recipe: the job carries it")
            missing = [f for f, v in (("--src", src), ("--out", out), ("--precision", precision)) if not v]
            if missing:
                raise ConvertError(f"flag mode needs {', '.join(missing)}",
                                   fix="e.g. ascend convert --src D --out D2 --precision bf16 (or pass a recipe)")
            opts = ConvertOptions.from_flags(
                precision, tp=tp, dp=dp, ep=ep, layout=layout or "hf", mtp=mtp or "keep",
                misaligned_fp8="requantize" if requantize_misaligned else "refuse",
                w8a8_scheme=w8a8_scheme or "w8a8",
            )
        if not src:
            raise ConvertError("no source checkpoint", fix="set model.path in the recipe or pass --src")
        if not out:
            raise ConvertError("no output directory", fix="set convert.output in the recipe or pass --out")
        opts.file_bytes = int(file_gb * 1e9)
        opts.source_format, opts.source_config, opts.ms_format = from_format, config, ms_format
        if dry_run:
            from ascend.convert.pipeline import conversion_jobs, describe_jobs

            typer.echo(describe_jobs(conversion_jobs(src, opts), src, out))
            return
        if calibrate_only and (nnodes > 1 or finalize):
            raise ConvertError("--calibrate-only is the single job before the parts", fix="drop --node-rank/--nnodes/--finalize")
        from ascend.convert.pipeline import convert
        from ascend.paths import writable_dir

        writable_dir(out, "convert.output" if recipe is not None and not out_flag else "--out")
        result = convert(
            src, out, opts, workers=workers or 1, force=force, node_rank=node_rank, nnodes=nnodes,
            finalize_only=finalize, recipe_hash=recipe_hash, progress=True,  # a bar, or lines when piped
            log=lambda s: typer.echo(s, err=True), calibration=r.convert.calibration if recipe is not None else None,
            device=device, calibrate_only=calibrate_only,
        )
        if calibrate_only:
            typer.echo(f"{result.out_dir}: calibrated (.ascend-convert/calibration/); no weights written" if result.calibrated
                       else f"{result.out_dir}: nothing to calibrate (no static W8A8 linears); no weights written", err=True)
            return
        state = "complete" if result.complete else "part done"
        typer.echo(
            f"{result.out_dir}: {state}; wrote {len(result.files_written)} file(s) "
            f"({result.bytes_written / 1e9:.2f} GB in {result.seconds:.1f} s), kept {len(result.files_skipped)}",
            err=True,
        )
