"""`ascend verify`: structure, checksums and numbers of a converted checkpoint."""

from __future__ import annotations

from typing import Optional

import typer

from ascend.cli.common import json_option, print_json

HELP = """\
Check a converted directory: manifest checksums, every planned tensor with its planned
shape and dtype and nothing else, each tensor reconstructed against the source within the
bound its precision allows (exact for FP8 -> BF16), and reference logits of output vs source
for models that fit in memory. Exit 3 naming the failing files or tensors.

Examples:

\b
  ascend verify /data/GLM-5-w8a8                       # source from the manifest
  ascend verify /data/GLM-5-bf16 --against /data/GLM-5-FP8 --sample 2000
  ascend verify out-tp4 --json
  ascend verify /data/GLM-5-w8a8 --engine xllm         # + what xLLM's GLM-5 loader reads
"""


def register(app: typer.Typer) -> None:
    @app.command("verify", help=HELP)
    def verify_cmd(
        out_dir: str = typer.Argument(..., help="Converted directory (has ascend-manifest.json)."),
        against: Optional[str] = typer.Option(None, "--against", help="Source checkpoint (default: the one in the manifest)."),
        sample: Optional[int] = typer.Option(None, "--sample", help="Check only N tensors (spread evenly) numerically."),
        no_logits: bool = typer.Option(False, "--no-logits", help="Skip the reference-logits comparison."),
        engine: Optional[str] = typer.Option(
            None, "--engine",
            help="Also check the output against what this engine's loader reads (xllm: tensor set, dtypes, "
                 "shapes and W8A8 kinds of quantization.md §3)."),
        as_json: bool = json_option(),
    ) -> None:
        from pathlib import Path

        from ascend.convert.verify import verify
        from ascend.errors import CheckFailed, CheckpointError

        if engine not in (None, "xllm"):
            raise CheckpointError(f"--engine {engine}: unknown engine", fix="use --engine xllm")
        if not Path(out_dir).is_dir():
            raise CheckpointError(f"{out_dir} does not exist" if not Path(out_dir).exists() else f"{out_dir} is not a directory",
                                  fix="pass the converted directory (the recipe's convert.output)")
        from ascend.progress import heartbeat

        with heartbeat(f"verify: checking {out_dir}"):
            report = verify(out_dir, against=against, sample=sample, logits=not no_logits, engine=engine)
        if as_json:
            print_json(report.to_json())
        else:
            typer.echo(f"{out_dir}: {report.files_checked} files checksummed, "
                       f"{report.tensors_checked}/{report.tensors_total} tensors compared with the source")
            if report.logits:
                typer.echo(f"  logits ({report.logits['tokens']} tokens): {report.logits_line()}")
            for note in report.notes:
                typer.echo(f"  note: {note}")
            for problem in report.problems[:50]:
                typer.echo(f"  FAIL {problem}")
            if len(report.problems) > 50:
                typer.echo(f"  ... {len(report.problems) - 50} more")
        if not report.ok:
            first = report.problems[0]
            raise CheckFailed(f"verify failed: {len(report.problems)} problem(s), first: {first}")
        if not as_json:
            typer.echo("  OK")
