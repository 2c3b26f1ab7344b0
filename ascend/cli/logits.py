"""`ascend logits`: reference forward of an HF or sharded checkpoint; logits to a safetensors file."""

from __future__ import annotations

from pathlib import Path

import typer


def _parse_ids(text: str) -> list[int]:
    from ascend.errors import AscendError

    try:
        ids = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise AscendError(f"--input-ids {text!r}: expected comma-separated integers", fix="e.g. --input-ids 1,2,3") from None
    if not ids:
        raise AscendError("--input-ids is empty", fix="e.g. --input-ids 1,2,3")
    return ids


def register(app: typer.Typer) -> None:
    @app.command("logits")
    def logits_cmd(
        model_dir: Path = typer.Argument(..., help="HF checkpoint dir or sharded dir (with ascend-sharding.json)."),
        input_ids: str = typer.Option(..., "--input-ids", help="Token ids, comma-separated."),
        out: Path = typer.Option(..., "--out", help="Output safetensors file (tensor 'logits' [T, vocab] float32)."),
        ranks: int = typer.Option(None, "--ranks", min=1, help="Processes (gloo, 127.0.0.1); default 1, or the sharded dir's world size."),
        dp: int = typer.Option(None, "--dp", min=1, help="Attention data-parallel groups (attention TP = ranks / dp)."),
        ep: int = typer.Option(None, "--ep", min=1, help="Expert-parallel size (MoE TP = ranks / ep)."),
    ) -> None:
        """Run the CPU reference model on token ids; write their logits.

        \b
        Examples:
          ascend logits /tmp/glm5-tiny --input-ids 1,2,3,4 --out /tmp/logits.safetensors
          ascend logits /tmp/glm5-tiny --input-ids 1,2,3,4 --ranks 4 --ep 4 --out /tmp/l4.safetensors
          ascend logits /data/GLM-5-sharded --input-ids 1,2,3 --out /tmp/l.safetensors
        """
        from safetensors.torch import save_file

        from ascend.fileio import atomic_path
        from ascend.paths import writable_file
        from ascend.reference.runner import compute_logits

        ids = _parse_ids(input_ids)
        writable_file(out, "--out")
        logits = compute_logits(model_dir, ids, ranks=ranks, dp=dp, ep=ep)
        with atomic_path(out) as tmp:
            save_file({"logits": logits.contiguous()}, str(tmp), metadata={"model_dir": str(model_dir), "input_ids": input_ids})
        typer.echo(f"wrote {out}: logits [{logits.shape[0]}, {logits.shape[1]}] float32")
