"""`ascend calibrate`: calibration of static W8A8 alone (what `ascend convert` runs before writing it)."""

from __future__ import annotations

from pathlib import Path

import typer

from ascend.cli.common import interactive, json_option, print_json


def register(app: typer.Typer) -> None:
    @app.command("calibrate")
    def calibrate_cmd(
        src: Path = typer.Option(..., "--src", help="Source checkpoint (HF dir; BF16 or block-FP8)."),
        out: Path = typer.Option(..., "--out", help="Convert output dir; the calibration goes to OUT/.ascend-convert/calibration/."),
        scheme: str = typer.Option("w8a8", "--scheme", help="W8A8 scheme whose static linears are calibrated."),
        calib: Path = typer.Option(None, "--calib", help='JSONL calibration file: one {"text": ...} or {"messages": [...], "tools": [...] (optional)} per line (default: built-in set, chat, code, math and tool use).'),
        samples: int = typer.Option(64, "--samples", min=2, help="Samples used (every 8th is held out for the accuracy report)."),
        max_len: int = typer.Option(512, "--max-len", min=8, help="Tokens per sample at most."),
        alpha: float = typer.Option(0.5, "--alpha", min=0, max=1, help="SmoothQuant migration strength."),
        no_smoothing: bool = typer.Option(False, "--no-smoothing", help="Record ranges without smoothing."),
        device: str = typer.Option("cpu", "--device", help="cpu, or npu (needs torch_npu)."),
        max_layer_rel_l2: float = typer.Option(None, "--max-layer-rel-l2", help="Gate: largest allowed per-layer relative L2 error (default: the recipe default)."),
        no_gate: bool = typer.Option(False, "--no-gate", help="Report accuracy without failing on the thresholds."),
        as_json: bool = json_option("Print calibration.json on stdout."),
    ) -> None:
        """Calibrate static W8A8 activation ranges layer by layer on the CPU reference runtime.

        Resumes where a killed run stopped. Exit 3 when the accuracy gate fails (the report is
        still written).

        \b
        Examples:
          ascend calibrate --src /data/GLM-5-FP8 --out /data/GLM-5-w8a8
          ascend calibrate --src /tmp/glm5-tiny --out /tmp/glm5-w8a8 --samples 16 --max-len 128
          ascend calibrate --src /data/DeepSeek-V3 --out /data/ds-w8a8 --calib mix.jsonl --device npu
        """
        import sys

        from ascend.quant.calibrate import Runtime, calibrate
        from ascend.recipe.schema import CalibrationSection, CalibrationThresholds

        thresholds = CalibrationThresholds()
        if no_gate:
            thresholds = CalibrationThresholds(layer_rel_l2=None, logits_kl=None, top1=None, logits_rel_err=None)
        if max_layer_rel_l2 is not None:
            thresholds = thresholds.model_copy(update={"layer_rel_l2": max_layer_rel_l2})
        cfg = CalibrationSection(samples=samples, max_len=max_len, file=str(calib) if calib else None,
                                 smoothing_alpha=None if no_smoothing else alpha, thresholds=thresholds)
        log = (lambda line: print(line, file=sys.stderr)) if interactive() else None  # quiet in pipes
        info = calibrate(src, out, cfg, scheme=scheme, runtime=Runtime(device=device, log=log))
        if as_json:
            print_json(info)
            return
        lg = info["logits"]
        worst = max(info["layers"].items(), key=lambda kv: kv[1]["rel_l2"])
        typer.echo(f"calibrated {len(info['layers'])} layers on {info['tokens']} tokens "
                   f"(held out {info['held_out']['tokens']}): worst layer {worst[0]} rel-L2 {worst[1]['rel_l2']:.3g}; "
                   f"logits KL {lg['kl']:.3g}, top-1 {lg['top1']:.3f}, rel. error {lg['rel_err']:.3g}")
