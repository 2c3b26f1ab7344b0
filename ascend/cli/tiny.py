"""`ascend tiny`: write a tiny random checkpoint of a family in the real Hugging Face layout."""

from __future__ import annotations

from pathlib import Path

import typer

from ascend.cli.common import json_option, print_json


def register(app: typer.Typer) -> None:
    @app.command("tiny")
    def tiny_cmd(
        out_dir: Path = typer.Argument(..., help="Directory to create (must not exist unless --overwrite)."),
        arch: str = typer.Option(..., "--arch", help="Family: glm_moe_dsa | deepseek_v3 | deepseek_v32 | glm4_moe."),
        fp8: bool = typer.Option(False, "--fp8", help="Block-FP8 (e4m3 + weight_scale_inv) projections, as the published FP8 checkpoints."),
        seed: int = typer.Option(0, "--seed", help="Seed of the random weights (same seed, same bytes)."),
        layers: int = typer.Option(None, "--layers", min=1, help="Main decoder layers (default 3: 1 dense + 2 MoE)."),
        experts: int = typer.Option(None, "--experts", min=4, help="Routed experts per MoE layer (multiple of 4; default 8 GLM, 16 DeepSeek)."),
        mtp: bool = typer.Option(True, "--mtp/--no-mtp", help="Include the MTP (next-n) layer."),
        scripted: bool = typer.Option(
            False, "--scripted",
            help="Constructed weights with known behaviour (thinking, tool calls) for the smoke suite; glm_moe_dsa only.",
        ),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT_DIR if it exists."),
        as_json: bool = json_option("Print what was written as JSON."),
    ) -> None:
        """Write a tiny random checkpoint: config, weights (several safetensors + index),
        tokenizer with the family's special tokens, chat template.

        Forward passes take milliseconds on CPU; transformers loads it; the reference model,
        converter and CPU engine run on it.

        \b
        Examples:
          ascend tiny /tmp/glm5-tiny --arch glm_moe_dsa
          ascend tiny /tmp/ds3-fp8 --arch deepseek_v3 --fp8 --seed 7
          ascend tiny /tmp/glm45 --arch glm4_moe --layers 2 --experts 16 --no-mtp
          ascend tiny /tmp/glm5-scripted --arch glm_moe_dsa --fp8 --scripted
        """
        import contextlib

        from ascend.paths import writable_dir
        from ascend.progress import heartbeat

        writable_dir(out_dir.parent, "OUT_DIR's parent")  # OUT_DIR is written beside it, then renamed
        beat = contextlib.ExitStack()  # progress while the checkpoint is written; closed in `finally`
        from ascend.errors import AscendError
        from ascend.tiny.configs import FAMILIES

        if arch not in FAMILIES:
            raise AscendError(f"--arch {arch!r} is not a supported family", fix=f"use one of: {', '.join(FAMILIES)}")
        from ascend.tiny.writer import write_tiny_checkpoint

        beat.enter_context(heartbeat(f"tiny: writing {out_dir}"))
        try:
            if scripted:
                import shutil

                from ascend.smoke.probes import probe_conversations
                from ascend.tiny.scripted import FAMILY as SCRIPTED_FAMILY
                from ascend.tiny.scripted import write_scripted_checkpoint

                if arch != SCRIPTED_FAMILY:
                    raise AscendError(f"--scripted exists for {SCRIPTED_FAMILY} only, not {arch}",
                                      fix=f"use --arch {SCRIPTED_FAMILY}, or drop --scripted for random weights")
                if out_dir.exists() and not overwrite:
                    raise AscendError(f"{out_dir} already exists", fix="choose a new directory or pass --overwrite")
                shutil.rmtree(out_dir, ignore_errors=True)
                out = write_scripted_checkpoint(out_dir, arch, fp8=fp8, seed=seed, layers=layers, experts=experts,
                                                mtp=mtp, conversations=probe_conversations())
            else:
                out = write_tiny_checkpoint(out_dir, arch, fp8=fp8, seed=seed, layers=layers, experts=experts,
                                            mtp=mtp, overwrite=overwrite)
        except ValueError as err:  # bad --layers/--experts combination
            raise AscendError(f"cannot build a tiny {arch}", why=str(err)) from None
        finally:
            beat.close()
        files = sorted(p.name for p in out.iterdir())
        if as_json:
            print_json({"path": str(out), "family": arch, "fp8": fp8, "seed": seed, "scripted": scripted, "files": files})
        else:
            kind = "scripted" if scripted else f"seed {seed}"
            typer.echo(f"wrote {out} ({arch}{', fp8' if fp8 else ''}, {kind}, {len(files)} files)")
